//! Rendering tasks, groups and workers: tables and key/value views for
//! people, JSON documents for programs.
//!
//! The JSON form follows the proto field names (snake_case), with states as
//! lower-case words (`"waiting"`), timestamps as RFC 3339 strings in UTC
//! (`null` when unset), and args, kwargs and result as real JSON. Every
//! command prints exactly one JSON document, so its output can be piped to
//! `jq` as a whole. The renderers are pure functions of their input (and of
//! "now", passed in), so tests check them without a scheduler.

use std::io::{self, Write};

use chrono::{DateTime, SecondsFormat};
use comfy_table::{Table, presets};
use prost_types::Timestamp;
use pulp_common::json::{list_to_json, struct_to_json, value_to_json};
use pulp_common::proto::tasking::v1::{self as pb, Task, TaskGroup, Worker};
use pulp_common::state::TaskState;
use pulp_common::time::from_timestamp;
use serde_json::{Value as Json, json};

/// Writes command results in the chosen form (human or JSON).
pub struct Printer<'a, W: Write> {
    out: &'a mut W,
    json: bool,
}

impl<'a, W: Write> Printer<'a, W> {
    /// A printer onto `out`; `json` selects the machine-readable form.
    pub fn new(out: &'a mut W, json: bool) -> Self {
        Printer { out, json }
    }

    /// True when printing JSON.
    pub fn is_json(&self) -> bool {
        self.json
    }

    /// A task in short: a one-row table of id, func and state (dispatch,
    /// cancel), or the full JSON object.
    pub fn task_summary(&mut self, task: &Task) -> io::Result<()> {
        if self.json {
            self.write_json(&task_json(task))
        } else {
            self.write_text(&task_summary_table(std::slice::from_ref(task)))
        }
    }

    /// A task in full: the key/value view (get, watch), or JSON.
    pub fn task(&mut self, task: &Task) -> io::Result<()> {
        if self.json {
            self.write_json(&task_json(task))
        } else {
            self.write_text(&task_detail(task))
        }
    }

    /// Tasks as a table (list), or a JSON array; `now_micros` is used for
    /// the duration of running tasks.
    pub fn tasks(&mut self, tasks: &[Task], now_micros: i64) -> io::Result<()> {
        if self.json {
            self.write_json(&Json::Array(tasks.iter().map(task_json).collect()))
        } else {
            self.write_text(&task_list_table(tasks, now_micros))
        }
    }

    /// A task group with its counts per state, or JSON.
    pub fn group(&mut self, group: &TaskGroup) -> io::Result<()> {
        if self.json {
            self.write_json(&group_json(group))
        } else {
            self.write_text(&group_detail(group))
        }
    }

    /// Workers as a table, or a JSON array.
    pub fn workers(&mut self, workers: &[Worker]) -> io::Result<()> {
        if self.json {
            self.write_json(&Json::Array(workers.iter().map(worker_json).collect()))
        } else {
            self.write_text(&workers_table(workers))
        }
    }

    /// Any result: `json()` as JSON, or `text()` for people. Only the
    /// chosen form is built.
    pub fn either(
        &mut self,
        json: impl FnOnce() -> Json,
        text: impl FnOnce() -> String,
    ) -> io::Result<()> {
        if self.json {
            self.write_json(&json())
        } else {
            self.write_text(&text())
        }
    }

    fn write_json(&mut self, doc: &Json) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut *self.out, doc)?;
        writeln!(self.out)?;
        self.out.flush()
    }

    fn write_text(&mut self, text: &str) -> io::Result<()> {
        self.out.write_all(text.as_bytes())?;
        if !text.ends_with('\n') {
            writeln!(self.out)?;
        }
        self.out.flush()
    }
}

/// A task's state as a lower-case word (`"waiting"`); `"unspecified"` or
/// `"unknown"` for values that are not a real state.
pub fn state_name(state: i32) -> &'static str {
    match pb::TaskState::try_from(state) {
        Ok(state) => TaskState::from_proto(state).map_or("unspecified", TaskState::as_str),
        Err(_) => "unknown",
    }
}

