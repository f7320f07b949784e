//! Progress reports: from a task to the scheduler, latest per code wins.
//!
//! A task calls [`crate::TaskContext::report_progress`], which never blocks:
//! the report replaces any pending report of the same task, attempt and code
//! in a shared buffer (the `ProgressHub`) and wakes the connection loop,
//! which takes everything pending and sends one `Progress` message each.
//! While the worker is disconnected reports stay coalesced in the buffer
//! (one per code), so a chatty task cannot grow memory; they are sent after
//! the next Welcome. A finished task's pending reports are sent just before
//! its `TaskFinished`, so the scheduler never sees progress after a result.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use pulp_common::names::TaskId;
use pulp_common::proto::tasking::v1 as pb;
use tokio::sync::Notify;

/// A progress report of a running task.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProgressReport {
    /// Human-readable description, e.g. "Exporting files".
    pub message: String,
    /// Machine-readable key, unique within the task, e.g. "export.files";
    /// a later report with the same code replaces the earlier one.
    pub code: String,
    /// Items done so far.
    pub done: i64,
    /// Items in all; 0 when unknown.
    pub total: i64,
    /// Optional extra text, e.g. a unit.
    pub suffix: String,
}

impl ProgressReport {
    /// A report without a suffix.
    pub fn new(
        message: impl Into<String>,
        code: impl Into<String>,
        done: i64,
        total: i64,
    ) -> ProgressReport {
        ProgressReport {
            message: message.into(),
            code: code.into(),
            done,
            total,
            suffix: String::new(),
        }
    }
}

impl From<ProgressReport> for pb::ProgressReport {
    fn from(r: ProgressReport) -> Self {
        pb::ProgressReport {
            message: r.message,
            code: r.code,
            done: r.done,
            total: r.total,
            suffix: r.suffix,
        }
    }
}

/// A report waiting to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PendingReport {
    /// The task.
    pub task_id: TaskId,
    /// Its attempt token.
    pub attempt: i64,
    /// The report.
    pub report: ProgressReport,
}

impl PendingReport {
    /// The `Progress` message for this report.
    pub fn into_proto(self) -> pb::Progress {
        pb::Progress {
            task_id: self.task_id.to_string(),
            attempt: self.attempt,
            report: Some(self.report.into()),
        }
    }
}

/// The buffer between tasks and the connection loop.
#[derive(Clone, Default)]
pub(crate) struct ProgressHub {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// In the order codes were first reported (the scheduler keeps reports
    /// in that order).
    pending: Mutex<Vec<PendingReport>>,
    notify: Notify,
}

impl ProgressHub {
    fn pending(&self) -> MutexGuard<'_, Vec<PendingReport>> {
        // A panic while holding this lock cannot leave the Vec inconsistent.
        self.inner
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The sending side for one task.
    pub fn sink(&self, task_id: TaskId, attempt: i64) -> ProgressSink {
        ProgressSink {
            hub: self.clone(),
            task_id,
            attempt,
        }
    }

    /// Resolves once a report is pending (at once if one arrived since the
    /// last call).
    pub async fn notified(&self) {
        self.inner.notify.notified().await;
    }

    /// Takes every pending report.
    pub fn take_all(&self) -> Vec<PendingReport> {
        std::mem::take(&mut *self.pending())
    }

    /// Takes the pending reports of one task attempt.
    pub fn take_task(&self, task_id: TaskId, attempt: i64) -> Vec<PendingReport> {
        let mut pending = self.pending();
        let (taken, kept) = std::mem::take(&mut *pending)
            .into_iter()
            .partition(|p| p.task_id == task_id && p.attempt == attempt);
        *pending = kept;
        taken
    }
}

/// Where one task's reports go.
#[derive(Clone)]
pub(crate) struct ProgressSink {
    hub: ProgressHub,
    task_id: TaskId,
    attempt: i64,
}

impl ProgressSink {
    /// Replaces the pending report with the same code, or queues a new one.
    pub fn report(&self, report: ProgressReport) {
        {
            let mut pending = self.hub.pending();
            match pending.iter_mut().find(|p| {
                p.task_id == self.task_id
                    && p.attempt == self.attempt
                    && p.report.code == report.code
            }) {
                Some(existing) => existing.report = report,
                None => pending.push(PendingReport {
                    task_id: self.task_id,
                    attempt: self.attempt,
                    report,
                }),
            }
        }
        self.hub.inner.notify.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn latest_report_per_code_wins_and_wakes_the_reader() {
        let hub = ProgressHub::default();
        let a = TaskId::new();
        let b = TaskId::new();
        let sink_a = hub.sink(a, 1);
        sink_a.report(ProgressReport::new("x", "one", 1, 10));
        hub.sink(b, 7).report(ProgressReport::new("y", "one", 5, 0));
        sink_a.report(ProgressReport::new("z", "two", 0, 0));
        sink_a.report(ProgressReport::new("x", "one", 2, 10));

        tokio::time::timeout(Duration::from_secs(5), hub.notified())
            .await
            .expect("a report wakes the reader");
        let taken = hub.take_task(a, 1);
        assert_eq!(
            taken
                .iter()
                .map(|p| (p.report.code.as_str(), p.report.done))
                .collect::<Vec<_>>(),
            [("one", 2), ("two", 0)]
        );
        let rest = hub.take_all();
        assert_eq!(rest.len(), 1);
        assert_eq!((rest[0].task_id, rest[0].attempt), (b, 7));
        assert!(hub.take_all().is_empty());
    }
}
