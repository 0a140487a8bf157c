use super::*;
use crate::watch::judge::Verdict;
use scope_model::kinds::WORKER_LOOP;
use scope_model::{Frame, ThreadInfo, capture};
use std::cell::RefCell;
use std::rc::Rc;

const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;
const WORKER: u32 = 7;
const TASK_FN: Frame = Frame { module: 0, offset: 1 };
const LOOP_FN: Frame = Frame { module: 0, offset: 2 };
/// A stack that names nothing, whatever id was set (cut short).
const NAMELESS: Frame = Frame { module: 0, offset: 0xc0 };

/// Answers on the next batch, as the real one would a little later.
#[derive(Default)]
struct Fake {
    asked: Rc<RefCell<Vec<Key>>>,
    queue: Vec<(Key, Verdict)>,
}

impl Judge for Fake {
    fn ask(&mut self, key: Key, evidence: Vec<Frame>, _: &Arc<Vec<Module>>) {
        self.asked.borrow_mut().push(key);
        let verdict = match key {
            Key::Id(_) if evidence.contains(&NAMELESS) => Verdict::Unknown,
            Key::PollFn(f) if f == TASK_FN => Verdict::Task("app::handler".into()),
            Key::PollFn(_) => Verdict::NotTask("spawn_blocking(worker::run)".into()),
            Key::Id(1) => Verdict::NotTask(WORKER_LOOP.into()),
            Key::Id(_) => Verdict::Unknown,
        };
        self.queue.push((key, verdict));
    }

    fn answers(&mut self) -> Vec<(Key, Verdict)> {
        std::mem::take(&mut self.queue)
    }
}

struct Rig {
    sink: FlightSink<Fake>,
    snapshots: Rc<RefCell<Vec<Snapshot>>>,
    said: Rc<RefCell<Vec<String>>>,
    asked: Rc<RefCell<Vec<Key>>>,
    stop: Arc<AtomicBool>,
    manual: Arc<AtomicBool>,
    now: u64,
}

fn rig() -> Rig {
    let policy = Policy {
        keep_ns: S,
        after_ns: 200 * MS,
        cooldown_ns: 5 * S,
        max_snapshots: 2,
        limits: Thresholds { long_poll_ns: Some(100 * MS), blocked_ns: None, sched_delay_ns: None },
        ring_bytes: 1 << 30,
    };
    let (snapshots, said) = (Rc::new(RefCell::new(Vec::new())), Rc::new(RefCell::new(Vec::new())));
    let (stop, manual) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let judge = Fake::default();
    let asked = Rc::clone(&judge.asked);
    let (to, says) = (Rc::clone(&snapshots), Rc::clone(&said));
    let mut sink = FlightSink::new(
        policy,
        WorkerRule::default(),
        judge,
        Arc::clone(&manual),
        { let stop = Arc::clone(&stop); Box::new(move || stop.store(true, Ordering::Relaxed)) },
        Box::new(move |s| to.borrow_mut().push(s)),
        Box::new(move |l| says.borrow_mut().push(l)),
    );
    let start = Start {
        tool_version: "t".into(),
        clock: capture::CLOCK_MONOTONIC.into(),
        pid: 1,
        command: "app".into(),
        executable: "/app".into(),
        start_ns: 0,
        threads: vec![ThreadInfo { tid: WORKER, name: "tokio-rt-worker".into(), cpu_ns_at_start: None, cpu_ns_at_stop: None }],
        modules: Vec::new(),
        probes: Vec::new(),
        launch: None,
    };
    sink.begin(&start).unwrap();
    Rig { sink, snapshots, said, asked, stop, manual, now: 0 }
}

