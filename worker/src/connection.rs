//! The connection loop: the worker's one owner of state.
//!
//! [`Connection::run`] is a single `select!` loop (biased, shutdown first)
//! that owns everything that outlives one stream: the running tasks (each a
//! runner in a `JoinSet`), the unacknowledged results, the progress buffer,
//! the reconnect state and the drain state. Its events:
//!
//! - a [`Session`] event: an `Assignment` starts a runner (never more than
//!   `slots`), a `CancelAssignment` stops one, a `ResultAck` settles a result
//!   (see [`crate::results`]), a heartbeat tick sends `Heartbeat`, and the
//!   stream's end marks NOT_SERVING and schedules a reconnect;
//! - a runner finished: its pending progress and then its `TaskFinished`
//!   are sent, and the result is kept until acknowledged;
//! - progress reported: pending reports are sent;
//! - the connect attempt finished: after a Welcome, stale held tasks are
//!   stopped, every unacknowledged result is re-sent, health is SERVING;
//! - timers: reconnect backoff (100 ms doubling to 10 s, ±20 %), result
//!   re-send backoff, the lease watchdog, and the drain deadlines.
//!
//! Tasks keep running while the worker is disconnected, but not past its
//! lease (design section 7: a worker that cannot renew its lease stops its
//! tasks before the lease can lapse). The scheduler answers every Heartbeat
//! with `LeaseRenewed`, which means the lease runs at least `ttl` from when
//! that heartbeat was sent; the Hello's send time starts the first lease.
//! The lease watchdog fires `cancel-grace + 2 s` before the last confirmed
//! renewal's `ttl` runs out (but no sooner than half the `ttl`), so that a
//! task that must be aborted is gone before the scheduler may hand its
//! resources to another task. It stops every running task (they end FAILED,
//! "worker lost"), and, if still connected, drops the stream and registers
//! again: the scheduler ignores an expired stream.
//!
//! Shutdown drains: `Draining` is sent and health turns NOT_SERVING; tasks
//! get `shutdown-grace` to finish (their results are still reported); the
//! rest are stopped and end FAILED ("aborted during worker shutdown"); once
//! none runs, their results get up to 5 s to be acknowledged; then the
//! stream is closed and `run` returns.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use pb::scheduler_message::Message as Inbound;
use pb::worker_message::Message as Outbound;
use pulp_common::json::{struct_to_json, value_to_json};
use pulp_common::names::TaskId;
use pulp_common::proto::tasking::v1 as pb;
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;
use tracing::{Instrument, debug, error, info, instrument, warn};

use crate::backoff::Backoff;
use crate::error::{Chain, WorkerError};
use crate::health::Health;
use crate::outcome::{Finished, Outcome, TaskError, reason};
use crate::progress::ProgressHub;
use crate::registry::TaskRegistry;
use crate::results::{Acked, UnackedResults};
use crate::runner::{self, Job, RunnerSettings, StopHandle, StopReason};
use crate::session::{self, Session, SessionEvent, Welcome};

/// How long results may take to be acknowledged once a drain has no
/// running task left.
const ACK_WAIT: Duration = Duration::from_secs(5);
/// A session that lived this long resets the reconnect backoff; shorter
/// ones keep it growing, so a scheduler that drops every stream at once is
/// not hammered.
const STABLE_SESSION: Duration = Duration::from_secs(10);
/// Safety margin of the lease watchdog besides the cancel grace.
const LEASE_MARGIN: Duration = Duration::from_secs(2);

/// The validated settings of one worker instance.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    /// The worker's name.
    pub name: String,
    /// Tasks run at once, at most.
    pub slots: u32,
    /// A random id of this worker instance, the same across reconnects.
    pub instance_id: uuid::Uuid,
    /// The scheduler's addresses (replicas), tried in turn on each
    /// (re)connect; never empty.
    pub endpoints: Vec<Endpoint>,
    /// How long running tasks get to finish on shutdown.
    pub shutdown_grace: Duration,
    /// What every runner needs.
    pub runner: Arc<RunnerSettings>,
}

