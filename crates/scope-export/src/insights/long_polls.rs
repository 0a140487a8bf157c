//! Long polls and their cause, grouped by call site: 500 occurrences of one
//! blocking read are one row with a count and percentiles.

use super::{ms, stats::nearest_rank};
use crate::labels;
use crate::task_ids::{self, TaskIdKinds};
use scope_model::identity;
use scope_model::{Frame, OffReason, Poll, ResolvedFrame, SpanState, Symbols, ThreadTimeline, Timeline, Waker};
use serde::Serialize;
use std::collections::HashMap;

#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// Mostly on a CPU: the poll computed for that long.
    Cpu,
    /// Mostly off-CPU waiting (sleep, file I/O, a lock, DNS …) inside the poll.
    Blocked,
    /// Mostly runnable but not running: preempted, or woken and waiting
    /// for a CPU (CPU contention).
    Preempted,
}

impl Cause {
    pub fn name(self) -> &'static str {
        match self {
            Cause::Cpu => "cpu",
            Cause::Blocked => "blocked",
            Cause::Preempted => "preempted",
        }
    }
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct LongPollGroup {
    pub cause: Cause,
    pub task_kind: String,
    /// The user function responsible: hottest in samples (cpu), or the one
    /// that made the blocking call (blocked); the task kind otherwise.
    pub site: String,
    /// cpu: the hottest frames, hottest first. blocked: the stack at the
    /// switch-out, innermost first (syscall wrapper … site).
    pub frames: Vec<String>,
    pub count: u64,
    pub total_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Mean split of these polls' wall time.
    pub on_cpu_pct: f64,
    pub blocked_pct: f64,
    pub preempted_pct: f64,
    /// Rows (thread display names) these polls ran on.
    pub threads: Vec<String>,
    /// blocked: who ended the waits (sched_waking), most frequent first,
    /// as `name (tid N)` for the target's threads, `pid P tid N` for other
    /// processes, `a timer or interrupt` for wakes from interrupt context.
    pub woken_by: Vec<String>,
    /// Start of the longest occurrence, ms since the recording began.
    pub longest_at_ms: f64,
    /// true: whole polls, timed by poll probes. false: seen without them,
    /// from Tokio's task id at the switch-out: the time the thread was
    /// blocked inside the poll, a lower bound of the poll's length.
    pub exact: bool,
    /// true: timed by a probe on each poll's start only (`--polls starts`):
    /// a poll's length runs to where its worker was next seen outside it,
    /// an upper bound.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub upper_bound: bool,
}

/// A poll that ran user code: one with nested polls is an executor
/// (Tokio's worker loop, a LocalSet), whose length is not a task's. Depth
/// saturates: a poll at the cap holding one at the cap holds a deeper one
/// (without that, lost returns nesting 200 000 polls made this a scan of
/// every later poll for each).
pub fn is_leaf(t: &ThreadTimeline, poll: &Poll) -> bool {
    let next = t.polls.partition_point(|p| p.start_ns <= poll.start_ns);
    !t.polls[next..].iter().take_while(|p| p.start_ns < poll.end_ns).any(|p| p.depth > poll.depth || p.depth == u16::MAX)
}

/// (on-CPU, blocked, runnable) ns of a thread between two instants.
fn split(t: &ThreadTimeline, start: u64, end: u64) -> [u64; 3] {
    let mut out = [0; 3];
    for s in t.spans_between(start, end) {
        let d = s.end_ns.min(end).saturating_sub(s.start_ns.max(start));
        let i = match s.state {
            SpanState::OnCpu { .. } => 0,
            SpanState::OffCpu(OffReason::Blocked { .. } | OffReason::Unknown) => 1,
            SpanState::OffCpu(OffReason::Preempted | OffReason::Woken) => 2,
        };
        out[i] += d;
    }
    out
}

fn describe(frames: &[ResolvedFrame]) -> Vec<String> {
    frames.iter().map(|f| f.function.clone()).collect()
}

/// Who a waking came from, as the report names it.
pub fn waker_name(tl: &Timeline, w: &Waker) -> String {
    if w.tid == 0 {
        return "a timer or interrupt".into();
    }
    if w.pid != tl.pid {
        return format!("pid {} tid {}", w.pid, w.tid);
    }
    match tl.threads.iter().find(|t| t.tid == w.tid) {
        Some(t) if t.is_worker() => t.display_name(),
        Some(t) => format!("{} (tid {})", t.name, t.tid),
        None => format!("tid {}", w.tid),
    }
}

