use super::*;

const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;
const WORKER: u32 = 7;

fn f(offset: u64) -> Frame {
    Frame { module: 0, offset }
}

fn limits(long_poll: Option<u64>, blocked: Option<u64>, sched: Option<u64>) -> Detector {
    let mut d = Detector::new(
        Thresholds { long_poll_ns: long_poll.map(|v| v * MS), blocked_ns: blocked.map(|v| v * MS), sched_delay_ns: sched.map(|v| v * MS) },
        WorkerRule::default(),
    );
    d.begin([(WORKER, "tokio-rt-worker"), (8, "main")]);
    d
}

fn out_(tid: u32, ts: u64, blocked: bool) -> Event {
    Event::Switch { ts, cpu: 0, prev_tid: tid, next_tid: 0, prev_state: u64::from(blocked), prev_ours: true, next_ours: false, cpu_lost: 0 }
}

fn in_(tid: u32, ts: u64) -> Event {
    Event::Switch { ts, cpu: 0, prev_tid: 0, next_tid: tid, prev_state: 0, prev_ours: false, next_ours: true, cpu_lost: 0 }
}

fn start(tid: u32, ts: u64, task: u64, poll_fn: Frame) -> Event {
    Event::PollStart { ts, tid, task, poll_fn }
}

fn sample(tid: u32, ts: u64, frames: Vec<Frame>) -> Event {
    Event::Stack { ts, cpu: 0, tid, reason: StackReason::Sample, frames: frames.into(), complete: true }
}

fn feed(d: &mut Detector, events: &[Event]) -> Noticed {
    let mut n = Noticed::default();
    d.feed(events, &mut n);
    n
}

fn ongoing(d: &mut Detector, at: u64) -> Noticed {
    let mut n = Noticed::default();
    d.ongoing(at, &mut n);
    n
}

#[test]
fn a_probed_poll_fires_while_still_running_and_says_when_it_ended() {
    let mut d = limits(Some(100), Some(100), None);
    let blocked_stack = vec![f(10), f(11)];
    let n = feed(&mut d, &[
        start(WORKER, 0, 0xa0, f(1)),
        out_(WORKER, MS, true),
        Event::Stack { ts: MS, cpu: 0, tid: WORKER, reason: StackReason::Blocked, frames: blocked_stack.into(), complete: true },
    ]);
    assert_eq!(n, Noticed::default());
    assert_eq!(ongoing(&mut d, 99 * MS), Noticed::default(), "not yet");
    let n = ongoing(&mut d, 105 * MS);
    let what: Vec<(Rule, Stretch, u64, u64, bool)> = n.candidates.iter().map(|c| (c.rule, c.stretch, c.start_ns, c.duration_ns, c.ongoing)).collect();
    assert!(what.contains(&(Rule::LongPoll, Stretch::Poll, 0, 105 * MS, true)), "{what:?}");
    assert!(what.contains(&(Rule::Blocked, Stretch::Blocked, MS, 104 * MS, true)), "{what:?}");
    assert!(n.candidates.iter().all(|c| c.subject == Subject::Poll { task: 0xa0, poll_fn: f(1) }), "both inside the probed poll");
    assert_eq!(ongoing(&mut d, 150 * MS), Noticed::default(), "once each");
    let n = feed(&mut d, &[in_(WORKER, 201 * MS), Event::PollEnd { ts: 202 * MS, tid: WORKER }]);
    assert!(n.candidates.is_empty());
    assert_eq!(n.ended, vec![Ended { tid: WORKER, start_ns: MS, end_ns: 201 * MS }, Ended { tid: WORKER, start_ns: 0, end_ns: 202 * MS }]);
}

#[test]
fn polls_are_judged_at_their_end_and_executors_never_fire() {
    let mut d = limits(Some(100), None, None);
    // The worker's own loop: a poll with polls nested in it, open for long.
    let n = feed(&mut d, &[start(WORKER, 0, 0x10, f(9)), start(WORKER, MS, 0xa0, f(1)), Event::PollEnd { ts: 30 * MS, tid: WORKER }]);
    assert!(n.candidates.is_empty(), "30 ms is short");
    assert!(ongoing(&mut d, 500 * MS).candidates.is_empty(), "an executor's poll is not a long poll");
    let n = feed(&mut d, &[start(WORKER, 600 * MS, 0xb0, f(2)), Event::PollEnd { ts: 750 * MS, tid: WORKER }]);
    assert_eq!(n.candidates.len(), 1);
    let c = &n.candidates[0];
    assert_eq!((c.stretch, c.start_ns, c.duration_ns, c.ongoing), (Stretch::Poll, 600 * MS, 150 * MS, false));
    assert!(feed(&mut d, &[Event::PollEnd { ts: 3000 * MS, tid: WORKER }]).candidates.is_empty(), "the loop's end is no trigger");
}

