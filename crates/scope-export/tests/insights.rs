//! Insights from a synthetic recording whose truth is known: a worker runs
//! a CPU-heavy poll, three polls blocked in the same sleep, a poll it was
//! preempted in, and short healthy polls; a second worker self-wakes.

use scope_export::insights::{self, Cause, Options};
use scope_model::{Event, Frame, Recording, ResolvedFrame, StackReason, Symbols, ThreadInfo, Timeline, WorkerRule};

const MS: u64 = 1_000_000;
const W0: u32 = 50;
const W1: u32 = 51;
const S: u64 = 1;
const PREEMPT: u64 = 0x100;

fn f(offset: u64) -> Frame {
    Frame { module: 0, offset }
}

fn switch(ts: u64, prev: u32, next: u32, state: u64) -> Event {
    Event::Switch { ts, cpu: 0, prev_tid: prev, next_tid: next, prev_state: state, prev_ours: prev != 0, next_ours: next != 0, cpu_lost: 0 }
}

struct Builder {
    events: Vec<Event>,
}

impl Builder {
    fn poll(&mut self, start: u64, end: u64, tid: u32, task: u64, kind: u64) {
        self.events.push(Event::PollStart { ts: start, tid, task, poll_fn: f(kind) });
        self.events.push(Event::PollEnd { ts: end, tid });
    }
    fn stack(&mut self, ts: u64, tid: u32, reason: StackReason, frames: &[u64]) {
        self.events.push(Event::Stack { ts, cpu: 0, tid, reason, frames: frames.iter().map(|&o| f(o)).collect(), complete: true });
    }
    /// `tid` off-CPU over [from, to) in `state`, with the switch-out stack.
    fn off(&mut self, from: u64, to: u64, tid: u32, state: u64, stack: Option<&[u64]>) {
        self.events.push(switch(from, tid, 0, state));
        if let Some(frames) = stack {
            self.stack(from, tid, StackReason::Blocked, frames);
        }
        self.events.push(switch(to, 0, tid, 0));
    }
}

const CPU_KIND: u64 = 0x100;
const SLEEP_KIND: u64 = 0x200;
const SHORT_KIND: u64 = 0x300;
const YIELD_KIND: u64 = 0x400;

fn recording() -> (Recording, Symbols) {
    let mut b = Builder { events: Vec::new() };
    // 30 ms on a CPU, sampled three times in heavy().
    b.poll(10 * MS, 40 * MS, W0, 0xa0, CPU_KIND);
    for i in 0..3 {
        b.stack((15 + 10 * i) * MS, W0, StackReason::Sample, &[0x10, 0x11, 0x90]);
    }
    // Three polls blocked 20, 40 and 60 ms in the same sleep call.
    for (i, d) in [20, 40, 60].into_iter().enumerate() {
        let start = (100 + 100 * i as u64) * MS;
        b.poll(start, start + d * MS + MS, W0, 0xb0, SLEEP_KIND);
        b.off(start + MS / 2, start + MS / 2 + d * MS, W0, S, Some(&[0x20, 0x21, 0x22, 0x90]));
        // The last one woken by worker 1, the others by the timer.
        let (waker_tid, waker_pid) = if i == 2 { (W1, 1) } else { (0, 0) };
        b.events.push(Event::Waking { ts: start + MS / 2 + d * MS - 1_000, tid: W0, waker_tid, waker_pid });
    }
    // 25 ms mostly runnable-but-descheduled.
    b.poll(500 * MS, 525 * MS, W0, 0xc0, SHORT_KIND);
    b.off(501 * MS, 524 * MS, W0, PREEMPT, None);
    // Healthy polls: 1 ms each.
    for i in 0..20 {
        b.poll((600 + 2 * i) * MS, (601 + 2 * i) * MS, W0, 0x1d0 + i, SHORT_KIND);
    }
    // Worker 1: parked for its first 100 ms, then on a CPU.
    b.off(0, 100 * MS, W1, S, None);
    // Worker 1: a task that yields 20 times (self-wakes), woken once by W0.
    for i in 0..21 {
        let start = (100 + 2 * i) * MS;
        b.poll(start, start + MS / 10, W1, 0xe0, YIELD_KIND);
        if i < 20 {
            b.events.push(Event::TaskWake { ts: start + MS / 20, tid: W1, task: 0xe0 });
        }
    }
    // Woken at 50 ms, first polled at 100 ms by W1, parked until then.
    b.events.push(Event::TaskWake { ts: 50 * MS, tid: W0, task: 0xe0 });
    b.events.sort_by_key(Event::ts);
    let workers = vec![ThreadInfo::named(W0, "tokio-rt-worker"), ThreadInfo::named(W1, "tokio-rt-worker")];
    let rec = Recording::made_up(0, 1_000 * MS, workers, b.events);
    let mut symbols = Symbols::default();
    let name = |n: &str| vec![ResolvedFrame { function: n.into(), file: None, line: None, inlined: false }];
    for (offset, n) in [
        (0x10, "app::heavy"),
        (0x11, "app::handler"),
        (0x20, "__GI___clock_nanosleep"),
        (0x21, "std::thread::sleep"),
        (0x22, "app::load_config"),
        (0x90, "start_thread"),
        (CPU_KIND, "tokio::runtime::task::raw::poll::<app::crunch::{{closure}}, S>"),
        (SLEEP_KIND, "tokio::runtime::task::raw::poll::<app::config_reloader::{{closure}}, S>"),
        (SHORT_KIND, "tokio::runtime::task::raw::poll::<app::request::{{closure}}, S>"),
        (YIELD_KIND, "tokio::runtime::task::raw::poll::<app::spinner::{{closure}}, S>"),
    ] {
        symbols.frames.insert(f(offset), name(n));
    }
    (rec, symbols)
}

