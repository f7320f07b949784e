//! The README's one-command quick start, `pulp-scheduler --spawn-workers 2`,
//! as real processes on a fresh SQLite data directory: the scheduler starts
//! two `pulp-worker` processes that register and run tasks, and a SIGTERM
//! to the scheduler ends them too.

use pulp_common::proto::tasking::v1 as pb;
use pulp_tests::{Process, WAIT, connect_eventually, free_port, state, wait_for_health};
use std::time::Duration;
use tonic_health::pb::health_check_response::ServingStatus;

/// How long after the scheduler exits its workers may take to be gone.
const WORKERS_GONE: Duration = Duration::from_secs(10);

/// What /proc says of a process: its command name, state and parent.
struct ProcStat {
    comm: String,
    state: char,
    ppid: u32,
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    let (head, tail) = text.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_owned();
    let mut fields = tail.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some(ProcStat { comm, state, ppid })
}

/// The processes whose parent is `parent`.
fn children_of(parent: u32) -> Vec<(u32, ProcStat)> {
    std::fs::read_dir("/proc")
        .expect("read /proc")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| proc_stat(pid).map(|stat| (pid, stat)))
        .filter(|(_, stat)| stat.ppid == parent)
        .collect()
}

/// True while `pid` is a live (not zombie) `pulp-worker`; a zombie has
/// exited and only waits for its new parent to reap it.
fn worker_alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|s| s.comm == "pulp-worker" && !matches!(s.state, 'Z' | 'X'))
}

/// Kills the spawned workers still alive when the test ends early, so that a
/// failure leaves no orphan reconnecting forever.
struct Orphans(Vec<u32>);

impl Drop for Orphans {
    fn drop(&mut self) {
        for pid in self.0.iter().copied().filter(|pid| worker_alive(*pid)) {
            let _ = std::process::Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spawn_workers_starts_two_workers_and_sigterm_stops_them() {
    pulp_tests::init_logs();
    let dir = tempfile::tempdir().expect("temporary directory");
    // Not created yet: the scheduler makes it and its SQLite file.
    let data = dir.path().join("data");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let args: Vec<String> = [
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
        data.to_str().expect("utf-8 path"),
        // The default (.pulp/storage) is relative to the current directory.
        "--storage-dir",
        data.join("storage").to_str().expect("utf-8 path"),
        "--spawn-workers",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut scheduler = Process::start("pulp-scheduler", &args, dir.path().join("scheduler.log"));
    let channel = connect_eventually(&url).await;
    wait_for_health(channel.clone(), ServingStatus::Serving).await;
    assert!(
        data.join("pulp.sqlite").is_file(),
        "the default database is a SQLite file in the data directory"
    );

    // The spawned workers register by themselves. ListWorkers has no change
    // stream: re-read it at a short interval, bounded by WAIT.
    let mut workers = pb::workers_client::WorkersClient::new(channel.clone());
    let deadline = tokio::time::Instant::now() + WAIT;
    let listed = loop {
        let listed = workers
            .list_workers(pb::ListWorkersRequest {})
            .await
            .expect("list workers")
            .into_inner()
            .workers;
        let online = listed
            .iter()
            .filter(|w| w.state == pb::WorkerState::Online as i32)
            .count();
        if online == 2 {
            break listed;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "2 workers never came online: {listed:?}\n{}",
            scheduler.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let names: Vec<&str> = listed.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["quickstart-0", "quickstart-1"]);

    let children = children_of(scheduler.pid());
    let worker_pids: Vec<u32> = children
        .iter()
        .filter(|(_, stat)| stat.comm == "pulp-worker")
        .map(|(pid, _)| *pid)
        .collect();
    let _orphans = Orphans(worker_pids.clone());
    assert_eq!(
        worker_pids.len(),
        2,
        "the scheduler's children: {:?}",
        children
            .iter()
            .map(|(pid, s)| (pid, &s.comm))
            .collect::<Vec<_>>()
    );

    let mut tasks = pb::tasks_client::TasksClient::new(channel.clone());
    let task = tasks
        .dispatch(pulp_tests::dispatch_request(
            "sleep",
            serde_json::json!({"seconds": 0.1}),
            &["quickstart"],
            &[],
        ))
        .await
        .expect("dispatch")
        .into_inner();
    let done = pulp_tests::wait_task(&mut tasks, &task.id, pulp_tests::is_final).await;
    assert_eq!(state(&done), pb::TaskState::Completed, "{done:?}");
    assert!(names.contains(&done.worker.as_str()), "{done:?}");
    drop((tasks, workers, channel));

    scheduler.signal("TERM");
    let status = scheduler
        .wait_exit(WAIT)
        .await
        .unwrap_or_else(|| panic!("no exit after SIGTERM:\n{}", scheduler.log_text()));
    assert!(status.success(), "{status}\n{}", scheduler.log_text());
    // The workers were the scheduler's children; once it exited they are
    // re-parented, so their exit is not awaitable here: re-read /proc at a
    // short interval, bounded.
    let deadline = tokio::time::Instant::now() + WORKERS_GONE;
    loop {
        let alive: Vec<u32> = worker_pids
            .iter()
            .copied()
            .filter(|pid| worker_alive(*pid))
            .collect();
        if alive.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "workers {alive:?} still run {WORKERS_GONE:?} after the scheduler exited"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
