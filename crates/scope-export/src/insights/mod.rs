//! Insights: what blocked the runtime and who. Long polls with their cause
//! (grouped by call site), worker utilisation, scheduling delays, task
//! rankings and lints. One serialisable value: the terminal summary renders
//! it, `report --json` prints it for CI (schema in docs/report-json.md).

pub mod long_polls;
pub mod render;
mod sampled;
mod stats;
mod task_instances;
mod workers;

pub use long_polls::{Cause, LongPollGroup};
pub use sampled::SampledTask;
pub use stats::Percentiles;
pub use workers::WorkerUse;

use crate::tasks;
use scope_model::{Symbols, Timeline};
use serde::Serialize;

/// Bump when a field changes meaning or goes away (adding fields is fine).
pub const SCHEMA: &str = "runtime-scope.report/1";

/// Tokio's guidance: well under 10 ms between awaits.
pub const DEFAULT_LONG_POLL_MS: f64 = 10.0;

#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub long_poll_ns: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options { long_poll_ns: (DEFAULT_LONG_POLL_MS * 1e6) as u64 }
    }
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Insights {
    pub schema: &'static str,
    pub pid: u32,
    pub command: String,
    pub duration_ms: f64,
    pub stop_reason: String,
    /// What the recording holds; `missing` says what could not be analysed and why.
    pub data: Coverage,
    pub long_poll_threshold_ms: f64,
    /// Polls at or over the threshold, grouped by cause and call site,
    /// most total time first.
    pub long_polls: Vec<LongPollGroup>,
    pub long_poll_count: u64,
    pub longest_poll_ms: Option<f64>,
    pub workers: Vec<WorkerUse>,
    /// Seconds per entry of each worker's `busy_per_second`: 1, more only
    /// on recordings too long for an entry per second (over a day with 64
    /// workers), so its size stays bounded.
    pub busy_bucket_s: u64,
    /// Busiest worker's on-CPU share minus the idlest's, in points.
    pub worker_imbalance_pct: Option<f64>,
    /// Wake → first on-CPU instant of the task's next poll.
    pub task_wake_delay: Option<Percentiles>,
    /// Woken (sched_waking) → back on a CPU, over every worker wait.
    pub worker_wake_delay: Option<Percentiles>,
    /// Runnable (preempted) → back on a CPU, over every worker gap.
    pub worker_runnable_wait: Option<Percentiles>,
    /// Task kinds, most on-CPU time first.
    pub tasks: Vec<TaskUse>,
    /// The busiest individual tasks (up to 10), most on-CPU time first.
    pub top_tasks: Vec<TaskInstance>,
    /// Task kinds by the samples taken while their tasks ran (from Tokio's
    /// task id at each sample; with or without poll probes).
    pub sampled_tasks: Vec<SampledTask>,
    pub lints: Vec<Lint>,
    pub lost_events: u64,
}

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Coverage {
    pub polls: bool,
    /// Tokio's task id was read at switch-outs and samples.
    pub task_ids: bool,
    /// Were task probes attached? None: the capture does not say (written
    /// before captures recorded it).
    pub task_probes: Option<bool>,
    pub wakes: bool,
    pub stacks: bool,
    pub missing: Vec<String>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct TaskUse {
    pub kind: String,
    pub polls: u64,
    pub tasks: u64,
    pub busy_ms: f64,
    pub longest_poll_ms: f64,
    /// Share of this kind's wakes that came from the task itself.
    pub self_wake_pct: Option<f64>,
}

/// One task (not a kind): Tokio's id when the probe read it, else only our
/// number for it in this recording.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct TaskInstance {
    pub task: u32,
    pub tokio_task_id: Option<u64>,
    pub kind: String,
    pub polls: u64,
    /// On a CPU inside its polls.
    pub busy_ms: f64,
    /// Wall time inside its polls (busy + blocked or preempted in them).
    pub polled_ms: f64,
    /// From its first poll's start to its last poll's end, outside polls:
    /// waiting to be woken or for a worker.
    pub idle_ms: f64,
    pub longest_poll_ms: f64,
}

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Lint {
    /// `self_wakes` (over half of a kind's wakes are its own) or
    /// `never_yielded` (a poll ran for over a second).
    pub lint: &'static str,
    pub kind: String,
    pub detail: String,
}

pub(crate) fn ms(ns: u64) -> f64 {
    (ns as f64 / 1e4).round() / 100.0
}

/// `off:WHAT (reason)` entries of the probe list: what was left off, why.
fn left_off<'a>(tl: &'a Timeline, what: &str) -> Option<&'a str> {
    tl.probes.iter().find_map(|p| p.strip_prefix("off:")?.strip_prefix(what)?.strip_prefix(' '))
}

/// Whether the probe list says something was on (`Some(false)`: it says
/// it was off; None: a capture from before it said either).
fn probed(tl: &Timeline, on_prefix: &str, off: &str) -> Option<bool> {
    if tl.probes.iter().any(|p| p.starts_with(on_prefix)) {
        Some(true)
    } else {
        left_off(tl, off).map(|_| false)
    }
}