/// A task's state as the domain type; `None` for UNSPECIFIED or unknown.
pub fn task_state(task: &Task) -> Option<TaskState> {
    pb::TaskState::try_from(task.state)
        .ok()
        .and_then(TaskState::from_proto)
}

/// A worker's state as a lower-case word (`"online"`).
pub fn worker_state_name(state: i32) -> &'static str {
    match pb::WorkerState::try_from(state) {
        Ok(pb::WorkerState::Online) => "online",
        Ok(pb::WorkerState::Draining) => "draining",
        Ok(pb::WorkerState::Offline) => "offline",
        Ok(pb::WorkerState::Lost) => "lost",
        Ok(pb::WorkerState::Unspecified) => "unspecified",
        Err(_) => "unknown",
    }
}

/// A timestamp in RFC 3339 (UTC, `Z`) with as many fractional digits as
/// needed.
pub fn rfc3339(ts: &Timestamp) -> String {
    format_timestamp(ts, SecondsFormat::AutoSi)
}

pub(crate) fn format_timestamp(ts: &Timestamp, precision: SecondsFormat) -> String {
    let nanos = u32::try_from(ts.nanos).unwrap_or(0);
    match DateTime::from_timestamp(ts.seconds, nanos) {
        Some(time) => time.to_rfc3339_opts(precision, true),
        None => format!("{}s", ts.seconds),
    }
}

pub(crate) fn timestamp_json(ts: Option<&Timestamp>) -> Json {
    ts.map_or(Json::Null, |ts| Json::String(rfc3339(ts)))
}

/// A task as a JSON object with the proto field names.
pub fn task_json(task: &Task) -> Json {
    json!({
        "id": task.id,
        "func": task.func,
        "state": state_name(task.state),
        "worker": task.worker,
        "created_at": timestamp_json(task.created_at.as_ref()),
        "unblocked_at": timestamp_json(task.unblocked_at.as_ref()),
        "started_at": timestamp_json(task.started_at.as_ref()),
        "finished_at": timestamp_json(task.finished_at.as_ref()),
        "error": task.error.as_ref().map(|error| json!({
            "description": error.description,
            "reason": error.reason,
            "traceback": error.traceback,
        })),
        "result": task.result.as_ref().map_or(Json::Null, value_to_json),
        "exclusive_resources": task.exclusive_resources,
        "shared_resources": task.shared_resources,
        "task_group_id": task.task_group_id,
        "parent_task_id": task.parent_task_id,
        "progress_reports": task.progress_reports.iter().map(|report| json!({
            "message": report.message,
            "code": report.code,
            "done": report.done,
            "total": report.total,
            "suffix": report.suffix,
        })).collect::<Vec<_>>(),
        "args": task.args.as_ref().map_or_else(|| json!([]), list_to_json),
        "kwargs": task.kwargs.as_ref().map_or_else(|| json!({}), |s| Json::Object(struct_to_json(s))),
        "created_resources": task.created_resources,
        "timeout_seconds": task.timeout_seconds,
    })
}

/// A task group as a JSON object with the proto field names.
pub fn group_json(group: &TaskGroup) -> Json {
    json!({
        "id": group.id,
        "description": group.description,
        "all_tasks_dispatched": group.all_tasks_dispatched,
        "finished": group.finished,
        "created_at": timestamp_json(group.created_at.as_ref()),
        "total": group.total,
        "waiting": group.waiting,
        "running": group.running,
        "completed": group.completed,
        "failed": group.failed,
        "canceling": group.canceling,
        "canceled": group.canceled,
        "skipped": group.skipped,
    })
}

/// A worker as a JSON object with the proto field names.
pub fn worker_json(worker: &Worker) -> Json {
    json!({
        "name": worker.name,
        "state": worker_state_name(worker.state),
        "funcs": worker.funcs,
        "slots": worker.slots,
        "running": worker.running,
        "connected_at": timestamp_json(worker.connected_at.as_ref()),
        "last_heartbeat": timestamp_json(worker.last_heartbeat.as_ref()),
        "version": worker.version,
    })
}

