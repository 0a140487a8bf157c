//! The insights part of the end-of-run summary: fits on a screen, colours
//! only when asked (a TTY).

use super::{Cause, Insights, LongPollGroup, Percentiles};
use crate::labels::{count, noun};
use std::fmt::Write;

const GROUPS_SHOWN: usize = 6;
const TASKS_SHOWN: usize = 5;
const CHAIN: usize = 4;

struct Paint(bool);

impl Paint {
    fn on(&self, code: &str, text: &str) -> String {
        if self.0 { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() }
    }
    fn bold(&self, text: &str) -> String {
        self.on("1", text)
    }
    fn cause(&self, cause: Cause) -> String {
        let code = match cause {
            Cause::Cpu => "33",
            Cause::Blocked => "31",
            Cause::Preempted => "35",
        };
        self.on(code, &format!("{:<9}", cause.name()))
    }
}

fn duration(ms: f64) -> String {
    if ms >= 1000.0 { format!("{:.2} s", ms / 1000.0) } else { format!("{ms:.1} ms") }
}

fn micros(us: f64) -> String {
    if us >= 1000.0 { format!("{:.1} ms", us / 1000.0) } else { format!("{us:.0} µs") }
}

/// `▁▃█`: one block per second of the recording.
pub fn sparkline(values: &[f64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    values.iter().map(|v| BARS[((v / 100.0 * 7.0).round() as usize).min(7)]).collect()
}

/// Innermost first, ending at the site: `clock_nanosleep ← std::thread::sleep ← my_fn`.
fn chain(g: &LongPollGroup) -> String {
    if g.cause != Cause::Blocked || g.frames.is_empty() {
        return g.site.clone();
    }
    let mut names: Vec<&str> = Vec::new();
    for f in &g.frames {
        if names.last() != Some(&f.as_str()) {
            names.push(f);
        }
    }
    let skip = names.len().saturating_sub(CHAIN);
    let mut text = names[skip..].join(" ← ");
    if skip > 0 {
        text = format!("… ← {text}");
    }
    text
}

fn long_polls(i: &Insights, p: &Paint, out: &mut String) {
    if !i.data.polls && !i.data.task_ids {
        return;
    }
    if i.long_polls.is_empty() {
        let _ = writeln!(out, "  {} none ≥ {} ms", p.bold("long polls:"), i.long_poll_threshold_ms);
        return;
    }
    let longest = i.longest_poll_ms.map_or(String::new(), |m| format!(", longest {}", duration(m)));
    let _ = writeln!(
        out,
        "  {} {} ≥ {} ms{longest} (cause, count, p50 / max, where):",
        p.bold("long polls:"),
        i.long_poll_count,
        i.long_poll_threshold_ms
    );
    for g in i.long_polls.iter().take(GROUPS_SHOWN) {
        let mut on = if g.threads.len() == 1 { g.threads[0].clone() } else { format!("{} threads", g.threads.len()) };
        match g.woken_by.as_slice() {
            [] => {}
            [one] => on.push_str(&format!("; woken by {one}")),
            [first, rest @ ..] => on.push_str(&format!("; woken by {first} and {} more", rest.len())),
        }
        // ≥: blocked inside the poll (seen from the task id), not the whole poll.
        // ≤: from its start to its worker's next sign of life (no return probe).
        let at_least = if !g.exact { "≥" } else if g.upper_bound { "≤" } else { " " };
        let _ = writeln!(
            out,
            "    {} {:>5}× {at_least}{:>9} / {:>9}  {}  [{}; {on}]",
            p.cause(g.cause),
            g.count,
            duration(g.p50_ms),
            duration(g.max_ms),
            chain(g),
            g.task_kind
        );
    }
    if i.long_polls.iter().any(|g| !g.exact) {
        let _ = writeln!(out, "    ≥: time blocked inside the poll, from Tokio's task id at the switch-out (no poll probe timed it)");
    }
    if i.long_polls.iter().any(|g| g.upper_bound) {
        let _ = writeln!(out, "    ≤: from the poll's start to where its worker was next seen outside it (--polls starts: no return probe)");
    }
    if i.long_polls.len() > GROUPS_SHOWN {
        let _ = writeln!(out, "    … and {} more call sites (report --json lists all)", i.long_polls.len() - GROUPS_SHOWN);
    }
}

fn workers(i: &Insights, p: &Paint, out: &mut String) {
    if i.workers.is_empty() {
        return;
    }
    let imbalance = i.worker_imbalance_pct.map_or(String::new(), |d| format!("; imbalance {d:.1} points"));
    let _ = writeln!(out, "  {} busy / blocked in poll / idle / runnable, busy per second{imbalance}", p.bold("workers:"));
    for w in &i.workers {
        let unseen = if w.unseen_pct > 0.0 { format!("  (unseen {:.1}%)", w.unseen_pct) } else { String::new() };
        let _ = writeln!(
            out,
            "    {:<28} {:>5.1}% / {:>5.1}% / {:>5.1}% / {:>4.1}%  {}{unseen}",
            w.name,
            w.busy_pct,
            w.blocked_in_poll_pct,
            w.idle_pct,
            w.preempted_pct,
            sparkline(&w.busy_per_second)
        );
    }
    for w in i.workers.iter().filter(|w| w.idle_while_work_queued_ms >= 1.0) {
        let _ = writeln!(
            out,
            "    {} {} was parked for {} while woken tasks waited over 1 ms for a worker",
            p.on("33", "note:"),
            w.name,
            duration(w.idle_while_work_queued_ms)
        );
    }
}

fn delay(label: &str, d: &Option<Percentiles>, p: &Paint, out: &mut String) {
    if let Some(d) = d {
        let _ = writeln!(
            out,
            "  {} p50 {}, p99 {}, max {} ({})",
            p.bold(label),
            micros(d.p50_us),
            micros(d.p99_us),
            micros(d.max_us),
            count(d.count, "time")
        );
    }
}

fn tasks(i: &Insights, p: &Paint, out: &mut String) {
    if i.tasks.is_empty() {
        return;
    }
    let polls: u64 = i.tasks.iter().map(|t| t.polls).sum();
    let _ = writeln!(out, "  {} ({}; busy = on-CPU inside polls):", p.bold("tasks"), count(polls, "poll"));
    for t in i.tasks.iter().take(TASKS_SHOWN) {
        let _ = writeln!(
            out,
            "    {:>7} {:<5} {:>6} {:<5}  busy {:>9}  longest poll {:>9}  {}",
            t.polls,
            noun(t.polls, "poll"),
            t.tasks,
            noun(t.tasks, "task"),
            duration(t.busy_ms),
            duration(t.longest_poll_ms),
            t.kind
        );
    }
}

/// Rows of the busiest single tasks in the terminal (the JSON has 10).
const TOP_TASKS_SHOWN: usize = 3;

fn top_tasks(i: &Insights, p: &Paint, out: &mut String) {
    if i.top_tasks.len() < 2 {
        return;
    }
    let _ = writeln!(out, "  {} (idle = between its polls):", p.bold("busiest tasks"));
    for t in i.top_tasks.iter().take(TOP_TASKS_SHOWN) {
        let id = t.tokio_task_id.map_or(format!("task #{}", t.task), |id| format!("tokio id {id}"));
        let _ = writeln!(
            out,
            "    {id:>14}  busy {:>9}  {:>7} {:<5}  longest {:>9}  idle {:>9}  {}",
            duration(t.busy_ms),
            t.polls,
            noun(t.polls, "poll"),
            duration(t.longest_poll_ms),
            duration(t.idle_ms),
            t.kind
        );
    }
}

/// Without poll probes: where the samples found the tasks.
fn sampled_tasks(i: &Insights, p: &Paint, out: &mut String) {
    let partly_unprobed = i.data.missing.iter().any(|m| m.starts_with("exact polls only"));
    if (i.data.polls && !partly_unprobed) || i.sampled_tasks.is_empty() {
        return;
    }
    let _ = writeln!(out, "  {} (share of the target's samples, from Tokio's task id):", p.bold("tasks in samples"));
    for t in i.sampled_tasks.iter().take(TASKS_SHOWN) {
        let _ = writeln!(out, "    {:>5.1}%  {:>6} samples {:>6} tasks  {}", t.share_pct, t.samples, t.tasks, t.kind);
    }
}

pub fn render(i: &Insights, color: bool, out: &mut String) {
    let p = Paint(color);
    sampled_tasks(i, &p, out);
    tasks(i, &p, out);
    top_tasks(i, &p, out);
    long_polls(i, &p, out);
    workers(i, &p, out);
    delay("task wake → poll:", &i.task_wake_delay, &p, out);
    delay("worker woken → on CPU:", &i.worker_wake_delay, &p, out);
    delay("worker preempted → on CPU:", &i.worker_runnable_wait, &p, out);
    for l in &i.lints {
        let _ = writeln!(out, "  {} {}: {}", p.on("33", "lint:"), l.kind, l.detail);
    }
    for m in &i.data.missing {
        let _ = writeln!(out, "  missing: {m}");
    }
}