fn coverage(tl: &Timeline) -> Coverage {
    let polls = tl.threads.iter().any(|t| !t.polls.is_empty());
    let task_ids = tl.threads.iter().any(|t| !t.task_marks.is_empty());
    let wakes = !tl.wakes.is_empty();
    let stacks = !tl.stacks.is_empty();
    let task_probes = probed(tl, "uprobe:", "tasks");
    let mut missing = Vec::new();
    if let Some(&(at, _, _)) = tl.probe_changes.iter().find(|(_, polls, _)| !polls) {
        missing.push(format!(
            "exact polls only for the first {:.1} s (--polls auto: the poll rate would cost more than its budget); after that, task identity only: stretches blocked inside a task (≥) and tasks in samples",
            at.saturating_sub(tl.start_ns) as f64 / 1e9
        ));
    } else if let Some(&(at, _, _)) = tl.probe_changes.iter().find(|(_, _, wakes)| !wakes) {
        missing.push(format!(
            "task wakes only for the first {:.1} s (--polls auto: over its budget): wake arrows and wake → poll delays cover that part",
            at.saturating_sub(tl.start_ns) as f64 / 1e9
        ));
    }
    if let Some(at) = tl.poll_returns_off_ns {
        missing.push(format!(
            "poll returns not probed from {:.1} s on (--polls starts, or --polls auto over its budget with them): a poll ends at most where its worker was next seen outside it (its next poll, a switch-out or sample under another task), so poll lengths are upper bounds (≤)",
            at.saturating_sub(tl.start_ns) as f64 / 1e9
        ));
    }
    if !polls && task_ids {
        missing.push(
            "no poll probes (task identity only): polls are not timed; shown are the stretches a worker was blocked inside a task (≥: a lower bound of that poll) and the tasks samples caught; --polls on times every poll".into(),
        );
    } else if !polls {
        let why = match (task_probes, left_off(tl, "tasks")) {
            (Some(true), _) => "no task was polled in the window (task probes were on: the runtime was idle)".to_string(),
            (_, Some(reason)) => format!("no task polls: recorded without task probes {reason}"),
            _ => "no task polls (recorded with --no-tasks, or the target has no tokio symbols)".to_string(),
        };
        missing.push(format!(
            "{why}: long polls, task delays and task rankings are unavailable; worker utilisation and blocked stacks remain"
        ));
    } else if !wakes {
        missing.push("no task wakes: task scheduling delay is unavailable".into());
    }
    if !stacks {
        let why = match (probed(tl, "stacks:", "stacks"), left_off(tl, "stacks")) {
            (Some(true), _) => "no stack was taken in the window (no thread ran while sampled or blocked)".to_string(),
            (_, Some(reason)) => format!("no stacks {reason}"),
            _ => "no stacks (recorded with --no-stacks)".to_string(),
        };
        missing.push(format!("{why}: long polls carry no call site"));
    }
    Coverage { polls, task_ids, task_probes, wakes, stacks, missing }
}

pub fn build(tl: &Timeline, symbols: &Symbols, options: Options) -> Insights {
    let kinds = tasks::kind_names(tl, symbols);
    let groups = long_polls::find(tl, symbols, &kinds, options.long_poll_ns);
    let long_poll_count = groups.iter().map(|g| g.count).sum();
    let longest = tl.threads.iter().flat_map(|t| t.polls.iter().filter(|p| long_polls::is_leaf(t, p))).map(|p| p.duration_ns()).max();
    let workers = workers::utilisation(tl);
    let busy: Vec<f64> = workers.iter().map(|w| w.busy_pct).collect();
    let imbalance = (busy.len() >= 2).then(|| {
        let (max, min) = busy.iter().fold((f64::MIN, f64::MAX), |(a, b), &x| (a.max(x), b.min(x)));
        ((max - min) * 10.0).round() / 10.0
    });
    let (task_tables, lints) = workers::task_tables(tl, &kinds);
    Insights {
        schema: SCHEMA,
        pid: tl.pid,
        command: tl.command.clone(),
        duration_ms: ms(tl.duration_ns()),
        stop_reason: tl.stop_reason.describe().to_string(),
        data: coverage(tl),
        long_poll_threshold_ms: ms(options.long_poll_ns),
        long_polls: groups,
        long_poll_count,
        longest_poll_ms: longest.map(ms),
        workers,
        busy_bucket_s: workers::busy_bucket_s(tl),
        worker_imbalance_pct: imbalance,
        task_wake_delay: workers::task_wake_delay(tl),
        worker_wake_delay: workers::wake_to_cpu(tl),
        worker_runnable_wait: workers::runnable_wait(tl),
        tasks: task_tables,
        top_tasks: task_instances::busiest(tl, &kinds),
        sampled_tasks: sampled::by_kind(tl, symbols, &kinds),
        lints,
        lost_events: tl.lost_events,
    }
}
