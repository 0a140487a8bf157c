//! Counter tracks next to the thread rows: how many tasks were ready and
//! waiting for a worker (woken or spawned, not yet polled: the run queues'
//! depth, summed), polls per second, and how many workers were on a CPU.
//! Bucketed, so a busy program costs a few values per millisecond at most,
//! not two per poll.

use crate::flows::Flow;
use scope_model::{SpanState, Timeline};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

/// One counter: `points` are (ns, value), the value holding until the next.
pub struct Series {
    pub name: &'static str,
    pub points: Vec<(u64, i64)>,
}

pub const READY_TASKS: &str = "tasks waiting for a worker";
pub const POLLS_PER_SECOND: &str = "polls per second";
pub const WORKERS_ON_CPU: &str = "workers on CPU";

/// Levels change within microseconds (a worker waking for 20 µs, a task
/// queued for 50): the peak of each bucket is what a timeline can show at
/// a glance, in both exports. Workers: 1 ms.
/// Ready tasks: 10 ms, which bounds the counter to 100 values a second
/// (a packet each: at 1 ms the demo's trace grew 13%).
const WORKER_BUCKET_NS: u64 = 1_000_000;
const READY_BUCKET_NS: u64 = 10_000_000;
const RATE_BUCKET_NS: u64 = 100_000_000;

/// Every counter for which the recording has data.
pub fn series(tl: &Timeline, flows: &[Flow]) -> Vec<Series> {
    let mut out = vec![Series { name: WORKERS_ON_CPU, points: peaks(tl, workers_on_cpu(tl).0, WORKER_BUCKET_NS) }];
    out.extend(task_series(tl, flows));
    out
}

/// The task counters (ready tasks, poll rate): none without task polls.
fn task_series(tl: &Timeline, flows: &[Flow]) -> Vec<Series> {
    if tl.threads.iter().all(|t| t.polls.is_empty()) {
        return Vec::new();
    }
    let waits = flows.iter().map(|f| (f.from().1, f.to().1)).filter(|&(from, to)| to >= from);
    vec![
        Series { name: READY_TASKS, points: peaks(tl, summed(ready_changes(waits)), READY_BUCKET_NS) },
        Series { name: POLLS_PER_SECOND, points: poll_rate(tl) },
    ]
}

/// +1 where a task became ready, −1 where its poll began, in time order,
/// from `(ready, polled)` pairs in order of the first: the arrows come
/// sorted by source, so only the waits still open are held (a list of
/// both edges of every arrow, sorted, was 115 MB on 1.5 M wakes).
fn ready_changes(waits: impl Iterator<Item = (u64, u64)>) -> impl Iterator<Item = (u64, i64)> {
    let mut waits = waits.peekable();
    let mut open: BinaryHeap<Reverse<u64>> = BinaryHeap::new();
    std::iter::from_fn(move || {
        let next_ready = waits.peek().map(|w| w.0);
        match (next_ready, open.peek()) {
            (Some(ready), Some(&Reverse(polled))) if polled < ready => {
                open.pop();
                Some((polled, -1))
            }
            (Some(_), _) => {
                let (ready, polled) = waits.next()?;
                debug_assert!(polled >= ready);
                open.push(Reverse(polled));
                Some((ready, 1))
            }
            (None, _) => open.pop().map(|Reverse(polled)| (polled, -1)),
        }
    })
}

/// Changes in time order with the deltas of one instant summed.
fn summed(changes: impl Iterator<Item = (u64, i64)>) -> impl Iterator<Item = (u64, i64)> {
    let mut changes = changes.peekable();
    std::iter::from_fn(move || {
        let (ts, mut delta) = changes.next()?;
        while let Some((_, more)) = changes.next_if(|c| c.0 == ts) {
            delta += more;
        }
        Some((ts, delta))
    })
}

/// Worker on-CPU span edges as level changes (ts → delta, absolute ns).
fn workers_on_cpu(tl: &Timeline) -> Changes {
    let spans = tl.workers().flat_map(|t| t.spans.iter()).filter(|s| matches!(s.state, SpanState::OnCpu { .. }));
    Changes::from(spans.flat_map(|s| [(s.start_ns, 1), (s.end_ns, -1)]).collect())
}

/// Level changes (ts → summed delta), by time: a sorted list, not a map
/// (a tree of two entries per wake took 100 MB on 1.5 M wakes, and its
/// freed nodes stayed in the process).
struct Changes(Vec<(u64, i64)>);

impl Changes {
    fn from(mut deltas: Vec<(u64, i64)>) -> Self {
        deltas.sort_unstable_by_key(|d| d.0);
        let mut out: Vec<(u64, i64)> = Vec::with_capacity(deltas.len());
        for (ts, delta) in deltas {
            match out.last_mut() {
                Some(last) if last.0 == ts => last.1 += delta,
                _ => out.push((ts, delta)),
            }
        }
        Changes(out)
    }
}