/// The table of `dispatch` and `cancel`: ID, FUNC, STATE.
pub fn task_summary_table(tasks: &[Task]) -> String {
    table(
        &["ID", "FUNC", "STATE"],
        tasks.iter().map(|task| {
            vec![
                task.id.clone(),
                task.func.clone(),
                state_name(task.state).to_owned(),
            ]
        }),
    )
}

/// The table of `list`: ID, FUNC, STATE, WORKER, CREATED, DURATION.
pub fn task_list_table(tasks: &[Task], now_micros: i64) -> String {
    table(
        &["ID", "FUNC", "STATE", "WORKER", "CREATED", "DURATION"],
        tasks.iter().map(|task| {
            vec![
                task.id.clone(),
                task.func.clone(),
                state_name(task.state).to_owned(),
                or_dash(&task.worker),
                task.created_at.as_ref().map_or_else(
                    || "-".to_owned(),
                    |ts| format_timestamp(ts, SecondsFormat::Secs),
                ),
                task_duration(task, now_micros).map_or_else(|| "-".to_owned(), format_duration),
            ]
        }),
    )
}

/// The table of `workers`: NAME, STATE, SLOTS, RUNNING, FUNCS, LAST HEARTBEAT.
pub fn workers_table(workers: &[Worker]) -> String {
    table(
        &[
            "NAME",
            "STATE",
            "SLOTS",
            "RUNNING",
            "FUNCS",
            "LAST HEARTBEAT",
        ],
        workers.iter().map(|worker| {
            vec![
                worker.name.clone(),
                worker_state_name(worker.state).to_owned(),
                worker.slots.to_string(),
                worker.running.to_string(),
                or_dash(&worker.funcs.join(",")),
                worker.last_heartbeat.as_ref().map_or_else(
                    || "-".to_owned(),
                    |ts| format_timestamp(ts, SecondsFormat::Secs),
                ),
            ]
        }),
    )
}

/// The key/value view of one task (`get`, and the end of `watch`).
pub fn task_detail(task: &Task) -> String {
    let time = |ts: Option<&Timestamp>| {
        ts.map_or_else(
            || "-".to_owned(),
            |ts| format_timestamp(ts, SecondsFormat::Millis),
        )
    };
    let mut rows = vec![
        ("id", task.id.clone()),
        ("func", task.func.clone()),
        ("state", state_name(task.state).to_owned()),
        ("worker", or_dash(&task.worker)),
        ("created", time(task.created_at.as_ref())),
        ("unblocked", time(task.unblocked_at.as_ref())),
        ("started", time(task.started_at.as_ref())),
        ("finished", time(task.finished_at.as_ref())),
    ];
    if task.timeout_seconds > 0.0 {
        rows.push(("timeout", format!("{}s", task.timeout_seconds)));
    }
    rows.extend([
        ("exclusive", or_dash(&task.exclusive_resources.join("\n"))),
        ("shared", or_dash(&task.shared_resources.join("\n"))),
        ("group", or_dash(&task.task_group_id)),
        ("parent", or_dash(&task.parent_task_id)),
        (
            "args",
            task.args
                .as_ref()
                .map_or_else(|| "[]".to_owned(), |a| list_to_json(a).to_string()),
        ),
        (
            "kwargs",
            task.kwargs.as_ref().map_or_else(
                || "{}".to_owned(),
                |k| Json::Object(struct_to_json(k)).to_string(),
            ),
        ),
        (
            "result",
            task.result
                .as_ref()
                .map_or_else(|| "-".to_owned(), |r| value_to_json(r).to_string()),
        ),
    ]);
    match &task.error {
        Some(error) => {
            rows.push(("error", or_dash(&error.description)));
            rows.push(("reason", or_dash(&error.reason)));
            if !error.traceback.is_empty() {
                rows.push(("traceback", error.traceback.trim_end().to_owned()));
            }
        }
        None => rows.push(("error", "-".to_owned())),
    }
    let progress = task
        .progress_reports
        .iter()
        .map(progress_line)
        .collect::<Vec<_>>()
        .join("\n");
    rows.push(("progress", or_dash(&progress)));
    rows.push((
        "created resources",
        or_dash(&task.created_resources.join("\n")),
    ));
    key_values(&rows)
}

