//! The busiest individual tasks: one row per task (not per kind), with
//! Tokio's id when the probe read it, so a row can be matched with the
//! program's own logs (`tokio::task::id()`).

use super::{TaskInstance, ms};
use crate::tasks;
use scope_model::{Frame, Timeline};
use std::collections::HashMap;

/// Rows kept: the report stays one screen, the JSON small.
const TOP: usize = 10;

#[derive(Default)]
struct Acc {
    poll_fn: Option<Frame>,
    polls: u64,
    busy_ns: u64,
    polled_ns: u64,
    longest_ns: u64,
    first_ns: u64,
    last_ns: u64,
}

/// Tasks by on-CPU time inside their own polls. Executors (the worker
/// loop, a LocalSet: polls with polls nested inside) are left out: their
/// time is the tasks'.
pub fn busiest(tl: &Timeline, kinds: &HashMap<Frame, String>) -> Vec<TaskInstance> {
    let mut by: HashMap<u32, Acc> = HashMap::new();
    for t in &tl.threads {
        let busy = tasks::self_busy_all(t);
        for (p, busy) in t.polls.iter().zip(busy).filter(|(p, _)| super::long_polls::is_leaf(t, p)) {
            let a = by.entry(p.serial).or_insert_with(|| Acc { first_ns: p.start_ns, ..Acc::default() });
            a.poll_fn = Some(tl.poll_fn(p));
            a.polls += 1;
            a.busy_ns += busy;
            a.polled_ns += p.duration_ns();
            a.longest_ns = a.longest_ns.max(p.duration_ns());
            a.first_ns = a.first_ns.min(p.start_ns);
            a.last_ns = a.last_ns.max(p.end_ns);
        }
    }
    let mut rows: Vec<(u32, Acc)> = by.into_iter().collect();
    rows.sort_by(|a, b| b.1.busy_ns.cmp(&a.1.busy_ns).then(a.0.cmp(&b.0)));
    rows.into_iter()
        .take(TOP)
        .map(|(serial, a)| TaskInstance {
            task: serial,
            tokio_task_id: tl.tokio_ids.get(&serial).copied(),
            kind: a.poll_fn.and_then(|f| kinds.get(&f).cloned()).unwrap_or_else(|| "task".into()),
            polls: a.polls,
            busy_ms: ms(a.busy_ns),
            polled_ms: ms(a.polled_ns),
            idle_ms: ms((a.last_ns - a.first_ns).saturating_sub(a.polled_ns)),
            longest_poll_ms: ms(a.longest_ns),
        })
        .collect()
}
