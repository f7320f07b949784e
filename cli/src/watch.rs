//! Following a task to its end (`watch`, `dispatch --wait`).
//!
//! [`follow`] reads the `Tasks.WatchTask` stream (a snapshot now and after
//! every change, ending after the final one) and hands each snapshot to a
//! [`View`]. On a terminal the [`LiveView`] redraws the state and one bar per
//! progress report on stderr; elsewhere the [`LineView`] prints one line per
//! state change, which reads well in logs. stdout stays free for the final
//! task, so `--json` still prints exactly one document.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use crate::client::Transport;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use pulp_common::proto::tasking::v1::{
    GetTaskRequest, ProgressReport, Task, WatchTaskRequest, tasks_client::TasksClient,
};
use pulp_common::state::TaskState;

use crate::error::CliError;
use crate::output::{state_name, task_state};

/// Shows the snapshots of a followed task.
pub trait View {
    /// A new snapshot arrived.
    fn show(&mut self, task: &Task);
    /// The task reached a final state (`task` is the last snapshot).
    fn finish(&mut self, task: &Task);
}

/// The view for stderr: live bars on a terminal, lines otherwise.
pub fn stderr_view() -> Box<dyn View + Send> {
    if std::io::stderr().is_terminal() {
        Box::new(LiveView::new())
    } else {
        Box::new(LineView::new(Stderr))
    }
}

/// stderr through `eprint!`, which the test harness captures (a raw
/// `std::io::stderr()` handle is not), keeping test output quiet.
struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        eprint!("{}", String::from_utf8_lossy(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Follows task `id` until it is in a final state and returns that
/// snapshot.
///
/// Should the stream end early (the scheduler restarting, say), the task is
/// fetched once more: if it is final by then, that is the answer; otherwise
/// [`CliError::WatchEnded`].
pub async fn follow(
    client: &mut TasksClient<Transport>,
    id: &str,
    view: &mut (dyn View + Send),
) -> Result<Task, CliError> {
    let mut stream = client
        .watch_task(WatchTaskRequest { id: id.to_owned() })
        .await?
        .into_inner();
    while let Some(task) = stream.message().await? {
        view.show(&task);
        if is_final(&task) {
            view.finish(&task);
            return Ok(task);
        }
    }
    let task = client
        .get_task(GetTaskRequest { id: id.to_owned() })
        .await?
        .into_inner();
    view.show(&task);
    if is_final(&task) {
        view.finish(&task);
        Ok(task)
    } else {
        Err(CliError::WatchEnded {
            id: id.to_owned(),
            state: state_name(task.state).to_owned(),
        })
    }
}

/// The exit code for a task that ended: 0 when it completed, 1 otherwise.
pub fn exit_code(task: &Task) -> i32 {
    if task_state(task) == Some(TaskState::Completed) {
        0
    } else {
        1
    }
}

/// Why a task did not complete, for stderr; `None` when it completed.
pub fn failure_message(task: &Task) -> Option<String> {
    if exit_code(task) == 0 {
        return None;
    }
    let mut message = format!("task {} ended {}", task.id, state_name(task.state));
    if let Some(error) = &task.error {
        if !error.description.is_empty() {
            message.push_str(&format!(": {}", error.description));
        }
        if !error.reason.is_empty() {
            message.push_str(&format!(" (reason: {})", error.reason));
        }
    }
    Some(message)
}

fn is_final(task: &Task) -> bool {
    task_state(task).is_some_and(TaskState::is_final)
}

/// One line per state change, for logs and pipes.
pub struct LineView<W: Write> {
    out: W,
    last_state: Option<i32>,
}

impl<W: Write> LineView<W> {
    /// A view writing to `out`.
    pub fn new(out: W) -> Self {
        LineView {
            out,
            last_state: None,
        }
    }

    /// Gives the writer back (for tests).
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write> View for LineView<W> {
    fn show(&mut self, task: &Task) {
        if self.last_state == Some(task.state) {
            return;
        }
        self.last_state = Some(task.state);
        let mut line = format!(
            "task {} ({}): {}",
            task.id,
            task.func,
            state_name(task.state)
        );
        if !task.worker.is_empty() {
            line.push_str(&format!(" on {}", task.worker));
        }
        // Progress lines are a courtesy: a closed stderr must not fail the
        // command, whose real output goes to stdout.
        let _ = writeln!(self.out, "{line}");
    }

    fn finish(&mut self, _task: &Task) {
        let _ = self.out.flush();
    }
}

/// A redrawn display on a terminal: a spinner with the task's state and one
/// bar per progress report (keyed by the report's code).
pub struct LiveView {
    multi: MultiProgress,
    header: ProgressBar,
    bars: HashMap<String, (ProgressBar, bool)>,
}

impl LiveView {
    /// A live display on stderr.
    pub fn new() -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let header = multi.add(ProgressBar::new_spinner());
        header.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("constant template"),
        );
        header.set_message("waiting for the scheduler");
        header.enable_steady_tick(Duration::from_millis(120));
        LiveView {
            multi,
            header,
            bars: HashMap::new(),
        }
    }

    fn report(&mut self, report: &ProgressReport) {
        let key = if report.code.is_empty() {
            report.message.clone()
        } else {
            report.code.clone()
        };
        let multi = &self.multi;
        let (bar, has_total) = self.bars.entry(key).or_insert_with(|| {
            let bar = multi.add(ProgressBar::no_length());
            bar.set_style(counter_style());
            (bar, false)
        });
        let mut message = report.message.clone();
        if !report.suffix.is_empty() {
            message.push(' ');
            message.push_str(&report.suffix);
        }
        bar.set_message(message);
        let with_total = report.total > 0;
        if with_total != *has_total {
            bar.set_style(if with_total {
                bar_style()
            } else {
                counter_style()
            });
            *has_total = with_total;
        }
        if with_total {
            bar.set_length(report.total.unsigned_abs());
        }
        bar.set_position(report.done.max(0).unsigned_abs());
    }

    /// Stops the spinner and removes every line of the display.
    fn clear(&mut self) {
        self.header.finish_and_clear();
        for (bar, _) in self.bars.values() {
            bar.finish_and_clear();
        }
        // Best effort: a terminal that went away has nothing to clear.
        let _ = self.multi.clear();
    }

    fn header_text(task: &Task) -> String {
        let mut text = format!(
            "task {} ({}): {}",
            task.id,
            task.func,
            state_name(task.state)
        );
        if !task.worker.is_empty() {
            text.push_str(&format!(" on {}", task.worker));
        }
        text
    }
}

impl Default for LiveView {
    fn default() -> Self {
        Self::new()
    }
}

impl View for LiveView {
    fn show(&mut self, task: &Task) {
        self.header.set_message(Self::header_text(task));
        for report in &task.progress_reports {
            self.report(report);
        }
    }

    /// Clears the bars and leaves one plain line with the final state: the
    /// full task, progress included, is printed next anyway, and a cleared
    /// display cannot leave the cursor in the middle of a line.
    fn finish(&mut self, task: &Task) {
        self.clear();
        eprintln!("{}", Self::header_text(task));
    }
}

impl Drop for LiveView {
    /// Also on an error: no half-drawn bars stay behind the error message.
    fn drop(&mut self) {
        self.clear();
    }
}

/// `  message [=====>    ] done/total`
fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("  {msg} [{bar:30}] {pos}/{len}")
        .expect("constant template")
        .progress_chars("=> ")
}

