#![allow(dead_code)]

pub mod perfetto;

use scope_model::{Event, Frame, OffReason, Recording, ResolvedFrame, SpanState, StackReason, Symbols, Timeline, WorkerRule};

pub fn fixture_recording() -> Recording {
    serde_json::from_str(include_str!("../fixtures/demo-recording.json")).expect("fixture parses")
}

/// 115 events from a real run of the demo app, tids and clock renumbered.
pub fn fixture() -> Timeline {
    Timeline::build(&fixture_recording(), &WorkerRule::default())
}

pub const WORKER: u32 = 4243;

fn f(offset: u64) -> Frame {
    Frame { module: 0, offset }
}

/// The fixture plus stacks: a sample in the worker's first on-CPU span and
/// a stack at the start of each of its blocked spans, with names for them.
pub fn fixture_with_stacks() -> (Timeline, Symbols) {
    let (rec, symbols) = recording_with_stacks();
    (Timeline::build(&rec, &WorkerRule::default()), symbols)
}

/// `fixture_with_stacks` plus a task whose one poll holds the worker's
/// last blocked span that has an on-CPU span on each side: the runtime
/// stalled in `std::thread::sleep` inside it.
pub fn fixture_blocked_in_poll() -> (Timeline, Symbols) {
    let (mut rec, mut symbols) = recording_with_stacks();
    let plain = Timeline::build(&rec, &WorkerRule::default());
    let worker = plain.threads.iter().find(|t| t.tid == WORKER).unwrap();
    // The last such span: the spawned task's polls are early.
    let i = (1..worker.spans.len() - 1)
        .rev()
        .find(|&i| {
            matches!(worker.spans[i].state, SpanState::OffCpu(OffReason::Blocked { .. }))
                && [i - 1, i + 1].iter().all(|&j| matches!(worker.spans[j].state, SpanState::OnCpu { .. }) && worker.spans[j].duration_ns() > 2)
        })
        .unwrap();
    let blocked = worker.spans[i];
    rec.events.push(Event::PollStart { ts: blocked.start_ns - 1, tid: WORKER, task: 0xdef0, poll_fn: f(0x70) });
    rec.events.push(Event::PollEnd { ts: blocked.end_ns + 1, tid: WORKER });
    rec.events.sort_by_key(Event::ts);
    let name = ResolvedFrame { function: "tokio::runtime::task::raw::poll::<demo_app::sleeper::{{closure}}, S>".into(), file: None, line: None, inlined: false };
    symbols.frames.insert(f(0x70), vec![name]);
    (Timeline::build(&rec, &WorkerRule::default()), symbols)
}

/// Whether thread `tid` was on a CPU at `ts`.
pub fn on_cpu(tl: &Timeline, tid: u32, ts: u64) -> bool {
    tl.threads.iter().filter(|t| t.tid == tid).flat_map(|t| &t.spans).any(|s| matches!(s.state, SpanState::OnCpu { .. }) && s.start_ns < ts && ts < s.end_ns)
}

/// The fixture with a waking in each blocked span of the workers (it was
/// recorded before wakings were): by the other worker where that one is on
/// a CPU during the span, else alternately by an interrupt and by a thread
/// of another process.
pub fn fixture_with_wakings() -> Timeline {
    let mut rec = fixture_recording();
    let plain = Timeline::build(&rec, &WorkerRule::default());
    let workers = [WORKER, WORKER + 1];
    for (n, (tid, span)) in plain
        .threads
        .iter()
        .filter(|t| workers.contains(&t.tid))
        .flat_map(|t| t.spans.iter().map(move |s| (t.tid, *s)))
        .filter(|(_, s)| matches!(s.state, SpanState::OffCpu(OffReason::Blocked { .. })))
        .enumerate()
    {
        let other = if tid == WORKER { WORKER + 1 } else { WORKER };
        let running = plain.threads.iter().find(|t| t.tid == other).unwrap().spans.iter().find(|s| {
            matches!(s.state, SpanState::OnCpu { .. }) && s.start_ns + 1 > span.start_ns && s.start_ns + 1 < span.end_ns && s.duration_ns() > 2
        });
        let (ts, waker_tid, waker_pid) = match running {
            Some(s) => (s.start_ns + 1, other, rec.pid),
            None if n % 2 == 0 => (span.end_ns - 1000, 0, 0),
            None => (span.end_ns - 1000, 1, 1),
        };
        rec.events.push(Event::Waking { ts, tid, waker_tid, waker_pid });
    }
    rec.events.sort_by_key(Event::ts);
    Timeline::build(&rec, &WorkerRule::default())
}