#[test]
fn without_poll_probes_a_task_id_at_a_blocked_switch_out_is_a_lower_bound() {
    let mut d = limits(Some(100), None, None);
    let stack = vec![f(10), f(11), f(12)];
    let n = feed(&mut d, &[
        Event::Probes { ts: 0, polls: false, wakes: false },
        Event::TaskAt { ts: 10 * MS, tid: WORKER, id: 42 },
        out_(WORKER, 10 * MS, true),
        Event::Stack { ts: 10 * MS, cpu: 0, tid: WORKER, reason: StackReason::Blocked, frames: stack.clone().into(), complete: true },
        in_(WORKER, 160 * MS),
        // No id at the switch-out (marks come only when it changes):
        // outside any task.
        Event::TaskAt { ts: 200 * MS, tid: WORKER, id: 0 },
        out_(WORKER, 200 * MS, true),
        in_(WORKER, 900 * MS),
        // Preempted inside a task: not blocked.
        Event::TaskAt { ts: 1000 * MS, tid: WORKER, id: 42 },
        out_(WORKER, 1000 * MS, false),
        in_(WORKER, 1300 * MS),
    ]);
    assert_eq!(n.candidates.len(), 1, "{:?}", n.candidates);
    let c = &n.candidates[0];
    assert_eq!((c.rule, c.stretch, c.subject.clone()), (Rule::LongPoll, Stretch::Blocked, Subject::TaskId(42)));
    assert_eq!((c.start_ns, c.duration_ns, c.evidence.clone()), (10 * MS, 150 * MS, stack));
}

/// With poll starts only (`--polls starts`) no poll is seen to end here:
/// the detector judges by task ids as without probes, and holds no poll
/// open for ever.
#[test]
fn without_poll_returns_long_polls_come_from_task_ids() {
    let mut d = limits(Some(100), None, None);
    let n = feed(&mut d, &[
        Event::PollReturnsOff { ts: 0 },
        start(WORKER, MS, 0xa, f(1)),
        Event::TaskAt { ts: 10 * MS, tid: WORKER, id: 42 },
        out_(WORKER, 10 * MS, true),
        in_(WORKER, 160 * MS),
        start(WORKER, 170 * MS, 0xb, f(1)),
    ]);
    assert_eq!(n.candidates.len(), 1, "{:?}", n.candidates);
    assert_eq!((n.candidates[0].subject.clone(), n.candidates[0].duration_ns), (Subject::TaskId(42), 150 * MS));
    assert!(d.threads.values().all(|t| t.open.is_empty()), "no poll is held open without its return");
}

/// Blocked time ends at the waking, as the timeline's blocked span does:
/// 90 ms asleep and 40 ms waiting for a CPU is not a 130 ms block. Seen
/// only by its task id, the poll lasted at least all 130 ms.
#[test]
fn blocked_time_ends_at_the_waking_a_poll_seen_by_its_id_does_not() {
    let events = [
        Event::Probes { ts: 0, polls: false, wakes: false },
        Event::TaskAt { ts: 10 * MS, tid: WORKER, id: 42 },
        out_(WORKER, 10 * MS, true),
        Event::Waking { ts: 100 * MS, tid: WORKER, waker_tid: 0, waker_pid: 0 },
        in_(WORKER, 140 * MS),
    ];
    let what = |n: Noticed| n.candidates.iter().map(|c| (c.rule, c.stretch, c.start_ns, c.duration_ns)).collect::<Vec<_>>();
    let mut blocked = limits(None, Some(100), Some(30));
    assert_eq!(what(feed(&mut blocked, &events)), vec![(Rule::SchedDelay, Stretch::WorkerWait { preempted: false }, 100 * MS, 40 * MS)]);
    let mut long_poll = limits(Some(100), None, None);
    assert_eq!(what(feed(&mut long_poll, &events)), vec![(Rule::LongPoll, Stretch::Blocked, 10 * MS, 130 * MS)]);
    // Still asleep past the limit: fires while ongoing, and has ended once
    // the thread runs again.
    let mut d = limits(None, Some(100), None);
    feed(&mut d, &[Event::Probes { ts: 0, polls: false, wakes: false }, Event::TaskAt { ts: 0, tid: WORKER, id: 42 }, out_(WORKER, 0, true)]);
    let fired = ongoing(&mut d, 150 * MS);
    assert_eq!(what(fired), vec![(Rule::Blocked, Stretch::Blocked, 0, 150 * MS)]);
    let n = feed(&mut d, &[Event::Waking { ts: 200 * MS, tid: WORKER, waker_tid: 0, waker_pid: 0 }, in_(WORKER, 260 * MS)]);
    assert_eq!(n.ended, vec![Ended { tid: WORKER, start_ns: 0, end_ns: 260 * MS }]);
}

