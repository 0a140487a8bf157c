use super::*;
use crate::{Frame, ThreadInfo};

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
    Recording::made_up(1_000, 2_000, threads, events)
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
    assert_eq!(w.role, Role::Worker { index: 0, runtime: 0, runtimes: 0 });
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

/// A thread that never switched in the window ran throughout or slept
/// throughout; schedstat at start and stop says which, so its shares add
/// up to 100% (they were 0% in every state). Without schedstat: unknown.
#[test]
fn silent_threads_use_kernel_accounting() {
    let rec = recording(
        vec![thread(20, "spinner", Some((0, 990))), thread(21, "sleeper", Some((5, 5))), thread(22, "unread", None)],
        vec![],
    );
    let tl = Timeline::build(&rec, &WorkerRule::default());
    assert_eq!(states(find(&tl, 20)), vec![(1_000, 2_000, SpanState::OnCpu { cpu: None })]);
    let sleeper = find(&tl, 21);
    assert_eq!(states(sleeper), vec![(1_000, 2_000, SpanState::OffCpu(OffReason::Blocked { state: ThreadState(S) }))]);
    assert_eq!(sleeper.on_cpu_ns() + sleeper.blocked_ns() + sleeper.preempted_ns(), sleeper.lifetime_ns());
    assert_eq!(find(&tl, 22).unseen_ns(), 1_000);
}

fn waking(ts: u64, tid: u32) -> Event {
    Event::Waking { ts, tid, waker_tid: 0, waker_pid: 0 }
}

/// Before a thread's first switch-in: asleep until it was woken, then
/// waiting for a CPU; with no waking, unknown.
#[test]
fn before_the_first_switch_in_a_woken_thread_slept() {
    let rec = recording(
        vec![thread(30, "woken", Some((0, 10))), thread(31, "silent", Some((0, 10)))],
        vec![waking(1_400, 30), into(1_500, 30, 0), into(1_600, 31, 1)],
    );
    let tl = Timeline::build(&rec, &WorkerRule::default());
    assert_eq!(
        states(find(&tl, 30))[..2],
        [
            (1_000, 1_400, SpanState::OffCpu(OffReason::Blocked { state: ThreadState(S) })),
            (1_400, 1_500, SpanState::OffCpu(OffReason::Woken)),
        ]
    );
    assert_eq!(states(find(&tl, 31))[0], (1_000, 1_600, SpanState::OffCpu(OffReason::Unknown)));
    assert_eq!(find(&tl, 31).unseen_ns(), 600);
}

