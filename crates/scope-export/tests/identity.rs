//! The report without poll probes, from Tokio's task id at switch-outs and
//! samples: a worker blocked 40 ms inside a task's poll is reported with
//! the task's kind and id, as a lower bound; a parked worker (its own loop's
//! id) is not; samples are counted by task kind.

use scope_export::insights::{self, Cause, Options};
use scope_model::{Event, Frame, Recording, ResolvedFrame, StackReason, Symbols, ThreadInfo, Timeline, WorkerRule};

const MS: u64 = 1_000_000;
const W0: u32 = 50;
const SLEEPING: u64 = 1;
const WORKER_LOOP_ID: u64 = 1;
const TASK_ID: u64 = 7;

fn f(offset: u64) -> Frame {
    Frame { module: 0, offset }
}

fn switch(ts: u64, prev: u32, next: u32) -> Event {
    Event::Switch { ts, cpu: 0, prev_tid: prev, next_tid: next, prev_state: SLEEPING, prev_ours: prev != 0, next_ours: next != 0, cpu_lost: 0 }
}

fn stack(ts: u64, reason: StackReason, frames: &[u64]) -> Event {
    Event::Stack { ts, cpu: 0, tid: W0, reason, frames: frames.iter().map(|&o| f(o)).collect(), complete: true }
}

/// Frames, innermost first: the blocking call inside the task's future,
/// inside the harness, inside the worker's own blocking task.
const IN_TASK: [u64; 6] = [0x20, 0x21, 0x30, 0x40, 0x50, 0x90];
const PARKED: [u64; 4] = [0x60, 0x61, 0x50, 0x90];
const SAMPLED: [u64; 4] = [0x22, 0x30, 0x40, 0x50];

fn recording() -> (Recording, Symbols) {
    let mut events = Vec::new();
    // Parked 100 ms in the worker loop (its own id).
    events.extend([switch(0, W0, 0), stack(0, StackReason::Blocked, &PARKED), Event::TaskAt { ts: 0, tid: W0, id: WORKER_LOOP_ID }, switch(100 * MS, 0, W0)]);
    // Three samples in task 7, then 40 ms blocked inside it, twice.
    for (i, at) in [110, 120, 130].into_iter().enumerate() {
        events.push(stack(at * MS, StackReason::Sample, &SAMPLED));
        events.push(Event::TaskAt { ts: at * MS, tid: W0, id: TASK_ID + i as u64 % 2 * 10 });
    }
    for start in [200, 300] {
        let at = start * MS;
        events.extend([switch(at, W0, 0), stack(at, StackReason::Blocked, &IN_TASK), Event::TaskAt { ts: at, tid: W0, id: TASK_ID }]);
        events.push(Event::Waking { ts: at + 40 * MS - 1000, tid: W0, waker_tid: 0, waker_pid: 0 });
        events.push(switch(at + 40 * MS, 0, W0));
    }
    // A short block (2 ms) inside the task: under the threshold.
    events.extend([switch(400 * MS, W0, 0), Event::TaskAt { ts: 400 * MS, tid: W0, id: TASK_ID }, switch(402 * MS, 0, W0)]);
    events.sort_by_key(Event::ts);
    let rec = Recording::made_up(0, 500 * MS, vec![ThreadInfo::named(W0, "tokio-rt-worker")], events);
    let mut symbols = Symbols::default();
    let name = |n: &str| vec![ResolvedFrame { function: n.into(), file: None, line: None, inlined: false }];
    for (offset, n) in [
        (0x20, "__GI___clock_nanosleep"),
        (0x21, "std::thread::sleep"),
        (0x22, "app::parse"),
        (0x30, "app::config_reloader::{{closure}}"),
        (0x40, "tokio::runtime::task::harness::Harness<T,S>::poll"),
        (0x50, "<tokio::runtime::blocking::task::BlockingTask<tokio::runtime::scheduler::multi_thread::worker::run::{{closure}}> as core::future::future::Future>::poll"),
        (0x60, "syscall"),
        (0x61, "tokio::runtime::scheduler::multi_thread::park::Parker::park"),
        (0x90, "start_thread"),
    ] {
        symbols.frames.insert(f(offset), name(n));
    }
    (rec, symbols)
}