/// The key/value view of a task group with its counts per state.
pub fn group_detail(group: &TaskGroup) -> String {
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
    let counts = [
        ("waiting", group.waiting),
        ("running", group.running),
        ("completed", group.completed),
        ("failed", group.failed),
        ("canceling", group.canceling),
        ("canceled", group.canceled),
        ("skipped", group.skipped),
    ]
    .iter()
    .map(|(state, count)| format!("{state:<10} {count}"))
    .collect::<Vec<_>>()
    .join("\n");
    key_values(&[
        ("id", group.id.clone()),
        ("description", or_dash(&group.description)),
        (
            "created",
            group.created_at.as_ref().map_or_else(
                || "-".to_owned(),
                |ts| format_timestamp(ts, SecondsFormat::Millis),
            ),
        ),
        ("all tasks dispatched", yes_no(group.all_tasks_dispatched)),
        ("finished", yes_no(group.finished)),
        ("tasks", group.total.to_string()),
        ("by state", counts),
    ])
}

/// One progress report as `message done/total suffix (code)`.
pub fn progress_line(report: &pb::ProgressReport) -> String {
    let mut line = if report.total > 0 {
        format!("{} {}/{}", report.message, report.done, report.total)
    } else {
        format!("{} {}", report.message, report.done)
    };
    if !report.suffix.is_empty() {
        line.push(' ');
        line.push_str(&report.suffix);
    }
    if !report.code.is_empty() {
        line.push_str(&format!(" ({})", report.code));
    }
    line
}

/// How long a task ran, in microseconds: from start to finish, or to now
/// while it runs; `None` when it never started.
pub fn task_duration(task: &Task, now_micros: i64) -> Option<i64> {
    let started = from_timestamp(task.started_at.as_ref()?);
    let end = task.finished_at.as_ref().map_or(now_micros, from_timestamp);
    Some((end - started).max(0))
}

/// A duration for a table: `0.25s`, `42.0s`, `3m04s`, `2h05m`.
pub fn format_duration(micros: i64) -> String {
    let seconds = micros as f64 / 1e6;
    if seconds < 1.0 {
        format!("{seconds:.2}s")
    } else if seconds < 60.0 {
        format!("{seconds:.1}s")
    } else {
        let whole = micros / 1_000_000;
        if whole < 3600 {
            format!("{}m{:02}s", whole / 60, whole % 60)
        } else {
            format!("{}h{:02}m", whole / 3600, (whole % 3600) / 60)
        }
    }
}

/// A borderless table with a header row, columns two spaces apart.
pub(crate) fn table(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut table = Table::new();
    table
        .load_style(presets::NOTHING)
        .set_header(header.to_vec());
    for row in rows {
        table.add_row(row);
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    let mut text = table
        .lines()
        .map(|line| line.trim_end().to_owned())
        .collect::<Vec<_>>()
        .join("\n");
    text.push('\n');
    text
}

/// Aligned `key: value` lines; a value of several lines continues under the
/// first one.
pub(crate) fn key_values(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(key, _)| key.len()).max().unwrap_or(0) + 2;
    let mut text = String::new();
    for (key, value) in rows {
        let mut lines = value.lines();
        let first = lines.next().unwrap_or("");
        text.push_str(&format!("{:<width$}{first}\n", format!("{key}:")));
        for line in lines {
            text.push_str(&format!("{:width$}{line}\n", ""));
        }
    }
    text
}