/// The level after `changes` (ts → delta, by time, one per instant) as the peak of each bucket of
/// `bucket` ns (1: every change exactly); a level counts toward a bucket's
/// peak only if it held inside it for some time. Points are written only
/// when the value changes; the series starts at 0 at the window's start.
fn peaks(tl: &Timeline, changes: impl IntoIterator<Item = (u64, i64)>, bucket: u64) -> Vec<(u64, i64)> {
    let mut points: Vec<(u64, i64)> = vec![(tl.start_ns, 0)];
    let push = |points: &mut Vec<(u64, i64)>, ts: u64, value: i64| match points.last_mut() {
        Some(last) if last.0 == ts => last.1 = value,
        Some(last) if last.1 == value => {}
        _ => points.push((ts, value)),
    };
    let at = |b: u64| tl.start_ns + b * bucket;
    let mut level = 0;
    // (bucket, peak so far in it)
    let mut current: Option<(u64, i64)> = None;
    for (ts, delta) in changes.into_iter().filter(|(_, d)| *d != 0) {
        let b = ts.saturating_sub(tl.start_ns) / bucket;
        if let Some((cb, peak)) = current
            && cb != b
        {
            push(&mut points, at(cb), peak);
            if b > cb + 1 {
                push(&mut points, at(cb + 1), level);
            }
            current = None;
        }
        let (_, peak) = current.get_or_insert((b, if ts > at(b) { level } else { i64::MIN }));
        level += delta;
        *peak = (*peak).max(level);
    }
    if let Some((cb, peak)) = current {
        push(&mut points, at(cb), peak);
        push(&mut points, at(cb + 1), level);
    }
    points.retain(|p| p.0 <= tl.end_ns);
    points
}

/// Poll starts per bucket, scaled to a per-second rate; one point per
/// bucket whose rate differs from the previous one. Only buckets with
/// polls are counted: memory follows the polls, not the window's length.
fn poll_rate(tl: &Timeline) -> Vec<(u64, i64)> {
    let buckets = tl.duration_ns().div_ceil(RATE_BUCKET_NS).max(1);
    let mut counts: BTreeMap<u64, i64> = BTreeMap::new();
    for t in &tl.threads {
        for p in &t.polls {
            let b = p.start_ns.saturating_sub(tl.start_ns) / RATE_BUCKET_NS;
            if b < buckets {
                *counts.entry(b).or_default() += 1;
            }
        }
    }
    let per_second = (1_000_000_000 / RATE_BUCKET_NS) as i64;
    let at = |b: u64| tl.start_ns + b * RATE_BUCKET_NS;
    let mut points: Vec<(u64, i64)> = vec![(tl.start_ns, 0)];
    let set = |points: &mut Vec<(u64, i64)>, ts: u64, value: i64| match points.last_mut() {
        Some(last) if last.0 == ts => last.1 = value,
        Some(last) if last.1 == value => {}
        _ => points.push((ts, value)),
    };
    for (&b, &c) in &counts {
        set(&mut points, at(b), c * per_second);
        // The bucket after a busy one is empty unless counted next.
        if b + 1 < buckets && !counts.contains_key(&(b + 1)) {
            set(&mut points, at(b + 1), 0);
        }
    }
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeline(start: u64, end: u64) -> Timeline {
        let rec = crate::test_recording::recording(start, end, &[], vec![]);
        Timeline::build(&rec, &scope_model::WorkerRule::default())
    }

    #[test]
    fn peaks_keep_the_highest_level_of_each_bucket_and_the_level_after() {
        let tl = timeline(0, 10_000);
        // +1 +1 −1 inside bucket 0 (peak 2, then 1); −1 in bucket 3.
        let changes = Changes::from(vec![(100, 1), (200, 1), (300, -1), (3_500, -1)]);
        assert_eq!(peaks(&tl, changes.0.clone(), 1_000), vec![(0, 2), (1_000, 1), (4_000, 0)]);
        // Every change kept at bucket 1.
        assert_eq!(peaks(&tl, changes.0, 1), vec![(0, 0), (100, 1), (200, 2), (300, 1), (3_500, 0)]);
    }

    proptest::proptest! {
        /// The streamed ready-task changes are the sorted list's, summed
        /// per instant the same way.
        #[test]
        fn ready_changes_stream_the_sorted_list(mut waits in proptest::collection::vec((0u64..50, 0u64..20), 0..60)) {
            let mut waits: Vec<(u64, u64)> = waits.drain(..).map(|(ready, wait)| (ready, ready + wait)).collect();
            waits.sort_by_key(|w| w.0);
            let listed = Changes::from(waits.iter().flat_map(|&(ready, polled)| [(ready, 1), (polled, -1)]).collect());
            let streamed: Vec<(u64, i64)> = summed(ready_changes(waits.into_iter())).collect();
            proptest::prop_assert_eq!(streamed, listed.0);
        }
    }
}