/// The longest blocked gap inside a poll.
fn longest_block<'a>(t: &'a ThreadTimeline, poll: &Poll) -> Option<&'a scope_model::Span> {
    t.spans_between(poll.start_ns, poll.end_ns)
        .iter()
        .filter(|s| matches!(s.state, SpanState::OffCpu(OffReason::Blocked { .. })))
        .max_by_key(|s| s.duration_ns())
}

/// Where a blocked poll waited: the stack of its longest blocked gap, cut
/// after the telling frame.
fn blocked_site(tl: &Timeline, t: &ThreadTimeline, poll: &Poll, symbols: &Symbols) -> Option<(String, Vec<String>)> {
    let span = longest_block(t, poll).filter(|s| t.blocked_stack(s).is_some())?;
    let index = t.blocked_stack(span)?;
    let frames = labels::stack(tl, symbols, index);
    let telling = labels::most_telling(tl, symbols, index)?;
    let upto = frames.iter().position(|f| f.function == telling.function).map_or(frames.len(), |i| i + 1);
    Some((telling.function, describe(&frames[..upto])))
}

/// The hottest user functions in samples taken inside the poll.
fn cpu_site(tl: &Timeline, t: &ThreadTimeline, poll: &Poll, symbols: &Symbols) -> Option<(String, Vec<String>)> {
    let from = t.samples.partition_point(|&(ts, _)| ts < poll.start_ns);
    let to = t.samples.partition_point(|&(ts, _)| ts < poll.end_ns);
    let mut counts: HashMap<String, usize> = HashMap::new();
    for &(_, s) in &t.samples[from..to] {
        if let Some(f) = labels::most_telling(tl, symbols, s) {
            *counts.entry(f.function).or_default() += 1;
        }
    }
    let mut ranked: Vec<(String, usize)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let top = ranked.first()?.0.clone();
    Some((top, ranked.into_iter().take(5).map(|(f, n)| format!("{f} ({n} samples)")).collect()))
}

#[derive(Default)]
struct Acc {
    durations: Vec<u64>,
    split: [u64; 3],
    threads: Vec<String>,
    frames: Vec<String>,
    longest: (u64, u64),
    wakers: HashMap<String, u64>,
}

/// One long poll, judged: why it was long and where.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub cause: Cause,
    pub kind: String,
    pub site: String,
    pub frames: Vec<String>,
    /// (on-CPU, blocked, preempted) ns.
    pub parts: [u64; 3],
}

pub fn classify(tl: &Timeline, t: &ThreadTimeline, poll: &Poll, symbols: &Symbols, kinds: &HashMap<Frame, String>) -> Verdict {
    let parts = split(t, poll.start_ns, poll.end_ns);
    let cause = match parts.iter().enumerate().max_by_key(|&(i, v)| (*v, std::cmp::Reverse(i))).map(|(i, _)| i) {
        Some(1) => Cause::Blocked,
        Some(2) => Cause::Preempted,
        _ => Cause::Cpu,
    };
    let kind = kinds.get(&tl.poll_fn(poll)).cloned().unwrap_or_else(|| "task".into());
    let site = match cause {
        Cause::Cpu => cpu_site(tl, t, poll, symbols),
        Cause::Blocked => blocked_site(tl, t, poll, symbols),
        Cause::Preempted => None,
    };
    let (site, frames) = site.unwrap_or_else(|| (kind.clone(), Vec::new()));
    Verdict { cause, kind, site, frames, parts }
}

/// One long poll (or blocked stretch inside one), judged, before grouping.
struct Occurrence {
    verdict: Verdict,
    exact: bool,
    upper_bound: bool,
    start: u64,
    duration: u64,
    thread: String,
    waker: Option<String>,
}

/// Exact polls at or over the threshold (leaf polls only).
fn exact_polls(tl: &Timeline, symbols: &Symbols, kinds: &HashMap<Frame, String>, threshold_ns: u64) -> Vec<Occurrence> {
    let mut out = Vec::new();
    for t in &tl.threads {
        for poll in t.polls.iter().filter(|p| p.duration_ns() >= threshold_ns.max(1) && is_leaf(t, p)) {
            let verdict = classify(tl, t, poll, symbols, kinds);
            let waker = (verdict.cause == Cause::Blocked)
                .then(|| longest_block(t, poll).and_then(|s| t.woken_by(s)).map(|w| waker_name(tl, w)))
                .flatten();
            out.push(Occurrence {
                verdict,
                exact: true,
                upper_bound: poll.bounded,
                start: poll.start_ns,
                duration: poll.duration_ns(),
                thread: t.display_name(),
                waker,
            });
        }
    }
    out
}

