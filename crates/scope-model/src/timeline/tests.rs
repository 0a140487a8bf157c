use super::*;
use crate::{Frame, StopReason, ThreadInfo};

const S: u64 = 0x1; // TASK_INTERRUPTIBLE
const PREEMPT: u64 = 0x100;

fn thread(tid: u32, name: &str, cpu: Option<(u64, u64)>) -> ThreadInfo {
    ThreadInfo {
        tid,
        name: name.into(),
        cpu_ns_at_start: cpu.map(|c| c.0),
        cpu_ns_at_stop: cpu.map(|c| c.1),
    }
}

fn out(ts: u64, tid: u32, state: u64) -> Event {
    Event::Switch {
        ts,
        cpu: 0,
        prev_tid: tid,
        next_tid: 0,
        prev_state: state,
        prev_ours: true,
        next_ours: false,
        cpu_lost: 0,
    }
}

fn into(ts: u64, tid: u32, cpu: u32) -> Event {
    Event::Switch {
        ts,
        cpu,
        prev_tid: 0,
        next_tid: tid,
        prev_state: 0,
        prev_ours: false,
        next_ours: true,
        cpu_lost: 0,
    }
}

fn recording(threads: Vec<ThreadInfo>, events: Vec<Event>) -> Recording {
    Recording {
        tool_version: "test".into(),
        pid: 1,
        command: "app".into(),
        executable: "/bin/app".into(),
        start_ns: 1_000,
        end_ns: 2_000,
        stop_reason: StopReason::Duration,
        modules: vec![],
        probes: vec![],
        launch: None,
        lost_events: 0,
        untracked_threads: 0,
        threads,
        events,
    }
}

fn states(t: &ThreadTimeline) -> Vec<(u64, u64, SpanState)> {
    t.spans.iter().map(|s| (s.start_ns, s.end_ns, s.state)).collect()
}

fn find(tl: &Timeline, tid: u32) -> &ThreadTimeline {
    tl.threads.iter().find(|t| t.tid == tid).unwrap()
}

#[test]
fn infers_initial_state_and_closes_at_stop() {
    let rec = recording(
        vec![thread(10, "tokio-rt-worker", None)],
        // Out of order on purpose: two CPUs' records interleave.
        vec![into(1_300, 10, 1), out(1_100, 10, S), out(1_400, 10, PREEMPT), into(1_450, 10, 0)],
    );
    let tl = Timeline::build(&rec, &WorkerRule::default());
    let w = find(&tl, 10);
    let blocked = SpanState::OffCpu(OffReason::Blocked { state: ThreadState(S) });
    assert_eq!(
        states(w),
        vec![
            (1_000, 1_100, SpanState::OnCpu { cpu: Some(0) }),
            (1_100, 1_300, blocked),
            (1_300, 1_400, SpanState::OnCpu { cpu: Some(1) }),
            (1_400, 1_450, SpanState::OffCpu(OffReason::Preempted)),
            (1_450, 2_000, SpanState::OnCpu { cpu: Some(0) }),
        ]
    );
    assert_eq!(w.on_cpu_ns(), 100 + 100 + 550);
    assert_eq!(w.blocked_ns(), 200);
    assert_eq!(w.preempted_ns(), 50);
    assert_eq!(w.switch_outs(), 2);
    assert_eq!(w.role, Role::Worker { index: 0 });
    assert_eq!(tl.inconsistencies, 0);
}

#[test]
fn follows_new_threads_renames_and_exits() {
    let rec = recording(
        vec![thread(1, "app", None)],
        vec![
            Event::NewThread { ts: 1_200, tid: 12, parent_tid: 1, name: "app".into() },
            into(1_250, 12, 1),
            Event::Rename { ts: 1_300, tid: 12, name: "tokio-rt-worker".into() },
            out(1_300, 12, S),
            into(1_500, 12, 1),
            Event::Exit { ts: 1_600, tid: 12 },
            into(1_700, 12, 1), // after exit: ignored
        ],
    );
    let tl = Timeline::build(&rec, &WorkerRule::default());
    let t = find(&tl, 12);
    assert_eq!(t.name, "tokio-rt-worker");
    assert_eq!(t.created_ns, Some(1_200));
    assert_eq!(t.exited_ns, Some(1_600));
    assert_eq!(t.spans.first().unwrap().start_ns, 1_200);
    assert_eq!(t.spans.last().unwrap().end_ns, 1_600);
    assert_eq!(t.on_cpu_ns(), 50 + 100);
    // Workers sort first.
    assert_eq!(tl.threads[0].tid, 12);
    assert_eq!(tl.threads[1].role, Role::Other);
}

