#![allow(dead_code)]

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
    let mut rec = fixture_recording();
    let plain = Timeline::build(&rec, &WorkerRule::default());
    let worker = plain.threads.iter().find(|t| t.tid == WORKER).unwrap();
    let on = worker.spans.iter().find(|s| matches!(s.state, SpanState::OnCpu { .. }) && s.duration_ns() > 2).unwrap();
    rec.events.push(Event::Stack {
        ts: on.start_ns + 1,
        cpu: 1,
        tid: WORKER,
        reason: StackReason::Sample,
        frames: vec![f(0x10), f(0x20), f(0x30)],
        complete: true,
    });
    for span in worker.spans.iter().filter(|s| matches!(s.state, SpanState::OffCpu(OffReason::Blocked { .. }))) {
        rec.events.push(Event::Stack {
            ts: span.start_ns,
            cpu: 0,
            tid: WORKER,
            reason: StackReason::Blocked,
            frames: vec![f(0x40), f(0x50), f(0x20), f(0x30)],
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
    (Timeline::build(&rec, &WorkerRule::default()), symbols)
}