fn recording_with_stacks() -> (Recording, Symbols) {
    let mut rec = fixture_recording();
    let plain = Timeline::build(&rec, &WorkerRule::default());
    let worker = plain.threads.iter().find(|t| t.tid == WORKER).unwrap();
    let on = worker.spans.iter().find(|s| matches!(s.state, SpanState::OnCpu { .. }) && s.duration_ns() > 2).unwrap();
    rec.events.push(Event::Stack {
        ts: on.start_ns + 1,
        cpu: 1,
        tid: WORKER,
        reason: StackReason::Sample,
        frames: vec![f(0x10), f(0x20), f(0x30)].into(),
        complete: true,
    });
    for span in worker.spans.iter().filter(|s| matches!(s.state, SpanState::OffCpu(OffReason::Blocked { .. }))) {
        rec.events.push(Event::Stack {
            ts: span.start_ns,
            cpu: 0,
            tid: WORKER,
            reason: StackReason::Blocked,
            frames: vec![f(0x40), f(0x50), f(0x20), f(0x30)].into(),
            complete: true,
        });
    }
    // A task spawned by the worker during its sample span, polled in the
    // worker's next on-CPU span.
    let next_on = worker
        .spans
        .iter()
        .find(|s| matches!(s.state, SpanState::OnCpu { .. }) && s.start_ns > on.end_ns && s.duration_ns() > 4)
        .unwrap();
    rec.events.push(Event::TaskSpawn { ts: on.start_ns + 2, tid: WORKER, task: 0xabc0 });
    rec.events.push(Event::PollStart { ts: next_on.start_ns + 1, tid: WORKER, task: 0xabc0, poll_fn: f(0x60) });
    rec.events.push(Event::TaskWake { ts: next_on.start_ns + 2, tid: WORKER, task: 0xabc0 });
    rec.events.push(Event::PollEnd { ts: next_on.start_ns + 3, tid: WORKER });
    // It woke itself (a yield): polled again in the next on-CPU span.
    let again = worker
        .spans
        .iter()
        .find(|s| matches!(s.state, SpanState::OnCpu { .. }) && s.start_ns > next_on.end_ns && s.duration_ns() > 4)
        .unwrap();
    rec.events.push(Event::PollStart { ts: again.start_ns + 1, tid: WORKER, task: 0xabc0, poll_fn: f(0x60) });
    rec.events.push(Event::PollEnd { ts: again.start_ns + 3, tid: WORKER });
    rec.events.sort_by_key(Event::ts);
    let mut symbols = Symbols::default();
    let name = |n: &str| ResolvedFrame { function: n.into(), file: Some("src/main.rs".into()), line: Some(7), inlined: false };
    symbols.frames.insert(f(0x10), vec![
        ResolvedFrame { inlined: true, ..name("demo_app::mix_step") },
        name("cpu_heavy_poll"),
    ]);
    symbols.frames.insert(f(0x20), vec![name("tokio::runtime::task::raw::poll")]);
    symbols.frames.insert(f(0x30), vec![name("clone3")]);
    symbols.frames.insert(f(0x40), vec![name("std::thread::sleep")]);
    symbols.frames.insert(f(0x50), vec![name("block_in_syscall")]);
    symbols.frames.insert(f(0x60), vec![name("tokio::runtime::task::raw::poll::<demo_app::spawned::{{closure}}, S>")]);
    (rec, symbols)
}
