//! Worker utilisation over time, scheduling delays, task rankings and lints.

use super::{Lint, TaskUse, ms, stats::Percentiles};
use crate::flows::wake_arrows;
use crate::tasks;
use scope_model::{Frame, OffReason, SpanState, ThreadTimeline, Timeline};
use serde::Serialize;
use std::collections::{HashMap, HashSet};

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct WorkerUse {
    pub name: String,
    pub tid: u32,
    /// On a CPU.
    pub busy_pct: f64,
    /// Off-CPU waiting inside a task's poll: the runtime was blocked.
    pub blocked_in_poll_pct: f64,
    /// Off-CPU waiting outside polls: parked, nothing to do.
    pub idle_pct: f64,
    /// Runnable but descheduled.
    pub preempted_pct: f64,
    /// In no known state (before its first switch, nothing told which):
    /// the four shares above add up to 100 minus this.
    pub unseen_pct: f64,
    pub polls: u64,
    /// Parked while some task had been woken over 1 ms earlier and was
    /// still waiting for its poll: work was queued and this worker slept.
    pub idle_while_work_queued_ms: f64,
    /// On-CPU share per second of the recording, in order (per
    /// `Insights::busy_bucket_s` seconds on very long recordings).
    pub busy_per_second: Vec<f64>,
}

use scope_model::spans::percent as pct;

/// Blocked time inside leaf polls (executor polls would count parking).
fn blocked_in_polls(t: &ThreadTimeline) -> u64 {
    t.polls
        .iter()
        .filter(|p| super::long_polls::is_leaf(t, p))
        .flat_map(|p| {
            t.spans_between(p.start_ns, p.end_ns).iter().filter(|&s| matches!(s.state, SpanState::OffCpu(OffReason::Blocked { .. }))).map(|s| s.end_ns.min(p.end_ns).saturating_sub(s.start_ns.max(p.start_ns)))
        })
        .sum()
}

/// Entries of every worker's busy series together, at most: the series
/// of a year-long window (or a crafted one) must not take gigabytes. A
/// day of one-second entries for 64 workers fits.
const BUSY_CELLS: u64 = 64 * 86_400;

/// Seconds per entry of the busy series: 1, unless the recording is so
/// long that whole seconds for every worker would pass `BUSY_CELLS`.
pub fn busy_bucket_s(tl: &Timeline) -> u64 {
    let workers = tl.workers().count().max(1) as u64;
    let seconds = tl.duration_ns().div_ceil(1_000_000_000).max(1);
    seconds.div_ceil((BUSY_CELLS / workers).max(1)).max(1)
}

/// The same computation as the live per-second line (`spans`): seconds
/// from the recording's start, the last one cut at its end.
fn busy_per_second(tl: &Timeline, t: &ThreadTimeline, bucket_s: u64) -> Vec<f64> {
    let bucket = bucket_s * 1_000_000_000;
    let mut out = Vec::new();
    let mut at = tl.start_ns;
    while at < tl.end_ns {
        let end = at.saturating_add(bucket).min(tl.end_ns);
        out.push(pct(t.on_cpu_between(at, end), end - at));
        at = end;
    }
    out
}

/// A wake that waited this long for its poll counts as queued work.
const QUEUED_MIN_NS: u64 = 1_000_000;

/// Union of [wake + 1 ms, poll start) over slow wakes, sorted and disjoint.
fn queued_intervals(tl: &Timeline) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = Vec::new();
    wake_arrows(tl, |i, (_, to)| {
        let from = tl.wakes[i].ts;
        if to > from + QUEUED_MIN_NS {
            v.push((from + QUEUED_MIN_NS, to));
        }
    });
    v.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (a, b) in v {
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    merged
}

/// Time `t` spent parked (blocked outside any poll) inside `queued`.
fn idle_overlap(t: &ThreadTimeline, queued: &[(u64, u64)]) -> u64 {
    let in_poll = |ts: u64| {
        let i = t.polls.partition_point(|p| p.start_ns <= ts);
        t.polls[..i].iter().rev().take(64).any(|p| p.end_ns > ts && super::long_polls::is_leaf(t, p))
    };
    t.spans
        .iter()
        .filter(|s| matches!(s.state, SpanState::OffCpu(OffReason::Blocked { .. })) && !in_poll(s.start_ns))
        .map(|s| {
            let from = queued.partition_point(|q| q.1 <= s.start_ns);
            queued[from..]
                .iter()
                .take_while(|q| q.0 < s.end_ns)
                .map(|q| q.1.min(s.end_ns).saturating_sub(q.0.max(s.start_ns)))
                .sum::<u64>()
        })
        .sum()
}

