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

/// A task's polls as (poll start, (tid, first on-CPU instant)), by start.
/// Polls left out for a lost return are there without a place: they still
/// end a wait (the wake before one is not drawn to a later poll).
type TaskPolls = Vec<(u64, Option<(u32, u64)>)>;

fn polls_by_task(tl: &Timeline) -> HashMap<u32, TaskPolls> {
    let mut by: HashMap<u32, TaskPolls> = HashMap::new();
    for t in &tl.threads {
        for poll in &t.polls {
            if let Some(&(first, _)) = on_cpu_pieces(t, poll).first() {
                by.entry(poll.serial).or_default().push((poll.start_ns, Some((t.tid, first))));
            }
        }
    }
    for &(serial, start) in &tl.polls_without_return {
        by.entry(serial).or_default().push((start, None));
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
        let first = polls.get(&s.serial).and_then(|p| p.first()).and_then(|p| p.1);
        if let Some((tid, at)) = first.filter(|p| p.1 >= s.ts) {
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
        let Some(&(_, place)) = task_polls.get(next) else { continue };
        if taken.insert(w.serial, next) == Some(next) {
            continue;
        }
        let Some((tid, at)) = place else { continue };
        let kind = if w.self_wake { FlowKind::SelfWake } else { FlowKind::Wake };
        out.push(Flow { id: 1 << 32 | i as u64, kind, from: (w.tid, w.ts), to: (tid, at) });
    }
    out.sort_by_key(|f| (f.from.1, f.id));
    for (i, f) in out.iter_mut().enumerate() {
        f.id = i as u64 + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_recording::recording;
    use scope_model::{Event, Frame, WorkerRule};

    /// A wake before a poll whose return was lost ends at that poll: it is
    /// not drawn to the task's next poll that was kept (a wait that long
    /// never happened), and the wake after it is.
    #[test]
    fn a_poll_left_out_still_ends_the_wait_before_it() {
        let poll_fn = Frame { module: 0, offset: 0x10 };
        let rec = recording(
            1_000,
            2_000,
            &[50],
            vec![
                Event::Switch { ts: 1_010, cpu: 0, prev_tid: 0, next_tid: 50, prev_state: 0, prev_ours: false, next_ours: true, cpu_lost: 0 },
                Event::TaskWake { ts: 1_050, tid: 51, task: 7 },
                Event::PollStart { ts: 1_100, tid: 50, task: 7, poll_fn },
                Event::TaskWake { ts: 1_150, tid: 51, task: 7 },
                Event::PollStart { ts: 1_200, tid: 50, task: 7, poll_fn },
                Event::PollEnd { ts: 1_300, tid: 50 },
            ],
        );
        let tl = Timeline::build(&rec, &WorkerRule::default());
        assert_eq!(tl.polls_without_return, vec![(1, 1_100)]);
        let arrows: Vec<((u32, u64), (u32, u64))> = flows(&tl).iter().map(|f| (f.from, f.to)).collect();
        assert_eq!(arrows, vec![((51, 1_150), (50, 1_200))]);
    }
}