#[test]
fn silent_threads_use_kernel_accounting() {
    let rec = recording(
        vec![thread(20, "spinner", Some((0, 990))), thread(21, "sleeper", Some((5, 5)))],
        vec![],
    );
    let tl = Timeline::build(&rec, &WorkerRule::default());
    assert_eq!(states(find(&tl, 20)), vec![(1_000, 2_000, SpanState::OnCpu { cpu: None })]);
    assert_eq!(
        states(find(&tl, 21)),
        vec![(1_000, 2_000, SpanState::OffCpu(OffReason::Unknown))]
    );
}

#[test]
fn counts_contradictions_from_lost_events() {
    let rec = recording(
        vec![thread(30, "x", None)],
        vec![into(1_100, 30, 0), into(1_200, 30, 0), out(1_300, 30, S), out(1_400, 30, S)],
    );
    let tl = Timeline::build(&rec, &WorkerRule::default());
    assert_eq!(tl.inconsistencies, 2);
    assert_spans_tile_lifetime(find(&tl, 30), 1_000, 2_000);
}

fn assert_spans_tile_lifetime(t: &ThreadTimeline, start: u64, end: u64) {
    assert_eq!(t.spans.first().unwrap().start_ns, start);
    assert_eq!(t.spans.last().unwrap().end_ns, end);
    for pair in t.spans.windows(2) {
        assert_eq!(pair[0].end_ns, pair[1].start_ns, "gap or overlap in {:?}", t.spans);
    }
}

/// Property: whatever the event soup, spans never overlap, tile the thread's
/// life, and stay inside the window.
#[test]
fn spans_tile_for_pseudo_random_event_streams() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..200 {
        let events: Vec<Event> = (0..40)
            .map(|_| {
                let ts = 500 + next() % 2_000; // some before/after the window
                match next() % 3 {
                    0 => into(ts, 40, (next() % 4) as u32),
                    1 => out(ts, 40, if next() % 2 == 0 { S } else { PREEMPT }),
                    _ => out(ts, 40, 0),
                }
            })
            .collect();
        let tl = Timeline::build(&recording(vec![thread(40, "t", None)], events), &WorkerRule::default());
        let t = find(&tl, 40);
        assert_spans_tile_lifetime(t, 1_000, 2_000);
        assert_eq!(t.lifetime_ns(), 1_000);
    }
}

#[test]
fn polls_nest_number_and_close() {
    let f = |o| Frame { module: 0, offset: o };
    let start = |ts, task, o| Event::PollStart { ts, tid: 50, task, poll_fn: f(o) };
    let end = |ts| Event::PollEnd { ts, tid: 50 };
    let rec = recording(
        vec![thread(50, "tokio-rt-worker", None)],
        vec![
            end(1_010), // entered before we attached: ignored
            start(1_100, 7, 0x10),
            start(1_200, 8, 0x20),
            end(1_300),
            end(1_400),
            start(1_500, 8, 0x20),
            end(1_600),
            Event::TaskSpawn { ts: 1_700, tid: 50, task: 8 },
            start(1_800, 8, 0x20), // same address, new task
            end(1_850),
            start(1_900, 9, 0x30), // still open at stop
        ],
    );
    let tl = Timeline::build(&rec, &WorkerRule::default());
    let polls: Vec<(u64, u64, u64, u32, u32, u32, bool)> = find(&tl, 50)
        .polls
        .iter()
        .map(|p| (p.start_ns, p.end_ns, p.task, p.serial, p.depth, p.number, p.finished))
        .collect();
    assert_eq!(
        polls,
        vec![
            (1_100, 1_400, 7, 1, 0, 1, true),
            (1_200, 1_300, 8, 2, 1, 1, true),
            (1_500, 1_600, 8, 2, 0, 2, true),
            (1_800, 1_850, 8, 3, 0, 1, true),
            (1_900, 2_000, 9, 4, 0, 1, false),
        ]
    );
}
