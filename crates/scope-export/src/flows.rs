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
/// ids were a fifth of the bytes when they were large. 32 bytes (an export
/// holds one per wake: 1.5 M on a busy capture; tuples made it 48).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub id: u32,
    pub kind: FlowKind,
    from_tid: u32,
    to_tid: u32,
    from_ts: u64,
    to_ts: u64,
}

impl Flow {
    fn new(id: u32, kind: FlowKind, from: (u32, u64), to: (u32, u64)) -> Self {
        Flow { id, kind, from_tid: from.0, to_tid: to.0, from_ts: from.1, to_ts: to.1 }
    }

    /// (tid, ts) where the arrow leaves.
    pub fn from(&self) -> (u32, u64) {
        (self.from_tid, self.from_ts)
    }

    /// (tid, ts) where it arrives.
    pub fn to(&self) -> (u32, u64) {
        (self.to_tid, self.to_ts)
    }
}

/// One poll of a task: its start, and where its first on-CPU piece is
/// (tid, instant). Polls left out for a lost return are there without a
/// place: they still end a wait (the wake before one is not drawn to a
/// later poll).
///
/// 24 bytes (an `Option<(u32, u64)>` made it 40: 24 MB more on 1.5 M
/// polls, all held while the arrows are placed): no place is tid 0, which
/// is never a thread of the target (it is the idle task's).
#[derive(Clone, Copy)]
struct PollPlace {
    start: u64,
    at: u64,
    serial: u32,
    tid: u32,
}

impl PollPlace {
    fn new(serial: u32, start: u64, place: Option<(u32, u64)>) -> Self {
        let (tid, at) = place.unwrap_or((0, 0));
        PollPlace { start, at, serial, tid }
    }

    fn place(&self) -> Option<(u32, u64)> {
        (self.tid != 0).then_some((self.tid, self.at))
    }
}

/// Every task's polls in one list by (task, start): one allocation of 24
/// bytes a poll (a map of a list per task took 67 MB on 1.5 M polls).
/// Sorted as by (task, start, place) with no place first.
struct TaskPolls(Vec<PollPlace>);

impl TaskPolls {
    fn of(tl: &Timeline) -> Self {
        let polls: usize = tl.threads.iter().map(|t| t.polls.len()).sum();
        let mut all = Vec::with_capacity(polls + tl.polls_without_return.len());
        for t in &tl.threads {
            for poll in &t.polls {
                if let Some((first, _)) = on_cpu_pieces(t, poll).next() {
                    all.push(PollPlace::new(poll.serial, poll.start_ns, Some((t.tid, first))));
                }
            }
        }
        all.extend(tl.polls_without_return.iter().map(|&(serial, start)| PollPlace::new(serial, start, None)));
        all.sort_unstable_by_key(|p| (p.serial, p.start, p.tid, p.at));
        TaskPolls(all)
    }

    /// The polls of task `serial`, by start.
    fn of_task(&self, serial: u32) -> &[PollPlace] {
        let from = self.0.partition_point(|p| p.serial < serial);
        let to = from + self.0[from..].partition_point(|p| p.serial == serial);
        &self.0[from..to]
    }
}

/// Every wake that gets an arrow, in wake order: its index in `tl.wakes`
/// and where the arrow ends (tid, instant). Of several wakes before one
/// poll only the first gets one: the later ones found the task already
/// scheduled.
pub fn wake_arrows(tl: &Timeline, mut each: impl FnMut(usize, (u32, u64))) {
    wake_arrows_from(tl, &TaskPolls::of(tl), &mut each);
}

fn wake_arrows_from(tl: &Timeline, polls: &TaskPolls, each: &mut impl FnMut(usize, (u32, u64))) {
    // Per task, the poll the last arrow went to: wakes come in time order,
    // so a poll already reached is the one before (one entry per task, not
    // per wake: a set of every (task, poll) pair was 36 MB on 1.5 M wakes).
    let mut taken: HashMap<u32, usize> = HashMap::new();
    for (i, w) in tl.wakes.iter().enumerate() {
        let task_polls = polls.of_task(w.serial);
        let next = task_polls.partition_point(|p| p.start < w.ts);
        let Some(poll) = task_polls.get(next) else { continue };
        if taken.insert(w.serial, next) == Some(next) {
            continue;
        }
        if let Some(place) = poll.place() {
            each(i, place);
        }
    }
}

/// Every spawn and wake arrow, in time order of their source.
pub fn flows(tl: &Timeline) -> Vec<Flow> {
    let polls = TaskPolls::of(tl);
    let mut out = Vec::new();
    for s in &tl.spawns {
        let first = polls.of_task(s.serial).first().and_then(PollPlace::place);
        if let Some((tid, at)) = first.filter(|p| p.1 >= s.ts) {
            out.push(Flow::new(s.serial, FlowKind::Spawn, (s.tid, s.ts), (tid, at)));
        }
    }
    wake_arrows_from(tl, &polls, &mut |i, to| {
        let w = &tl.wakes[i];
        let kind = if w.self_wake { FlowKind::SelfWake } else { FlowKind::Wake };
        out.push(Flow::new(i as u32, kind, (w.tid, w.ts), to));
    });
    // Until now the id is the spawn's task or the wake's index: with the
    // kind, a unique key (so in place; a stable sort's buffer was 36 MB).
    out.sort_unstable_by_key(|f| (f.from_ts, f.kind != FlowKind::Spawn, f.id));
    for (i, f) in out.iter_mut().enumerate() {
        f.id = i as u32 + 1;
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
        let arrows: Vec<((u32, u64), (u32, u64))> = flows(&tl).iter().map(|f| (f.from(), f.to())).collect();
        assert_eq!(arrows, vec![((51, 1_150), (50, 1_200))]);
    }

    /// Held once per poll while arrows are placed: its size is the peak's.
    #[test]
    fn a_poll_place_is_24_bytes() {
        assert_eq!(std::mem::size_of::<PollPlace>(), 24);
        assert_eq!(PollPlace::new(3, 10, None).place(), None);
        assert_eq!(PollPlace::new(3, 10, Some((50, 12))).place(), Some((50, 12)));
    }
}