impl Rig {
    /// Drains every 100 ms up to `until`, each batch a switch on another
    /// thread plus `extra` (stamped at the batch's time) once.
    fn run_to(&mut self, until: u64, mut extra: Vec<Event>) {
        while self.now < until {
            self.now += 100 * MS;
            let mut batch = vec![Event::Switch { ts: self.now - MS, cpu: 1, prev_tid: 9, next_tid: 0, prev_state: 1, prev_ours: true, next_ours: false, cpu_lost: 0 }];
            batch.append(&mut extra);
            self.sink.batch(&batch, self.now).unwrap();
        }
    }
}

fn poll(at: u64, len: u64, task: u64, poll_fn: Frame) -> Vec<Event> {
    vec![Event::PollStart { ts: at, tid: WORKER, task, poll_fn }, Event::PollEnd { ts: at + len, tid: WORKER }]
}

#[test]
fn a_long_poll_writes_one_snapshot_with_keep_before_and_after_after() {
    let mut r = rig();
    r.run_to(3 * S, vec![]);
    // Caught while still running (ongoing), judged on the next batch.
    r.run_to(3 * S + 150 * MS, vec![Event::PollStart { ts: 3 * S, tid: WORKER, task: 0xa, poll_fn: TASK_FN }]);
    assert_eq!(*r.asked.borrow(), vec![Key::PollFn(TASK_FN)]);
    r.run_to(3 * S + 300 * MS, vec![Event::PollEnd { ts: 3 * S + 250 * MS, tid: WORKER }]);
    assert!(r.snapshots.borrow().is_empty(), "--after runs from the stall's end");
    r.run_to(4 * S, vec![]);
    let snaps = r.snapshots.borrow();
    assert_eq!(snaps.len(), 1);
    let s = &snaps[0];
    assert_eq!(s.trigger.kind.as_deref(), Some("app::handler"));
    assert_eq!((s.trigger.candidate.start_ns, s.trigger.candidate.duration_ns, s.trigger.candidate.ongoing), (3 * S, 250 * MS, false));
    assert!(s.window.start.start_ns <= 2 * S && s.window.start.start_ns >= 2 * S - 100 * MS, "{}", s.window.start.start_ns);
    assert!(s.window.stop.end_ns >= 3 * S + 450 * MS - 100 * MS, "{}", s.window.stop.end_ns);
    assert!(s.notes.is_empty(), "{:?}", s.notes);
    let mut bytes = Vec::new();
    s.window.write(&mut bytes).unwrap();
    let rec = capture::read(&bytes).unwrap().recording;
    assert!(rec.events.iter().any(|e| matches!(e, Event::PollStart { ts, .. } if *ts == 3 * S)), "the stall is in it");
    assert!(r.said.borrow().iter().any(|l| l.starts_with("trigger: snapshot 1: long poll (--on long-poll) — app::handler polled for ≥")), "{:?}", r.said.borrow());
}

#[test]
fn cooldown_judged_non_tasks_manual_snapshots_and_the_bound() {
    let mut r = rig();
    r.run_to(2 * S, poll(S, 300 * MS, 0x1, LOOP_FN));
    assert!(r.snapshots.borrow().is_empty(), "the worker loop's poll never fires");
    r.run_to(3 * S, poll(2 * S, 120 * MS, 0x2, TASK_FN));
    assert_eq!(r.snapshots.borrow().len(), 1);
    // Within the cooldown: held back, counted.
    r.run_to(4 * S, poll(3 * S + 100 * MS, 150 * MS, 0x3, TASK_FN));
    assert_eq!((r.snapshots.borrow().len(), r.sink.tally.held_back), (1, 1));
    assert_eq!(r.asked.borrow().len(), 2, "each poll instance judged once");
    // By hand: not rate-limited; the second of --max-snapshots 2 stops it.
    r.manual.store(true, Ordering::Relaxed);
    r.run_to(4 * S + 100 * MS, vec![]);
    assert_eq!(r.snapshots.borrow().len(), 2);
    assert_eq!(r.snapshots.borrow()[1].trigger.candidate.rule, Rule::Manual);
    assert!(r.stop.load(Ordering::Relaxed), "--max-snapshots reached");
}

