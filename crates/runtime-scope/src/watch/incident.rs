//! What fired a snapshot, in words: one line as it fires (from the events
//! and the judge's kind name), then, once the snapshot is analysed, the same
//! stretch found in its timeline with the report's own names: which task,
//! which worker, how long, why, and the call site.

use super::flight::Trigger;
use super::triggers::{Candidate, Rule, Stretch, Subject};
use scope_export::insights::long_polls::{classify, waker_name};
use scope_export::labels;
use scope_model::{Frame, OffReason, Span, SpanState, Symbols, ThreadTimeline, Timeline};
use std::collections::HashMap;

fn ms(ns: u64) -> String {
    if ns >= 10_000_000_000 { format!("{:.1} s", ns as f64 / 1e9) } else { format!("{:.1} ms", ns as f64 / 1e6) }
}

/// `203.4 ms`, or `≥ 104.0 ms so far` while it was still going.
fn length(c: &Candidate) -> String {
    if c.ongoing { format!("≥ {} so far", ms(c.duration_ns)) } else { ms(c.duration_ns) }
}

fn task(c: &Candidate, kind: Option<&str>) -> String {
    let kind = kind.unwrap_or("task");
    match c.subject {
        Subject::TaskId(id) => format!("{kind} (tokio id {id})"),
        _ => kind.to_string(),
    }
}

/// `task KIND (tokio id N)`, or `task (tokio id N)` when nothing named it.
fn named_task(c: &Candidate, kind: Option<&str>) -> String {
    match kind {
        Some(_) => format!("task {}", task(c, kind)),
        None => task(c, None),
    }
}

/// The one line said when a trigger fires.
pub fn headline(t: &Trigger) -> String {
    let c = &t.candidate;
    let kind = t.kind.as_deref();
    let what = match c.stretch {
        Stretch::Poll => format!("{} polled for {} on tid {}", task(c, kind), length(c), c.tid),
        Stretch::Blocked => format!("{} blocked inside its poll for {} on tid {}", task(c, kind), length(c), c.tid),
        Stretch::Sampled { samples } => format!(
            "{} in all {samples} samples over {} on tid {} (from samples: one long poll or several back to back)",
            task(c, kind),
            length(c),
            c.tid
        ),
        Stretch::WorkerWait { preempted } => {
            format!("worker tid {} {} and waited {} for a CPU", c.tid, if preempted { "was preempted" } else { "was woken" }, length(c))
        }
        Stretch::TaskWait => format!("{} was woken and polled {} later on tid {}", task(c, kind), length(c), c.tid),
        Stretch::Manual => return format!("snapshot {} asked for by hand", t.number),
    };
    format!("{} — {what}", rule_text(t))
}

fn rule_text(t: &Trigger) -> String {
    let c = &t.candidate;
    let label = match (c.rule, &c.subject) {
        (Rule::LongPoll, Subject::TaskId(_)) => "long poll (no poll probes: seen from Tokio's task id)",
        (Rule::LongPoll, _) => "long poll",
        (Rule::Blocked, _) => "blocked inside a poll",
        (Rule::SchedDelay, _) => "scheduling delay",
        (Rule::Manual, _) => "by hand",
    };
    format!("snapshot {}: {label} (--on {})", t.number, c.rule.flag())
}

fn blocked_span(t: &ThreadTimeline, at: u64) -> Option<&Span> {
    t.spans.iter().find(|s| s.start_ns == at && matches!(s.state, SpanState::OffCpu(OffReason::Blocked { .. })))
}

fn site_lines(tl: &Timeline, t: &ThreadTimeline, span: &Span, symbols: &Symbols, out: &mut Vec<String>) {
    match labels::blocked(tl, t, span, symbols) {
        Some((frames, telling)) => {
            let upto = frames.iter().position(|f| f.starts_with(&telling.function)).map_or(frames.len(), |i| i + 1);
            out.push(format!("  blocked in {}", frames[..upto].join(" ← ")));
        }
        None => out.push("  blocked in: no stack was copied at that switch-out (over --stack-budget, or --no-stacks)".into()),
    }
    if let Some(w) = t.woken_by(span) {
        out.push(format!("  woken by {}", waker_name(tl, w)));
    }
}

