//! Resource reservations: which unfinished tasks may run, incrementally.
//!
//! The rule (DESIGN.md section 5): walk the unfinished tasks in dispatch
//! order; a task may run when none of its exclusive resources is held by an
//! earlier task in any mode, and none of its shared resources is held
//! exclusively by an earlier task.
//!
//! Seen per resource, that is a FIFO queue of the tasks claiming it: a task
//! is *admitted* by a queue when it is the head (exclusive claim) or when no
//! exclusive claim precedes it (shared claim). A task may run when every one
//! of its queues admits it. New tasks join at the tail, so admission only
//! ever grows until a task leaves; each task therefore keeps a count of the
//! queues that still block it, and removing a task re-examines only the
//! entries of its own queues that the removal can admit. Dispatch and
//! completion cost O(resources touched * log n), whatever the backlog.
//!
//! Tasks are keyed by their dispatch sequence number (`seq`), which grows
//! with dispatch order.

use pulp_common::names::{ResourceClaims, ResourceName};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One resource's queue, in dispatch order.
#[derive(Debug, Default)]
struct Queue {
    /// Every claim, `true` when exclusive.
    claims: BTreeMap<i64, bool>,
    /// The exclusive claims alone, to find the first one quickly.
    exclusive: BTreeSet<i64>,
}

impl Queue {
    fn first_exclusive(&self) -> Option<i64> {
        self.exclusive.first().copied()
    }

    fn head(&self) -> Option<i64> {
        self.claims.first_key_value().map(|(seq, _)| *seq)
    }
}

#[derive(Debug)]
struct Entry {
    claims: Vec<(ResourceName, bool)>,
    /// Queues that do not admit this task yet.
    blocked_by: usize,
}

/// The per-resource queues of every unfinished task.
#[derive(Debug, Default)]
pub struct Reservations {
    queues: HashMap<ResourceName, Queue>,
    entries: HashMap<i64, Entry>,
}

impl Reservations {
    /// An empty set of queues.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an unfinished task at the tail of its queues; returns true when
    /// it may run at once. `seq` must be greater than every seq added before
    /// it that is still present in a shared queue.
    pub fn add(&mut self, seq: i64, claims: &ResourceClaims) -> bool {
        let mut blocked_by = 0;
        let mut entry_claims = Vec::with_capacity(claims.len());
        for (resource, exclusive) in claims.iter() {
            let queue = self.queues.entry(resource.clone()).or_default();
            debug_assert!(
                queue
                    .claims
                    .last_key_value()
                    .is_none_or(|(last, _)| *last < seq)
            );
            let admitted = if exclusive {
                queue.claims.is_empty()
            } else {
                queue.exclusive.is_empty()
            };
            if !admitted {
                blocked_by += 1;
            }
            queue.claims.insert(seq, exclusive);
            if exclusive {
                queue.exclusive.insert(seq);
            }
            entry_claims.push((resource.clone(), exclusive));
        }
        self.entries.insert(
            seq,
            Entry {
                claims: entry_claims,
                blocked_by,
            },
        );
        blocked_by == 0
    }

    /// Whether each of `batch`, appended in this order after every task
    /// present, could run at once: what [`add`](Self::add) would return for
    /// them, known before their seqs are (so that a dispatch stores its
    /// `unblocked_at` in the same statement that inserts it).
    pub fn admits_at_tail(&self, batch: &[&ResourceClaims]) -> Vec<bool> {
        // Claims of the batch's earlier tasks: (any claim, any exclusive).
        let mut earlier: HashMap<&ResourceName, (bool, bool)> = HashMap::new();
        batch
            .iter()
            .map(|claims| {
                let mut runnable = true;
                for (resource, exclusive) in claims.iter() {
                    let queue = self.queues.get(resource);
                    let (any, any_exclusive) = earlier.get(resource).copied().unwrap_or_default();
                    let admitted = if exclusive {
                        !any && queue.is_none_or(|q| q.claims.is_empty())
                    } else {
                        !any_exclusive && queue.is_none_or(|q| q.exclusive.is_empty())
                    };
                    runnable &= admitted;
                }
                for (resource, exclusive) in claims.iter() {
                    let seen = earlier.entry(resource).or_default();
                    seen.0 = true;
                    seen.1 |= exclusive;
                }
                runnable
            })
            .collect()
    }