/// A blocked stretch ends at its waking, not at the switch-in: the wait
/// for a CPU after it is its own span (a 40 ms sleep under load was shown
/// as 69 ms blocked). A waking while the thread is still on its CPU (woken
/// before it switched out) or preempted splits nothing.
#[test]
fn a_blocked_span_ends_at_its_waking() {
    let rec = recording(
        vec![thread(30, "x", None)],
        vec![
            into(1_100, 30, 0),
            waking(1_150, 30),
            out(1_200, 30, S),
            waking(1_500, 30),
            into(1_700, 30, 1),
            out(1_800, 30, 0),
            waking(1_850, 30),
            into(1_900, 30, 0),
        ],
    );
    let tl = Timeline::build(&rec, &WorkerRule::default());
    let t = find(&tl, 30);
    assert_eq!(
        states(t)[1..5],
        [
            (1_100, 1_200, SpanState::OnCpu { cpu: Some(0) }),
            (1_200, 1_500, SpanState::OffCpu(OffReason::Blocked { state: ThreadState(S) })),
            (1_500, 1_700, SpanState::OffCpu(OffReason::Woken)),
            (1_700, 1_800, SpanState::OnCpu { cpu: Some(1) }),
        ]
    );
    assert_eq!(states(t)[5], (1_800, 1_900, SpanState::OffCpu(OffReason::Preempted)));
    assert_eq!(t.longest_blocked().map(|s| s.duration_ns()), Some(300));
    assert_eq!(t.runnable_ns(), 200 + 100);
    assert_eq!(t.woken_by(&t.spans[2]).map(|w| w.ts), Some(1_500));
    assert_eq!(tl.inconsistencies, 0);
    assert_spans_tile_lifetime(t, 1_000, 2_000);
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
    let polls: Vec<(u64, u64, u64, u32, u16, u32, bool)> = find(&tl, 50)
        .polls
        .iter()
        .map(|p| (p.start_ns, p.end_ns, tl.task_addr(p.serial).unwrap(), p.serial, p.depth, p.number, p.finished))
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

#[test]
fn probes_still_firing_after_they_were_taken_off_are_ignored() {
    let f = Frame { module: 0, offset: 0x10 };
    let start = |ts, task| Event::PollStart { ts, tid: 50, task, poll_fn: f };
    let end = |ts| Event::PollEnd { ts, tid: 50 };
    let wake = |ts| Event::TaskWake { ts, tid: 50, task: 8 };
    let off = |ts, polls| Event::Probes { ts, polls, wakes: false };
    // Wakes off at 1 300, polls at 1 500; the entry probe outlives the
    // return probe while their links close.
    let events = vec![start(1_100, 7), wake(1_150), end(1_200), off(1_300, true), wake(1_350), start(1_400, 7), off(1_500, false), end(1_510), start(1_600, 8)];
    let rec = recording(vec![thread(50, "tokio-rt-worker", None)], events);
    let tl = Timeline::build(&rec, &WorkerRule::default());
    let polls: Vec<(u64, u64, bool)> = find(&tl, 50).polls.iter().map(|p| (p.start_ns, p.end_ns, p.finished)).collect();
    assert_eq!(polls, vec![(1_100, 1_200, true)], "1 400 was open at the switch-off; 1 600 began after it");
    assert_eq!(tl.wakes.len(), 1, "the wake at 1 350 came after wakes were off");
    assert_eq!(tl.polls_off_ns(), 1_500);
}

#[test]
fn a_task_polled_again_inside_its_own_open_poll_lost_a_return() {
    let f = |o| Frame { module: 0, offset: o };
    let start = |ts, task| Event::PollStart { ts, tid: 50, task, poll_fn: f(0x10) };
    let end = |ts| Event::PollEnd { ts, tid: 50 };
    // Task 7's returns are lost twice (a full ring buffer); 8 is polled
    // inside the second open one and its return lost too.
    let mut events = vec![start(1_100, 7), start(1_200, 7), start(1_250, 8), start(1_300, 7), end(1_350), start(1_400, 7), end(1_450)];
    // A long run of lost returns must not nest polls ever deeper.
    events.extend((0..200u64).map(|i| start(1_500 + 2 * i, 9)));
    let rec = recording(vec![thread(50, "tokio-rt-worker", None)], events);
    let tl = Timeline::build(&rec, &WorkerRule::default());
    let t = find(&tl, 50);
    let polls: Vec<(u64, u64, u64, u16)> = t.polls.iter().take(2).map(|p| (p.start_ns, p.end_ns, tl.task_addr(p.serial).unwrap(), p.depth)).collect();
    assert_eq!(polls, vec![(1_300, 1_350, 7, 0), (1_400, 1_450, 7, 0)], "the polls without a return are left out");
    assert_eq!(t.polls.len(), 3, "and the last of task 9's, open at stop");
    assert_eq!(t.polls[2].depth, 0);
    assert_eq!(tl.polls_without_return.len(), 3 + 199, "7 twice, 8 once, 9 each time but the last");
    assert_eq!(tl.polls_without_return[..3], [(1, 1_100), (2, 1_250), (1, 1_200)], "(task serial, start), innermost first");
}

#[test]
fn wakes_name_their_task_and_self_wakes_are_marked() {
    let f = Frame { module: 0, offset: 0x10 };
    let start = |ts, tid, task| Event::PollStart { ts, tid, task, poll_fn: f };
    let end = |ts, tid| Event::PollEnd { ts, tid };
    let wake = |ts, tid, task| Event::TaskWake { ts, tid, task };
    let rec = recording(
        vec![thread(50, "tokio-rt-worker", None), thread(51, "tokio-rt-worker", None)],
        vec![
            start(1_100, 50, 7),
            wake(1_150, 50, 7), // inside its own poll
            end(1_200, 50),
            wake(1_210, 50, 7), // deferred (yield_now): right after its poll
            start(1_300, 50, 8),
            end(1_350, 50),
            out(1_360, 50, S), // the worker parks…
            into(1_400, 50, 0),
            wake(1_410, 50, 8), // …and the driver wakes task 8: not a self-wake
            wake(1_420, 51, 7), // another thread
        ],
    );
    let tl = Timeline::build(&rec, &WorkerRule::default());
    let wakes: Vec<(u64, u32, u32, bool)> = tl.wakes.iter().map(|w| (w.ts, w.tid, w.serial(), w.self_wake())).collect();
    assert_eq!(wakes, vec![(1_150, 50, 1, true), (1_210, 50, 1, true), (1_410, 50, 2, false), (1_420, 51, 1, false)]);
}

#[test]
fn workers_are_the_threads_that_entered_the_worker_loop() {
    let run = |ts, tid, index, runtime| Event::WorkerRun { ts, tid, index, runtime };
    let born = |ts, tid, name: &str| Event::NewThread { ts, tid, parent_tid: 1, name: name.into() };
    let rec = recording(
        vec![thread(1, "main", None)],
        vec![
            born(1_010, 60, "api-7"),
            born(1_011, 61, "api-7"),
            born(1_012, 62, "tokio-rt-worker"), // a blocking-pool thread, default name
            born(1_013, 63, "tokio-rt-worker"),
            run(1_020, 61, 0, 0x1000),
            run(1_021, 60, 1, 0x1000),
            run(1_022, 63, 0, 0x2000), // a second runtime
        ],
    );
    let tl = Timeline::build(&rec, &WorkerRule::default());
    let roles: Vec<(u32, Role)> = tl.threads.iter().map(|t| (t.tid, t.role)).collect();
    assert_eq!(
        roles,
        vec![
            (61, Role::Worker { index: 0, runtime: 0, runtimes: 2 }),
            (60, Role::Worker { index: 1, runtime: 0, runtimes: 2 }),
            (63, Role::Worker { index: 0, runtime: 1, runtimes: 2 }),
            (1, Role::Other),
            (62, Role::Other),
        ]
    );
    assert_eq!(tl.threads[0].display_name(), "runtime 0 worker 0 (tid 61)", "several runtimes: every label says which");
    assert_eq!(tl.threads[2].display_name(), "runtime 1 worker 0 (tid 63)");

    // A layout we misread (absurd index): names decide, as without the probe.
    let mut rec = rec;
    rec.events.push(run(1_030, 62, 1 << 40, 0x1000));
    let tl = Timeline::build(&rec, &WorkerRule::default());
    let workers: Vec<u32> = tl.workers().map(|t| t.tid).collect();
    assert_eq!(workers, vec![62, 63]);
}

#[test]
fn the_thread_that_takes_a_current_thread_core_is_its_worker() {
    let born = |ts, tid, name: &str| Event::NewThread { ts, tid, parent_tid: 1, name: name.into() };
    let core = |ts, tid, runtime| Event::CurrentThreadRun { ts, tid, runtime };
    let rec = recording(
        vec![thread(1, "main", None)],
        vec![born(1_010, 60, "tokio-rt-worker"), core(1_020, 1, 0x3000)],
    );
    let tl = Timeline::build(&rec, &WorkerRule::default());
    let roles: Vec<(u32, Role)> = tl.threads.iter().map(|t| (t.tid, t.role)).collect();
    // A blocking-pool thread of that runtime is no worker, whatever its name.
    assert_eq!(roles, vec![(1, Role::Worker { index: 0, runtime: 0, runtimes: 1 }), (60, Role::Other)]);
    assert_eq!(tl.threads[0].display_name(), "worker 0 (tid 1)");

    // Next to a multi-thread runtime: runtimes numbered by first appearance.
    let mut both = rec.clone();
    both.events.insert(0, born(1_001, 61, "tokio-rt-worker"));
    both.events.insert(1, Event::WorkerRun { ts: 1_005, tid: 61, index: 0, runtime: 0x1000 });
    let tl = Timeline::build(&both, &WorkerRule::default());
    let names: Vec<String> = tl.workers().map(|t| t.display_name()).collect();
    assert_eq!(names, ["runtime 0 worker 0 (tid 61)", "runtime 1 worker 0 (tid 1)"]);

    // A misread take_core (not a pointer) is dropped alone: the multi-thread
    // worker keeps its entry-based role.
    both.events.push(core(1_030, 62, u64::MAX));
    let tl = Timeline::build(&both, &WorkerRule::default());
    let names: Vec<String> = tl.workers().map(|t| t.display_name()).collect();
    assert_eq!(names, ["worker 0 (tid 61)"]);
}

#[test]
fn tokio_ids_name_tasks_and_split_a_reused_address() {
    let frame = Frame { module: 0, offset: 0x10 };
    let id = |ts, task, id| Event::TaskId { ts, tid: 1, task, id };
    let start = |ts, task| Event::PollStart { ts, tid: 1, task, poll_fn: frame };
    let end = |ts| Event::PollEnd { ts, tid: 1 };
    // Address 0xa holds task 7, is freed and reused by task 9 without a
    // spawn seen: two tasks, not one with a third poll.
    let rec = recording(
        vec![thread(1, "worker", None)],
        vec![id(1_100, 0xa, 7), start(1_100, 0xa), end(1_110), start(1_120, 0xa), end(1_130), id(1_200, 0xa, 9), start(1_200, 0xa), end(1_210)],
    );
    let tl = Timeline::build(&rec, &WorkerRule::default());
    let polls: Vec<(u32, u32)> = tl.threads[0].polls.iter().map(|p| (p.serial, p.number)).collect();
    assert_eq!(polls, vec![(1, 1), (1, 2), (2, 1)]);
    assert_eq!(tl.tokio_ids.iter().map(|(s, i)| (*s, *i)).collect::<Vec<_>>(), vec![(1, 7), (2, 9)]);
}

#[test]
fn a_thread_seen_running_after_a_lost_switch_in_is_on_cpu_from_then() {
    let frame = Frame { module: 0, offset: 0x10 };
    // Preempted at 1_100; its switch-in never arrives, but it polls at 1_200.
    let rec = recording(
        vec![thread(1, "worker", None)],
        vec![
            into(1_000, 1, 0),
            out(1_100, 1, 0),
            Event::PollStart { ts: 1_200, tid: 1, task: 0xa, poll_fn: frame },
            Event::PollEnd { ts: 1_250, tid: 1 },
            out(1_300, 1, 1),
        ],
    );
    let tl = Timeline::build(&rec, &WorkerRule::default());
    let spans: Vec<(u64, u64, bool)> = tl.threads[0].spans.iter().map(|s| (s.start_ns, s.end_ns, matches!(s.state, SpanState::OnCpu { .. }))).collect();
    assert_eq!(spans[..4], [(1_000, 1_100, true), (1_100, 1_200, false), (1_200, 1_300, true), (1_300, 2_000, false)]);
    assert_eq!(tl.inconsistencies, 1, "the repair is counted");
    assert_eq!(tl.threads[0].polls.len(), 1);
}

/// The timeline of a busy capture is mostly polls: their size is its size.
#[test]
fn a_poll_is_32_bytes() {
    assert_eq!(std::mem::size_of::<Poll>(), 32);
}

/// One per task wake, all held at the end of a recording.
#[test]
fn a_wake_is_16_bytes_and_keeps_its_flag() {
    assert_eq!(std::mem::size_of::<Wake>(), 16);
    let w = Wake::new(5, 7, (1 << 31) - 1, true);
    assert_eq!((w.ts, w.tid, w.serial(), w.self_wake()), (5, 7, (1 << 31) - 1, true));
    assert!(!Wake::new(5, 7, 3, false).self_wake());
}

#[test]
fn without_returns_a_poll_ends_where_its_thread_is_first_seen_outside_it() {
    let f = Frame { module: 0, offset: 0x10 };
    let start = |ts, task| Event::PollStart { ts, tid: 50, task, poll_fn: f };
    let id = |ts, task, id| Event::TaskId { ts, tid: 50, task, id };
    let at = |ts, id| Event::TaskAt { ts, tid: 50, id };
    let inside = |ts, id| Event::PollInside { ts, tid: 50, id };
    const LOOP: u64 = 1;
    let events = vec![
        start(1_050, 0xa),
        Event::PollEnd { ts: 1_060, tid: 50 }, // probed: exact
        Event::PollReturnsOff { ts: 1_070 },
        id(1_100, 0xa, 7),
        start(1_100, 0xa),
        at(1_150, 7), // blocked inside task 7: still in its poll
        Event::PollEnd { ts: 1_160, tid: 50 }, // a return still firing: ignored
        inside(1_200, LOOP),
        id(1_200, 0xb, 8),
        start(1_200, 0xb), // entered from the worker loop: 7's poll ended by now
        inside(1_300, 8),
        id(1_300, 0xc, 9),
        start(1_300, 0xc), // entered inside task 8's poll (a LocalSet): nested
        at(1_400, LOOP),   // parked: both ended by now
        inside(1_500, LOOP),
        start(1_500, 0xd), // no id known: ended only by the next poll
        at(1_550, 3),
        start(1_600, 0xa),
        Event::Exit { ts: 1_700, tid: 50 },
    ];
    let rec = recording(vec![thread(50, "tokio-rt-worker", None)], events);
    let tl = Timeline::build(&rec, &WorkerRule::default());
    let polls: Vec<(u64, u64, u16, bool, bool)> =
        find(&tl, 50).polls.iter().map(|p| (p.start_ns, p.end_ns, p.depth, p.finished, p.bounded)).collect();
    assert_eq!(
        polls,
        vec![
            (1_050, 1_060, 0, true, false),
            (1_100, 1_200, 0, true, true),
            (1_200, 1_400, 0, true, true),
            (1_300, 1_400, 1, true, true),
            (1_500, 1_600, 0, true, true),
            (1_600, 1_700, 0, true, true),
        ]
    );
}

#[test]
fn without_returns_the_worker_loop_s_own_poll_stays_open_around_task_polls() {
    let f = Frame { module: 0, offset: 0x10 };
    let start = |ts, task| Event::PollStart { ts, tid: 50, task, poll_fn: f };
    let id = |ts, task, id| Event::TaskId { ts, tid: 50, task, id };
    const LOOP: u64 = 1;
    // The worker's loop runs inside a blocking task's poll (id 1), entered
    // before the returns went off; this window (cut from a longer
    // recording) begins after the thread's last `PollInside`: its learned
    // loop id stands in for it.
    let events = vec![
        id(1_000, 0xf, LOOP),
        start(1_000, 0xf),
        Event::PollReturnsOff { ts: 1_010 },
        Event::WorkerLoop { ts: 1_020, tid: 50, id: LOOP },
        id(1_100, 0xa, 7),
        start(1_100, 0xa),
        Event::TaskAt { ts: 1_200, tid: 50, id: LOOP },
        id(1_300, 0xb, 8),
        start(1_300, 0xb),
    ];
    let rec = recording(vec![thread(50, "tokio-rt-worker", None)], events);
    let tl = Timeline::build(&rec, &WorkerRule::default());
    let polls: Vec<(u64, u64, u16, bool, bool)> =
        find(&tl, 50).polls.iter().map(|p| (p.start_ns, p.end_ns, p.depth, p.finished, p.bounded)).collect();
    assert_eq!(polls, vec![(1_000, 2_000, 0, false, false), (1_100, 1_200, 1, true, true), (1_300, 2_000, 1, false, false)]);
    assert_eq!(tl.poll_returns_off_ns, Some(1_010));
}

/// A worker preempted in Tokio's bookkeeping after the task's id is unset
/// (before `raw::poll` returns) reads its loop's id inside the poll: that
/// read ends nothing. The same read at a blocked switch-out does.
#[test]
fn without_returns_a_task_id_read_at_a_preemption_ends_no_poll() {
    let f = Frame { module: 0, offset: 0x10 };
    const LOOP: u64 = 1;
    let at = |ts, id| Event::TaskAt { ts, tid: 50, id };
    let events = vec![
        Event::PollReturnsOff { ts: 1_000 },
        Event::TaskId { ts: 1_100, tid: 50, task: 0xa, id: 7 },
        Event::PollStart { ts: 1_100, tid: 50, task: 0xa, poll_fn: f },
        at(1_200, LOOP),
        out(1_200, 50, 0), // preempted
        into(1_300, 50, 0),
        at(1_400, LOOP),
        out(1_400, 50, S), // parked
    ];
    let rec = recording(vec![thread(50, "tokio-rt-worker", None)], events);
    let tl = Timeline::build(&rec, &WorkerRule::default());
    let polls: Vec<(u64, u64, bool)> = find(&tl, 50).polls.iter().map(|p| (p.start_ns, p.end_ns, p.bounded)).collect();
    assert_eq!(polls, vec![(1_100, 1_400, true)]);
}
