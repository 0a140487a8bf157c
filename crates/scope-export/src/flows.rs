//! Arrows between threads: spawn → the task's first poll, wake → the next
//! poll of the woken task. Each ends on the first on-CPU piece of that poll
//! (where the poll slice starts in the exports).

use crate::tasks::on_cpu_pieces;
use scope_model::{ThreadTimeline, Timeline};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

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
/// place (tid 0, never a thread of the target: the idle task's): they
/// still end a wait (the wake before one is not drawn to a later poll).
/// Ordered as polls are reached: by start, then no place first.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct PollPlace {
    start: u64,
    tid: u32,
    at: u64,
    serial: u32,
}

impl PollPlace {
    fn place(&self) -> Option<(u32, u64)> {
        (self.tid != 0).then_some((self.tid, self.at))
    }
}

/// Every task's polls in start order across threads: one cursor per
/// thread, merged through a heap. (A list of every poll sorted by task
/// took 24 bytes a poll: 36 MB on 1.5 M polls, held while the arrows were
/// placed; this holds one a thread.)
struct PollsInOrder<'a> {
    cursors: Vec<(&'a ThreadTimeline, usize)>,
    /// (next poll, its source): a cursor's index, or `cursors.len()` for
    /// the polls left out.
    heads: BinaryHeap<Reverse<(PollPlace, usize)>>,
    left_out: std::vec::IntoIter<PollPlace>,
}

impl<'a> PollsInOrder<'a> {
    fn new(tl: &'a Timeline) -> Self {
        let mut left_out: Vec<PollPlace> = tl.polls_without_return.iter().map(|&(serial, start)| PollPlace { start, tid: 0, at: 0, serial }).collect();
        left_out.sort_unstable();
        let cursors: Vec<_> = tl.threads.iter().map(|t| (t, 0)).collect();
        let mut polls = PollsInOrder { heads: BinaryHeap::with_capacity(cursors.len() + 1), cursors, left_out: left_out.into_iter() };
        for source in 0..=polls.cursors.len() {
            polls.advance(source);
        }
        polls
    }

    /// Queues the next poll of `source` that has a place (or is left out).
    fn advance(&mut self, source: usize) {
        let Some((t, next)) = self.cursors.get_mut(source) else {
            if let Some(p) = self.left_out.next() {
                self.heads.push(Reverse((p, source)));
            }
            return;
        };
        while let Some(poll) = t.polls.get(*next) {
            *next += 1;
            // A poll never on a CPU in the window has no place and ends no wait.
            if let Some((at, _)) = on_cpu_pieces(t, poll).next() {
                self.heads.push(Reverse((PollPlace { start: poll.start_ns, tid: t.tid, at, serial: poll.serial }, source)));
                return;
            }
        }
    }

    /// The next poll, if it starts before `before`.
    fn next_before(&mut self, before: u64) -> Option<PollPlace> {
        let &Reverse((poll, source)) = self.heads.peek().filter(|Reverse((p, _))| p.start < before)?;
        self.heads.pop();
        self.advance(source);
        Some(poll)
    }
}

/// One sweep over the wakes and the polls in time order: `first` gets
/// each task's first poll, `arrow` each wake that gets an arrow (its index
/// in `tl.wakes`, and where it ends: tid, instant). Of several wakes before
/// one poll only the first gets one: the later ones found the task already
/// scheduled. A wake at the instant a poll starts comes before it.
fn sweep(tl: &Timeline, first: &mut impl FnMut(PollPlace), arrow: &mut impl FnMut(usize, (u32, u64))) {
    let mut polls = PollsInOrder::new(tl);
    // Per task, the first wake since its last poll began (an entry per
    // task waiting, not per wake).
    let mut waiting: HashMap<u32, usize> = HashMap::new();
    let mut polled: HashSet<u32> = HashSet::new();
    let mut reach = |poll: PollPlace, waiting: &mut HashMap<u32, usize>| {
        if polled.insert(poll.serial) {
            first(poll);
        }
        if let (Some(i), Some(place)) = (waiting.remove(&poll.serial), poll.place()) {
            arrow(i, place);
        }
    };
    for (i, w) in tl.wakes.iter().enumerate() {
        while let Some(poll) = polls.next_before(w.ts) {
            reach(poll, &mut waiting);
        }
        waiting.entry(w.serial()).or_insert(i);
    }
    while let Some(poll) = polls.next_before(u64::MAX) {
        reach(poll, &mut waiting);
    }
}

/// Every wake that gets an arrow (see [`sweep`]), in the order of the
/// polls they reach: its index in `tl.wakes` and where the arrow ends.
pub fn wake_arrows(tl: &Timeline, mut each: impl FnMut(usize, (u32, u64))) {
    sweep(tl, &mut |_| {}, &mut each);
}