    /// Removes a task (it finished, or was cancelled while waiting) and
    /// returns the tasks that may run now and could not before, in
    /// dispatch order.
    pub fn remove(&mut self, seq: i64) -> Vec<i64> {
        let Some(entry) = self.entries.remove(&seq) else {
            return Vec::new();
        };
        let mut admitted = Vec::new();
        for (resource, exclusive) in entry.claims {
            let Some(queue) = self.queues.get_mut(&resource) else {
                continue;
            };
            let first_exclusive = queue.first_exclusive();
            queue.claims.remove(&seq);
            if exclusive {
                queue.exclusive.remove(&seq);
                if first_exclusive == Some(seq) {
                    // The shared claims up to the next exclusive one were held
                    // back only by this task.
                    let next_exclusive = queue.first_exclusive();
                    let upper = next_exclusive.unwrap_or(i64::MAX);
                    admitted.extend(queue.claims.range(seq + 1..upper).map(|(s, _)| *s));
                    if let Some(next) = next_exclusive
                        && queue.head() == Some(next)
                    {
                        admitted.push(next);
                    }
                }
            } else if let Some(first) = first_exclusive
                && seq < first
                && queue.head() == Some(first)
            {
                // The last shared claim ahead of an exclusive one left.
                admitted.push(first);
            }
            if queue.claims.is_empty() {
                self.queues.remove(&resource);
            }
        }
        let mut runnable = Vec::new();
        for s in admitted {
            if let Some(e) = self.entries.get_mut(&s) {
                e.blocked_by -= 1;
                if e.blocked_by == 0 {
                    runnable.push(s);
                }
            }
        }
        runnable.sort_unstable();
        runnable
    }

    /// True when the task is present and every queue admits it.
    pub fn is_runnable(&self, seq: i64) -> bool {
        self.entries.get(&seq).is_some_and(|e| e.blocked_by == 0)
    }