pub fn utilisation(tl: &Timeline) -> Vec<WorkerUse> {
    let queued = queued_intervals(tl);
    let bucket_s = busy_bucket_s(tl);
    tl.workers()
        .map(|t| {
            let life = t.lifetime_ns();
            let in_polls = blocked_in_polls(t);
            WorkerUse {
                name: t.display_name(),
                tid: t.tid,
                busy_pct: pct(t.on_cpu_ns(), life),
                blocked_in_poll_pct: pct(in_polls, life),
                idle_pct: pct(t.blocked_ns().saturating_sub(in_polls), life),
                preempted_pct: pct(t.runnable_ns(), life),
                unseen_pct: pct(t.unseen_ns(), life),
                polls: t.polls.iter().filter(|p| super::long_polls::is_leaf(t, p)).count() as u64,
                idle_while_work_queued_ms: ms(idle_overlap(t, &queued)),
                busy_per_second: busy_per_second(tl, t, bucket_s),
            }
        })
        .collect()
}

pub fn task_wake_delay(tl: &Timeline) -> Option<Percentiles> {
    let mut delays = Vec::new();
    wake_arrows(tl, |i, (_, to)| delays.push(to.saturating_sub(tl.wakes[i].ts)));
    Percentiles::of(delays)
}

/// Woken (sched_waking) → back on a CPU, over every worker wait that had one.
pub fn wake_to_cpu(tl: &Timeline) -> Option<Percentiles> {
    Percentiles::of(
        tl.workers()
            .flat_map(|t| {
                t.spans
                    .iter()
                    .filter(|s| matches!(s.state, SpanState::OffCpu(OffReason::Woken)) && s.end_ns < tl.end_ns)
                    .map(|s| s.duration_ns())
            })
            .collect(),
    )
}

pub fn runnable_wait(tl: &Timeline) -> Option<Percentiles> {
    Percentiles::of(
        tl.workers()
            .flat_map(|t| t.spans.iter())
            .filter(|s| matches!(s.state, SpanState::OffCpu(OffReason::Preempted)) && s.end_ns < tl.end_ns)
            .map(|s| s.duration_ns())
            .collect(),
    )
}

const SELF_WAKE_LINT_PCT: f64 = 50.0;
const SELF_WAKE_LINT_MIN: u64 = 10;
const NEVER_YIELDED_NS: u64 = 1_000_000_000;

/// Task kinds by busy time, and tokio-console-style lints.
pub fn task_tables(tl: &Timeline, kinds: &HashMap<Frame, String>) -> (Vec<TaskUse>, Vec<Lint>) {
    // Each task serial's kind, to attribute wakes.
    let mut kind_of: HashMap<u32, &str> = HashMap::new();
    for t in &tl.threads {
        for p in &t.polls {
            if let Some(k) = kinds.get(&tl.poll_fn(p)) {
                kind_of.insert(p.serial, k);
            }
        }
    }
    let mut wakes: HashMap<&str, (u64, u64)> = HashMap::new();
    for w in &tl.wakes {
        if let Some(k) = kind_of.get(&w.serial()) {
            let e = wakes.entry(k).or_default();
            e.0 += 1;
            e.1 += u64::from(w.self_wake());
        }
    }
    let mut lints = Vec::new();
    let tables: Vec<TaskUse> = tasks::totals(tl, kinds)
        .into_iter()
        .map(|(kind, k)| {
            let self_wake_pct = wakes.get(kind.as_str()).filter(|w| w.0 > 0).map(|w| pct(w.1, w.0));
            if let (Some(p), Some(w)) = (self_wake_pct, wakes.get(kind.as_str()))
                && p > SELF_WAKE_LINT_PCT
                && w.0 >= SELF_WAKE_LINT_MIN
            {
                lints.push(Lint {
                    lint: "self_wakes",
                    kind: kind.clone(),
                    detail: format!("{p:.0}% of its {} wakes came from the task itself (busy-looping on yield?)", w.0),
                });
            }
            TaskUse { kind, polls: k.polls, tasks: k.tasks, busy_ms: ms(k.busy_ns), longest_poll_ms: ms(k.longest_ns), self_wake_pct }
        })
        .collect();
    let mut flagged = HashSet::new();
    for t in &tl.threads {
        for p in t.polls.iter().filter(|p| p.duration_ns() > NEVER_YIELDED_NS && super::long_polls::is_leaf(t, p)) {
            let kind = kinds.get(&tl.poll_fn(p)).cloned().unwrap_or_else(|| "task".into());
            if flagged.insert(kind.clone()) {
                lints.push(Lint {
                    lint: "never_yielded",
                    kind,
                    detail: format!("one poll ran {:.2} s without returning to the runtime", p.duration_ns() as f64 / 1e9),
                });
            }
        }
    }
    (tables, lints)
}