/// Every spawn and wake arrow, in time order of their source.
pub fn flows(tl: &Timeline) -> Vec<Flow> {
    let mut first_polls: HashMap<u32, PollPlace> = HashMap::new();
    let mut out = Vec::new();
    sweep(
        tl,
        &mut |p| {
            first_polls.insert(p.serial, p);
        },
        &mut |i, to| {
            let w = &tl.wakes[i];
            let kind = if w.self_wake() { FlowKind::SelfWake } else { FlowKind::Wake };
            out.push(Flow::new(i as u32, kind, (w.tid, w.ts), to));
        },
    );
    for s in &tl.spawns {
        let first = first_polls.get(&s.serial).and_then(PollPlace::place);
        if let Some((tid, at)) = first.filter(|p| p.1 >= s.ts) {
            out.push(Flow::new(s.serial, FlowKind::Spawn, (s.tid, s.ts), (tid, at)));
        }
    }
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

    /// The arrows as they were found before the sweep, from a list of every
    /// poll sorted by task (kept as the reference the sweep must match).
    /// (wake index, where its arrow ends), by wake.
    type Arrows = Vec<(usize, (u32, u64))>;

    fn by_task_lists(tl: &Timeline) -> (Arrows, HashMap<u32, PollPlace>) {
        let mut all: Vec<PollPlace> = tl.polls_without_return.iter().map(|&(serial, start)| PollPlace { start, tid: 0, at: 0, serial }).collect();
        for t in &tl.threads {
            for p in &t.polls {
                if let Some((at, _)) = on_cpu_pieces(t, p).next() {
                    all.push(PollPlace { start: p.start_ns, tid: t.tid, at, serial: p.serial });
                }
            }
        }
        all.sort_unstable_by_key(|p| (p.serial, p.start, p.tid, p.at));
        let of_task = |serial: u32| {
            let from = all.partition_point(|p| p.serial < serial);
            &all[from..from + all[from..].partition_point(|p| p.serial == serial)]
        };
        let mut taken: HashMap<u32, usize> = HashMap::new();
        let mut arrows = Vec::new();
        for (i, w) in tl.wakes.iter().enumerate() {
            let polls = of_task(w.serial());
            let next = polls.partition_point(|p| p.start < w.ts);
            let Some(poll) = polls.get(next) else { continue };
            if taken.insert(w.serial(), next) == Some(next) {
                continue;
            }
            arrows.extend(poll.place().map(|place| (i, place)));
        }
        let firsts = all.iter().map(|p| p.serial).collect::<HashSet<_>>().into_iter().map(|s| (s, of_task(s)[0])).collect();
        (arrows, firsts)
    }

    fn event(step: (u8, u8, u8, u8), ts: u64) -> Event {
        let (what, tid, task, state) = step;
        let tid = 50 + u32::from(tid % 2);
        let task = u64::from(task % 4) * 0x100;
        let poll_fn = Frame { module: 0, offset: 0x10 };
        match what % 6 {
            0 => Event::Switch { ts, cpu: 0, prev_tid: tid, next_tid: 0, prev_state: u64::from(state % 2), prev_ours: true, next_ours: false, cpu_lost: 0 },
            1 => Event::Switch { ts, cpu: 0, prev_tid: 0, next_tid: tid, prev_state: 0, prev_ours: false, next_ours: true, cpu_lost: 0 },
            2 => Event::PollStart { ts, tid, task, poll_fn },
            3 => Event::PollEnd { ts, tid },
            4 => Event::TaskWake { ts, tid, task },
            _ => Event::TaskSpawn { ts, tid, task },
        }
    }

    proptest::proptest! {
        /// The sweep finds the arrows and first polls a list of every poll
        /// by task found, on made-up timelines with ties, nesting, lost
        /// returns and polls off the CPU.
        #[test]
        fn the_sweep_finds_what_the_sorted_lists_found(
            steps in proptest::collection::vec((0u8..6, 0u8..2, 0u8..4, 0u8..2, 0u64..3), 0..80)
        ) {
            let mut ts = 1_000;
            let events = steps.iter().map(|&(what, tid, task, state, gap)| {
                ts += gap;
                event((what, tid, task, state), ts)
            }).collect();
            let tl = Timeline::build(&recording(1_000, ts + 10, &[50, 51], events), &WorkerRule::default());
            let (want_arrows, want_firsts) = by_task_lists(&tl);
            let mut arrows = Vec::new();
            let mut firsts = HashMap::new();
            sweep(&tl, &mut |p| { firsts.insert(p.serial, p); }, &mut |i, to| arrows.push((i, to)));
            arrows.sort_unstable();
            proptest::prop_assert_eq!(arrows, want_arrows);
            proptest::prop_assert!(firsts == want_firsts);
        }
    }
}