#[test]
fn runs_of_samples_with_one_id_stand_in_for_cpu_bound_polls_only_without_probes() {
    let mut d = limits(Some(100), None, None);
    let mut events = Vec::new();
    for i in 0..=12u64 {
        events.push(Event::TaskAt { ts: i * 10 * MS, tid: WORKER, id: 42 });
        events.push(sample(WORKER, i * 10 * MS, vec![f(i)]));
    }
    let n = feed(&mut d, &events);
    assert_eq!(n.candidates.len(), 1);
    let c = &n.candidates[0];
    assert_eq!((c.stretch, c.start_ns, c.duration_ns, c.evidence.clone()), (Stretch::Sampled { samples: 11 }, 0, 100 * MS, vec![f(0)]));
    let n = feed(&mut d, &[Event::TaskAt { ts: 200 * MS, tid: WORKER, id: 43 }, sample(WORKER, 200 * MS, vec![])]);
    assert_eq!(n.ended, vec![Ended { tid: WORKER, start_ns: 0, end_ns: 120 * MS }]);
    // With exact polls probed, polls are timed: samples are not used.
    let mut exact = limits(Some(100), None, None);
    feed(&mut exact, &[start(8, 0, 1, f(1)), Event::PollEnd { ts: MS, tid: 8 }]);
    assert!(feed(&mut exact, &events).candidates.is_empty());
}

#[test]
fn workers_waiting_for_a_cpu_and_tasks_waiting_for_a_poll() {
    let mut d = limits(None, None, Some(50));
    let n = feed(&mut d, &[
        out_(WORKER, 0, true),
        Event::Waking { ts: 10 * MS, tid: WORKER, waker_tid: 8, waker_pid: 1 },
        in_(WORKER, 80 * MS),
        out_(WORKER, 100 * MS, false),
        in_(WORKER, 130 * MS),
        out_(WORKER, 200 * MS, false),
        in_(WORKER, 260 * MS),
        // main is no worker.
        out_(8, 0, true),
        Event::Waking { ts: 10 * MS, tid: 8, waker_tid: 0, waker_pid: 0 },
        in_(8, 500 * MS),
        Event::TaskWake { ts: 300 * MS, tid: 8, task: 0xa0 },
        start(WORKER, 370 * MS, 0xa0, f(1)),
    ]);
    let what: Vec<(Stretch, u64, u64)> = n.candidates.iter().map(|c| (c.stretch, c.start_ns, c.duration_ns)).collect();
    assert_eq!(
        what,
        vec![
            (Stretch::WorkerWait { preempted: false }, 10 * MS, 70 * MS),
            (Stretch::WorkerWait { preempted: true }, 200 * MS, 60 * MS),
            (Stretch::TaskWait, 300 * MS, 70 * MS),
        ]
    );
    // A waking of a thread never seen going to sleep can race with it running.
    let mut fresh = limits(None, None, Some(50));
    feed(&mut fresh, &[Event::Waking { ts: 0, tid: WORKER, waker_tid: 8, waker_pid: 1 }]);
    assert!(ongoing(&mut fresh, 500 * MS).candidates.is_empty());
}

#[test]
fn ids_that_recur_on_a_thread_are_sighted_once_until_it_is_learned() {
    let mut d = limits(Some(100), None, None);
    let mut events = Vec::new();
    for (i, id) in [1, 50, 1, 51, 1, 52, 1].into_iter().enumerate() {
        let ts = i as u64 * 10 * MS;
        events.push(Event::TaskAt { ts, tid: WORKER, id });
        events.push(sample(WORKER, ts, vec![f(id)]));
    }
    let n = feed(&mut d, &events);
    assert_eq!(n.sightings, vec![Sighting { tid: WORKER, id: 1, stack: vec![f(1)] }], "the loop's id recurs; tasks' do not");
    d.learned(WORKER);
    let later: Vec<Event> = events.iter().map(|e| match e {
        Event::TaskAt { ts, tid, .. } => Event::TaskAt { ts: ts + S, tid: *tid, id: 60 },
        Event::Stack { ts, tid, reason, frames, complete, cpu } => Event::Stack { ts: ts + S, cpu: *cpu, tid: *tid, reason: *reason, frames: frames.clone(), complete: *complete },
        other => other.clone(),
    }).collect();
    assert!(feed(&mut d, &later).sightings.is_empty(), "learned: no more");
}