pub(crate) fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulp_common::json::{json_to_list, json_to_struct, json_to_value};
    use pulp_common::time::to_timestamp;

    /// 2023-11-14T22:13:20.123456Z
    const CREATED: i64 = 1_700_000_000_123_456;

    fn sample_task() -> Task {
        Task {
            id: "0190c0de-0000-7000-8000-000000000001".into(),
            func: "sleep".into(),
            state: pb::TaskState::Failed as i32,
            worker: "worker-1".into(),
            created_at: Some(to_timestamp(CREATED)),
            unblocked_at: Some(to_timestamp(CREATED + 1_000)),
            started_at: Some(to_timestamp(CREATED + 2_000_000)),
            finished_at: Some(to_timestamp(CREATED + 65_000_000)),
            error: Some(pb::TaskError {
                description: "boom".into(),
                reason: "task error".into(),
                traceback: "line 1\nline 2".into(),
            }),
            result: None,
            exclusive_resources: vec!["/pulp/api/v3/repositories/file/file/1/".into()],
            shared_resources: vec!["/a/".into(), "/b/".into()],
            task_group_id: String::new(),
            parent_task_id: String::new(),
            progress_reports: vec![pb::ProgressReport {
                message: "Sleeping".into(),
                code: "sleep.seconds".into(),
                done: 3,
                total: 10,
                suffix: "s".into(),
            }],
            args: Some(json_to_list(&json!([1, "two", {"three": 3}]))),
            kwargs: Some(json_to_struct(
                json!({"seconds": 2.5, "deep": {"x": [true]}})
                    .as_object()
                    .unwrap(),
            )),
            created_resources: vec!["/pulp/api/v3/versions/1/".into()],
            timeout_seconds: 30.0,
        }
    }

    #[test]
    fn task_json_uses_proto_names_words_rfc3339_and_real_json() {
        let doc = task_json(&sample_task());
        assert_eq!(doc["id"], "0190c0de-0000-7000-8000-000000000001");
        assert_eq!(doc["func"], "sleep");
        assert_eq!(doc["state"], "failed");
        assert_eq!(doc["worker"], "worker-1");
        assert_eq!(doc["created_at"], "2023-11-14T22:13:20.123456Z");
        assert_eq!(doc["unblocked_at"], "2023-11-14T22:13:20.124456Z");
        assert_eq!(doc["started_at"], "2023-11-14T22:13:22.123456Z");
        assert_eq!(doc["args"], json!([1, "two", {"three": 3}]));
        assert_eq!(
            doc["kwargs"],
            json!({"seconds": 2.5, "deep": {"x": [true]}})
        );
        assert_eq!(doc["result"], Json::Null);
        assert_eq!(
            doc["error"],
            json!({"description": "boom", "reason": "task error", "traceback": "line 1\nline 2"})
        );
        assert_eq!(doc["shared_resources"], json!(["/a/", "/b/"]));
        assert_eq!(doc["progress_reports"][0]["done"], 3);
        assert_eq!(doc["progress_reports"][0]["code"], "sleep.seconds");
        assert_eq!(
            doc["created_resources"],
            json!(["/pulp/api/v3/versions/1/"])
        );
        assert_eq!(doc["timeout_seconds"], 30.0);
        assert_eq!(doc["task_group_id"], "");
    }

    #[test]
    fn task_json_of_a_bare_task() {
        let mut task = Task {
            id: "t".into(),
            state: pb::TaskState::Waiting as i32,
            ..Task::default()
        };
        let doc = task_json(&task);
        assert_eq!(doc["state"], "waiting");
        assert_eq!(doc["started_at"], Json::Null);
        assert_eq!(doc["error"], Json::Null);
        assert_eq!(doc["args"], json!([]));
        assert_eq!(doc["kwargs"], json!({}));

        task.state = pb::TaskState::Completed as i32;
        task.result = Some(json_to_value(&json!({"n": 7})));
        let doc = task_json(&task);
        assert_eq!(doc["state"], "completed");
        assert_eq!(doc["result"], json!({"n": 7}));
    }

    #[test]
    fn states_render_as_lower_case_words() {
        assert_eq!(state_name(pb::TaskState::Canceling as i32), "canceling");
        assert_eq!(state_name(0), "unspecified");
        assert_eq!(state_name(99), "unknown");
        assert_eq!(
            worker_state_name(pb::WorkerState::Draining as i32),
            "draining"
        );
    }

    #[test]
    fn json_printer_writes_one_document() {
        let tasks = [sample_task(), Task::default()];
        let mut out = Vec::new();
        Printer::new(&mut out, true).tasks(&tasks, 0).unwrap();
        let doc: Json = serde_json::from_slice(&out).unwrap();
        assert_eq!(doc.as_array().unwrap().len(), 2);
        assert_eq!(doc[0]["state"], "failed");
    }

    #[test]
    fn tables_contain_the_ids() {
        let mut second = sample_task();
        second.id = "0190c0de-0000-7000-8000-000000000002".into();
        second.state = pb::TaskState::Running as i32;
        second.finished_at = None;
        let tasks = [sample_task(), second];

        let text = task_list_table(&tasks, CREATED + 12_000_000);
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        for header in ["ID", "FUNC", "STATE", "WORKER", "CREATED", "DURATION"] {
            assert!(lines[0].contains(header), "{text}");
        }
        assert!(lines[0].starts_with("ID"), "{text}");
        assert!(
            lines[1].contains("0190c0de-0000-7000-8000-000000000001"),
            "{text}"
        );
        assert!(
            lines[1].contains("failed") && lines[1].contains("1m03s"),
            "{text}"
        );
        assert!(lines[1].contains("2023-11-14T22:13:20Z"), "{text}");
        assert!(
            lines[2].contains("0190c0de-0000-7000-8000-000000000002"),
            "{text}"
        );
        assert!(
            lines[2].contains("running") && lines[2].contains("10.0s"),
            "{text}"
        );

        let summary = task_summary_table(&tasks[..1]);
        assert!(
            summary.contains("0190c0de-0000-7000-8000-000000000001"),
            "{summary}"
        );
        assert!(
            summary.contains("sleep") && summary.contains("failed"),
            "{summary}"
        );
        assert!(!summary.contains("WORKER"), "{summary}");
    }

    #[test]
    fn detail_view_shows_every_field() {
        let text = task_detail(&sample_task());
        for expected in [
            "id:",
            "0190c0de-0000-7000-8000-000000000001",
            "state:",
            "failed",
            "worker-1",
            "2023-11-14T22:13:20.123Z",
            "/pulp/api/v3/repositories/file/file/1/",
            r#"[1,"two",{"three":3}]"#,
            r#""seconds":2.5"#,
            "error:",
            "boom",
            "task error",
            "Sleeping 3/10 s (sleep.seconds)",
            "/pulp/api/v3/versions/1/",
            "timeout:",
        ] {
            assert!(text.contains(expected), "missing {expected}:\n{text}");
        }
        // A multi-line value continues aligned under its first line.
        let shared: Vec<_> = text
            .lines()
            .skip_while(|l| !l.starts_with("shared:"))
            .take(2)
            .collect();
        let column = shared[0].find("/a/").unwrap();
        assert_eq!(shared[1].find("/b/"), Some(column), "{text}");
    }

    #[test]
    fn group_and_workers_render() {
        let group = TaskGroup {
            id: "g1".into(),
            description: "nightly".into(),
            all_tasks_dispatched: true,
            finished: false,
            total: 5,
            waiting: 2,
            completed: 3,
            ..TaskGroup::default()
        };
        let text = group_detail(&group);
        assert!(text.contains("g1") && text.contains("nightly"), "{text}");
        assert!(
            text.contains("waiting    2") && text.contains("completed  3"),
            "{text}"
        );
        let doc = group_json(&group);
        assert_eq!(doc["all_tasks_dispatched"], true);
        assert_eq!(doc["total"], 5);

        let worker = Worker {
            name: "w1".into(),
            state: pb::WorkerState::Online as i32,
            funcs: vec!["noop".into(), "sleep".into()],
            slots: 4,
            running: 1,
            last_heartbeat: Some(to_timestamp(CREATED)),
            ..Worker::default()
        };
        let text = workers_table(std::slice::from_ref(&worker));
        assert!(text.starts_with("NAME"), "{text}");
        assert!(text.contains("LAST HEARTBEAT"), "{text}");
        assert!(
            text.contains("w1") && text.contains("online") && text.contains("noop,sleep"),
            "{text}"
        );
        assert_eq!(
            worker_json(&worker)["last_heartbeat"],
            "2023-11-14T22:13:20.123456Z"
        );
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(format_duration(250_000), "0.25s");
        assert_eq!(format_duration(42_000_000), "42.0s");
        assert_eq!(format_duration(184_000_000), "3m04s");
        assert_eq!(format_duration(7_500_000_000), "2h05m");
        assert_eq!(task_duration(&Task::default(), 0), None);
    }
}
