use super::*;
use scope_model::{Frame, Recording, StopReason, ThreadInfo, Timeline};

const MS: u64 = 1_000_000;
const START: u64 = 10 * SECOND_NS;

fn switch(ts: u64, cpu: u32, prev: u32, next: u32, state: u64) -> Event {
    Event::Switch { ts, cpu, prev_tid: prev, next_tid: next, prev_state: state, prev_ours: prev != 0, next_ours: next != 0, cpu_lost: 0 }
}

fn poll(ts: u64, tid: u32) -> Event {
    Event::PollStart { ts, tid, task: 1, poll_fn: Frame { module: 0, offset: 0 } }
}

#[test]
fn prints_leaf_long_polls_as_they_end_rate_limited() {
    let names = HashMap::from([(7, "api".to_string())]);
    let mut view = LiveView::new(true, WorkerRule::default(), names, 0, None).with_long_polls(10_000_000);
    view.feed(&Event::WorkerRun { ts: 1, tid: 7, index: 2, runtime: 0x1000 });
    let start = |ts| Event::PollStart { ts, tid: 7, task: 1, poll_fn: Frame { module: 0, offset: 0 } };
    let end = |ts| Event::PollEnd { ts, tid: 7 };
    view.feed(&start(0)); // the worker's own loop: an executor, never reported
    view.feed(&start(100_000_000));
    assert_eq!(view.poll_ended(130_000_000, 7).as_deref(), Some("[  0.1s] long poll 30.0 ms on worker 2 (tid 7)"));
    view.feed(&start(200_000_000));
    assert_eq!(view.poll_ended(201_000_000, 7), None, "1 ms is not long");
    for i in 0..10 {
        view.feed(&start(300_000_000 + i * 20_000_000));
        view.feed(&end(315_000_000 + i * 20_000_000));
    }
    assert_eq!((view.long_lines, view.long_suppressed), (5, 6), "five lines a second, the rest counted");
    assert_eq!(view.poll_ended(3_000_000_000, 7), None, "the outer loop poll nested others");
    let lines = view.tick(1_000_000_000 + REORDER_NS);
    assert!(lines[0].contains("worker 2 (tid 7)"), "named by its tokio index, as the report does: {lines:?}");
}

/// A recording with what made the live line and the report disagree: a
/// worker whose Tokio index is not its tid order, a switch-in the kernel
/// never delivered (repaired from the thread's own poll), a thread running
/// across second boundaries, records from two CPUs out of order.
fn recording() -> Recording {
    let s = |x: u64| START + x;
    let mut events = vec![
        Event::WorkerRun { ts: s(1), tid: 11, index: 1, runtime: 0x1000 },
        Event::WorkerRun { ts: s(2), tid: 12, index: 0, runtime: 0x1000 },
    ];
    for sec in 0..4u64 {
        let base = s(sec * SECOND_NS);
        // Worker 11 on CPU 0: 300 ms in three slices each second.
        for k in 0..3 {
            events.push(switch(base + (k * 300 + 10) * MS, 0, 0, 11, 0));
            events.push(switch(base + (k * 300 + 110) * MS, 0, 11, 0, 1));
        }
    }
    // Worker 12 on CPU 1: runs from 0.5 s to 1.7 s (across a boundary)...
    events.push(switch(s(500 * MS), 1, 0, 12, 0));
    events.push(switch(s(1_700 * MS), 1, 12, 0, 1));
    // ...and at 2.2 s its switch-in is lost; its poll proves it ran.
    events.push(poll(s(2_400 * MS), 12));
    events.push(Event::PollEnd { ts: s(2_450 * MS), tid: 12 });
    events.push(switch(s(2_600 * MS), 1, 12, 0, 1));
    // The main thread: preempted, then on CPU 1 now and then.
    events.push(switch(s(3_000 * MS), 1, 0, 10, 0));
    events.push(switch(s(3_250 * MS), 1, 10, 0, 0));
    Recording {
        tool_version: "test".into(),
        pid: 10,
        command: "app".into(),
        executable: "/bin/app".into(),
        start_ns: START,
        end_ns: START + 4 * SECOND_NS,
        stop_reason: StopReason::Duration,
        lost_events: 0,
        untracked_threads: 0,
        threads: [(10, "app"), (11, "tokio-rt-worker"), (12, "tokio-rt-worker")]
            .into_iter()
            .map(|(tid, name)| ThreadInfo { tid, name: name.into(), cpu_ns_at_start: Some(0), cpu_ns_at_stop: Some(1) })
            .collect(),
        events,
        modules: vec![],
        probes: vec![],
        launch: None,
    }
}