#[test]
fn a_task_id_needs_a_stack_that_names_it() {
    let mut r = rig();
    let blocked = |ts: u64, frames: Vec<Frame>| {
        let mut v = vec![
            Event::Probes { ts, polls: false, wakes: false },
            Event::TaskAt { ts, tid: WORKER, id: 5 },
            Event::Switch { ts, cpu: 0, prev_tid: WORKER, next_tid: 0, prev_state: 1, prev_ours: true, next_ours: false, cpu_lost: 0 },
        ];
        if !frames.is_empty() {
            v.push(Event::Stack { ts, cpu: 0, tid: WORKER, reason: scope_model::StackReason::Blocked, frames: frames.into(), complete: true });
        }
        v
    };
    r.run_to(S, blocked(S - 50 * MS, vec![]));
    r.run_to(2 * S, vec![]);
    assert_eq!(r.sink.tally.unattributed, 1, "no stack: cannot be told from a parked worker");
    assert!(r.asked.borrow().is_empty());
    r.run_to(3 * S, blocked(2 * S + 50 * MS, vec![Frame { module: 0, offset: 9 }]));
    assert!(r.asked.borrow().iter().all(|k| *k == Key::Id(5)) && !r.asked.borrow().is_empty());
    assert!(r.snapshots.borrow().is_empty(), "the stack named nothing");
}

/// The worker's task id read at `ts` (`TaskAt`).
fn at(ts: u64, id: u64) -> Event {
    Event::TaskAt { ts, tid: WORKER, id }
}

/// The worker switching out asleep at `ts`.
fn switch(ts: u64) -> Event {
    Event::Switch { ts, cpu: 0, prev_tid: WORKER, next_tid: 0, prev_state: 1, prev_ours: true, next_ours: false, cpu_lost: 0 }
}

/// The worker's blocked stack at `ts` (named whatever the fake judge says).
fn stack(ts: u64) -> Event {
    Event::Stack { ts, cpu: 0, tid: WORKER, reason: scope_model::StackReason::Blocked, frames: vec![Frame { module: 0, offset: 3 }].into(), complete: true }
}

/// The worker back on a CPU at `ts`.
fn back(ts: u64) -> Event {
    Event::Switch { ts, cpu: 0, prev_tid: 0, next_tid: WORKER, prev_state: 0, prev_ours: false, next_ours: true, cpu_lost: 0 }
}

#[test]
fn on_a_worker_whose_loop_id_is_known_any_other_id_is_a_task() {
    let mut r = rig();
    // Short parks with the loop's id and a stack: the id recurs, is asked about, learned.
    let mut parks = vec![Event::Probes { ts: 0, polls: false, wakes: false }];
    for ts in [S - 90 * MS, S - 50 * MS] {
        parks.extend([at(ts, 1), switch(ts), stack(ts), back(ts + 10 * MS)]);
    }
    r.run_to(S, parks);
    r.run_to(S + 200 * MS, vec![]);
    assert_eq!(*r.asked.borrow(), vec![Key::Id(1)]);
    // Blocked 150 ms with another id, no stack copied (over the budget).
    r.run_to(2 * S, vec![at(S + 300 * MS, 9), switch(S + 300 * MS)]);
    r.run_to(2 * S + 500 * MS, vec![back(S + 450 * MS)]);
    let snaps = r.snapshots.borrow();
    assert_eq!(snaps.len(), 1, "{:?}", r.said.borrow());
    assert_eq!((snaps[0].trigger.candidate.subject.clone(), snaps[0].trigger.kind.clone()), (Subject::TaskId(9), None));
    assert_eq!(r.sink.tally.unattributed, 0);
}

