//! Checking a finished run from the times measured inside task bodies:
//! conflicting tasks (a common resource, at least one exclusive) must not
//! overlap, and must run in dispatch order.

use pulp_common::json::value_to_json;
use pulp_common::proto::tasking::v1 as pb;
use std::collections::HashMap;

/// What the check found.
#[derive(Debug, Default, Clone, Copy)]
pub struct Verdict {
    /// Tasks checked.
    pub tasks: usize,
    /// Tasks not COMPLETED.
    pub not_completed: usize,
    /// Conflicting pairs whose body intervals overlapped.
    pub overlaps: usize,
    /// Conflicting pairs that ran in reverse dispatch order.
    pub fifo_violations: usize,
}

impl Verdict {
    /// Nothing wrong.
    pub fn ok(&self) -> bool {
        self.not_completed == 0 && self.overlaps == 0 && self.fifo_violations == 0
    }
}

fn interval(task: &pb::Task) -> Option<(i64, i64)> {
    let result = value_to_json(task.result.as_ref()?);
    Some((
        result["started_at_us"].as_i64()?,
        result["finished_at_us"].as_i64()?,
    ))
}

/// Checks `tasks`, given in dispatch order, whose bodies report their times
/// (the `sleep` task does). Per resource, in dispatch order: an exclusive
/// claim must start after every earlier claim ended; a shared claim after
/// every earlier exclusive claim ended.
pub fn check(tasks: &[pb::Task]) -> Verdict {
    let mut verdict = Verdict {
        tasks: tasks.len(),
        ..Default::default()
    };
    // Per resource: the claims so far as (start, end, exclusive).
    let mut claims: HashMap<&str, Vec<(i64, i64, bool)>> = HashMap::new();
    for task in tasks {
        if task.state != pb::TaskState::Completed as i32 {
            verdict.not_completed += 1;
            continue;
        }
        let Some((start, end)) = interval(task) else {
            verdict.not_completed += 1;
            continue;
        };
        let mine = task
            .exclusive_resources
            .iter()
            .map(|r| (r.as_str(), true))
            .chain(task.shared_resources.iter().map(|r| (r.as_str(), false)));
        for (resource, exclusive) in mine {
            let earlier = claims.entry(resource).or_default();
            for &(s, e, ex) in earlier.iter() {
                if !(exclusive || ex) {
                    continue;
                }
                if e <= start {
                    continue;
                }
                if end <= s {
                    verdict.fifo_violations += 1;
                } else {
                    verdict.overlaps += 1;
                }
            }
            earlier.push((start, end, exclusive));
        }
    }
    verdict
}