    /// How many unfinished tasks are queued.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no task is queued.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forgets everything (before a rebuild from the database).
    pub fn clear(&mut self) {
        self.queues.clear();
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn claims(exclusive: &[&str], shared: &[&str]) -> ResourceClaims {
        let parse = |names: &[&str]| {
            names
                .iter()
                .map(|n| ResourceName::parse(n).unwrap())
                .collect::<Vec<_>>()
        };
        ResourceClaims::new(parse(exclusive), parse(shared)).unwrap()
    }

    /// The rule exactly as DESIGN.md section 5 states it: a walk over every
    /// unfinished task in dispatch order.
    fn reference_walk(tasks: &BTreeMap<i64, ResourceClaims>) -> BTreeSet<i64> {
        let mut taken_exclusive = BTreeSet::new();
        let mut taken_shared = BTreeSet::new();
        let mut runnable = BTreeSet::new();
        for (seq, c) in tasks {
            let free = c
                .exclusive
                .iter()
                .all(|r| !taken_exclusive.contains(r) && !taken_shared.contains(r))
                && c.shared.iter().all(|r| !taken_exclusive.contains(r));
            if free {
                runnable.insert(*seq);
            }
            taken_exclusive.extend(c.exclusive.iter().cloned());
            taken_shared.extend(c.shared.iter().cloned());
        }
        runnable
    }

    #[test]
    fn the_ordering_scenario_of_the_issue() {
        // T1 x[A] s[B]; T2 s[A]; T3 s[A]; T4 x[A]; T5 x[B].
        let mut r = Reservations::new();
        assert!(r.add(1, &claims(&["A"], &["B"])));
        assert!(!r.add(2, &claims(&[], &["A"])));
        assert!(!r.add(3, &claims(&[], &["A"])));
        assert!(!r.add(4, &claims(&["A"], &[])));
        assert!(!r.add(5, &claims(&["B"], &[])));
        assert_eq!(r.remove(1), vec![2, 3, 5]);
        assert_eq!(r.remove(2), Vec::<i64>::new());
        assert_eq!(r.remove(3), vec![4]);
    }

    #[test]
    fn a_waiting_writer_blocks_later_readers() {
        let mut r = Reservations::new();
        assert!(r.add(1, &claims(&[], &["A"])));
        assert!(!r.add(2, &claims(&["A"], &[])));
        assert!(!r.add(3, &claims(&[], &["A"])));
        // Cancelling the waiting writer lets the reader join the first one.
        assert_eq!(r.remove(2), vec![3]);
    }

    #[test]
    fn tasks_without_resources_run_at_once() {
        let mut r = Reservations::new();
        assert!(r.add(1, &claims(&[], &[])));
        assert!(r.remove(1).is_empty());
        assert!(r.is_empty());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Add(Vec<(u8, bool)>),
        Remove(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => prop::collection::vec((0u8..5, any::<bool>()), 0..4).prop_map(Op::Add),
            2 => any::<usize>().prop_map(Op::Remove),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// After every dispatch and every removal (in any order: tasks may
        /// finish or be cancelled anywhere in a queue), the incremental
        /// structure agrees with the reference walk, and `remove` reports
        /// exactly the tasks that became runnable.
        #[test]
        fn agrees_with_the_reference_walk(ops in prop::collection::vec(op(), 1..80)) {
            let mut r = Reservations::new();
            let mut live: BTreeMap<i64, ResourceClaims> = BTreeMap::new();
            let mut next = 1;
            for op in ops {
                let before = reference_walk(&live);
                match op {
                    Op::Add(picks) => {
                        let ex: Vec<String> = picks.iter().filter(|p| p.1).map(|p| format!("r{}", p.0)).collect();
                        let sh: Vec<String> = picks.iter().filter(|p| !p.1).map(|p| format!("r{}", p.0)).collect();
                        let ex: Vec<&str> = ex.iter().map(String::as_str).collect();
                        let sh: Vec<&str> = sh.iter().map(String::as_str).collect();
                        let c = claims(&ex, &sh);
                        let runnable = r.add(next, &c);
                        live.insert(next, c);
                        prop_assert_eq!(runnable, reference_walk(&live).contains(&next));
                        next += 1;
                    }
                    Op::Remove(i) => {
                        if live.is_empty() { continue; }
                        let seq = *live.keys().nth(i % live.len()).unwrap();
                        live.remove(&seq);
                        let newly: BTreeSet<i64> = r.remove(seq).into_iter().collect();
                        let after = reference_walk(&live);
                        let expected: BTreeSet<i64> = after.difference(&before).copied().collect();
                        prop_assert_eq!(newly, expected);
                    }
                }
                let walk = reference_walk(&live);
                for seq in live.keys() {
                    prop_assert_eq!(r.is_runnable(*seq), walk.contains(seq), "seq {}", seq);
                }
            }
        }

        /// `admits_at_tail` predicts what `add` returns for a batch of
        /// dispatches (runs of consecutive adds), whatever came before.
        #[test]
        fn admits_at_tail_predicts_add(ops in prop::collection::vec(op(), 1..80)) {
            let mut r = Reservations::new();
            let mut live: Vec<i64> = Vec::new();
            let mut next = 1;
            let mut batch: Vec<ResourceClaims> = Vec::new();
            let flush = |r: &mut Reservations, batch: &mut Vec<ResourceClaims>, live: &mut Vec<i64>, next: &mut i64| {
                let refs: Vec<&ResourceClaims> = batch.iter().collect();
                let predicted = r.admits_at_tail(&refs);
                let actual: Vec<bool> = batch
                    .drain(..)
                    .map(|c| {
                        live.push(*next);
                        *next += 1;
                        r.add(*next - 1, &c)
                    })
                    .collect();
                (predicted, actual)
            };
            for op in ops {
                match op {
                    Op::Add(picks) => {
                        let ex: Vec<String> = picks.iter().filter(|p| p.1).map(|p| format!("r{}", p.0)).collect();
                        let sh: Vec<String> = picks.iter().filter(|p| !p.1).map(|p| format!("r{}", p.0)).collect();
                        let ex: Vec<&str> = ex.iter().map(String::as_str).collect();
                        let sh: Vec<&str> = sh.iter().map(String::as_str).collect();
                        batch.push(claims(&ex, &sh));
                    }
                    Op::Remove(i) => {
                        let (predicted, actual) = flush(&mut r, &mut batch, &mut live, &mut next);
                        prop_assert_eq!(predicted, actual);
                        if !live.is_empty() {
                            let seq = live.remove(i % live.len());
                            r.remove(seq);
                        }
                    }
                }
            }
            let (predicted, actual) = flush(&mut r, &mut batch, &mut live, &mut next);
            prop_assert_eq!(predicted, actual);
        }
    }
}