/// `  message done` for reports without a total.
fn counter_style() -> ProgressStyle {
    ProgressStyle::with_template("  {msg} {pos}").expect("constant template")
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulp_common::proto::tasking::v1 as pb;

    fn snapshot(state: pb::TaskState, done: i64) -> Task {
        Task {
            id: "t1".into(),
            func: "sleep".into(),
            state: state as i32,
            worker: if state == pb::TaskState::Waiting {
                ""
            } else {
                "w1"
            }
            .into(),
            progress_reports: vec![pb::ProgressReport {
                message: "Sleeping".into(),
                code: "sleep".into(),
                done,
                total: 3,
                suffix: String::new(),
            }],
            ..Task::default()
        }
    }

    #[test]
    fn line_view_prints_one_line_per_state_change() {
        let mut view = LineView::new(Vec::new());
        for task in [
            snapshot(pb::TaskState::Waiting, 0),
            snapshot(pb::TaskState::Running, 0),
            snapshot(pb::TaskState::Running, 1),
            snapshot(pb::TaskState::Running, 2),
            snapshot(pb::TaskState::Completed, 3),
        ] {
            view.show(&task);
        }
        view.finish(&snapshot(pb::TaskState::Completed, 3));
        let text = String::from_utf8(view.into_inner()).unwrap();
        assert_eq!(
            text,
            "task t1 (sleep): waiting\n\
             task t1 (sleep): running on w1\n\
             task t1 (sleep): completed on w1\n"
        );
    }

    #[test]
    fn live_view_tracks_reports_without_a_terminal() {
        let mut view = LiveView::new();
        view.multi.set_draw_target(ProgressDrawTarget::hidden());
        view.show(&snapshot(pb::TaskState::Running, 2));
        let (bar, has_total) = &view.bars["sleep"];
        assert!(*has_total);
        assert_eq!((bar.position(), bar.length()), (2, Some(3)));
        view.finish(&snapshot(pb::TaskState::Completed, 3));
    }

    #[test]
    fn exit_codes_and_failure_messages() {
        assert_eq!(exit_code(&snapshot(pb::TaskState::Completed, 3)), 0);
        assert_eq!(
            failure_message(&snapshot(pb::TaskState::Completed, 3)),
            None
        );

        let mut failed = snapshot(pb::TaskState::Failed, 1);
        failed.error = Some(pb::TaskError {
            description: "boom".into(),
            reason: "task error".into(),
            traceback: String::new(),
        });
        assert_eq!(exit_code(&failed), 1);
        assert_eq!(
            failure_message(&failed).unwrap(),
            "task t1 ended failed: boom (reason: task error)"
        );
        assert_eq!(exit_code(&snapshot(pb::TaskState::Canceled, 1)), 1);
        assert_eq!(
            failure_message(&snapshot(pb::TaskState::Canceled, 1)).unwrap(),
            "task t1 ended canceled"
        );
    }
}