/// A task this worker runs.
struct Running {
    attempt: i64,
    stop: StopHandle,
    /// The scheduler no longer knows it as ours: drop its outcome.
    discard: bool,
}

/// The lease as the worker sees it.
struct Lease {
    ttl: Duration,
    renewed_at: Instant,
    /// The watchdog already stopped the tasks for this lease.
    expired: bool,
}

/// Shutdown progress.
struct Drain {
    /// When running tasks are stopped.
    deadline: Instant,
    /// The deadline passed and the remaining tasks were stopped.
    forced: bool,
    /// When the worker stops waiting for acknowledgements.
    acks_deadline: Option<Instant>,
}

type Opening = BoxFuture<'static, Result<(Session, Welcome), WorkerError>>;

/// The worker's state and its event loop.
pub(crate) struct Connection {
    setup: Setup,
    registry: TaskRegistry,
    health: Health,
    progress: ProgressHub,
    running: HashMap<TaskId, Running>,
    runners: JoinSet<Finished>,
    runner_tasks: HashMap<tokio::task::Id, TaskId>,
    results: UnackedResults,
    session: Option<Session>,
    opening: Option<Opening>,
    reconnect_at: Option<Instant>,
    reconnect_backoff: Backoff,
    lease: Option<Lease>,
    drain: Option<Drain>,
    /// Connection attempts so far: picks the next endpoint in turn.
    attempts: usize,
}

impl Connection {
    /// A worker that has not connected yet.
    pub fn new(setup: Setup, registry: TaskRegistry, health: Health) -> Connection {
        Connection {
            setup,
            registry,
            health,
            attempts: 0,
            progress: ProgressHub::default(),
            running: HashMap::new(),
            runners: JoinSet::new(),
            runner_tasks: HashMap::new(),
            results: UnackedResults::default(),
            session: None,
            opening: None,
            reconnect_at: None,
            reconnect_backoff: Backoff::reconnect(),
            lease: None,
            drain: None,
        }
    }

    /// Runs until `shutdown` fires and the drain is over.
    #[instrument(name = "worker", skip_all, fields(worker = %self.setup.name))]
    pub async fn run(mut self, shutdown: CancellationToken) {
        self.start_connecting();
        loop {
            if self.drain_complete() {
                break;
            }
            let draining = self.drain.is_some();
            let connected = self.session.is_some();
            let drain_deadline = self
                .drain
                .as_ref()
                .filter(|d| !d.forced)
                .map(|d| d.deadline);
            let acks_deadline = self.drain.as_ref().and_then(|d| d.acks_deadline);
            let resend_at = self.results.next_resend_at().filter(|_| connected);
            let lease_stop_at = self.lease_stop_at();

            tokio::select! {
                biased;
                () = shutdown.cancelled(), if !draining => self.begin_drain(),
                () = sleep_until(drain_deadline) => self.force_drain(),
                () = sleep_until(acks_deadline) => {
                    warn!(unacknowledged = self.results.len(), "gave up waiting for results to be acknowledged");
                    break;
                }
                event = next_session_event(&mut self.session) => self.on_session_event(event),
                Some(joined) = self.runners.join_next_with_id() => self.on_runner_done(joined),
                opened = poll_opening(&mut self.opening) => {
                    self.opening = None;
                    self.on_opened(opened);
                }
                () = self.progress.notified(), if connected => self.flush_progress(),
                () = sleep_until(self.reconnect_at) => self.start_connecting(),
                () = sleep_until(resend_at) => self.resend_due(),
                () = sleep_until(lease_stop_at) => self.on_lease_expiring(),
            }
        }
        self.close().await;
    }

    // ----- connecting -----

