//! Results the scheduler has not acknowledged yet.
//!
//! When a task finishes, the connection loop stores its `TaskFinished` here
//! and sends it. The result stays until a `ResultAck` says it was stored
//! (OK) or refused for good (NOT_FOUND, FAILED_PRECONDITION, or any other
//! non-transient code); on a transient code (UNAVAILABLE: the scheduler's
//! database is down, and likewise DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED,
//! ABORTED) it is re-sent after its own backoff (1 s doubling to 30 s).
//! After a reconnect every stored result is listed in `Hello.held` and
//! re-sent once the scheduler says Welcome. So no result is lost to a
//! scheduler restart or a database outage.

use std::collections::BTreeMap;
use std::time::Duration;

use pulp_common::names::TaskId;
use pulp_common::proto::tasking::v1 as pb;
use tokio::time::Instant;
use tonic::Code;

use crate::backoff::Backoff;

/// What an acknowledgement did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Acked {
    /// Stored by the scheduler: forgotten.
    Stored,
    /// Refused for good: forgotten.
    Refused(Code),
    /// Not stored for now: re-sent after this delay.
    Retry(Code, Duration),
}

struct Entry {
    message: pb::TaskFinished,
    backoff: Backoff,
    resend_at: Option<Instant>,
}

/// Finished-but-unacknowledged results, by task and attempt.
#[derive(Default)]
pub(crate) struct UnackedResults {
    entries: BTreeMap<(TaskId, i64), Entry>,
}

impl UnackedResults {
    /// Keeps a result until it is acknowledged.
    pub fn insert(&mut self, task_id: TaskId, attempt: i64, message: pb::TaskFinished) {
        self.entries.insert(
            (task_id, attempt),
            Entry {
                message,
                backoff: Backoff::resend(),
                resend_at: None,
            },
        );
    }

    /// Applies a `ResultAck`; `None` when no such result is held (a
    /// duplicate acknowledgement).
    pub fn ack(&mut self, task_id: TaskId, attempt: i64, code: i32, now: Instant) -> Option<Acked> {
        let key = (task_id, attempt);
        let entry = self.entries.get_mut(&key)?;
        let acked = match Code::from_i32(code) {
            Code::Ok => Acked::Stored,
            code @ (Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted) => {
                let delay = entry.backoff.next_delay();
                entry.resend_at = Some(now + delay);
                return Some(Acked::Retry(code, delay));
            }
            code => Acked::Refused(code),
        };
        self.entries.remove(&key);
        Some(acked)
    }

    /// Forgets a result (the scheduler no longer expects it).
    pub fn forget(&mut self, task_id: TaskId, attempt: i64) -> bool {
        self.entries.remove(&(task_id, attempt)).is_some()
    }

    /// Every held result, for `Hello.held`.
    pub fn held(&self) -> impl Iterator<Item = (TaskId, i64)> + '_ {
        self.entries.keys().copied()
    }

    /// Every result, to re-send after a Welcome; pending re-send timers are
    /// dropped since everything goes out now.
    pub fn resend_all(&mut self) -> Vec<pb::TaskFinished> {
        self.entries
            .values_mut()
            .map(|e| {
                e.resend_at = None;
                e.message.clone()
            })
            .collect()
    }

    /// When the next re-send is due.
    pub fn next_resend_at(&self) -> Option<Instant> {
        self.entries.values().filter_map(|e| e.resend_at).min()
    }

    /// The results due for a re-send at `now`.
    pub fn take_due(&mut self, now: Instant) -> Vec<pb::TaskFinished> {
        self.entries
            .values_mut()
            .filter(|e| e.resend_at.is_some_and(|at| at <= now))
            .map(|e| {
                e.resend_at = None;
                e.message.clone()
            })
            .collect()
    }

    /// How many results are held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when every result was acknowledged.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(id: TaskId, attempt: i64) -> pb::TaskFinished {
        pb::TaskFinished {
            task_id: id.to_string(),
            attempt,
            ..Default::default()
        }
    }

    #[test]
    fn forgets_on_ok_and_refusal_keeps_on_unavailable() {
        let now = Instant::now();
        let mut results = UnackedResults::default();
        let (a, b, c) = (TaskId::new(), TaskId::new(), TaskId::new());
        results.insert(a, 1, finished(a, 1));
        results.insert(b, 2, finished(b, 2));
        results.insert(c, 3, finished(c, 3));

        assert_eq!(results.ack(a, 1, 0, now), Some(Acked::Stored));
        assert_eq!(results.ack(a, 1, 0, now), None);
        assert_eq!(
            results.ack(b, 2, 9, now),
            Some(Acked::Refused(Code::FailedPrecondition))
        );
        assert_eq!(results.ack(c, 99, 0, now), None, "another attempt's ack");
        assert_eq!(
            results.ack(c, 3, 14, now),
            Some(Acked::Retry(Code::Unavailable, Duration::from_secs(1)))
        );
        assert_eq!(results.len(), 1);
        assert_eq!(results.next_resend_at(), Some(now + Duration::from_secs(1)));
        assert!(results.take_due(now).is_empty());
        let due = results.take_due(now + Duration::from_secs(1));
        assert_eq!(due, vec![finished(c, 3)]);
        assert_eq!(results.next_resend_at(), None);

        // The backoff doubles while the database stays down.
        assert_eq!(
            results.ack(c, 3, 14, now),
            Some(Acked::Retry(Code::Unavailable, Duration::from_secs(2)))
        );
        assert_eq!(results.resend_all().len(), 1);
        assert_eq!(results.next_resend_at(), None);
        assert_eq!(results.held().collect::<Vec<_>>(), vec![(c, 3)]);
    }
}