#[test]
fn a_long_park_judged_the_worker_loop_teaches_that_worker_its_loop_id() {
    let mut r = rig();
    let park = S - 300 * MS;
    r.run_to(S, vec![Event::Probes { ts: 0, polls: false, wakes: false }, at(park, 1), switch(park), stack(park), back(park + 150 * MS)]);
    r.run_to(S + 200 * MS, vec![]);
    assert_eq!(*r.asked.borrow(), vec![Key::Id(1)], "asked once, about the candidate");
    assert_eq!(r.sink.loops.of.get(&WORKER), Some(&1));
    r.run_to(2 * S, vec![at(S + 300 * MS, 9), switch(S + 300 * MS)]);
    r.run_to(2 * S + 500 * MS, vec![back(S + 450 * MS)]);
    assert_eq!(r.snapshots.borrow().len(), 1, "{:?}", r.said.borrow());
}

/// The recorder says which id is the worker's own loop (learned from a
/// park's stack): a stackless stretch of any other id there triggers at
/// once, with no question asked.
#[test]
fn a_loop_id_the_recorder_learned_needs_no_question() {
    let mut r = rig();
    r.run_to(S, vec![Event::Probes { ts: 0, polls: false, wakes: false }, Event::WorkerLoop { ts: MS, tid: WORKER, id: 1 }]);
    r.run_to(2 * S, vec![at(S + 300 * MS, 9), switch(S + 300 * MS)]);
    r.run_to(2 * S + 500 * MS, vec![back(S + 450 * MS)]);
    assert!(r.asked.borrow().is_empty(), "{:?}", r.asked.borrow());
    assert_eq!(r.snapshots.borrow().len(), 1, "{:?}", r.said.borrow());
}

/// A worker's loop may show on the CPU a few times a second, and its first
/// stacks may name nothing: each later one is asked about, not only the
/// 4th, 8th, 16th… (CI: a loop id never learned in 30 s of the demo).
#[test]
fn a_loop_id_whose_first_stacks_named_nothing_is_learned_at_its_next_sample() {
    let mut r = rig();
    let sample = |ts: u64, frame: Frame| Event::Stack { ts, cpu: 0, tid: WORKER, reason: scope_model::StackReason::Sample, frames: vec![frame].into(), complete: true };
    // 10 ms apart: too short a run of one id to be a long poll itself.
    let mut t = 100 * MS;
    let mut samples = |frame: Frame, n: usize| {
        (0..n)
            .flat_map(|_| {
                t += 10 * MS;
                [at(t, 1), sample(t, frame)]
            })
            .collect::<Vec<_>>()
    };
    let mut first = vec![Event::Probes { ts: 0, polls: false, wakes: false }];
    first.extend(samples(NAMELESS, 2));
    let second = samples(Frame { module: 0, offset: 3 }, 1);
    let third = samples(NAMELESS, 1);
    r.run_to(S, first);
    r.run_to(S + 100 * MS, second);
    r.run_to(S + 200 * MS, third);
    r.run_to(S + 300 * MS, vec![]);
    assert_eq!(r.sink.loops.of.get(&WORKER), Some(&1), "learned from the only stack that names it");
    assert_eq!(*r.asked.borrow(), vec![Key::Id(1); 2], "asked at its 2nd and 3rd sample, then known");
}

#[test]
fn recording_ending_early_still_writes_the_pending_snapshot() {
    let mut r = rig();
    r.sink.policy.after_ns = 10 * S;
    r.run_to(2 * S, poll(S + 500 * MS, 120 * MS, 0x2, TASK_FN));
    assert!(r.snapshots.borrow().is_empty(), "pending for --after");
    let stop = Stop { end_ns: r.now, stop_reason: scope_model::StopReason::Signal, lost_events: 0, untracked_threads: 0, cpu_ns_at_stop: Vec::new(), exit_status: Some(3) };
    r.sink.end(&stop).unwrap();
    let snaps = r.snapshots.borrow();
    assert_eq!(snaps.len(), 1, "cut at the end");
    assert!(snaps[0].notes.iter().any(|n| n.starts_with("recording stopped 0.4 s after the trigger")), "{:?}", snaps[0].notes);
    assert_eq!(r.sink.exit_status, Some(3));
}