    fn start_connecting(&mut self) {
        self.reconnect_at = None;
        let held = self
            .running
            .iter()
            .filter(|(_, r)| !r.discard)
            .map(|(id, r)| (*id, r.attempt))
            .chain(self.results.held())
            .map(|(id, attempt)| pb::HeldTask {
                task_id: id.to_string(),
                attempt,
            })
            .collect();
        let hello = pb::Hello {
            name: self.setup.name.clone(),
            funcs: self.registry.names().map(str::to_owned).collect(),
            slots: self.setup.slots,
            instance_id: self.setup.instance_id.to_string(),
            held,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let endpoint = self.endpoint().clone();
        self.attempts += 1;
        debug!(scheduler = %endpoint.uri(), held = hello.held.len(), "connecting");
        self.opening = Some(Box::pin(session::open(endpoint, hello)));
    }

    /// The endpoint of the current (or latest) connection attempt.
    fn endpoint(&self) -> &Endpoint {
        &self.setup.endpoints[self.attempts % self.setup.endpoints.len()]
    }

    fn on_opened(&mut self, opened: Result<(Session, Welcome), WorkerError>) {
        let (session, welcome) = match opened {
            Ok(opened) => opened,
            Err(err) => return self.schedule_reconnect(err),
        };
        info!(
            scheduler = %self.setup.endpoints[(self.attempts + self.setup.endpoints.len() - 1) % self.setup.endpoints.len()].uri(),
            lease_ttl_s = welcome.lease_ttl.as_secs_f64(),
            heartbeat_s = welcome.heartbeat_interval.as_secs_f64(),
            stale = welcome.stale.len(),
            "connected to the scheduler"
        );
        // The lease is dated from the Hello. A scheduler that held the Hello
        // for long (waiting for its database or for a leader) leaves so
        // little of it that the watchdog would stop the tasks it assigns
        // right now before a heartbeat could renew it. Say Hello again
        // instead: the scheduler requeues what it assigned to this session.
        let handshake = session.hello_at.elapsed();
        if handshake > self.watchdog_wait(welcome.lease_ttl) / 2 {
            warn!(
                handshake_ms = handshake.as_millis() as u64,
                lease_ttl_s = welcome.lease_ttl.as_secs_f64(),
                "the scheduler welcomed this worker too late to rely on the lease; connecting again"
            );
            drop(session);
            self.reconnect_at = Some(Instant::now());
            return;
        }
        self.lease = Some(Lease {
            ttl: welcome.lease_ttl,
            renewed_at: session.hello_at,
            expired: false,
        });
        for held in &welcome.stale {
            self.drop_stale(held);
        }
        self.session = Some(session);
        if self.drain.is_some() {
            self.send(Outbound::Draining(pb::Draining {}));
        } else {
            self.health.set_serving(true);
        }
        for finished in self.results.resend_all() {
            if !self.send(Outbound::Finished(finished)) {
                return;
            }
        }
        self.flush_progress();
    }

    /// Stops a held task the scheduler no longer knows as ours, and drops a
    /// held result it no longer expects.
    fn drop_stale(&mut self, held: &pb::HeldTask) {
        let Ok(task_id) = TaskId::parse(&held.task_id) else {
            warn!(task_id = %held.task_id, "the Welcome named an invalid stale task id");
            return;
        };
        if let Some(running) = self.running.get_mut(&task_id)
            && running.attempt == held.attempt
        {
            warn!(%task_id, attempt = held.attempt, "the scheduler no longer assigns this task here; stopping it");
            running.discard = true;
            running.stop.stop(StopReason::Stale);
        }
        if self.results.forget(task_id, held.attempt) {
            warn!(%task_id, attempt = held.attempt, "dropped a result the scheduler no longer expects");
        }
    }

    fn session_lost(&mut self, err: WorkerError) {
        let Some(session) = self.session.take() else {
            return;
        };
        self.health.set_serving(false);
        if session.opened_at.elapsed() >= STABLE_SESSION {
            self.reconnect_backoff.reset();
        }
        drop(session);
        self.schedule_reconnect(err);
    }

    fn schedule_reconnect(&mut self, err: WorkerError) {
        let permanent = err.is_permanent();
        if permanent {
            // Retrying at once will not help; an operator may fix it, so
            // keep trying, slowly.
            self.reconnect_backoff.exhaust();
        }
        let delay = self.reconnect_backoff.next_delay();
        let retry_in_ms = delay.as_millis() as u64;
        let running = self.running.len();
        if permanent {
            error!(error = %Chain(&err), retry_in_ms, running, "the scheduler refused this worker");
        } else {
            warn!(error = %Chain(&err), retry_in_ms, running, "no connection to the scheduler; reconnecting");
        }
        self.reconnect_at = Some(Instant::now() + delay);
    }

    /// Queues a message on the current session; false (and the session is
    /// given up) when that fails, false when there is no session.
    fn send(&mut self, message: Outbound) -> bool {
        let Some(session) = &self.session else {
            return false;
        };
        match session.send(message) {
            Ok(()) => true,
            Err(err) => {
                self.session_lost(err);
                false
            }
        }
    }

    // ----- inbound -----

    fn on_session_event(&mut self, event: SessionEvent) {
        match event {
            SessionEvent::Message(Inbound::Welcome(_)) => warn!("ignored a second Welcome"),
            SessionEvent::Message(Inbound::Assignment(assignment)) => {
                self.on_assignment(assignment)
            }
            SessionEvent::Message(Inbound::Cancel(cancel)) => self.on_cancel(&cancel),
            SessionEvent::Message(Inbound::ResultAck(ack)) => self.on_ack(&ack),
            SessionEvent::Message(Inbound::LeaseRenewed(renewed)) => {
                self.on_lease_renewed(&renewed)
            }
            SessionEvent::Unknown => debug!("ignored a scheduler message of an unknown kind"),
            SessionEvent::Heartbeat => {
                let sent = self.session.as_mut().map(Session::send_heartbeat);
                if let Some(Err(err)) = sent {
                    self.session_lost(err);
                }
            }
            SessionEvent::Ended(err) => self.session_lost(err),
        }
    }

    fn on_assignment(&mut self, assignment: pb::Assignment) {
        let Ok(task_id) = TaskId::parse(&assignment.task_id) else {
            error!(task_id = %assignment.task_id, "ignored an assignment with an invalid task id");
            return;
        };
        let attempt = assignment.attempt;
        let func = assignment.func;
        if let Some(running) = self.running.get(&task_id) {
            warn!(%task_id, attempt, running_attempt = running.attempt, "ignored an assignment of a task already running here");
            return;
        }
        let slots = self.setup.slots;
        // Tasks the scheduler declared stale are stopping and no longer
        // count as its assignments.
        let busy = self.running.values().filter(|r| !r.discard).count();
        if busy >= slots as usize {
            warn!(%task_id, attempt, %func, slots, "refused an assignment beyond this worker's slots");
            let description = format!(
                "worker {} has no free slot: all {slots} are busy",
                self.setup.name
            );
            return self.report_refusal(task_id, attempt, reason::NO_FREE_SLOT, description);
        }
        let Some(task) = self.registry.get(&func).cloned() else {
            warn!(%task_id, attempt, %func, "refused an assignment of a task this worker does not offer");
            let description = format!(
                "worker {} does not offer the task {func:?}",
                self.setup.name
            );
            return self.report_refusal(task_id, attempt, reason::UNKNOWN_TASK, description);
        };
        let job = Job {
            task_id,
            attempt,
            func,
            task,
            args: assignment
                .args
                .map(|list| list.values.iter().map(value_to_json).collect())
                .unwrap_or_default(),
            kwargs: assignment
                .kwargs
                .as_ref()
                .map(struct_to_json)
                .unwrap_or_default(),
            timeout_seconds: assignment.timeout_seconds,
        };
        let stop = StopHandle::default();
        if self.drain.as_ref().is_some_and(|d| d.forced) {
            stop.stop(StopReason::Shutdown);
        }
        // The runner's span is a child of this worker's span.
        let handle = self.runners.spawn(
            runner::run(
                job,
                self.setup.runner.clone(),
                self.progress.clone(),
                stop.clone(),
            )
            .in_current_span(),
        );
        self.runner_tasks.insert(handle.id(), task_id);
        self.running.insert(
            task_id,
            Running {
                attempt,
                stop,
                discard: false,
            },
        );
    }

    fn report_refusal(&mut self, task_id: TaskId, attempt: i64, why: &str, description: String) {
        self.report(Finished {
            task_id,
            attempt,
            outcome: Outcome::Failed(TaskError::new(why, description)),
            created_resources: Vec::new(),
        });
    }

    fn on_cancel(&mut self, cancel: &pb::CancelAssignment) {
        let Ok(task_id) = TaskId::parse(&cancel.task_id) else {
            warn!(task_id = %cancel.task_id, "ignored a cancel with an invalid task id");
            return;
        };
        match self.running.get(&task_id) {
            Some(running) if running.attempt == cancel.attempt => {
                if running.stop.stop(StopReason::Canceled) {
                    info!(%task_id, attempt = cancel.attempt, "cancelling the task");
                }
            }
            Some(running) => debug!(
                %task_id, attempt = cancel.attempt, running_attempt = running.attempt,
                "ignored a cancel of another attempt"
            ),
            None => {
                debug!(%task_id, attempt = cancel.attempt, "ignored a cancel of a task not running here")
            }
        }
    }

    fn on_ack(&mut self, ack: &pb::ResultAck) {
        let Ok(task_id) = TaskId::parse(&ack.task_id) else {
            warn!(task_id = %ack.task_id, "ignored an acknowledgement with an invalid task id");
            return;
        };
        let attempt = ack.attempt;
        match self.results.ack(task_id, attempt, ack.code, Instant::now()) {
            Some(Acked::Stored) => debug!(%task_id, attempt, "result stored"),
            Some(Acked::Refused(code)) => warn!(
                %task_id, attempt, ?code, message = %ack.message,
                "the scheduler refused the result; forgetting it"
            ),
            Some(Acked::Retry(code, delay)) => warn!(
                %task_id, attempt, ?code, message = %ack.message, retry_in_ms = delay.as_millis() as u64,
                "the scheduler could not store the result; will send it again"
            ),
            None => debug!(%task_id, attempt, "ignored an acknowledgement of a result not held"),
        }
    }

    // ----- outbound -----

    fn on_runner_done(&mut self, joined: Result<(tokio::task::Id, Finished), JoinError>) {
        let finished = match joined {
            Ok((id, finished)) => {
                self.runner_tasks.remove(&id);
                finished
            }
            Err(err) => {
                // The runner catches the task's panics; this is a bug in
                // the runner itself. Fail the task rather than lose it.
                let Some(task_id) = self.runner_tasks.remove(&err.id()) else {
                    error!(error = %err, "an unknown task runner failed");
                    return;
                };
                error!(%task_id, error = %err, "the task runner failed");
                let attempt = self.running.get(&task_id).map_or(0, |r| r.attempt);
                Finished {
                    task_id,
                    attempt,
                    outcome: Outcome::Failed(TaskError::new(
                        reason::WORKER_ERROR,
                        format!("the worker's runner for this task failed: {err}"),
                    )),
                    created_resources: Vec::new(),
                }
            }
        };
        let Some(running) = self.running.remove(&finished.task_id) else {
            error!(task_id = %finished.task_id, "a runner finished a task that was not running");
            return;
        };
        let progress = self.progress.take_task(finished.task_id, finished.attempt);
        if running.discard {
            info!(task_id = %finished.task_id, "dropped the outcome of a task no longer assigned here");
            return;
        }
        for pending in progress {
            if !self.send(Outbound::Progress(pending.into_proto())) {
                break;
            }
        }
        self.report(finished);
    }

    /// Keeps the result until acknowledged and sends it if connected.
    fn report(&mut self, finished: Finished) {
        let message = finished.to_proto();
        self.results
            .insert(finished.task_id, finished.attempt, message.clone());
        self.send(Outbound::Finished(message));
    }

    fn flush_progress(&mut self) {
        for pending in self.progress.take_all() {
            let current = self
                .running
                .get(&pending.task_id)
                .is_some_and(|r| r.attempt == pending.attempt && !r.discard);
            if current && !self.send(Outbound::Progress(pending.into_proto())) {
                return;
            }
        }
    }

    fn resend_due(&mut self) {
        for finished in self.results.take_due(Instant::now()) {
            debug!(task_id = %finished.task_id, attempt = finished.attempt, "sending a result again");
            if !self.send(Outbound::Finished(finished)) {
                return;
            }
        }
    }

    // ----- lease -----

    fn on_lease_renewed(&mut self, renewed: &pb::LeaseRenewed) {
        let Some(sent_at) = self.session.as_mut().and_then(Session::lease_renewed) else {
            debug!("ignored a LeaseRenewed that answers no heartbeat");
            return;
        };
        if let Some(lease) = &mut self.lease {
            lease.renewed_at = lease.renewed_at.max(sent_at);
            lease.expired = false;
            if renewed.lease_ttl_seconds > 0.0
                && let Ok(ttl) = Duration::try_from_secs_f64(renewed.lease_ttl_seconds)
            {
                lease.ttl = ttl;
            }
        }
    }

    /// When the lease watchdog fires: while tasks run, or while connected
    /// (an expired stream must be replaced).
    fn lease_stop_at(&self) -> Option<Instant> {
        let lease = self.lease.as_ref()?;
        if lease.expired || (self.session.is_none() && self.running.is_empty()) {
            return None;
        }
        Some(lease.renewed_at + self.watchdog_wait(lease.ttl))
    }

    /// How long after a confirmed renewal the watchdog fires for a lease of
    /// `ttl`: early enough for a task to be stopped (cancel grace) before
    /// the lease can lapse, but not before half the lease.
    fn watchdog_wait(&self, ttl: Duration) -> Duration {
        let margin = self.setup.runner.cancel_grace + LEASE_MARGIN;
        ttl.checked_sub(margin)
            .filter(|wait| *wait >= ttl / 2)
            .unwrap_or(ttl / 2)
    }

    fn on_lease_expiring(&mut self) {
        if let Some(lease) = &mut self.lease {
            lease.expired = true;
        }
        let mut stopped = 0;
        for running in self.running.values() {
            if running.stop.stop(StopReason::LeaseLost) {
                stopped += 1;
            }
        }
        error!(
            stopped,
            "the lease with the scheduler was not renewed in time; stopped the running tasks before it lapses"
        );
        self.session_lost(WorkerError::LeaseNotRenewed);
    }

    // ----- shutdown -----

    fn begin_drain(&mut self) {
        info!(
            running = self.running.len(),
            grace_s = self.setup.shutdown_grace.as_secs_f64(),
            "shutting down: finishing running tasks"
        );
        self.drain = Some(Drain {
            deadline: Instant::now() + self.setup.shutdown_grace,
            forced: false,
            acks_deadline: None,
        });
        self.health.set_serving(false);
        self.send(Outbound::Draining(pb::Draining {}));
    }

    fn force_drain(&mut self) {
        if let Some(drain) = &mut self.drain {
            drain.forced = true;
        }
        let mut stopped = 0;
        for running in self.running.values() {
            if running.stop.stop(StopReason::Shutdown) {
                stopped += 1;
            }
        }
        if stopped > 0 {
            warn!(
                stopped,
                "shutdown grace is over; stopping the remaining tasks"
            );
        }
    }

    /// True when draining, nothing runs and every result is acknowledged.
    fn drain_complete(&mut self) -> bool {
        let Some(drain) = &mut self.drain else {
            return false;
        };
        if !self.running.is_empty() {
            drain.acks_deadline = None;
            return false;
        }
        if self.results.is_empty() {
            return true;
        }
        drain
            .acks_deadline
            .get_or_insert_with(|| Instant::now() + ACK_WAIT);
        false
    }

    async fn close(mut self) {
        self.health.set_serving(false);
        self.opening = None;
        if let Some(session) = self.session.take() {
            session.close().await;
        }
        // Nothing should run by now; make sure nothing outlives `run`.
        self.runners.shutdown().await;
        info!("disconnected from the scheduler");
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn next_session_event(session: &mut Option<Session>) -> SessionEvent {
    match session {
        Some(session) => session.next_event().await,
        None => std::future::pending().await,
    }
}

async fn poll_opening(opening: &mut Option<Opening>) -> Result<(Session, Welcome), WorkerError> {
    match opening {
        Some(opening) => opening.await,
        None => std::future::pending().await,
    }
}
