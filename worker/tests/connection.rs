//! The worker's connection loop against a fake scheduler: a real tonic
//! server implementing `Workers` whose streams the test drives by hand.
//! Every wait is on an event, bounded by a generous timeout.

use std::time::Duration;

use pb::scheduler_message::Message as ToWorker;
use pb::task_finished::Outcome;
use pb::worker_message::Message as FromWorker;
use pb::workers_server::{Workers, WorkersServer};
use pulp_common::json::{json_to_struct, value_to_json};
use pulp_common::names::TaskId;
use pulp_common::proto::tasking::v1 as pb;
use pulp_worker::{Config, TaskRegistry};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const WAIT: Duration = Duration::from_secs(10);

/// One `Connect` call as the fake scheduler sees it.
struct Conn {
    from_worker: Streaming<pb::WorkerMessage>,
    to_worker: mpsc::Sender<Result<pb::SchedulerMessage, Status>>,
    /// Answer heartbeats with `LeaseRenewed` (as the real scheduler does).
    renew: bool,
}

impl Conn {
    /// The next message other than a heartbeat (answered while `renew`);
    /// `None` when the worker closed the stream.
    async fn recv(&mut self) -> Option<FromWorker> {
        loop {
            let next = tokio::time::timeout(WAIT, self.from_worker.next())
                .await
                .expect("the worker sends something");
            match next {
                None | Some(Err(_)) => return None,
                Some(Ok(pb::WorkerMessage {
                    message: Some(FromWorker::Heartbeat(_)),
                })) => {
                    if self.renew {
                        // The worker may be gone already; that is for the
                        // caller's next receive to find out.
                        let _ = self
                            .to_worker
                            .send(Ok(pb::SchedulerMessage {
                                message: Some(ToWorker::LeaseRenewed(pb::LeaseRenewed {
                                    lease_ttl_seconds: 0.0,
                                })),
                            }))
                            .await;
                    }
                }
                Some(Ok(m)) => return Some(m.message.expect("a message")),
            }
        }
    }

    /// The next `TaskFinished`, skipping progress.
    async fn finished(&mut self) -> pb::TaskFinished {
        loop {
            match self.recv().await {
                Some(FromWorker::Finished(f)) => return f,
                Some(FromWorker::Progress(_)) => continue,
                other => panic!("expected TaskFinished, got {other:?}"),
            }
        }
    }

    /// The next `Progress`.
    async fn progress(&mut self) -> pb::Progress {
        match self.recv().await {
            Some(FromWorker::Progress(p)) => p,
            other => panic!("expected Progress, got {other:?}"),
        }
    }

    async fn hello(&mut self) -> pb::Hello {
        match self.recv().await {
            Some(FromWorker::Hello(h)) => h,
            other => panic!("expected Hello, got {other:?}"),
        }
    }

    async fn send(&self, message: ToWorker) {
        self.to_worker
            .send(Ok(pb::SchedulerMessage {
                message: Some(message),
            }))
            .await
            .expect("the worker listens");
    }

    async fn welcome(&self, stale: Vec<pb::HeldTask>) {
        self.welcome_with_ttl(30.0, stale).await;
    }

    async fn welcome_with_ttl(&self, lease_ttl_seconds: f64, stale: Vec<pb::HeldTask>) {
        self.welcome_with(lease_ttl_seconds, 0.2, stale).await;
    }

    async fn welcome_with(
        &self,
        lease_ttl_seconds: f64,
        heartbeat_interval_seconds: f64,
        stale: Vec<pb::HeldTask>,
    ) {
        self.send(ToWorker::Welcome(pb::Welcome {
            lease_ttl_seconds,
            heartbeat_interval_seconds,
            stale,
        }))
        .await;
    }