/// The trigger found in the snapshot's own timeline, in the report's
/// words; what cannot be found there (cut off by the window) is said so.
pub fn describe(trigger: &Trigger, tl: &Timeline, symbols: &Symbols, kinds: &HashMap<Frame, String>) -> Vec<String> {
    let c = &trigger.candidate;
    let into = c.start_ns.saturating_sub(tl.start_ns) as f64 / 1e9;
    let mut out = vec![format!("{} ({into:.2} s into the snapshot)", headline(trigger))];
    if c.stretch == Stretch::Manual {
        return out;
    }
    let Some(t) = tl.threads.iter().find(|t| t.tid == c.tid) else {
        out.push(format!("  tid {} is not in the snapshot", c.tid));
        return out;
    };
    let thread = t.display_name();
    match c.stretch {
        Stretch::Poll => match t.polls.iter().find(|p| p.start_ns == c.start_ns) {
            Some(poll) => {
                let v = classify(tl, t, poll, symbols, kinds);
                let id = tl.tokio_ids.get(&poll.serial).map_or(String::new(), |id| format!(" (tokio id {id})"));
                let [cpu, blocked, preempted] = v.parts;
                let end = if poll.finished { "" } else { ", still running when the snapshot ends" };
                out.push(format!(
                    "  task {}{id} on {thread}: a {} poll{end}, {}: on-CPU {}, blocked {}, waiting for a CPU {}",
                    v.kind,
                    ms(poll.duration_ns()),
                    v.cause.name(),
                    ms(cpu),
                    ms(blocked),
                    ms(preempted)
                ));
                let longest = t
                    .spans_between(poll.start_ns, poll.end_ns)
                    .iter()
                    .filter(|s| matches!(s.state, SpanState::OffCpu(OffReason::Blocked { .. })))
                    .max_by_key(|s| s.duration_ns());
                match (v.cause, longest) {
                    (scope_export::insights::Cause::Blocked, Some(span)) => site_lines(tl, t, span, symbols, &mut out),
                    _ if !v.frames.is_empty() => out.push(format!("  at {}", v.frames.join(", "))),
                    _ => {}
                }
            }
            None => out.push(format!("  the poll on {thread} began before the snapshot")),
        },
        Stretch::Blocked => match blocked_span(t, c.start_ns) {
            Some(span) => {
                let end = if span.end_ns >= tl.end_ns { ", still blocked when the snapshot ends" } else { "" };
                out.push(format!("  {} on {thread}: blocked {}{end}", named_task(c, trigger.kind.as_deref()), ms(span.duration_ns())));
                if trigger.kind.is_none() {
                    out.push("  (no stack taken inside it names it; a task all the same: its worker's own loop runs under another id)".into());
                }
                site_lines(tl, t, span, symbols, &mut out);
            }
            None => out.push(format!("  the blocked stretch on {thread} is not in the snapshot")),
        },
        Stretch::Sampled { .. } => {
            let (from, to) = (c.start_ns, c.start_ns + c.duration_ns);
            let mut counts: HashMap<String, usize> = HashMap::new();
            for &(_, s) in t.samples.iter().filter(|(ts, _)| (from..=to).contains(ts)) {
                if let Some(f) = labels::most_telling(tl, symbols, s) {
                    *counts.entry(f.function).or_default() += 1;
                }
            }
            let mut ranked: Vec<(String, usize)> = counts.into_iter().collect();
            ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            out.push(format!("  {} on {thread}", named_task(c, trigger.kind.as_deref())));
            if !ranked.is_empty() {
                let top: Vec<String> = ranked.into_iter().take(3).map(|(f, n)| format!("{f} ({n} samples)")).collect();
                out.push(format!("  running {}", top.join(", ")));
            }
        }
        Stretch::WorkerWait { .. } => {
            let waker = t.wakings.iter().find(|w| w.ts == c.start_ns).map(|w| format!(", woken by {}", waker_name(tl, w)));
            out.push(format!("  {thread} waited {} for a CPU{}", ms(c.duration_ns), waker.unwrap_or_default()));
        }
        Stretch::TaskWait => out.push(format!("  then polled on {thread}")),
        Stretch::Manual => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use scope_model::{Event, Recording, ResolvedFrame, StackReason, StopReason, ThreadInfo, WorkerRule};

    const MS: u64 = 1_000_000;

    fn trigger(stretch: Stretch, subject: Subject, start: u64, duration: u64, ongoing: bool) -> Trigger {
        let rule = if stretch == Stretch::Blocked { Rule::Blocked } else { Rule::LongPoll };
        Trigger {
            number: 1,
            candidate: Candidate { rule, stretch, subject, tid: 7, start_ns: start, duration_ns: duration, ongoing, evidence: Vec::new() },
            kind: Some("app::stall".into()),
            at_ns: start + duration,
        }
    }

    fn recording(events: Vec<Event>) -> Recording {
        Recording {
            tool_version: "t".into(),
            pid: 1,
            command: "app".into(),
            executable: "/app".into(),
            start_ns: 0,
            end_ns: 1000 * MS,
            stop_reason: StopReason::Snapshot,
            lost_events: 0,
            untracked_threads: 0,
            threads: vec![ThreadInfo { tid: 7, name: "tokio-rt-worker".into(), cpu_ns_at_start: None, cpu_ns_at_stop: None }],
            events,
            modules: Vec::new(),
            probes: Vec::new(),
            launch: None,
        }
    }

    #[test]
    fn a_blocked_poll_is_named_with_its_call_site_and_waker() {
        let poll_fn = Frame { module: 0, offset: 1 };
        let (sleep, stall) = (Frame { module: 0, offset: 10 }, Frame { module: 0, offset: 11 });
        let rec = recording(vec![
            Event::WorkerRun { ts: 0, tid: 7, index: 0, runtime: 9 },
            Event::TaskId { ts: 500 * MS, tid: 7, task: 0xa, id: 42 },
            Event::PollStart { ts: 500 * MS, tid: 7, task: 0xa, poll_fn },
            Event::Switch { ts: 501 * MS, cpu: 0, prev_tid: 7, next_tid: 0, prev_state: 1, prev_ours: true, next_ours: false, cpu_lost: 0 },
            Event::Stack { ts: 501 * MS, cpu: 0, tid: 7, reason: StackReason::Blocked, frames: vec![sleep, stall].into(), complete: true },
            Event::Waking { ts: 700 * MS, tid: 7, waker_tid: 0, waker_pid: 0 },
            Event::Switch { ts: 701 * MS, cpu: 0, prev_tid: 0, next_tid: 7, prev_state: 0, prev_ours: false, next_ours: true, cpu_lost: 0 },
            Event::PollEnd { ts: 702 * MS, tid: 7 },
        ]);
        let tl = Timeline::build(&rec, &WorkerRule::default());
        let mut symbols = Symbols::default();
        let name = |f: &str| vec![ResolvedFrame { function: f.into(), file: None, line: None, inlined: false }];
        symbols.frames.insert(sleep, name("clock_nanosleep"));
        symbols.frames.insert(stall, name("app::stall_once"));
        let kinds = HashMap::from([(poll_fn, "app::stall".to_string())]);
        let poll = trigger(Stretch::Poll, Subject::Poll { task: 0xa, poll_fn }, 500 * MS, 110 * MS, true);
        let lines = describe(&poll, &tl, &symbols, &kinds);
        assert_eq!(lines[0], "snapshot 1: long poll (--on long-poll) — app::stall polled for ≥ 110.0 ms so far on tid 7 (0.50 s into the snapshot)");
        assert_eq!(lines[1], "  task app::stall (tokio id 42) on worker 0 (tid 7): a 202.0 ms poll, blocked: on-CPU 2.0 ms, blocked 199.0 ms, waiting for a CPU 1.0 ms");
        assert_eq!(lines[2], "  blocked in clock_nanosleep ← app::stall_once");
        assert_eq!(lines[3], "  woken by a timer or interrupt");
        // Blocked from the switch-out (501 ms) to the waking (700 ms), as
        // the trigger measures it too.
        let by_id = trigger(Stretch::Blocked, Subject::TaskId(42), 501 * MS, 199 * MS, false);
        let lines = describe(&by_id, &tl, &symbols, &kinds);
        assert!(lines[0].contains("app::stall (tokio id 42) blocked inside its poll for 199.0 ms"), "{lines:?}");
        assert_eq!(lines[1], "  task app::stall (tokio id 42) on worker 0 (tid 7): blocked 199.0 ms");
        assert_eq!(lines[2], "  blocked in clock_nanosleep ← app::stall_once");
        let missing = trigger(Stretch::Poll, Subject::Poll { task: 0xb, poll_fn }, 100 * MS, 150 * MS, false);
        assert!(describe(&missing, &tl, &symbols, &kinds)[1].contains("began before the snapshot"));
    }
}