fn insights_at(threshold_ms: u64) -> insights::Insights {
    let (rec, symbols) = recording();
    let tl = Timeline::build(&rec, &WorkerRule::default());
    insights::build(&tl, &symbols, Options { long_poll_ns: threshold_ms * MS })
}

#[test]
fn long_polls_get_their_cause_site_and_percentiles() {
    let i = insights_at(10);
    let rows: Vec<(Cause, &str, &str, u64)> =
        i.long_polls.iter().map(|g| (g.cause, g.site.as_str(), g.task_kind.as_str(), g.count)).collect();
    assert_eq!(
        rows,
        vec![
            (Cause::Blocked, "app::load_config", "app::config_reloader", 3),
            (Cause::Cpu, "app::heavy", "app::crunch", 1),
            (Cause::Preempted, "app::request", "app::request", 1),
        ],
        "grouped by call site, most total time first; healthy 1 ms polls never reported"
    );
    let blocked = &i.long_polls[0];
    assert_eq!((blocked.p50_ms, blocked.p99_ms, blocked.max_ms), (41.0, 61.0, 61.0));
    assert_eq!(blocked.total_ms, 123.0);
    assert_eq!(blocked.frames, ["__GI___clock_nanosleep", "std::thread::sleep", "app::load_config"], "syscall … caller");
    assert!(blocked.blocked_pct > 95.0, "{}", blocked.blocked_pct);
    assert_eq!(blocked.longest_at_ms, 300.0);
    assert_eq!(blocked.woken_by, ["a timer or interrupt", "worker 1 (tid 51)"], "most frequent first");
    let cpu = &i.long_polls[1];
    assert_eq!(cpu.frames, ["app::heavy (3 samples)"]);
    assert_eq!(cpu.on_cpu_pct, 100.0);
    assert_eq!(i.long_poll_count, 5);
    assert_eq!(i.longest_poll_ms, Some(61.0));

    // A higher threshold keeps only the two longest sleeps.
    let i = insights_at(41);
    assert_eq!(i.long_poll_count, 2);
    assert_eq!(i.long_polls[0].count, 2);
}

#[test]
fn workers_delays_tasks_and_lints() {
    let i = insights_at(10);
    let w0 = &i.workers[0];
    assert_eq!(w0.tid, W0);
    // Blocked 20+40+60 ms inside polls, preempted 23 ms, of 1000 ms.
    assert_eq!((w0.blocked_in_poll_pct, w0.preempted_pct), (12.0, 2.3));
    assert_eq!(w0.busy_per_second.len(), 1);
    assert_eq!((w0.busy_pct, i.workers[1].busy_pct), (85.7, 90.0));
    assert_eq!(i.worker_imbalance_pct, Some(4.3));
    assert_eq!((w0.idle_while_work_queued_ms, i.workers[1].idle_while_work_queued_ms), (0.0, 49.0), "queued from 51 ms (1 ms grace) to 100 ms");
    assert_eq!((i.workers[1].idle_pct, i.workers[1].blocked_in_poll_pct), (10.0, 0.0), "parked outside polls is idle");
    let spinner = i.tasks.iter().find(|t| t.kind == "app::spinner").unwrap();
    assert_eq!(spinner.polls, 21);
    let pct = spinner.self_wake_pct.unwrap();
    assert!((95.0..96.0).contains(&pct), "20 of 21 wakes: {pct}");
    assert!(i.lints.iter().any(|l| l.lint == "self_wakes" && l.kind == "app::spinner"), "{:?}", i.lints);
    assert!(!i.lints.iter().any(|l| l.lint == "never_yielded"));
    let delay = i.task_wake_delay.unwrap();
    assert_eq!(delay.count, 21, "one arrow per poll after a wake");
    assert!(i.data.polls && i.data.wakes && i.data.stacks && i.data.missing.is_empty());
    let json = serde_json::to_value(&i).unwrap();
    assert_eq!(json["schema"], "runtime-scope.report/1");
    assert_eq!(json["long_polls"][0]["cause"], "blocked");
}