    async fn assign(&self, func: &str, kwargs: serde_json::Value) -> TaskId {
        let id = TaskId::new();
        self.send(ToWorker::Assignment(pb::Assignment {
            task_id: id.to_string(),
            attempt: 1,
            func: func.into(),
            kwargs: Some(json_to_struct(kwargs.as_object().unwrap())),
            ..Default::default()
        }))
        .await;
        id
    }

    async fn ack(&self, f: &pb::TaskFinished, code: tonic::Code) {
        self.send(ToWorker::ResultAck(pb::ResultAck {
            task_id: f.task_id.clone(),
            attempt: f.attempt,
            code: code as i32,
            message: String::new(),
        }))
        .await;
    }
}

struct FakeScheduler {
    conns: mpsc::Sender<Conn>,
}

#[tonic::async_trait]
impl Workers for FakeScheduler {
    type ConnectStream = ReceiverStream<Result<pb::SchedulerMessage, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<pb::WorkerMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let (tx, rx) = mpsc::channel(64);
        let conn = Conn {
            from_worker: request.into_inner(),
            to_worker: tx,
            renew: true,
        };
        self.conns
            .send(conn)
            .await
            .map_err(|_| Status::unavailable("test over"))?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn list_workers(
        &self,
        _: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

struct TestWorker {
    conns: mpsc::Receiver<Conn>,
    shutdown: CancellationToken,
    worker: JoinHandle<anyhow::Result<()>>,
    health_addr: std::net::SocketAddr,
    dir: tempfile::TempDir,
    name: String,
}

impl TestWorker {
    async fn start(adjust: impl FnOnce(&mut Config)) -> TestWorker {
        if std::env::var_os("TEST_LOG").is_some() {
            pulp_common::telemetry::init(pulp_common::telemetry::LogFormat::Pretty);
        }
        let sched = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", sched.local_addr().unwrap());
        let (conns_tx, conns) = mpsc::channel(4);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(WorkersServer::new(FakeScheduler { conns: conns_tx }))
                .serve_with_incoming(TcpListenerStream::new(sched)),
        );

        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::for_tests(url, dir.path().join("work"));
        config.cancel_grace = Duration::from_millis(200);
        adjust(&mut config);
        let health = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let health_addr = health.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let name = config.name.clone();
        let worker = tokio::spawn(pulp_worker::run_with(
            config,
            TaskRegistry::builtin(),
            Some(health),
            shutdown.clone(),
        ));
        TestWorker {
            conns,
            shutdown,
            worker,
            health_addr,
            dir,
            name,
        }
    }

    async fn next_conn(&mut self) -> Conn {
        tokio::time::timeout(WAIT, self.conns.recv())
            .await
            .expect("the worker connects")
            .expect("the fake scheduler runs")
    }

    /// Waits until the worker's health is `want`.
    async fn health_becomes(&self, want: ServingStatus) {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", self.health_addr))
                .unwrap()
                .connect()
                .await
                .unwrap();
        let mut client = HealthClient::new(channel);
        let mut statuses = client
            .watch(tonic_health::pb::HealthCheckRequest {
                service: "pulp.tasking.v1.Worker".into(),
            })
            .await
            .unwrap()
            .into_inner();
        tokio::time::timeout(WAIT, async {
            while let Some(Ok(response)) = statuses.next().await {
                if response.status == want as i32 {
                    return;
                }
            }
            panic!("the health stream ended");
        })
        .await
        .expect("health reaches the wanted status");
    }

    async fn stopped(self) {
        tokio::time::timeout(WAIT, self.worker)
            .await
            .expect("the worker stops")
            .unwrap()
            .unwrap();
        let left: Vec<_> = std::fs::read_dir(self.dir.path().join("work"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            left,
            [".pulp-worker.lock"],
            "working directories left behind"
        );
    }
}

#[tokio::test]
async fn hello_assignments_results_and_clean_shutdown() {
    let mut w = TestWorker::start(|c| c.slots = 3).await;
    let mut conn = w.next_conn().await;
    let hello = conn.hello().await;
    assert_eq!(hello.name, w.name);
    assert_eq!(hello.slots, 3);
    assert!(uuid::Uuid::parse_str(&hello.instance_id).is_ok());
    assert!(hello.held.is_empty());
    let mut funcs = hello.funcs.clone();
    funcs.sort();
    assert_eq!(funcs, ["fail", "noop", "panic", "sleep"]);

    conn.welcome(vec![]).await;
    w.health_becomes(ServingStatus::Serving).await;

    let id = conn.assign("noop", json!({})).await;
    let f = conn.finished().await;
    assert_eq!(
        (f.task_id.as_str(), f.attempt),
        (id.to_string().as_str(), 1)
    );
    assert!(matches!(f.outcome, Some(Outcome::Result(_))));
    conn.ack(&f, tonic::Code::Ok).await;

    conn.assign("sleep", json!({"seconds": 0.3})).await;
    let p = conn.progress().await;
    assert_eq!(p.report.unwrap().code, "sleep");
    let f = conn.finished().await;
    let Some(Outcome::Result(value)) = f.outcome.clone() else {
        panic!("expected a result: {f:?}");
    };
    let value = value_to_json(&value);
    assert_eq!(value["slept"], json!(0.3));
    assert!(value["started_at_us"].as_i64() <= value["finished_at_us"].as_i64());
    conn.ack(&f, tonic::Code::Ok).await;

    conn.assign("unknown_func", json!({})).await;
    let f = conn.finished().await;
    let Some(Outcome::Error(err)) = f.outcome.clone() else {
        panic!("expected an error: {f:?}");
    };
    assert_eq!(err.reason, "unknown task");
    conn.ack(&f, tonic::Code::Ok).await;

    w.shutdown.cancel();
    assert!(matches!(conn.recv().await, Some(FromWorker::Draining(_))));
    assert_eq!(conn.recv().await, None, "the worker closes its stream");
    drop(conn);
    w.stopped().await;
}

#[tokio::test]
async fn unacknowledged_results_survive_a_reconnect() {
    let mut w = TestWorker::start(|_| {}).await;
    let mut conn = w.next_conn().await;
    conn.hello().await;
    conn.welcome(vec![]).await;
    let id = conn.assign("fail", json!({"message": "boom"})).await;
    let f = conn.finished().await;
    assert_eq!(f.task_id, id.to_string());

    // The scheduler goes away before it acknowledges.
    drop(conn);
    w.health_becomes(ServingStatus::NotServing).await;

    let mut conn = w.next_conn().await;
    let hello = conn.hello().await;
    assert_eq!(
        hello.held,
        [pb::HeldTask {
            task_id: id.to_string(),
            attempt: 1
        }]
    );
    conn.welcome(vec![]).await;
    let again = conn.finished().await;
    assert_eq!(again, f);

    // Its database is down: the worker keeps the result and re-sends it.
    conn.ack(&again, tonic::Code::Unavailable).await;
    let again = conn.finished().await;
    assert_eq!(again, f);
    conn.ack(&again, tonic::Code::Ok).await;

    w.shutdown.cancel();
    assert!(matches!(conn.recv().await, Some(FromWorker::Draining(_))));
    assert_eq!(conn.recv().await, None);
    drop(conn);
    w.stopped().await;
}

#[tokio::test]
async fn welcome_stale_results_are_dropped() {
    let mut w = TestWorker::start(|_| {}).await;
    let mut conn = w.next_conn().await;
    conn.hello().await;
    conn.welcome(vec![]).await;
    let f = {
        conn.assign("noop", json!({})).await;
        conn.finished().await
    };
    drop(conn);

    let mut conn = w.next_conn().await;
    let hello = conn.hello().await;
    assert_eq!(hello.held.len(), 1);
    conn.welcome(hello.held.clone()).await;
    // The stale result is not re-sent, and nothing is left to acknowledge:
    // shutdown completes at once.
    w.shutdown.cancel();
    assert!(matches!(conn.recv().await, Some(FromWorker::Draining(_))));
    assert_eq!(conn.recv().await, None, "{f:?} must not be re-sent");
    drop(conn);
    w.stopped().await;
}

#[tokio::test]
async fn cancel_slots_and_drain_with_a_deadline() {
    let mut w = TestWorker::start(|c| {
        c.slots = 1;
        c.shutdown_grace = Duration::from_millis(300);
    })
    .await;
    let mut conn = w.next_conn().await;
    conn.hello().await;
    conn.welcome(vec![]).await;

    // Cancel a running sleep.
    let id = conn.assign("sleep", json!({"seconds": 60})).await;
    conn.progress().await;
    conn.send(ToWorker::Cancel(pb::CancelAssignment {
        task_id: id.to_string(),
        attempt: 1,
    }))
    .await;
    let f = conn.finished().await;
    assert_eq!(
        f.outcome,
        Some(Outcome::Canceled(pb::Canceled { forced: false }))
    );
    conn.ack(&f, tonic::Code::Ok).await;

    // One slot: a second assignment is refused.
    let running = conn.assign("sleep", json!({"seconds": 60})).await;
    conn.progress().await;
    let extra = conn.assign("noop", json!({})).await;
    let f = conn.finished().await;
    assert_eq!(f.task_id, extra.to_string());
    let Some(Outcome::Error(err)) = &f.outcome else {
        panic!("expected a refusal: {f:?}");
    };
    assert_eq!(err.reason, "no free slot");
    conn.ack(&f, tonic::Code::Ok).await;

    // Shutdown: the sleep outlives the grace and is stopped.
    w.shutdown.cancel();
    assert!(matches!(conn.recv().await, Some(FromWorker::Draining(_))));
    w.health_becomes(ServingStatus::NotServing).await;
    let f = conn.finished().await;
    assert_eq!(f.task_id, running.to_string());
    let Some(Outcome::Error(err)) = &f.outcome else {
        panic!("expected an error: {f:?}");
    };
    assert_eq!(err.reason, "aborted during worker shutdown");
    conn.ack(&f, tonic::Code::Ok).await;
    assert_eq!(conn.recv().await, None);
    drop(conn);
    w.stopped().await;
}

#[tokio::test]
async fn renewed_leases_keep_tasks_running() {
    let mut w = TestWorker::start(|_| {}).await;
    let mut conn = w.next_conn().await;
    conn.hello().await;
    // A 2 s lease, heartbeats every 0.2 s: the watchdog would fire 1 s
    // after the last confirmed renewal, long before the task ends.
    conn.welcome_with_ttl(2.0, vec![]).await;
    conn.assign("sleep", json!({"seconds": 2.5})).await;
    let f = conn.finished().await;
    assert!(matches!(f.outcome, Some(Outcome::Result(_))), "{f:?}");
    conn.ack(&f, tonic::Code::Ok).await;

    w.shutdown.cancel();
    assert!(matches!(conn.recv().await, Some(FromWorker::Draining(_))));
    assert_eq!(conn.recv().await, None);
    drop(conn);
    w.stopped().await;
}

/// A scheduler that takes long to answer the Hello (one waiting for its
/// database or for a leader) must not make the worker stop the tasks it
/// assigns right after the Welcome: the first heartbeat goes out at once and
/// renews the lease the worker dates from the Hello.
#[tokio::test]
async fn a_slow_welcome_does_not_stop_the_next_tasks() {
    let mut w = TestWorker::start(|_| {}).await;
    let mut conn = w.next_conn().await;
    conn.hello().await;
    // A 2 s lease and a 0.2 s cancel grace: the watchdog fires 1 s after
    // the Hello unless a renewal comes first. Heartbeats every 0.6 s, so
    // the first one after the Welcome would come too late (1.05 s after
    // the Hello) if it were spaced from the Welcome.
    tokio::time::sleep(Duration::from_millis(450)).await;
    conn.welcome_with(2.0, 0.6, vec![]).await;
    conn.assign("sleep", json!({"seconds": 1.5})).await;
    let f = conn.finished().await;
    assert!(matches!(f.outcome, Some(Outcome::Result(_))), "{f:?}");
    conn.ack(&f, tonic::Code::Ok).await;

    w.shutdown.cancel();
    assert!(matches!(conn.recv().await, Some(FromWorker::Draining(_))));
    assert_eq!(conn.recv().await, None);
    drop(conn);
    w.stopped().await;
}

/// A Welcome that comes after the watchdog would already have fired (the
/// lease is dated from the Hello) is not used: the worker drops that stream
/// before starting anything on it and says Hello again at once.
#[tokio::test]
async fn a_too_late_welcome_is_dropped_for_a_fresh_hello() {
    let mut w = TestWorker::start(|_| {}).await;
    let mut conn = w.next_conn().await;
    conn.hello().await;
    // A 2 s lease and a 0.2 s cancel grace: the watchdog would fire 1 s
    // after the Hello.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    conn.welcome_with(2.0, 0.6, vec![]).await;
    // Assigned with the Welcome, as the scheduler does. The worker may have
    // dropped the stream already, so the send may fail.
    let _ = conn
        .to_worker
        .send(Ok(pb::SchedulerMessage {
            message: Some(ToWorker::Assignment(pb::Assignment {
                task_id: TaskId::new().to_string(),
                attempt: 1,
                func: "sleep".into(),
                kwargs: Some(json_to_struct(json!({"seconds": 5}).as_object().unwrap())),
                ..Default::default()
            })),
        }))
        .await;
    assert_eq!(
        conn.recv().await,
        None,
        "the late session is dropped before anything starts on it"
    );
    drop(conn);

    let mut conn = w.next_conn().await;
    let hello = conn.hello().await;
    assert!(hello.held.is_empty(), "{hello:?}");
    conn.welcome_with(2.0, 0.6, vec![]).await;
    w.health_becomes(ServingStatus::Serving).await;
    conn.assign("sleep", json!({"seconds": 1.5})).await;
    let f = conn.finished().await;
    assert!(matches!(f.outcome, Some(Outcome::Result(_))), "{f:?}");
    conn.ack(&f, tonic::Code::Ok).await;

    w.shutdown.cancel();
    assert!(matches!(conn.recv().await, Some(FromWorker::Draining(_))));
    assert_eq!(conn.recv().await, None);
    drop(conn);
    w.stopped().await;
}

#[tokio::test]
async fn tasks_stop_before_an_unrenewed_lease_lapses() {
    let mut w = TestWorker::start(|_| {}).await;
    let mut conn = w.next_conn().await;
    conn.hello().await;
    conn.welcome_with_ttl(1.0, vec![]).await;
    let id = conn.assign("sleep", json!({"seconds": 60})).await;
    conn.progress().await;

    // The scheduler stops renewing: the worker stops the task and drops
    // the stream, whose lease it must consider lapsed.
    conn.renew = false;
    loop {
        match conn.recv().await {
            None => break,
            Some(FromWorker::Progress(_)) => continue,
            other => panic!("expected the stream to end, got {other:?}"),
        }
    }
    drop(conn);

    let mut conn = w.next_conn().await;
    let hello = conn.hello().await;
    assert_eq!(hello.held.len(), 1);
    conn.welcome(vec![]).await;
    let f = conn.finished().await;
    assert_eq!(f.task_id, id.to_string());
    let Some(Outcome::Error(err)) = &f.outcome else {
        panic!("expected an error: {f:?}");
    };
    assert_eq!(err.reason, "worker lost");
    conn.ack(&f, tonic::Code::Ok).await;

    w.shutdown.cancel();
    assert!(matches!(conn.recv().await, Some(FromWorker::Draining(_))));
    assert_eq!(conn.recv().await, None);
    drop(conn);
    w.stopped().await;
}