#[test]
fn blocked_inside_a_task_is_reported_without_poll_probes() {
    let (rec, symbols) = recording();
    let tl = Timeline::build(&rec, &WorkerRule::default());
    let i = insights::build(&tl, &symbols, Options::default());
    assert!(!i.data.polls && i.data.task_ids);
    assert_eq!(i.long_polls.len(), 1, "{:#?}", i.long_polls);
    let g = &i.long_polls[0];
    assert!(!g.exact, "a lower bound, said so");
    assert_eq!((g.cause, g.count, g.max_ms), (Cause::Blocked, 2, 40.0));
    assert_eq!(g.site, "app::config_reloader::{{closure}}", "{g:?}");
    assert!(g.task_kind.starts_with("app::config_reloader"), "{g:?}");
    assert_eq!(g.woken_by, vec!["a timer or interrupt".to_string()]);
    // The worker loop's id names its own loop: the 100 ms park is not a task's.
    assert!(i.long_polls.iter().all(|g| g.max_ms < 100.0));
    let mut text = String::new();
    insights::render::render(&i, false, &mut text);
    assert!(text.contains("≥"), "{text}");
    assert!(text.contains("tasks in samples"), "{text}");
}

#[test]
fn samples_are_counted_by_the_task_they_caught() {
    let (rec, symbols) = recording();
    let tl = Timeline::build(&rec, &WorkerRule::default());
    let i = insights::build(&tl, &symbols, Options::default());
    assert_eq!(i.sampled_tasks.len(), 1, "{:?}", i.sampled_tasks);
    let t = &i.sampled_tasks[0];
    assert_eq!((t.samples, t.tasks), (3, 2), "ids 7 and 17, both named by their stacks: {t:?}");
    assert_eq!(t.share_pct, 100.0);
}

/// A worker's own loop id named as a task by its few stacks (samples in a
/// task's harness, where Tokio has not yet set the task's id) and no park
/// stack: parked 190 ms with it set. `probed`: the poll probes saw the
/// worker begin a poll before, so they know it was in none.
fn misnamed_loop_id(probed: bool) -> insights::Insights {
    loop_id_with(probed, &[])
}

/// As [`misnamed_loop_id`], with blocked stacks taken at parks (id set)
/// before the 190 ms one.
fn loop_id_with(probed: bool, parks: &[Event]) -> insights::Insights {
    let (_, mut symbols) = recording();
    symbols.frames.insert(f(0x62), vec![ResolvedFrame { function: "tokio::runtime::park::Inner::park".into(), file: None, line: None, inlined: false }]);
    let mut events = parks.to_vec();
    if probed {
        events.extend([
            Event::PollStart { ts: MS, tid: W0, task: 0x100, poll_fn: f(0x40) },
            Event::PollEnd { ts: 2 * MS, tid: W0 },
        ]);
    }
    for at in [5, 6, 7] {
        events.extend([stack(at * MS, StackReason::Sample, &SAMPLED), Event::TaskAt { ts: at * MS, tid: W0, id: WORKER_LOOP_ID }]);
    }
    events.extend([switch(10 * MS, W0, 0), switch(200 * MS, 0, W0)]);
    let rec = Recording::made_up(0, 300 * MS, vec![ThreadInfo::named(W0, "tokio-rt-worker")], events);
    let tl = Timeline::build(&rec, &WorkerRule::default());
    insights::build(&tl, &symbols, Options::default())
}