/// Blocked stretches inside tasks' polls, seen from Tokio's task id at the
/// switch-out, on threads and at times no poll probe covered. Where the
/// probes watched a thread ([`task_ids::watched`]) they are the truth: a
/// stretch outside every probed poll was in no task, whatever id was read
/// (a worker's own loop id misnamed by a few stacks must not make its
/// parks a task's).
fn blocked_in_tasks(tl: &Timeline, symbols: &Symbols, ids: &TaskIdKinds, threshold_ns: u64) -> Vec<Occurrence> {
    let mut out = Vec::new();
    for t in &tl.threads {
        let watched = task_ids::watched(tl, t);
        for b in identity::blocked_in_tasks(t, |id| ids.is_task(id)) {
            if b.in_poll_ns() < threshold_ns.max(1) || watched.contains(&b.span.start_ns) {
                continue;
            }
            let kind = ids.kind(b.id).unwrap_or("task").to_string();
            let (site, frames) = t
                .blocked_stack(&b.span)
                .and_then(|index| {
                    let frames = labels::stack(tl, symbols, index);
                    let telling = labels::most_telling(tl, symbols, index)?;
                    let upto = frames.iter().position(|f| f.function == telling.function).map_or(frames.len(), |i| i + 1);
                    Some((telling.function, describe(&frames[..upto])))
                })
                .unwrap_or_else(|| (kind.clone(), Vec::new()));
            // The poll lasted at least its blocked time and the wait for a
            // CPU after it; mostly the latter is CPU contention, not a block.
            let (blocked, waited) = (b.span.duration_ns(), b.waited_ns);
            let duration = blocked + waited;
            let (cause, site, frames) = if waited > blocked { (Cause::Preempted, kind.clone(), Vec::new()) } else { (Cause::Blocked, site, frames) };
            out.push(Occurrence {
                verdict: Verdict { cause, kind, site, frames, parts: [0, blocked, waited] },
                exact: false,
                upper_bound: false,
                start: b.span.start_ns,
                duration,
                thread: t.display_name(),
                waker: t.woken_by(&b.span).map(|w| waker_name(tl, w)),
            });
        }
    }
    out
}

pub fn find(tl: &Timeline, symbols: &Symbols, kinds: &HashMap<Frame, String>, threshold_ns: u64) -> Vec<LongPollGroup> {
    let mut groups: HashMap<(Cause, String, String, bool, bool), Acc> = HashMap::new();
    let ids = TaskIdKinds::learn(tl, symbols, kinds);
    let occurrences = exact_polls(tl, symbols, kinds, threshold_ns).into_iter().chain(blocked_in_tasks(tl, symbols, &ids, threshold_ns));
    for o in occurrences {
        let Verdict { cause, kind, site, frames, parts } = o.verdict;
        let acc = groups.entry((cause, kind, site, o.exact, o.upper_bound)).or_default();
        acc.durations.push(o.duration);
        for (a, p) in acc.split.iter_mut().zip(parts) {
            *a += p;
        }
        if let Some(w) = o.waker {
            *acc.wakers.entry(w).or_default() += 1;
        }
        if !acc.threads.contains(&o.thread) {
            acc.threads.push(o.thread);
        }
        if o.duration > acc.longest.0 {
            acc.longest = (o.duration, o.start);
            acc.frames = frames;
        }
    }
    let mut out: Vec<LongPollGroup> = groups
        .into_iter()
        .map(|((cause, task_kind, site, exact, upper_bound), mut acc)| {
            acc.durations.sort_unstable();
            let total: u64 = acc.durations.iter().sum();
            let wall = acc.split.iter().sum::<u64>().max(1) as f64;
            let pct = |v: u64| (v as f64 * 1000.0 / wall).round() / 10.0;
            LongPollGroup {
                cause,
                task_kind,
                site,
                frames: acc.frames,
                count: acc.durations.len() as u64,
                total_ms: ms(total),
                p50_ms: ms(nearest_rank(&acc.durations, 0.5)),
                p99_ms: ms(nearest_rank(&acc.durations, 0.99)),
                max_ms: ms(acc.longest.0),
                on_cpu_pct: pct(acc.split[0]),
                blocked_pct: pct(acc.split[1]),
                preempted_pct: pct(acc.split[2]),
                threads: acc.threads,
                woken_by: {
                    let mut w: Vec<(String, u64)> = acc.wakers.into_iter().collect();
                    w.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                    w.into_iter().map(|(name, _)| name).collect()
                },
                longest_at_ms: ms(acc.longest.1.saturating_sub(tl.start_ns)),
                exact,
                upper_bound,
            }
        })
        .collect();
    out.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms).then_with(|| (a.cause, &a.site).cmp(&(b.cause, &b.site))));
    out
}