#[test]
fn without_task_data_the_report_says_what_is_missing() {
    let (mut rec, symbols) = recording();
    rec.events.retain(|e| !matches!(e, Event::PollStart { .. } | Event::PollEnd { .. } | Event::TaskWake { .. }));
    let tl = Timeline::build(&rec, &WorkerRule::default());
    let i = insights::build(&tl, &symbols, Options::default());
    assert!(!i.data.polls && i.long_polls.is_empty());
    assert_eq!(i.workers.len(), 2, "thread-level utilisation remains");
    assert!(i.data.missing[0].contains("--no-tasks"), "{:?}", i.data.missing);
    let text = scope_export::summary::render(&tl, &symbols);
    assert!(text.contains("missing: no task polls"), "{text}");
    assert!(text.contains("workers:"), "{text}");
}

/// Each "missing" line states the actual reason, from what the capture
/// says was probed: not "--no-tasks" when task probes were on.
#[test]
fn missing_lines_state_the_actual_reason() {
    let (mut rec, symbols) = recording();
    rec.events.retain(|e| !matches!(e, Event::PollStart { .. } | Event::PollEnd { .. } | Event::TaskWake { .. } | Event::Stack { .. }));
    let missing = |probes: &[&str]| {
        let mut rec = rec.clone();
        rec.probes = probes.iter().map(|p| p.to_string()).collect();
        let i = insights::build(&Timeline::build(&rec, &WorkerRule::default()), &symbols, Options::default());
        (i.data.task_probes, i.data.missing.join("\n"))
    };
    let (probed, text) = missing(&["uprobe:tokio::runtime::task::raw::poll ×3", "perf_event:cpu-clock 99 Hz", "stacks:blocked switch-outs"]);
    assert_eq!(probed, Some(true));
    assert!(text.contains("no task was polled in the window") && !text.contains("--no-tasks"), "{text}");
    assert!(text.contains("no stack was taken in the window") && !text.contains("--no-stacks"), "{text}");
    let (probed, text) = missing(&["off:tasks (--no-tasks)", "off:stacks (--no-stacks)"]);
    assert_eq!(probed, Some(false));
    assert!(text.contains("recorded without task probes (--no-tasks)") && text.contains("no stacks (--no-stacks)"), "{text}");
    let (_, text) = missing(&["off:tasks (no tokio symbols in /usr/bin/sleep)"]);
    assert!(text.contains("(no tokio symbols in /usr/bin/sleep)") && !text.contains("--no-tasks"), "{text}");
    let (probed, _) = missing(&[]);
    assert_eq!(probed, None, "an older capture does not say");
}

/// The report's JSON shape is a contract with CI jobs (docs/report-json.md):
/// any change to it shows up here.
#[test]
fn report_json_schema_snapshot() {
    let i = insights_at(10);
    let text = serde_json::to_string_pretty(&i).unwrap();
    insta::assert_snapshot!("report_json", text);
}

#[test]
fn spans_are_categorised_by_what_the_code_did() {
    let (rec, symbols) = recording();
    let tl = Timeline::build(&rec, &WorkerRule::default());
    let value = scope_export::chrome::to_value(&tl, &symbols, "test");
    let cats: std::collections::BTreeSet<String> =
        value["traceEvents"].as_array().unwrap().iter().filter_map(|e| Some(e["cat"].as_str()?.to_string())).collect();
    for expected in ["offcpu,blocking", "offcpu,idle", "offcpu,preempted", "oncpu,user", "poll,long_poll", "poll"] {
        assert!(cats.contains(expected), "{expected} missing from {cats:?}");
    }
    let blocking = value["traceEvents"].as_array().unwrap().iter().find(|e| e["cat"] == "offcpu,blocking").unwrap();
    assert_eq!(blocking["cname"], "terrible", "a blocking call inside a poll stands out");
}

/// One row per task, by on-CPU time, with Tokio's id where known; idle is
/// the time between its polls.
#[test]
fn busiest_single_tasks_with_their_tokio_ids() {
    let (rec, symbols) = recording();
    let mut tl = Timeline::build(&rec, &WorkerRule::default());
    let spinner = tl.threads.iter().flat_map(|t| &t.polls).find(|p| tl.task_addr(p.serial) == Some(0xe0)).unwrap().serial;
    tl.tokio_ids.insert(spinner, 77);
    let i = insights::build(&tl, &symbols, Options { long_poll_ns: 10 * MS });
    assert_eq!(i.top_tasks[0].kind, "app::crunch");
    assert_eq!(i.top_tasks[0].busy_ms, 30.0);
    let s = i.top_tasks.iter().find(|t| t.kind == "app::spinner").unwrap();
    // 21 polls of 0.1 ms, 2 ms apart: 40.1 ms from first start to last end.
    assert_eq!((s.polls, s.tokio_task_id, s.polled_ms, s.idle_ms), (21, Some(77), 2.1, 38.0));
    assert_eq!(i.top_tasks.len(), 10, "the busiest ten of 25 tasks");
    let text = scope_export::summary::render_with(&tl, &symbols, &i, false);
    assert!(text.contains("busiest tasks") && text.contains("tokio id 77"), "{text}");
}
