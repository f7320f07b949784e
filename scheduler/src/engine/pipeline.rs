//! Rounds in flight (PostgreSQL): transactions that run while the engine
//! goes on deciding the next rounds; their outcomes are taken, and their
//! callers answered, in the order the rounds were decided.
//!
//! Two kinds of round are in flight:
//! - a round the engine ran itself, whose open transaction is handed over
//!   to be committed ([`Pipeline::commit`]) while the engine gathers the
//!   next commands. The engine lets nothing else into the pipeline behind
//!   it ([`Pipeline::holds_commit`]): a later round would rely on its
//!   changes before they are durable;
//! - a round of plain dispatches, written entirely by a task of its own
//!   ([`Pipeline::write`]): one statement that checks the leadership epoch
//!   and inserts the tasks and their claims (its own transaction), or a
//!   transaction when it also assigns its tasks or is too large for one
//!   statement. Such rounds may commit in any order among themselves: one
//!   relies on those before it only for its tasks' place in the queues, and
//!   a failed round only removes tasks from before it, which can make a
//!   later task runnable sooner, never an overlap.
//!
//! A failed round is answered UNAVAILABLE; the engine then takes every
//! other outcome (answering those that committed) and rebuilds its state
//! from the database.

use crate::store::tasks::{self, Inserted, PgInsert};
use sea_orm::{DatabaseConnection, DatabaseTransaction, DbErr, TransactionTrait};
use std::collections::VecDeque;
use tokio::task::JoinHandle;

/// Why a round in flight did not commit.
#[derive(Debug, Clone, thiserror::Error)]
pub(super) enum RoundError {
    /// A statement or the commit failed.
    #[error("{0}")]
    Database(String),
    /// A newer leader took over: this engine must stop.
    #[error("the leadership epoch is no longer current: a newer leader took over")]
    Fenced,
}

impl From<DbErr> for RoundError {
    fn from(err: DbErr) -> Self {
        RoundError::Database(err.to_string())
    }
}

/// What a round of plain dispatches writes: its tasks, numbered
/// beforehand, and the assignments of those of them that start at once.
pub(super) struct DispatchWrite {
    pub insert: PgInsert,
    /// (seq, worker) of its own tasks assigned in the round.
    pub assigned: Vec<(i64, String)>,
    pub now: i64,
}

impl DispatchWrite {
    async fn run(self, db: DatabaseConnection) -> Result<(), RoundError> {
        if self.assigned.is_empty() && self.insert.is_one_statement() {
            return match self.insert.run(&db).await? {
                Inserted::All => Ok(()),
                Inserted::Fenced => Err(RoundError::Fenced),
            };
        }
        let txn = db.begin().await?;
        if self.insert.run(&txn).await? == Inserted::Fenced {
            return Err(RoundError::Fenced);
        }
        if !self.assigned.is_empty() {
            tasks::claim(&txn, &self.assigned, self.now).await?;
        }
        txn.commit().await?;
        Ok(())
    }
}

/// Rounds in flight, oldest first; `R` is what the engine answers once a
/// round's outcome is known.
pub(super) struct Pipeline<R> {
    rounds: VecDeque<InFlight<R>>,
}

struct InFlight<R> {
    outcome: JoinHandle<Result<(), RoundError>>,
    round: R,
    /// A round the engine ran itself ([`Pipeline::commit`]).
    commit: bool,
}

impl<R> Pipeline<R> {
    pub(super) fn new() -> Self {
        Pipeline {
            rounds: VecDeque::new(),
        }
    }

    /// Rounds in flight.
    pub(super) fn len(&self) -> usize {
        self.rounds.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.rounds.is_empty()
    }

    /// True while a round handed over by [`commit`](Self::commit) is in
    /// flight.
    pub(super) fn holds_commit(&self) -> bool {
        self.rounds.iter().any(|r| r.commit)
    }

    /// Commits `txn`, a round whose statements ran.
    pub(super) fn commit(&mut self, txn: DatabaseTransaction, round: R) {
        let outcome = tokio::spawn(async move { txn.commit().await.map_err(RoundError::from) });
        self.rounds.push_back(InFlight {
            outcome,
            round,
            commit: true,
        });
    }

    /// Writes a round of plain dispatches on a connection of `db`.
    pub(super) fn write(&mut self, db: DatabaseConnection, write: DispatchWrite, round: R) {
        let outcome = tokio::spawn(write.run(db));
        self.rounds.push_back(InFlight {
            outcome,
            round,
            commit: false,
        });
    }

    /// The outcome of the oldest round in flight, once known; never ready
    /// while nothing is in flight. Cancel-safe: a round leaves the
    /// pipeline only with its outcome.
    pub(super) async fn next(&mut self) -> (Result<(), RoundError>, R) {
        let Some(oldest) = self.rounds.front_mut() else {
            return std::future::pending().await;
        };
        let result = (&mut oldest.outcome).await.unwrap_or_else(|err| {
            Err(RoundError::Database(format!(
                "the round's task failed: {err}"
            )))
        });
        let oldest = self.rounds.pop_front().expect("the round awaited");
        (result, oldest.round)
    }
}
