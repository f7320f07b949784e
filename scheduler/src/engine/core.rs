//! The engine's loop and state: rounds, assignment, leases, rebuild.
//!
//! Memory is changed while a round's transaction is open; the replies and
//! messages that make those changes visible wait in [`Effects`] until the
//! commit. If the round fails, nothing is sent (callers get UNAVAILABLE,
//! results are acknowledged with UNAVAILABLE so workers re-send them) and
//! the state is rebuilt from the database.
//!
//! On PostgreSQL rounds run in a [`Pipeline`]: a round's commit runs while
//! the engine gathers and decides the next, and a round of plain dispatches
//! (new rows only, numbered from the `tasks` sequence beforehand) is written
//! entirely by a task of its own ([`Core::dispatch_round`]), up to
//! [`IN_FLIGHT`] at once. Every other round first waits for the rounds in
//! flight ([`Core::settle`]): its transaction reads and updates rows they
//! wrote. SQLite has one writer, so there every round commits before the
//! next begins.

use super::pipeline::{DispatchWrite, Pipeline, RoundError};
use super::{
    Command, EngineError, EngineSettings, KnownFuncs, Outbox, Registration, SessionId, WorkerEvent,
};
use crate::metrics::{self, Transition};
use crate::reservations::Reservations;
use crate::store::{groups, tasks, workers};
use crate::task::{NewTask, Outcome, Progress, TaskFailure, TaskRecord};
use pulp_common::json;
use pulp_common::names::{ResourceClaims, ResourceName, TaskId};
use pulp_common::proto::tasking::v1 as pb;
use pulp_common::state::TaskState;
use pulp_common::time::now_micros;
use sea_orm::{
    DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, SqliteTransactionMode,
    TransactionOptions, TransactionTrait,
};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The longest a round waits for more commands ([`Core::gather`]).
const GATHER: Duration = Duration::from_millis(1);
/// Rounds smaller than this are not followed by a gathering wait.
const GATHER_FROM: usize = 4;
/// Most dispatch rounds in flight when the engine decides another
/// (PostgreSQL). With one, a round is written while the engine gathers the
/// next. Two and four were measured slower (pulp-bench dispatch, 32
/// clients, this 2-core machine: rounds of 10 instead of 20-30 commands,
/// whose extra statements cost PostgreSQL more CPU than the overlap saved).
const IN_FLIGHT: usize = 1;
/// Seqs taken from the `tasks` sequence at a time for dispatch rounds.
const SEQ_BLOCK: usize = 1024;

/// gRPC code numbers used in ResultAck.
const CODE_OK: i32 = 0;
const CODE_NOT_FOUND: i32 = 5;
const CODE_FAILED_PRECONDITION: i32 = 9;
const CODE_UNAVAILABLE: i32 = 14;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Waiting,
    Running { worker: String },
    Canceling { worker: String },
}

impl Phase {
    fn state(&self) -> TaskState {
        match self {
            Phase::Waiting => TaskState::Waiting,
            Phase::Running { .. } => TaskState::Running,
            Phase::Canceling { .. } => TaskState::Canceling,
        }
    }

    fn worker(&self) -> Option<&str> {
        match self {
            Phase::Waiting => None,
            Phase::Running { worker } | Phase::Canceling { worker } => Some(worker),
        }
    }
}

/// An unfinished task in memory.
#[derive(Debug)]
struct LiveTask {
    id: TaskId,
    func: Arc<str>,
    args: Arc<str>,
    kwargs: Arc<str>,
    claims: ResourceClaims,
    group: Option<String>,
    parent: Option<String>,
    timeout_ms: Option<i64>,
    attempt: i64,
    phase: Phase,
    created_at: i64,
    unblocked_at: Option<i64>,
    started_at: Option<i64>,
}

struct Session {
    id: SessionId,
    name: String,
    instance_id: String,
    funcs: Vec<Arc<str>>,
    slots: usize,
    draining: bool,
    outbox: Outbox,
}

/// Where a caller waits for its answer.
type Reply<T> = oneshot::Sender<Result<T, EngineError>>;
/// An answer decided during a round, sent after its commit.
type Pending<T> = (Reply<T>, Result<T, EngineError>);

/// Replies and messages of a round, delivered after its commit.
#[derive(Default)]
struct Effects {
    dispatched: Vec<(i64, oneshot::Sender<Result<TaskRecord, EngineError>>)>,
    refused_dispatches: Vec<(
        oneshot::Sender<Result<TaskRecord, EngineError>>,
        EngineError,
    )>,
    units: Vec<Pending<()>>,
    sessions: Vec<Pending<SessionId>>,
    registered: Vec<SessionId>,
    acks: Vec<(Outbox, pb::ResultAck)>,
    messages: Vec<(Outbox, pb::SchedulerMessage)>,
    closes: Vec<(Outbox, tonic::Status)>,
    changed: Vec<TaskId>,
    progress: HashMap<(i64, String), Progress>,
    /// State changes, logged and counted after the commit.
    transitions: Vec<Transition>,
}

/// A decided round: what it answers once its outcome is known.
struct Applied {
    effects: Effects,
    commands: usize,
    started: std::time::Instant,
}

pub(super) struct Core {
    db: DatabaseConnection,
    settings: EngineSettings,
    rx: mpsc::Receiver<Command>,
    changes: broadcast::Sender<TaskId>,
    funcs: KnownFuncs,

    /// Boxed: a hash table of 100,000 tasks keeps its empty slots and,
    /// while it grows, two copies of itself; slots of a pointer keep that
    /// small (the bench backlog scenario: peak RSS 193 MB unboxed, 132 MB
    /// boxed, on SQLite).
    tasks: HashMap<i64, Box<LiveTask>>,
    ids: HashMap<TaskId, i64>,
    reservations: Reservations,
    /// Runnable WAITING tasks by func, in dispatch order.
    ready: HashMap<Arc<str>, BTreeSet<i64>>,
    /// Newly runnable tasks whose `unblocked_at` is not stored yet.
    unblocked: Vec<i64>,
    /// RUNNING/CANCELING tasks per worker name.
    held: HashMap<String, HashSet<i64>>,
    sessions: HashMap<String, Session>,
    session_names: HashMap<SessionId, String>,
    next_session: SessionId,
    /// Lease deadlines per worker name (connected, or holding tasks).
    leases: HashMap<String, Instant>,
    /// The process instance each worker name last registered with.
    instances: HashMap<String, String>,
    heartbeats: HashSet<String>,
    /// Tasks ended in memory this round whose rows are not updated yet:
    /// stored together in one statement ([`Core::flush_endings`]).
    endings: Vec<tasks::Ending>,
    /// Rounds in flight (PostgreSQL only).
    pipeline: Pipeline<Applied>,
    /// Seqs taken from the `tasks` sequence, not used yet (PostgreSQL).
    seqs: VecDeque<i64>,
    /// The in-memory state must be rebuilt before the next round. Never
    /// set while rounds are in flight (a failure settles them first).
    stale: bool,
    /// A newer leader took over: this engine must stop.
    fenced: bool,
}

