//! Flow ids on slices, chained: an arrow that leaves the slice where another
//! arrived reuses its id. Perfetto links the slices carrying one id in time
//! order (each later one a step of the flow), so a chain draws exactly the
//! arrows its pieces would, with one id per slice instead of two: a task
//! that yields a million times is one id on a million polls, not two
//! million ids. Ids are numbered 1, 2, … in order of first use; the exporter
//! writes them as varints (`flow_ids_old`), 3–4 bytes instead of the 10 of
//! a `fixed64` `flow_ids` entry.

use super::slices::Slice;
use crate::flows::Flow;
use scope_model::Timeline;
use std::collections::HashMap;

/// The innermost slice holding each instant, for instants fed in time
/// order: one sweep with the stack of open slices (searching back from
/// each instant was quadratic when one on-CPU span held 500k polls). An
/// instant earlier than the last starts the sweep over.
struct Sweep<'a> {
    slices: &'a [Slice],
    open: Vec<usize>,
    next: usize,
    last: u64,
}

impl<'a> Sweep<'a> {
    fn new(slices: &'a [Slice]) -> Self {
        Sweep { slices, open: Vec::new(), next: 0, last: 0 }
    }

    fn at(&mut self, ts: u64) -> Option<usize> {
        if ts < self.last {
            (self.open, self.next) = (Vec::new(), 0);
        }
        self.last = ts;
        let slices = self.slices;
        while self.next < slices.len() && slices[self.next].start <= ts {
            while self.open.last().is_some_and(|&o| slices[o].end <= slices[self.next].start) {
                self.open.pop();
            }
            self.open.push(self.next);
            self.next += 1;
        }
        while self.open.last().is_some_and(|&o| slices[o].end <= ts) {
            self.open.pop();
        }
        self.open.last().copied()
    }
}