#[test]
fn where_the_poll_probes_watched_a_thread_an_id_does_not_overrule_them() {
    let unprobed = misnamed_loop_id(false);
    assert_eq!(unprobed.long_polls.len(), 1, "without probes the id is all there is: {:#?}", unprobed.long_polls);
    assert!(!unprobed.long_polls[0].exact);
    assert_eq!(unprobed.sampled_tasks.len(), 1, "{:?}", unprobed.sampled_tasks);
    let probed = misnamed_loop_id(true);
    assert!(probed.long_polls.is_empty(), "the probes saw no poll open: not a task's {:#?}", probed.long_polls);
    assert!(probed.sampled_tasks.is_empty(), "nor were its samples a task's: {:?}", probed.sampled_tasks);
}

/// The worker parked before with its loop id set, its stacks cut short
/// before any harness frame (a repeated wait keeps only the frames it was
/// compared on) but showing Tokio's park: the id is the worker loop's, so
/// its 190 ms park is no task's, with no poll probes at all.
#[test]
fn parks_cut_short_still_name_the_worker_loop() {
    let mut parks = Vec::new();
    for at in [1, 2, 3, 4] {
        parks.extend([
            switch(at * MS, W0, 0),
            Event::Stack { ts: at * MS, cpu: 0, tid: W0, reason: StackReason::Blocked, frames: vec![f(0x60), f(0x62)].into(), complete: false },
            Event::TaskAt { ts: at * MS, tid: W0, id: WORKER_LOOP_ID },
            switch(at * MS + 1000, 0, W0),
        ]);
    }
    let groups = loop_id_with(false, &parks).long_polls;
    assert!(groups.is_empty(), "{groups:#?}");
}

/// `--polls auto` took the probes off while a task was blocked inside its
/// poll: that poll is not in the timeline (its end was never seen), so the
/// probes say nothing about it, and its id must still name it.
#[test]
fn a_task_blocked_when_the_probes_came_off_is_still_found() {
    let (_, symbols) = recording();
    let at = 12 * MS;
    let events = vec![
        Event::PollStart { ts: MS, tid: W0, task: 0x100, poll_fn: f(0x40) },
        Event::PollEnd { ts: 2 * MS, tid: W0 },
        Event::PollStart { ts: 10 * MS, tid: W0, task: 0x200, poll_fn: f(0x40) },
        switch(at, W0, 0),
        stack(at, StackReason::Blocked, &IN_TASK),
        Event::TaskAt { ts: at, tid: W0, id: TASK_ID },
        Event::Probes { ts: 50 * MS, polls: false, wakes: false },
        switch(300 * MS, 0, W0),
    ];
    let rec = Recording::made_up(0, 400 * MS, vec![ThreadInfo::named(W0, "tokio-rt-worker")], events);
    let tl = Timeline::build(&rec, &WorkerRule::default());
    assert!(tl.threads[0].polls.iter().all(|p| p.end_ns <= 2 * MS), "the open poll was dropped");
    let groups = insights::build(&tl, &symbols, Options::default()).long_polls;
    assert_eq!(groups.len(), 1, "{groups:#?}");
    assert_eq!((groups[0].exact, groups[0].max_ms), (false, 288.0), "{groups:#?}");
    assert!(groups[0].task_kind.starts_with("app::config_reloader"), "{groups:#?}");
}

/// The recorder learned the worker's loop id from a park's stack and the
/// kernel stopped taking its parks' stacks: the capture's `WorkerLoop`
/// names the id, so its stackless 190 ms park is no task's, whatever the
/// few samples with that id seemed to show (without it: one long poll,
/// as in `where_the_poll_probes_watched_…`).
#[test]
fn a_park_without_a_stack_is_the_worker_loop_the_capture_names() {
    let told = [Event::WorkerLoop { ts: 0, tid: W0, id: WORKER_LOOP_ID }];
    let i = loop_id_with(false, &told);
    assert!(i.long_polls.is_empty(), "{:#?}", i.long_polls);
    assert!(i.sampled_tasks.is_empty(), "its samples are the loop's, not a task's: {:?}", i.sampled_tasks);
}