impl Core {
    pub(super) fn new(
        db: DatabaseConnection,
        settings: EngineSettings,
        rx: mpsc::Receiver<Command>,
        changes: broadcast::Sender<TaskId>,
        funcs: KnownFuncs,
    ) -> Self {
        Core {
            db,
            settings,
            rx,
            changes,
            funcs,
            tasks: HashMap::new(),
            ids: HashMap::new(),
            reservations: Reservations::new(),
            ready: HashMap::new(),
            unblocked: Vec::new(),
            held: HashMap::new(),
            sessions: HashMap::new(),
            session_names: HashMap::new(),
            next_session: 1,
            leases: HashMap::new(),
            instances: HashMap::new(),
            heartbeats: HashSet::new(),
            endings: Vec::new(),
            pipeline: Pipeline::new(),
            seqs: VecDeque::new(),
            stale: true,
            fenced: false,
        }
    }

    pub(super) async fn run(mut self, shutdown: CancellationToken) {
        if let Err(err) = self.rebuild().await {
            warn!(error = %err, "cannot load the task state yet; will retry");
        }
        let mut batch = Vec::with_capacity(self.settings.max_round);
        let mut last_round = 0;
        loop {
            let lease_deadline = self.leases.values().min().copied();
            // While the state is stale, retry the rebuild once a second.
            let retry = self.stale.then(|| Instant::now() + Duration::from_secs(1));
            let wake = [lease_deadline, retry].into_iter().flatten().min();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                received = self.rx.recv_many(&mut batch, self.settings.max_round) => {
                    if received == 0 {
                        break;
                    }
                }
                (result, round) = self.pipeline.next() => {
                    self.committed(result, round).await;
                    continue;
                }
                _ = sleep_until(wake) => {}
            }
            self.gather(&mut batch, last_round).await;
            last_round = batch.len();
            self.round(std::mem::take(&mut batch)).await;
            if self.fenced {
                warn!("a newer leader took over: stopping this engine");
                break;
            }
        }
        let _ = self.settle().await;
        for session in self.sessions.values() {
            let _ = session.outbox.send(Err(tonic::Status::unavailable(
                "the scheduler is shutting down",
            )));
        }
        info!("engine stopped");
    }

    /// Under load, waits briefly for the rest of a round. Callers answered
    /// by the last round send their next commands a moment after its
    /// commit; a round that started on the first of them would leave the
    /// others to wait for the round after (a convoy that halves the batch).
    /// So when the last round was busy and this one is smaller, it waits
    /// up to [`GATHER`] for as many commands as the last round had. An idle
    /// system (one command at a time) never waits.
    async fn gather(&mut self, batch: &mut Vec<Command>, last_round: usize) {
        if last_round < GATHER_FROM || batch.is_empty() {
            return;
        }
        let deadline = Instant::now() + GATHER;
        while batch.len() < last_round.min(self.settings.max_round) {
            let room = self.settings.max_round - batch.len();
            tokio::select! {
                biased;
                received = self.rx.recv_many(batch, room) => {
                    if received == 0 {
                        return;
                    }
                }
                // The round before committed: answer its callers now,
                // some of them may still make this round.
                (result, round) = self.pipeline.next() => self.committed(result, round).await,
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    /// Answers the oldest round in flight by its outcome (from
    /// [`Pipeline::next`]); after a failure, the rest of the pipeline too,
    /// and rebuilds the state.
    async fn committed(&mut self, result: Result<(), RoundError>, round: Applied) {
        if self.finish(round, result).is_err() {
            self.recover().await;
        }
    }

    /// After a failed round: answers the rest of the rounds in flight, then
    /// rebuilds the state from the database (retried later if it is down).
    async fn recover(&mut self) {
        let _ = self.settle().await;
        if let Err(err) = self.rebuild().await {
            warn!(error = %err, "cannot rebuild the state yet; will retry");
        }
    }

    /// Waits for every round in flight and answers each: its effects if it
    /// committed; UNAVAILABLE and a stale state (and an error) if not.
    async fn settle(&mut self) -> Result<(), RoundError> {
        let mut outcome = Ok(());
        while !self.pipeline.is_empty() {
            let (result, round) = self.pipeline.next().await;
            if let Err(err) = self.finish(round, result) {
                outcome = outcome.and(Err(err));
            }
        }
        outcome
    }

    /// Answers a round by its outcome.
    fn finish(&mut self, round: Applied, result: Result<(), RoundError>) -> Result<(), RoundError> {
        match result {
            Ok(()) => {
                debug!(
                    commands = round.commands,
                    micros = round.started.elapsed().as_micros() as u64,
                    "round committed"
                );
                self.deliver(round.effects);
                Ok(())
            }
            Err(err) => {
                warn!(error = %err, "round failed; rebuilding the state from the database");
                if let RoundError::Fenced = err {
                    self.fenced = true;
                }
                for id in &round.effects.registered {
                    if let Some(name) = self.session_names.remove(id) {
                        self.sessions.remove(&name);
                    }
                }
                self.stale = true;
                self.deliver_failure(round.effects, &err.to_string());
                Err(err)
            }
        }
    }

    /// True when `batch` can be a pipelined [`dispatch_round`](Self::dispatch_round):
    /// PostgreSQL, plain dispatches only (no group to check), and nothing
    /// pending that writes rows of other rounds.
    fn is_dispatch_round(&self, batch: &[Command]) -> bool {
        let now = Instant::now();
        self.db.get_database_backend() == DbBackend::Postgres
            && !self.stale
            && batch.iter().all(|command| {
                matches!(command, Command::Dispatch { task, .. } if task.task_group_id.is_none())
            })
            && self.endings.is_empty()
            && self.unblocked.is_empty()
            && self.heartbeats.is_empty()
            && self.leases.values().all(|deadline| *deadline > now)
    }

    async fn begin(&self) -> Result<DatabaseTransaction, DbErr> {
        let options = TransactionOptions {
            sqlite_transaction_mode: (self.db.get_database_backend() == DbBackend::Sqlite)
                .then_some(SqliteTransactionMode::Immediate),
            ..Default::default()
        };
        self.db.begin_with_options(options).await
    }

    /// Applies one round of commands in one transaction.
    async fn round(&mut self, batch: Vec<Command>) {
        if self.is_dispatch_round(&batch) {
            if self.pipeline.holds_commit() {
                // This round relies on that one's changes.
                let _ = self.settle().await;
            }
            while self.pipeline.len() >= IN_FLIGHT {
                let (result, round) = self.pipeline.next().await;
                self.committed(result, round).await;
            }
            if !self.stale {
                return self.dispatch_round(batch).await;
            }
        }
        // This round reads and writes rows the rounds in flight wrote. A
        // failure among them is answered, and the state rebuilt, below.
        let _ = self.settle().await;
        if self.stale
            && let Err(err) = self.rebuild().await
        {
            debug!(error = %err, "database still unavailable");
            let mut effects = Effects::default();
            for command in batch {
                self.refuse(command, &mut effects);
            }
            self.deliver_failure(effects, &err.to_string());
            return;
        }
        let mut effects = Effects::default();
        let commands = batch.len();
        let started = std::time::Instant::now();
        let result = self.apply_round(batch, &mut effects).await;
        let round = Applied {
            effects,
            commands,
            started,
        };
        let result = match result {
            Ok(txn) if self.db.get_database_backend() == DbBackend::Postgres => {
                return self.pipeline.commit(txn, round);
            }
            Ok(txn) => txn.commit().await.map_err(RoundError::from),
            Err(err) => Err(err.into()),
        };
        if self.finish(round, result).is_err() {
            self.recover().await;
        }
    }

    /// A round of plain dispatches (PostgreSQL): decided in memory now, on
    /// seqs taken from the `tasks` sequence beforehand, and written by the
    /// [`Pipeline`] while the engine goes on. Its tasks go after every task
    /// of the rounds in flight, as they would in one round; a task may
    /// start at once on a free slot, but only its own tasks can: every
    /// round ends by assigning all it can, and a dispatch frees no slot.
    async fn dispatch_round(&mut self, batch: Vec<Command>) {
        let started = std::time::Instant::now();
        let commands = batch.len();
        let mut effects = Effects::default();
        let seqs = match self.take_seqs(commands).await {
            Ok(seqs) => seqs,
            Err(err) => {
                for command in batch {
                    self.refuse(command, &mut effects);
                }
                return self.deliver_failure(effects, &err.to_string());
            }
        };
        let now = now_micros();
        let (tasks, replies): (Vec<NewTask>, Vec<_>) = batch
            .into_iter()
            .map(|command| match command {
                Command::Dispatch { task, reply } => (*task, reply),
                _ => unreachable!("a dispatch round holds dispatches only"),
            })
            .unzip();
        let claims: Vec<&ResourceClaims> = tasks.iter().map(|t| &t.claims).collect();
        let unblocked = self.reservations.admits_at_tail(&claims);
        let insert = tasks::PgInsert::new(&tasks, &seqs, &unblocked, now, self.settings.epoch);
        let decided = self
            .remember_dispatches(tasks, seqs.clone(), replies, unblocked, now, &mut effects)
            .and_then(|()| {
                let picks = self.pick();
                let own: HashSet<i64> = seqs.into_iter().collect();
                if picks.values().flatten().any(|seq| !own.contains(seq)) {
                    return Err(DbErr::Custom(
                        "a dispatch round would assign a task of another round".into(),
                    ));
                }
                Ok(self.start_picked(picks, now, &mut effects))
            });
        let round = Applied {
            effects,
            commands,
            started,
        };
        match decided {
            Ok(assigned) => {
                let write = DispatchWrite {
                    insert,
                    assigned,
                    now,
                };
                self.pipeline.write(self.db.clone(), write, round);
            }
            Err(err) => {
                // Rounds are answered in order: those in flight first.
                let _ = self.settle().await;
                let _ = self.finish(round, Err(err.into()));
                self.recover().await;
            }
        }
    }

    /// Runs a round's statements; the caller commits the transaction.
    async fn apply_round(
        &mut self,
        batch: Vec<Command>,
        effects: &mut Effects,
    ) -> Result<DatabaseTransaction, DbErr> {
        let txn = self.begin().await?;
        if let Some(epoch) = self.settings.epoch
            && !crate::cluster::epoch_is_current(&txn, epoch).await?
        {
            self.fenced = true;
            return Err(DbErr::Custom(format!(
                "leadership epoch {epoch} is no longer current"
            )));
        }
        let now = now_micros();
        self.endings.clear();
        self.expire_leases(&txn, now, effects).await?;
        let mut dispatches = Vec::new();
        for command in batch {
            // Cancellation and registration read task rows: store the
            // endings decided so far first.
            if matches!(
                command,
                Command::Cancel { .. } | Command::CancelGroup { .. } | Command::Register { .. }
            ) {
                self.flush_endings(&txn, now).await?;
            }
            match command {
                Command::Dispatch { task, reply } => dispatches.push((*task, reply)),
                Command::Cancel { id, reply } => {
                    let result = self.cancel(&txn, id, now, effects).await?;
                    effects.units.push((reply, result));
                }
                Command::CancelGroup { id, reply } => {
                    let seqs: Vec<i64> = self
                        .tasks
                        .iter()
                        .filter(|(_, t)| t.group.as_deref() == Some(&id.to_string()))
                        .map(|(seq, _)| *seq)
                        .collect();
                    for seq in seqs {
                        let task_id = self.tasks[&seq].id;
                        // A task that just ended needs no cancelling: ignore refusals.
                        let _ = self.cancel(&txn, task_id, now, effects).await?;
                    }
                    groups::finish(&txn, id).await?;
                    effects.units.push((reply, Ok(())));
                }
                Command::Register {
                    registration,
                    outbox,
                    reply,
                } => {
                    let result = self
                        .register(&txn, registration, outbox, now, effects)
                        .await?;
                    effects.sessions.push((reply, result));
                }
                Command::Worker { session, event } => {
                    self.worker_event(&txn, session, event, now, effects)
                        .await?;
                }
            }
        }
        self.flush_endings(&txn, now).await?;
        if !dispatches.is_empty() {
            self.insert_dispatches(&txn, dispatches, now, effects)
                .await?;
        }
        if !effects.progress.is_empty() {
            let reports: Vec<(i64, Progress)> = effects
                .progress
                .drain()
                .map(|((seq, _), report)| (seq, report))
                .collect();
            tasks::upsert_progress(&txn, &reports, now).await?;
        }
        if !self.heartbeats.is_empty() {
            let names: Vec<String> = self.heartbeats.drain().collect();
            workers::touch(&txn, &names, now).await?;
        }
        self.assign(&txn, now, effects).await?;
        Ok(txn)
    }

    /// Sends everything a committed round produced.
    fn deliver(&mut self, effects: Effects) {
        for (seq, reply) in effects.dispatched {
            let record = self.tasks.get(&seq).map(|t| live_record(seq, t));
            let _ =
                reply.send(record.ok_or_else(|| EngineError::Unavailable("task vanished".into())));
        }
        for (reply, err) in effects.refused_dispatches {
            let _ = reply.send(Err(err));
        }
        for (reply, result) in effects.units {
            let _ = reply.send(result);
        }
        for (reply, result) in effects.sessions {
            let _ = reply.send(result);
        }
        for (outbox, message) in effects.messages {
            let _ = outbox.send(Ok(message));
        }
        for (outbox, ack) in effects.acks {
            let _ = outbox.send(Ok(message(pb::scheduler_message::Message::ResultAck(ack))));
        }
        for (outbox, status) in effects.closes {
            let _ = outbox.send(Err(status));
        }
        for id in effects.changed {
            let _ = self.changes.send(id);
        }
        for t in &effects.transitions {
            metrics::transition(t);
        }
        metrics::workers_connected(self.sessions.len());
    }

    /// Answers a failed round: UNAVAILABLE everywhere, nothing else sent.
    fn deliver_failure(&mut self, effects: Effects, why: &str) {
        let err = || EngineError::Unavailable(why.to_owned());
        for (_, reply) in effects.dispatched {
            let _ = reply.send(Err(err()));
        }
        for (reply, _) in effects.refused_dispatches {
            let _ = reply.send(Err(err()));
        }
        for (reply, _) in effects.units {
            let _ = reply.send(Err(err()));
        }
        for (reply, _) in effects.sessions {
            let _ = reply.send(Err(err()));
        }
        for (outbox, mut ack) in effects.acks {
            ack.code = CODE_UNAVAILABLE;
            ack.message = format!("not stored, retry: {why}");
            let _ = outbox.send(Ok(message(pb::scheduler_message::Message::ResultAck(ack))));
        }
    }

    /// Answers a command without touching the database (it is down).
    fn refuse(&mut self, command: Command, effects: &mut Effects) {
        let err = EngineError::Unavailable("the database is unavailable".into());
        match command {
            Command::Dispatch { reply, .. } => effects.refused_dispatches.push((reply, err)),
            Command::Cancel { reply, .. } | Command::CancelGroup { reply, .. } => {
                effects.units.push((reply, Err(err)))
            }
            Command::Register { reply, .. } => effects.sessions.push((reply, Err(err))),
            Command::Worker { session, event } => match event {
                WorkerEvent::Finished {
                    task_id, attempt, ..
                } => {
                    if let Some(outbox) = self.outbox_of(session) {
                        effects
                            .acks
                            .push((outbox, ack(task_id, attempt, CODE_UNAVAILABLE, "")));
                    }
                }
                WorkerEvent::Disconnected => self.disconnect(session),
                WorkerEvent::Heartbeat => {
                    // The worker is alive even if the database is not. A
                    // failed round drops its messages: answer now.
                    if let Some((outbox, renewed)) = self.renew(session) {
                        let _ = outbox.send(Ok(renewed));
                    }
                }
                WorkerEvent::Progress { .. } | WorkerEvent::Draining => {}
            },
        }
    }

    /// Loads every unfinished task from the database and recomputes the
    /// reservations, the ready queues and the tasks held per worker.
    async fn rebuild(&mut self) -> Result<(), DbErr> {
        let records = tasks::load_unfinished(&self.db).await?;
        let funcs = workers::all_funcs(&self.db).await?;
        let known = workers::list(&self.db).await?;
        self.funcs.extend(funcs);
        self.tasks.clear();
        self.ids.clear();
        self.reservations.clear();
        self.ready.clear();
        self.unblocked.clear();
        self.held.clear();
        let now = Instant::now();
        for record in records {
            let claims = stored_claims(&record)?;
            let runnable = self.reservations.add(record.seq, &claims);
            let phase = match (record.state, record.worker.clone()) {
                (TaskState::Running, Some(worker)) => Phase::Running { worker },
                (TaskState::Canceling, Some(worker)) => Phase::Canceling { worker },
                _ => Phase::Waiting,
            };
            let func: Arc<str> = Arc::from(record.func.as_str());
            if let Some(worker) = phase.worker() {
                self.held
                    .entry(worker.to_owned())
                    .or_default()
                    .insert(record.seq);
                // A worker holding tasks gets a full TTL to (re)connect.
                self.leases
                    .entry(worker.to_owned())
                    .or_insert(now + self.settings.worker_ttl);
            } else if runnable {
                self.ready
                    .entry(func.clone())
                    .or_default()
                    .insert(record.seq);
                if record.unblocked_at.is_none() {
                    self.unblocked.push(record.seq);
                }
            }
            if let Phase::Canceling { worker } = &phase
                && let Some(session) = self.sessions.get(worker)
            {
                let _ = session
                    .outbox
                    .send(Ok(cancel_message(record.id, record.attempt)));
            }
            self.ids.insert(record.id, record.seq);
            self.tasks.insert(
                record.seq,
                Box::new(LiveTask {
                    id: record.id,
                    func,
                    args: Arc::from(record.args.as_str()),
                    kwargs: Arc::from(record.kwargs.as_str()),
                    claims,
                    group: record.task_group_id,
                    parent: record.parent_task_id,
                    timeout_ms: record.timeout_ms,
                    attempt: record.attempt,
                    phase,
                    created_at: record.created_at,
                    unblocked_at: record.unblocked_at,
                    started_at: record.started_at,
                }),
            );
        }
        for worker in known {
            self.instances
                .entry(worker.name)
                .or_insert(worker.instance_id);
        }
        self.stale = false;
        metrics::tasks_loaded(
            &self
                .tasks
                .values()
                .map(|t| t.phase.state())
                .collect::<Vec<_>>(),
        );
        info!(
            unfinished = self.tasks.len(),
            ready = self.ready.values().map(BTreeSet::len).sum::<usize>(),
            "task state loaded"
        );
        Ok(())
    }

    async fn insert_dispatches(
        &mut self,
        txn: &DatabaseTransaction,
        dispatches: Vec<(NewTask, oneshot::Sender<Result<TaskRecord, EngineError>>)>,
        now: i64,
        effects: &mut Effects,
    ) -> Result<(), DbErr> {
        // Groups must exist and still take tasks.
        let mut group_status: HashMap<String, Option<bool>> = HashMap::new();
        let mut accepted = Vec::with_capacity(dispatches.len());
        let mut replies = Vec::with_capacity(dispatches.len());
        for (task, reply) in dispatches {
            if let Some(group) = task.task_group_id {
                let key = group.to_string();
                let status = match group_status.get(&key) {
                    Some(status) => *status,
                    None => {
                        let status = groups::dispatch_status(txn, group).await?;
                        group_status.insert(key.clone(), status);
                        status
                    }
                };
                match status {
                    None => {
                        effects.refused_dispatches.push((
                            reply,
                            EngineError::NotFound(format!("task group {key} not found")),
                        ));
                        continue;
                    }
                    Some(true) => {
                        effects.refused_dispatches.push((
                            reply,
                            EngineError::FailedPrecondition(format!(
                                "task group {key} is finished: it takes no more tasks"
                            )),
                        ));
                        continue;
                    }
                    Some(false) => {}
                }
            }
            accepted.push(task);
            replies.push(reply);
        }
        if accepted.is_empty() {
            return Ok(());
        }
        let claims: Vec<&ResourceClaims> = accepted.iter().map(|t| &t.claims).collect();
        let unblocked = self.reservations.admits_at_tail(&claims);
        let seqs = if self.db.get_database_backend() == DbBackend::Postgres {
            // Numbered like the dispatch rounds' tasks, in one order.
            let seqs = self.take_seqs(accepted.len()).await?;
            let insert = tasks::PgInsert::new(&accepted, &seqs, &unblocked, now, None);
            insert.run(txn).await?;
            seqs
        } else {
            tasks::insert(txn, &accepted, &unblocked, now).await?
        };
        self.remember_dispatches(accepted, seqs, replies, unblocked, now, effects)
    }

    /// The next `count` seqs for new tasks (PostgreSQL), in increasing
    /// order: taken from the `tasks` sequence [`SEQ_BLOCK`] at a time, so
    /// that every task of this engine, written in a dispatch round or in
    /// its own transaction, is numbered in dispatch order.
    async fn take_seqs(&mut self, count: usize) -> Result<Vec<i64>, DbErr> {
        if self.seqs.len() < count {
            let more = tasks::reserve_seqs(&self.db, count.max(SEQ_BLOCK)).await?;
            self.seqs.extend(more);
        }
        Ok(self.seqs.drain(..count).collect())
    }

    /// Takes stored (or about to be stored) new tasks into memory: queued
    /// behind the claims before them, ready if `unblocked` predicted so.
    fn remember_dispatches(
        &mut self,
        tasks: Vec<NewTask>,
        seqs: Vec<i64>,
        replies: Vec<Reply<TaskRecord>>,
        unblocked: Vec<bool>,
        now: i64,
        effects: &mut Effects,
    ) -> Result<(), DbErr> {
        for (((task, seq), reply), predicted) in
            tasks.into_iter().zip(seqs).zip(replies).zip(unblocked)
        {
            let runnable = self.reservations.add(seq, &task.claims);
            if runnable != predicted {
                return Err(DbErr::Custom(format!(
                    "task {} stored as {} but the reservations say otherwise",
                    task.id,
                    if predicted { "unblocked" } else { "blocked" }
                )));
            }
            let func: Arc<str> = Arc::from(task.func.as_str());
            if runnable {
                self.ready.entry(func.clone()).or_default().insert(seq);
            }
            self.ids.insert(task.id, seq);
            self.tasks.insert(
                seq,
                Box::new(LiveTask {
                    id: task.id,
                    func,
                    args: Arc::from(task.args.as_str()),
                    kwargs: Arc::from(task.kwargs.as_str()),
                    claims: task.claims,
                    group: task.task_group_id.map(|g| g.to_string()),
                    parent: task.parent_task_id.map(|p| p.to_string()),
                    timeout_ms: task.timeout_ms,
                    attempt: 0,
                    phase: Phase::Waiting,
                    created_at: now,
                    unblocked_at: runnable.then_some(now),
                    started_at: None,
                }),
            );
            effects
                .transitions
                .push(transition(&self.tasks[&seq], None, TaskState::Waiting, now));
            effects.changed.push(task.id);
            effects.dispatched.push((seq, reply));
        }
        Ok(())
    }

    async fn cancel(
        &mut self,
        txn: &DatabaseTransaction,
        id: TaskId,
        now: i64,
        effects: &mut Effects,
    ) -> Result<Result<(), EngineError>, DbErr> {
        let Some(&seq) = self.ids.get(&id) else {
            return Ok(match tasks::state_of(txn, id).await? {
                None => Err(EngineError::NotFound(format!("task {id} not found"))),
                Some(state) if state.is_final() => Err(EngineError::FailedPrecondition(format!(
                    "task {id} is already {state}: only waiting or running tasks can be cancelled"
                ))),
                Some(state) => Err(EngineError::Unavailable(format!(
                    "task {id} is {state} in the database but unknown here; retry"
                ))),
            });
        };
        let phase = self.tasks[&seq].phase.clone();
        match phase {
            Phase::Waiting => {
                expect_one(
                    tasks::cancel_waiting(txn, seq, now).await?,
                    "cancel a waiting task",
                )?;
                effects.transitions.push(transition(
                    &self.tasks[&seq],
                    Some(TaskState::Waiting),
                    TaskState::Canceled,
                    now,
                ));
                self.remove(seq);
            }
            Phase::Running { worker } => {
                expect_one(
                    tasks::mark_canceling(txn, seq).await?,
                    "mark a task canceling",
                )?;
                let task = self.tasks.get_mut(&seq).expect("task present");
                task.phase = Phase::Canceling {
                    worker: worker.clone(),
                };
                if let Some(session) = self.sessions.get(&worker) {
                    effects
                        .messages
                        .push((session.outbox.clone(), cancel_message(id, task.attempt)));
                }
                effects.transitions.push(transition(
                    task,
                    Some(TaskState::Running),
                    TaskState::Canceling,
                    now,
                ));
            }
            Phase::Canceling { .. } => {}
        }
        effects.changed.push(id);
        Ok(Ok(()))
    }

    /// Forgets a task that reached a final state and frees its resources.
    fn remove(&mut self, seq: i64) {
        let Some(task) = self.tasks.remove(&seq) else {
            return;
        };
        self.ids.remove(&task.id);
        if let Some(ready) = self.ready.get_mut(&task.func) {
            ready.remove(&seq);
        }
        if let Some(worker) = task.phase.worker()
            && let Some(held) = self.held.get_mut(worker)
        {
            held.remove(&seq);
        }
        for now_runnable in self.reservations.remove(seq) {
            if let Some(t) = self.tasks.get(&now_runnable)
                && t.phase == Phase::Waiting
            {
                self.ready
                    .entry(t.func.clone())
                    .or_default()
                    .insert(now_runnable);
                self.unblocked.push(now_runnable);
            }
        }
    }

    async fn register(
        &mut self,
        txn: &DatabaseTransaction,
        registration: Registration,
        outbox: Outbox,
        now: i64,
        effects: &mut Effects,
    ) -> Result<Result<SessionId, EngineError>, DbErr> {
        let name = registration.name.as_str().to_owned();
        if let Some(existing) = self.sessions.get(&name) {
            if existing.instance_id != registration.instance_id && !existing.outbox.is_closed() {
                return Ok(Err(EngineError::AlreadyExists(format!(
                    "worker name {name} is in use by another live worker process; give each worker a unique --name"
                ))));
            }
            // The same process reconnected: its old stream is superseded.
            let old = self.sessions.remove(&name).expect("session present");
            self.session_names.remove(&old.id);
            effects.closes.push((
                old.outbox,
                tonic::Status::aborted("superseded by a newer connection"),
            ));
        }
        let same_process = self.instances.get(&name) == Some(&registration.instance_id);
        let held_now: HashMap<TaskId, i64> = registration.held.iter().copied().collect();
        let mut stale = Vec::new();
        for (task_id, attempt) in &registration.held {
            let ours = self
                .ids
                .get(task_id)
                .and_then(|seq| self.tasks.get(seq))
                .is_some_and(|t| t.phase.worker() == Some(name.as_str()) && t.attempt == *attempt);
            if !ours {
                stale.push(pb::HeldTask {
                    task_id: task_id.to_string(),
                    attempt: *attempt,
                });
            }
        }
        // Tasks this worker name holds that the worker does not know of.
        let missing: Vec<i64> = self
            .held
            .get(&name)
            .map(|held| {
                held.iter()
                    .copied()
                    .filter(|seq| {
                        let t = &self.tasks[seq];
                        held_now.get(&t.id) != Some(&t.attempt)
                    })
                    .collect()
            })
            .unwrap_or_default();
        for seq in missing {
            let (id, attempt, canceling) = {
                let t = &self.tasks[&seq];
                (t.id, t.attempt, matches!(t.phase, Phase::Canceling { .. }))
            };
            if same_process && !canceling {
                // Assigned while its stream was going away: never received.
                expect_one(
                    tasks::requeue(txn, seq, &name, attempt).await?,
                    "requeue a task",
                )?;
                if let Some(held) = self.held.get_mut(&name) {
                    held.remove(&seq);
                }
                let t = self.tasks.get_mut(&seq).expect("task present");
                t.phase = Phase::Waiting;
                t.started_at = None;
                self.ready.entry(t.func.clone()).or_default().insert(seq);
                let mut change = transition(t, Some(TaskState::Running), TaskState::Waiting, now);
                change.reason = Some("requeued: its worker never received it");
                effects.transitions.push(change);
            } else {
                let failure = TaskFailure::new(
                    format!("worker {name} restarted and no longer runs the task"),
                    "worker lost",
                );
                let mut change = self.end(
                    seq,
                    &name,
                    attempt,
                    Outcome::Failed(failure),
                    Vec::new(),
                    now,
                );
                change.reason = Some("worker lost: it restarted");
                effects.transitions.push(change);
            }
            effects.changed.push(id);
        }
        let funcs = registration.funcs.clone();
        workers::upsert_online(
            txn,
            &workers::Registration {
                name: &name,
                instance_id: &registration.instance_id,
                funcs: &funcs,
                slots: registration.slots,
                version: &registration.version,
            },
            now,
        )
        .await?;
        self.funcs.extend(funcs.iter().cloned());
        let id = self.next_session;
        self.next_session += 1;
        let ttl = self.settings.worker_ttl.as_secs_f64();
        effects.messages.push((
            outbox.clone(),
            message(pb::scheduler_message::Message::Welcome(pb::Welcome {
                lease_ttl_seconds: ttl,
                heartbeat_interval_seconds: ttl / 3.0,
                stale,
            })),
        ));
        self.sessions.insert(
            name.clone(),
            Session {
                id,
                name: name.clone(),
                instance_id: registration.instance_id.clone(),
                funcs: funcs.iter().map(|f| Arc::from(f.as_str())).collect(),
                slots: registration.slots as usize,
                draining: false,
                outbox,
            },
        );
        self.session_names.insert(id, name.clone());
        self.instances
            .insert(name.clone(), registration.instance_id);
        self.leases
            .insert(name.clone(), Instant::now() + self.settings.worker_ttl);
        effects.registered.push(id);
        info!(worker = %name, slots = registration.slots, funcs = ?funcs, "worker connected");
        Ok(Ok(id))
    }

    fn outbox_of(&self, session: SessionId) -> Option<Outbox> {
        let name = self.session_names.get(&session)?;
        self.sessions.get(name).map(|s| s.outbox.clone())
    }

    /// Renews the lease of `session`'s worker (a Heartbeat) and returns the
    /// `LeaseRenewed` answer for its stream; `None` for a superseded stream.
    fn renew(&mut self, session: SessionId) -> Option<(Outbox, pb::SchedulerMessage)> {
        let name = self.session_names.get(&session)?;
        self.leases
            .insert(name.clone(), Instant::now() + self.settings.worker_ttl);
        self.heartbeats.insert(name.clone());
        let renewed = pb::LeaseRenewed {
            lease_ttl_seconds: self.settings.worker_ttl.as_secs_f64(),
        };
        let outbox = self.outbox_of(session)?;
        Some((
            outbox,
            message(pb::scheduler_message::Message::LeaseRenewed(renewed)),
        ))
    }

    fn disconnect(&mut self, session: SessionId) {
        let Some(name) = self.session_names.remove(&session) else {
            return;
        };
        self.sessions.remove(&name);
        if self.held.get(&name).is_none_or(HashSet::is_empty) {
            self.leases.remove(&name);
        }
        info!(worker = %name, "worker disconnected");
    }

    async fn worker_event(
        &mut self,
        txn: &DatabaseTransaction,
        session: SessionId,
        event: WorkerEvent,
        now: i64,
        effects: &mut Effects,
    ) -> Result<(), DbErr> {
        let Some(name) = self.session_names.get(&session).cloned() else {
            // A superseded or expired stream: nothing it says counts.
            return Ok(());
        };
        match event {
            WorkerEvent::Heartbeat => {
                effects.messages.extend(self.renew(session));
            }
            WorkerEvent::Draining => {
                if let Some(s) = self.sessions.get_mut(&name) {
                    s.draining = true;
                }
                workers::set_state(txn, &name, "draining").await?;
                info!(worker = %name, "worker draining");
            }
            WorkerEvent::Disconnected => {
                self.disconnect(session);
                workers::set_state(txn, &name, "offline").await?;
            }
            WorkerEvent::Progress {
                task_id,
                attempt,
                report,
            } => {
                if let Some(seq) = self.held_by(task_id, &name, attempt) {
                    effects.progress.insert((seq, report.code.clone()), report);
                    effects.changed.push(task_id);
                } else {
                    debug!(%task_id, attempt, worker = %name, "progress for a task the worker does not hold");
                }
            }
            WorkerEvent::Finished {
                task_id,
                attempt,
                outcome,
                created_resources,
            } => {
                let outbox = self.sessions[&name].outbox.clone();
                let Some(seq) = self.held_by(task_id, &name, attempt) else {
                    self.flush_endings(txn, now).await?;
                    let (code, why) = match tasks::state_of(txn, task_id).await? {
                        None => (CODE_NOT_FOUND, format!("task {task_id} not found")),
                        Some(state) => (
                            CODE_FAILED_PRECONDITION,
                            format!(
                                "task {task_id} attempt {attempt} is not held by worker {name} (it is {state})"
                            ),
                        ),
                    };
                    warn!(%task_id, attempt, worker = %name, reason = %why, "result refused");
                    effects
                        .acks
                        .push((outbox, ack(task_id, attempt, code, &why)));
                    return Ok(());
                };
                let change = self.end(seq, &name, attempt, outcome, created_resources, now);
                effects.transitions.push(change);
                effects.changed.push(task_id);
                effects
                    .acks
                    .push((outbox, ack(task_id, attempt, CODE_OK, "")));
            }
        }
        Ok(())
    }

    /// Ends a task held by `worker` at `attempt` in memory (its resources
    /// are free for the rest of the round) and queues its row update for
    /// [`Core::flush_endings`], which runs before the round commits.
    /// Returns the transition: to the outcome's state, or CANCELED for a
    /// CANCELING task (as the stored row will say).
    fn end(
        &mut self,
        seq: i64,
        worker: &str,
        attempt: i64,
        outcome: Outcome,
        created_resources: Vec<String>,
        now: i64,
    ) -> Transition {
        let ending = tasks::Ending {
            seq,
            worker: worker.to_owned(),
            attempt,
            outcome,
            created_resources,
        };
        let task = &self.tasks[&seq];
        let to = match task.phase {
            Phase::Canceling { .. } => TaskState::Canceled,
            _ => ending.state_if_running(),
        };
        let change = transition(task, Some(task.phase.state()), to, now);
        self.endings.push(ending);
        self.remove(seq);
        change
    }

    /// Stores the endings queued this round, in one statement per chunk;
    /// every row must change, or memory and database disagree.
    async fn flush_endings(&mut self, txn: &DatabaseTransaction, now: i64) -> Result<(), DbErr> {
        if self.endings.is_empty() {
            return Ok(());
        }
        let endings = std::mem::take(&mut self.endings);
        let changed = tasks::finish(txn, &endings, now).await?;
        if changed.len() != endings.len() {
            return Err(DbErr::Custom(format!(
                "ended {} of {} tasks: the database disagrees with memory",
                changed.len(),
                endings.len()
            )));
        }
        Ok(())
    }

    /// The seq of `task_id` when `worker` holds it at `attempt`.
    fn held_by(&self, task_id: TaskId, worker: &str, attempt: i64) -> Option<i64> {
        let seq = *self.ids.get(&task_id)?;
        let task = self.tasks.get(&seq)?;
        (task.phase.worker() == Some(worker) && task.attempt == attempt).then_some(seq)
    }

    /// Fails the tasks of workers whose lease lapsed, then frees their
    /// resources; an unresponsive stream is closed.
    async fn expire_leases(
        &mut self,
        txn: &DatabaseTransaction,
        now: i64,
        effects: &mut Effects,
    ) -> Result<(), DbErr> {
        let instant = Instant::now();
        let expired: Vec<String> = self
            .leases
            .iter()
            .filter(|(_, deadline)| **deadline <= instant)
            .map(|(name, _)| name.clone())
            .collect();
        for name in expired {
            self.leases.remove(&name);
            if let Some(session) = self.sessions.remove(&name) {
                self.session_names.remove(&session.id);
                effects.closes.push((
                    session.outbox,
                    tonic::Status::unavailable("lease expired: no heartbeat within the worker TTL"),
                ));
            }
            let held: Vec<i64> = self
                .held
                .remove(&name)
                .map(|h| h.into_iter().collect())
                .unwrap_or_default();
            let ttl = self.settings.worker_ttl.as_secs_f64();
            for seq in held {
                let (id, attempt) = {
                    let t = &self.tasks[&seq];
                    (t.id, t.attempt)
                };
                let failure = TaskFailure::new(
                    format!("worker {name} was not heard from for {ttl} s (its lease lapsed)"),
                    "worker lost",
                );
                let mut change = self.end(
                    seq,
                    &name,
                    attempt,
                    Outcome::Failed(failure),
                    Vec::new(),
                    now,
                );
                change.reason = Some("worker lost: its lease lapsed");
                effects.transitions.push(change);
                effects.changed.push(id);
            }
            workers::set_state(txn, &name, "lost").await?;
            metrics::worker_lost();
            warn!(worker = %name, "worker lost: lease lapsed");
        }
        Ok(())
    }

    /// Stores newly unblocked tasks and gives runnable tasks to free slots
    /// ([`pick`](Self::pick)).
    async fn assign(
        &mut self,
        txn: &DatabaseTransaction,
        now: i64,
        effects: &mut Effects,
    ) -> Result<(), DbErr> {
        let picks = self.pick();
        let assigned: HashSet<i64> = picks.values().flatten().copied().collect();
        let unblocked: Vec<i64> = std::mem::take(&mut self.unblocked)
            .into_iter()
            .filter(|seq| !assigned.contains(seq) && self.tasks.contains_key(seq))
            .collect();
        if !unblocked.is_empty() {
            tasks::set_unblocked(txn, &unblocked, now).await?;
            for seq in &unblocked {
                if let Some(t) = self.tasks.get_mut(seq) {
                    t.unblocked_at.get_or_insert(now);
                    effects.changed.push(t.id);
                }
            }
        }
        let pairs = self.start_picked(picks, now, effects);
        if !pairs.is_empty() {
            tasks::claim(txn, &pairs, now).await?;
        }
        Ok(())
    }

    /// Chooses runnable tasks for free slots, one task per worker per pass
    /// so that work spreads over workers, and takes them off the ready
    /// queues: seqs by worker name.
    fn pick(&mut self) -> HashMap<String, Vec<i64>> {
        let mut picks: HashMap<String, Vec<i64>> = HashMap::new();
        if !self.ready.values().any(|r| !r.is_empty()) {
            return picks;
        }
        let mut free: Vec<(String, usize)> = self
            .sessions
            .values()
            .filter(|s| !s.draining)
            .filter_map(|s| {
                let used = self.held.get(&s.name).map_or(0, HashSet::len);
                (s.slots > used).then(|| (s.name.clone(), s.slots - used))
            })
            .collect();
        free.sort();
        let mut progress = true;
        while progress {
            progress = false;
            for (name, slots) in free.iter_mut().filter(|(_, slots)| *slots > 0) {
                let session = &self.sessions[name.as_str()];
                let best = session
                    .funcs
                    .iter()
                    .filter_map(|f| {
                        self.ready
                            .get(f)
                            .and_then(|r| r.first().map(|seq| (*seq, f.clone())))
                    })
                    .min();
                if let Some((seq, func)) = best {
                    self.ready.get_mut(&func).expect("ready queue").remove(&seq);
                    picks.entry(name.clone()).or_default().push(seq);
                    *slots -= 1;
                    progress = true;
                }
            }
        }
        picks
    }

    /// Starts picked tasks in memory: RUNNING on their worker, with the
    /// assignment message waiting for the commit. Returns the (seq, worker)
    /// pairs to store.
    fn start_picked(
        &mut self,
        picks: HashMap<String, Vec<i64>>,
        now: i64,
        effects: &mut Effects,
    ) -> Vec<(i64, String)> {
        let mut pairs = Vec::new();
        for (worker, seqs) in picks {
            let outbox = self.sessions[&worker].outbox.clone();
            for seq in seqs {
                let task = self.tasks.get_mut(&seq).expect("picked task present");
                task.attempt += 1;
                task.phase = Phase::Running {
                    worker: worker.clone(),
                };
                task.started_at = Some(now);
                task.unblocked_at.get_or_insert(now);
                self.held.entry(worker.clone()).or_default().insert(seq);
                effects
                    .messages
                    .push((outbox.clone(), assignment_message(task)));
                effects.transitions.push(transition(
                    task,
                    Some(TaskState::Waiting),
                    TaskState::Running,
                    now,
                ));
                effects.changed.push(task.id);
                debug!(task_id = %task.id, %worker, attempt = task.attempt, "task assigned");
                pairs.push((seq, worker.clone()));
            }
        }
        pairs
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn expect_one(rows: u64, what: &str) -> Result<(), DbErr> {
    if rows == 1 {
        Ok(())
    } else {
        Err(DbErr::Custom(format!(
            "{what}: {rows} rows changed instead of 1; the database disagrees with memory"
        )))
    }
}

fn stored_claims(record: &TaskRecord) -> Result<ResourceClaims, DbErr> {
    let parse = |names: &[String]| {
        names
            .iter()
            .map(|n| ResourceName::parse(n).map_err(|e| DbErr::Custom(e.to_string())))
            .collect::<Result<Vec<_>, _>>()
    };
    ResourceClaims::new(
        parse(&record.exclusive_resources)?,
        parse(&record.shared_resources)?,
    )
    .map_err(|e| DbErr::Custom(e.to_string()))
}

fn message(message: pb::scheduler_message::Message) -> pb::SchedulerMessage {
    pb::SchedulerMessage {
        message: Some(message),
    }
}

fn ack(task_id: TaskId, attempt: i64, code: i32, why: &str) -> pb::ResultAck {
    pb::ResultAck {
        task_id: task_id.to_string(),
        attempt,
        code,
        message: why.to_owned(),
    }
}

fn cancel_message(task_id: TaskId, attempt: i64) -> pb::SchedulerMessage {
    message(pb::scheduler_message::Message::Cancel(
        pb::CancelAssignment {
            task_id: task_id.to_string(),
            attempt,
        },
    ))
}

fn assignment_message(task: &LiveTask) -> pb::SchedulerMessage {
    let args = serde_json::from_str(&task.args).unwrap_or(serde_json::Value::Array(Vec::new()));
    let kwargs = match serde_json::from_str(&task.kwargs) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    message(pb::scheduler_message::Message::Assignment(pb::Assignment {
        task_id: task.id.to_string(),
        attempt: task.attempt,
        func: task.func.to_string(),
        args: Some(json::json_to_list(&args)),
        kwargs: Some(json::json_to_struct(&kwargs)),
        timeout_seconds: task.timeout_ms.map_or(0.0, |ms| ms as f64 / 1000.0),
        task_group_id: task.group.clone().unwrap_or_default(),
        exclusive_resources: task.claims.exclusive_names(),
        shared_resources: task.claims.shared_names(),
    }))
}

/// The record of a task still in memory (a dispatch's reply).
fn live_record(seq: i64, task: &LiveTask) -> TaskRecord {
    let (state, worker) = match &task.phase {
        Phase::Waiting => (TaskState::Waiting, None),
        Phase::Running { worker } => (TaskState::Running, Some(worker.clone())),
        Phase::Canceling { worker } => (TaskState::Canceling, Some(worker.clone())),
    };
    TaskRecord {
        seq,
        id: task.id,
        func: task.func.to_string(),
        args: task.args.to_string(),
        kwargs: task.kwargs.to_string(),
        exclusive_resources: task.claims.exclusive_names(),
        shared_resources: task.claims.shared_names(),
        state,
        task_group_id: task.group.clone(),
        parent_task_id: task.parent.clone(),
        worker,
        attempt: task.attempt,
        timeout_ms: task.timeout_ms,
        created_at: task.created_at,
        unblocked_at: task.unblocked_at,
        started_at: task.started_at,
        finished_at: None,
        error: None,
        result: None,
        created_resources: Vec::new(),
        progress: Vec::new(),
    }
}

/// A state change of `task` at `now`, to log and count after the commit.
fn transition(task: &LiveTask, from: Option<TaskState>, to: TaskState, now: i64) -> Transition {
    Transition {
        task_id: task.id,
        func: task.func.clone(),
        from,
        to,
        attempt: task.attempt,
        created_at: task.created_at,
        unblocked_at: task.unblocked_at,
        started_at: task.started_at,
        at: now,
        worker: task.phase.worker().map(str::to_owned),
        reason: None,
    }
}