/// Per thread (same order as `tl.threads`): what the thread's sequence
/// writes for arrows.
#[derive(Default)]
pub(super) struct ThreadArrows {
    /// `(slice index, flow id)`, sorted by slice. u32s: an entry per
    /// arrow end (16 bytes each were 48 MB on 1.5 M wakes).
    pub on_slices: Vec<(u32, u32)>,
    /// Arrows leaving outside every slice: `(ts, name, flow ids)`, by time.
    pub instants: Vec<(u64, &'static str, Vec<u64>)>,
}

/// A worker's I/O driver wakes the tasks of one pass within microseconds,
/// between two polls: those wakes share one instant, at the first of them,
/// when they are this close. An instant of its own costs ~18 bytes; one
/// more id on a shared one, 3–5.
const SHARED_INSTANT_NS: u64 = 10_000;

/// `(ts, name, id)` by time, grouped: same name, within
/// [`SHARED_INSTANT_NS`] of the group's first, no slice starting between.
fn group_instants(slices: &[Slice], instants: Vec<(u64, &'static str, u64)>) -> Vec<(u64, &'static str, Vec<u64>)> {
    let mut out: Vec<(u64, &'static str, Vec<u64>)> = Vec::new();
    for (ts, name, id) in instants {
        if let Some(last) = out.last_mut()
            && last.1 == name
            && ts - last.0 <= SHARED_INSTANT_NS
            && slices.partition_point(|s| s.start <= last.0) == slices.partition_point(|s| s.start < ts)
        {
            last.2.push(id);
            continue;
        }
        out.push((ts, name, vec![id]));
    }
    out
}

/// The innermost slice of thread `ti` around the destination of each of
/// `ends` (flow indices, in destination time order).
fn locate(slices: &[Slice], ti: usize, flows: &[Flow], ends: &[u32], out: &mut [Place]) {
    let mut sweep = Sweep::new(slices);
    for &i in ends {
        if let Some(s) = sweep.at(flows[i as usize].to().1) {
            out[i as usize] = Place { thread: ti as u32, slice: s as u32 };
        }
    }
}

/// Flow ids count the arrows, which are fewer than 2^32.
fn id32(id: u64) -> u32 {
    u32::try_from(id).expect("fewer than 2^32 arrows")
}

/// A slice: thread index, slice index (u32s: one of these per arrow end).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Place {
    thread: u32,
    slice: u32,
}

impl Place {
    /// No slice: 8 bytes a flow where `Option<Place>` took 12.
    const NOWHERE: Place = Place { thread: u32::MAX, slice: u32::MAX };
}

/// The flows (indices) arriving on each thread (index), in arrival time
/// order; arrivals on threads we did not follow are left out. u32s, not
/// `(ts, index)` pairs: 4 bytes a flow instead of 16.
fn arrivals_by_thread(threads: usize, thread: &HashMap<u32, usize>, flows: &[Flow]) -> Vec<Vec<u32>> {
    let mut out = vec![Vec::new(); threads];
    for (i, f) in flows.iter().enumerate() {
        if let Some(&ti) = thread.get(&f.to().0) {
            out[ti].push(id32(i as u64));
        }
    }
    for ends in &mut out {
        ends.sort_unstable_by_key(|&i| (flows[i as usize].to().1, i));
    }
    out
}

/// An arrow leaves from the innermost slice around its source instant (an
/// instant outside every slice, shared by wakes of one driver pass) and ends on the poll holding its
/// destination (the poll's first on-CPU instant); one whose destination is
/// not a slice draws nothing, so it gets no id.
pub(super) fn flow_ids(tl: &Timeline, slices: &[Vec<Slice>], flows: &[Flow]) -> Vec<ThreadArrows> {
    let thread: HashMap<u32, usize> = tl.threads.iter().enumerate().map(|(i, t)| (t.tid, i)).collect();
    let mut destination: Vec<Place> = vec![Place::NOWHERE; flows.len()];
    for (ti, ends) in arrivals_by_thread(tl.threads.len(), &thread, flows).into_iter().enumerate() {
        locate(&slices[ti], ti, flows, &ends, &mut destination);
    }
    // Sources come in time order (`flows()` sorts by them): one sweep per
    // thread as they pass, located in the main loop below without a list
    // of them (a `Place` per flow was 18 MB on 1.5 M polls).
    let mut sweeps: Vec<Sweep> = slices.iter().map(|s| Sweep::new(s)).collect();
    // `flows()` returns them sorted by source time, so a chain has reached
    // a slice before any arrow leaves it.
    let mut out: Vec<ThreadArrows> = (0..tl.threads.len()).map(|_| ThreadArrows::default()).collect();
    let mut instants: Vec<Vec<(u64, &'static str, u64)>> = vec![Vec::new(); tl.threads.len()];
    let mut chain_end: HashMap<Place, u64> = HashMap::new();
    // Arrivals no arrow leaves from again (their slice ended before the
    // sources reached now: they come in time order) are let go when the
    // map has doubled: every deferred wake (`yield_now`) arrives at a poll
    // that no arrow leaves, and kept they were 40 MB on 1.5 M polls.
    let mut pruned_at = 1024;
    let mut next = 1;
    for (i, flow) in flows.iter().enumerate() {
        if chain_end.len() >= 2 * pruned_at {
            let now = flow.from().1;
            chain_end.retain(|p, _| slices[p.thread as usize][p.slice as usize].end > now);
            pruned_at = chain_end.len().max(1024);
        }
        let source = thread.get(&flow.from().0).and_then(|&ti| sweeps[ti].at(flow.from().1).map(|s| Place { thread: ti as u32, slice: s as u32 }));
        let to = destination[i];
        if to == Place::NOWHERE {
            continue;
        }
        let id = match source {
            Some(from) => match chain_end.remove(&from) {
                Some(id) => id,
                None => {
                    next += 1;
                    out[from.thread as usize].on_slices.push((from.slice, id32(next - 1)));
                    next - 1
                }
            },
            None => {
                let Some(&ti) = thread.get(&flow.from().0) else { continue };
                next += 1;
                instants[ti].push((flow.from().1, flow.kind.name(), next - 1));
                next - 1
            }
        };
        out[to.thread as usize].on_slices.push((to.slice, id32(id)));
        chain_end.insert(to, id);
    }
    for ((arrows, instants), slices) in out.iter_mut().zip(instants).zip(slices) {
        arrows.on_slices.sort_unstable();
        arrows.on_slices.dedup();
        arrows.instants = group_instants(slices, instants);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perfetto::slices::Source;

    #[test]
    fn wakes_of_one_pass_share_an_instant() {
        let poll = Slice::new(20_050, 20_080, 0, Source::Poll(0));
        let instants = vec![(0, "wake", 1), (500, "wake", 2), (600, "spawn", 3), (700, "spawn", 4), (20_000, "wake", 5), (20_100, "wake", 6), (40_000, "wake", 7)];
        let grouped = group_instants(&[poll], instants);
        // 20 000 is past the window of the first group; the poll starts
        // between 20 000 and 20 100; 40 000 is past the window.
        assert_eq!(
            grouped,
            [(0, "wake", vec![1, 2]), (600, "spawn", vec![3, 4]), (20_000, "wake", vec![5]), (20_100, "wake", vec![6]), (40_000, "wake", vec![7])]
        );
    }
}
