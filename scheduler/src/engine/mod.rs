//! The engine: the one owner of scheduling state in a scheduler process.
//!
//! API handlers and worker streams send it [`Command`]s over a channel. It
//! takes every command waiting in the channel as one *round* and applies the
//! round in one database transaction (group commit): dispatches are
//! inserted, outcomes and cancellations stored, newly runnable tasks found
//! through the incremental [`Reservations`](crate::reservations) and
//! assigned to free worker slots. Only after the commit does it answer the
//! callers, push assignments and cancellations down the workers' streams,
//! and publish the changed task ids (for `WatchTask`). A round that fails
//! answers UNAVAILABLE to everyone in it and rebuilds the in-memory state
//! from the database, which stays the single source of truth.
//!
//! Worker liveness is a lease per worker name, renewed by heartbeats; the
//! engine sleeps until the earliest lease deadline (a timer, not a poll), and
//! a lapsed lease fails that worker's tasks ("worker lost") before their
//! resources are released.

mod core;
mod pipeline;

use crate::task::{NewTask, Outcome, Progress, TaskRecord};
use pulp_common::names::{TaskGroupId, TaskId, WorkerName};
use pulp_common::proto::tasking::v1 as pb;
use sea_orm::{DatabaseConnection, DbErr};
use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The sending half of a worker's response stream.
pub type Outbox = mpsc::UnboundedSender<Result<pb::SchedulerMessage, tonic::Status>>;

/// Identifies one worker stream (a reconnect gets a new one).
pub type SessionId = u64;

/// Why the engine refused or could not do something.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// The database is unreachable or the round failed; retry later.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// No such task or group.
    #[error("{0}")]
    NotFound(String),
    /// The request does not fit the current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Another live worker process holds the name.
    #[error("{0}")]
    AlreadyExists(String),
    /// The engine stopped (the scheduler is shutting down).
    #[error("the scheduler is shutting down")]
    ShuttingDown,
}

impl From<DbErr> for EngineError {
    fn from(err: DbErr) -> Self {
        EngineError::Unavailable(err.to_string())
    }
}

/// What a worker said in its Hello, validated.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The worker's name.
    pub name: WorkerName,
    /// Task names it runs.
    pub funcs: Vec<String>,
    /// How many tasks it runs at once.
    pub slots: u32,
    /// Its process instance.
    pub instance_id: String,
    /// Tasks it still runs or holds results of: (task, attempt).
    pub held: Vec<(TaskId, i64)>,
    /// Its software version.
    pub version: String,
}

/// Something a worker sent on its stream after Hello.
#[derive(Debug)]
pub enum WorkerEvent {
    /// Lease renewal.
    Heartbeat,
    /// A progress report.
    Progress {
        /// The task.
        task_id: TaskId,
        /// Its attempt token.
        attempt: i64,
        /// The report.
        report: Progress,
    },
    /// A task ended.
    Finished {
        /// The task.
        task_id: TaskId,
        /// Its attempt token.
        attempt: i64,
        /// How it ended.
        outcome: Outcome,
        /// Names of resources it created.
        created_resources: Vec<String>,
    },
    /// The worker takes no new work.
    Draining,
    /// The stream ended.
    Disconnected,
}

/// A request to the engine.
#[derive(Debug)]
pub(crate) enum Command {
    Dispatch {
        task: Box<NewTask>,
        reply: oneshot::Sender<Result<TaskRecord, EngineError>>,
    },
    Cancel {
        id: TaskId,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    CancelGroup {
        id: TaskGroupId,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    Register {
        registration: Registration,
        outbox: Outbox,
        reply: oneshot::Sender<Result<SessionId, EngineError>>,
    },
    Worker {
        session: SessionId,
        event: WorkerEvent,
    },
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// A worker not heard from for this long is lost.
    pub worker_ttl: Duration,
    /// Most commands applied in one round.
    pub max_round: usize,
    /// The leadership epoch this engine runs under (PostgreSQL replicas):
    /// every round checks it in its transaction and the engine stops once
    /// a newer leader took over. `None` for a standalone scheduler.
    pub epoch: Option<i64>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            worker_ttl: Duration::from_secs(30),
            max_round: 2048,
            epoch: None,
        }
    }
}

/// Func names dispatch accepts: the built-in catalog plus every func a
/// worker has registered.
#[derive(Debug, Clone, Default)]
pub struct KnownFuncs(Arc<RwLock<HashSet<String>>>);

impl KnownFuncs {
    /// True when `func` may be dispatched.
    pub fn contains(&self, func: &str) -> bool {
        pulp_common::catalog::BUILTIN_TASKS.contains(&func)
            || self.0.read().expect("known funcs lock").contains(func)
    }

    pub(crate) fn extend(&self, funcs: impl IntoIterator<Item = String>) {
        self.0.write().expect("known funcs lock").extend(funcs);
    }
}

/// A cloneable handle to the engine task.
#[derive(Debug, Clone)]
pub struct Engine {
    tx: mpsc::Sender<Command>,
    changes: broadcast::Sender<TaskId>,
    funcs: KnownFuncs,
}

impl Engine {
    /// Starts the engine on `db`; it stops when `shutdown` fires.
    pub fn spawn(
        db: DatabaseConnection,
        settings: EngineSettings,
        shutdown: CancellationToken,
    ) -> (Engine, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(16 * 1024);
        let (changes, _) = broadcast::channel(16 * 1024);
        let funcs = KnownFuncs::default();
        let core = core::Core::new(db, settings, rx, changes.clone(), funcs.clone());
        let handle = tokio::spawn(core.run(shutdown));
        (Engine { tx, changes, funcs }, handle)
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, EngineError>>) -> Command,
    ) -> Result<T, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| EngineError::ShuttingDown)?;
        rx.await.map_err(|_| EngineError::ShuttingDown)?
    }

    /// Stores a new task durably and returns it (possibly already RUNNING).
    pub async fn dispatch(&self, task: NewTask) -> Result<TaskRecord, EngineError> {
        self.call(|reply| Command::Dispatch {
            task: Box::new(task),
            reply,
        })
        .await
    }

    /// Cancels a task (see `Tasks.CancelTask`).
    pub async fn cancel(&self, id: TaskId) -> Result<(), EngineError> {
        self.call(|reply| Command::Cancel { id, reply }).await
    }

    /// Cancels every unfinished task of a group and closes the group.
    pub async fn cancel_group(&self, id: TaskGroupId) -> Result<(), EngineError> {
        self.call(|reply| Command::CancelGroup { id, reply }).await
    }

    /// Registers a worker stream; the engine sends Welcome on `outbox`.
    pub async fn register(
        &self,
        registration: Registration,
        outbox: Outbox,
    ) -> Result<SessionId, EngineError> {
        self.call(|reply| Command::Register {
            registration,
            outbox,
            reply,
        })
        .await
    }

    /// Passes on something a worker sent.
    pub async fn worker_event(&self, session: SessionId, event: WorkerEvent) {
        let _ = self.tx.send(Command::Worker { session, event }).await;
    }

    /// Ids of tasks as they change (after each commit).
    pub fn subscribe(&self) -> broadcast::Receiver<TaskId> {
        self.changes.subscribe()
    }

    /// The funcs dispatch accepts.
    pub fn known_funcs(&self) -> &KnownFuncs {
        &self.funcs
    }
}