/// Issue 16 item 3: the live line and the report came from two
/// computations and disagreed (`worker 1 66%` live, 3% in the report for
/// that second). Now every second's share per worker, and its label, is
/// the report's.
#[test]
fn live_shares_are_the_reports() {
    let rec = recording();
    let names = rec.threads.iter().map(|t| (t.tid, t.name.clone())).collect();
    let mut view = LiveView::new(true, WorkerRule::default(), names, rec.start_ns, None);
    // Arrival: drained every 100 ms, each drain CPU by CPU (out of time order).
    let mut sorted = rec.events.clone();
    sorted.sort_by_key(Event::ts);
    let mut live: Vec<Second> = Vec::new();
    let mut drain_end = rec.start_ns + 100 * MS;
    let mut batch: Vec<Event> = Vec::new();
    for event in sorted.into_iter().chain([switch(u64::MAX, 0, 0, 0, 0)]) {
        while event.ts() >= drain_end {
            batch.sort_by_key(|e| match e {
                Event::Switch { cpu, .. } => (*cpu, e.ts()),
                _ => (0, e.ts()),
            });
            for e in batch.drain(..) {
                view.feed(&e);
            }
            live.extend(view.finished_seconds(drain_end));
            drain_end += 100 * MS;
            if drain_end > rec.end_ns + SECOND_NS {
                break;
            }
        }
        batch.push(event);
    }
    let tl = Timeline::build(&rec, &WorkerRule::default());
    let report = scope_export::insights::build(&tl, &scope_model::Symbols::default(), scope_export::insights::Options::default());
    assert_eq!(live.len(), 4, "{live:?}");
    assert_eq!(report.workers.len(), 2);
    for w in &report.workers {
        let shown: Vec<f64> = live.iter().map(|s| s.workers.iter().find(|(l, _)| *l == w.name).map_or(-1.0, |x| x.1)).collect();
        assert_eq!(shown, w.busy_per_second, "{}: live vs report", w.name);
    }
    assert_eq!(live[0].workers[0].0, "worker 0 (tid 12)", "rows in the report's order and words");
    assert_eq!(live[1].workers[0].1, 70.0, "worker 0 ran until 1.7 s");
    assert_eq!(live[2].workers[0].1, 20.0, "the lost switch-in repaired from its poll at 2.4 s");
    assert_eq!(live[3].others, 25.0, "the main thread's 250 ms");
}

#[test]
fn progress_lines_without_live() {
    let mut view = LiveView::new(false, WorkerRule::default(), HashMap::new(), 0, Some(10 * SECOND_NS));
    view.feed(&switch(5, 0, 0, 7, 0));
    assert!(view.tick(SECOND_NS).is_empty(), "every 2 s");
    assert_eq!(view.tick(2 * SECOND_NS), vec!["recording…    2/10 s  1 events  0 lost".to_string()]);
}

#[test]
fn without_live_lines_nothing_is_kept_per_event() {
    let mut view = LiveView::new(false, WorkerRule::default(), HashMap::new(), 0, None);
    for i in 0..10_000u64 {
        view.feed(&switch(i * 1000, 0, 0, 7, 0));
    }
    assert!(view.pending.is_empty() && view.counts.is_empty(), "{} pending, {} seconds counted", view.pending.len(), view.counts.len());
    assert_eq!(view.tick(2 * SECOND_NS), vec!["recording…    2 s  10000 events  0 lost".to_string()]);
}
