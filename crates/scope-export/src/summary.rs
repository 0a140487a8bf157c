//! The short report printed at the end of every recording: one line per
//! worker, the busiest other threads, lost events, and what to look at next.

use crate::insights::Insights;
use crate::labels;
use scope_model::{OffReason, SpanState, Symbols, ThreadTimeline, Timeline};
use std::collections::HashMap;
use std::fmt::Write;

const TOP: usize = 5;

const OTHER_THREADS_SHOWN: usize = 5;

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 * 100.0 / whole as f64 }
}

fn ms(ns: u64) -> String {
    if ns >= 1_000_000_000 {
        format!("{:.2} s", ns as f64 / 1e9)
    } else {
        format!("{:.1} ms", ns as f64 / 1e6)
    }
}

fn count(n: usize, noun: &str) -> String {
    labels::count(n as u64, noun)
}

fn thread_line(t: &ThreadTimeline, out: &mut String) {
    let life = t.lifetime_ns();
    let longest = t.longest_blocked().map_or("-".to_string(), |s| ms(s.duration_ns()));
    let _ = write!(
        out,
        "  {:<44} on-CPU {:>5.1}%  blocked {:>5.1}%  runnable {:>4.1}%  switches {:>6}  longest block {}",
        t.display_name(),
        pct(t.on_cpu_ns(), life),
        pct(t.blocked_ns(), life),
        pct(t.runnable_ns(), life),
        t.switch_outs(),
        longest,
    );
    // The shares add up to 100% but for this: time before the thread's
    // first switch with nothing telling its state.
    let unseen = pct(t.unseen_ns(), life);
    if unseen >= 0.05 {
        let _ = write!(out, "  unseen {unseen:.1}%");
    }
    out.push('\n');
}

/// Most sampled functions (most telling frame of each sample).
fn hottest(tl: &Timeline, symbols: &Symbols, out: &mut String) {
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut total = 0;
    for t in &tl.threads {
        for &(_, s) in &t.samples {
            total += 1;
            if let Some(f) = labels::most_telling(tl, symbols, s) {
                *counts.entry(f.function).or_default() += 1;
            }
        }
    }
    if total == 0 {
        return;
    }
    let mut ranked: Vec<(String, usize)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let _ = writeln!(out, "  hottest code ({}):", count(total, "sample"));
    for (function, n) in ranked.iter().take(TOP) {
        let _ = writeln!(out, "    {:>5.1}%  {function}", *n as f64 * 100.0 / total as f64);
    }
}

/// The place of a worker's parks whose stacks were not taken.
const PARKED: &str = "parked in the worker's own loop (stacks not taken)";

/// Where time went blocked, by the most telling frame at the switch-out.
fn blocked_in(tl: &Timeline, symbols: &Symbols, out: &mut String) {
    let mut by: HashMap<String, (u64, usize)> = HashMap::new();
    for t in tl.threads.iter().filter(|t| t.is_worker()) {
        for span in &t.spans {
            if !matches!(span.state, SpanState::OffCpu(OffReason::Blocked { .. })) {
                continue;
            }
            let place = match labels::blocked(tl, t, span, symbols) {
                Some((_, telling)) => telling.function,
                // Parks of a worker whose own loop id the recorder learned
                // carry no stack: still where its blocked time went.
                None if scope_model::identity::id_at(t, span.start_ns).is_some_and(|id| tl.worker_loops.contains(&(t.tid, id))) => {
                    PARKED.to_string()
                }
                None => continue,
            };
            let e = by.entry(place).or_default();
            e.0 += span.duration_ns();
            e.1 += 1;
        }
    }
    if by.is_empty() {
        return;
    }
    let mut ranked: Vec<(String, (u64, usize))> = by.into_iter().collect();
    ranked.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(&b.0)));
    let _ = writeln!(out, "  workers blocked in:");
    for (function, (ns, n)) in ranked.iter().take(TOP) {
        let _ = writeln!(out, "    {:>10} in {n:>5} {:<5}  {function}", ms(*ns), labels::noun(*n as u64, "wait"));
    }
}

/// The summary with default insight options and no colours (tests, files).
pub fn render(tl: &Timeline, symbols: &Symbols) -> String {
    let insights = crate::insights::build(tl, symbols, crate::insights::Options::default());
    render_with(tl, symbols, &insights, false)
}

pub fn render_with(tl: &Timeline, symbols: &Symbols, insights: &Insights, color: bool) -> String {
    let mut out = String::new();
    let workers: Vec<&ThreadTimeline> = tl.workers().collect();
    let why = tl.stop_reason.describe();
    let _ = writeln!(
        out,
        "{} (pid {}): {} recorded ({why}), {}, {}",
        tl.command,
        tl.pid,
        ms(tl.duration_ns()),
        count(workers.len(), "worker"),
        count(tl.threads.len() - workers.len(), "other thread"),
    );
    if workers.is_empty() {
        let _ = writeln!(
            out,
            "  no Tokio worker threads recognised by name (use --workers PREFIX for custom names)"
        );
    }
    for t in &workers {
        thread_line(t, &mut out);
    }
    let mut others: Vec<&ThreadTimeline> = tl.threads.iter().filter(|t| !t.is_worker()).collect();
    others.sort_by_key(|t| std::cmp::Reverse(t.on_cpu_ns()));
    for t in others.iter().take(OTHER_THREADS_SHOWN) {
        thread_line(t, &mut out);
    }
    if others.len() > OTHER_THREADS_SHOWN {
        let _ = writeln!(out, "  … and {} more", count(others.len() - OTHER_THREADS_SHOWN, "thread"));
    }
    crate::insights::render::render(insights, color, &mut out);
    hottest(tl, symbols, &mut out);
    blocked_in(tl, symbols, &mut out);
    for warning in &symbols.warnings {
        let _ = writeln!(out, "  warning: {warning}");
    }
    if tl.lost_events > 0 {
        let _ = writeln!(
            out,
            "  warning: {} events lost (ring buffer full); parts of the timeline are inferred",
            tl.lost_events
        );
    } else {
        let _ = writeln!(out, "  no events lost");
    }
    if tl.untracked_threads > 0 {
        let _ = writeln!(
            out,
            "  warning: {} threads were not followed (kernel thread filter full)",
            tl.untracked_threads
        );
    }
    if !tl.polls_without_return.is_empty() {
        let _ = writeln!(
            out,
            "  note: {} polls whose return was never seen (probe events lost) are left out: their length is unknown",
            tl.polls_without_return.len()
        );
    }
    if tl.inconsistencies > 0 {
        let _ = writeln!(
            out,
            "  note: {} context switches were not delivered by the kernel; the state around them is inferred",
            tl.inconsistencies
        );
    }
    out
}
