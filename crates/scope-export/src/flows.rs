//! Arrows between threads: spawn → the task's first poll, wake → the next
//! poll of the woken task. Each ends on the first on-CPU piece of that poll
//! (where the poll slice starts in the exports).

use crate::tasks::on_cpu_pieces;
use scope_model::Timeline;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowKind {
    Spawn,
    Wake,
    /// The task woke itself (a `yield_now`, or a waker it held).
    SelfWake,
}

impl FlowKind {
    pub fn name(self) -> &'static str {
        match self {
            FlowKind::Spawn => "spawn",
            FlowKind::Wake => "wake",
            FlowKind::SelfWake => "self-wake",
        }
    }
}

/// From (tid, ts) to (tid, ts). Ids number the arrows 1, 2, … in time
/// order: small ids are one-byte varints in the Perfetto export, where flow
/// ids were a fifth of the bytes when they were large.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub id: u64,
    pub kind: FlowKind,
    pub from: (u32, u64),
    pub to: (u32, u64),
}

/// Each task's polls as (poll start, tid, first on-CPU instant), by start.
fn polls_by_task(tl: &Timeline) -> HashMap<u32, Vec<(u64, u32, u64)>> {
    let mut by: HashMap<u32, Vec<(u64, u32, u64)>> = HashMap::new();
    for t in &tl.threads {
        for poll in &t.polls {
            if let Some(&(first, _)) = on_cpu_pieces(t, poll).first() {
                by.entry(poll.serial).or_default().push((poll.start_ns, t.tid, first));
            }
        }
    }
    for polls in by.values_mut() {
        polls.sort_unstable();
    }
    by
}

/// Every spawn and wake arrow, in time order of their source. Of several
/// wakes before one poll only the first gets an arrow: the later ones found
/// the task already scheduled.
pub fn flows(tl: &Timeline) -> Vec<Flow> {
    let polls = polls_by_task(tl);
    let mut out = Vec::new();
    for s in &tl.spawns {
        let first = polls.get(&s.serial).and_then(|p| p.first());
        if let Some(&(_, tid, at)) = first.filter(|p| p.2 >= s.ts) {
            out.push(Flow { id: u64::from(s.serial), kind: FlowKind::Spawn, from: (s.tid, s.ts), to: (tid, at) });
        }
    }
    // Per task, the poll the last arrow went to: wakes come in time order,
    // so a poll already reached is the one before (one entry per task, not
    // per wake: a set of every (task, poll) pair was 36 MB on 1.5 M wakes).
    let mut taken: HashMap<u32, usize> = HashMap::new();
    for (i, w) in tl.wakes.iter().enumerate() {
        let Some(task_polls) = polls.get(&w.serial) else { continue };
        let next = task_polls.partition_point(|p| p.0 < w.ts);
        let Some(&(_, tid, at)) = task_polls.get(next) else { continue };
        if taken.insert(w.serial, next) == Some(next) {
            continue;
        }
        let kind = if w.self_wake { FlowKind::SelfWake } else { FlowKind::Wake };
        out.push(Flow { id: 1 << 32 | i as u64, kind, from: (w.tid, w.ts), to: (tid, at) });
    }
    out.sort_by_key(|f| (f.from.1, f.id));
    for (i, f) in out.iter_mut().enumerate() {
        f.id = i as u64 + 1;
    }
    out
}
