//! Fuzzing the whole path capture → report / export (issue 16 item 9).
//!
//! Captures are generated structurally (valid frames and checksums, so the
//! reader's own checks pass) with hostile values: stop times of 2^62 ns or
//! before the start, events far in the future, module indexes of
//! 0xFFFFFFF0, module paths that are FIFOs, devices or /proc files, absurd
//! CPUs and thread ids. Each one goes through `report`, `report --json` and
//! `export` to Perfetto and Chrome as the real binary, under a memory limit
//! (RLIMIT_AS) and a time limit: an abort (a huge allocation), a panic or a
//! hang fails the test and keeps the capture for a rerun.
//!
//! `cargo xtask test` runs `CASES` cases; `FUZZ_CASES=5000 cargo test
//! --release -p runtime-scope --test fuzz_capture` runs longer, and
//! `FUZZ_SEED=N` another sequence.

mod common;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use scope_model::capture::{CaptureWriter, Start, Stop};
use scope_model::{Event, Frame, Launch, Module, StackReason, StopReason, ThreadInfo};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CASES: u32 = 40;
const MEMORY_LIMIT: u64 = 1 << 30;
const TIME_LIMIT: Duration = Duration::from_secs(30);
const START: u64 = 5_000_000_000;

/// Times: mostly inside a few seconds after the start, sometimes anywhere.
fn ts() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => (0u64..4_000_000_000).prop_map(|d| START + d),
        1 => Just(0u64),
        1 => Just(1u64 << 62),
        1 => Just(u64::MAX),
        1 => any::<u64>(),
    ]
}

fn tid() -> impl Strategy<Value = u32> {
    prop_oneof![8 => 1u32..6, 1 => Just(0u32), 1 => Just(u32::MAX), 1 => any::<u32>()]
}

fn cpu() -> impl Strategy<Value = u32> {
    prop_oneof![8 => 0u32..4, 1 => Just(u32::MAX), 1 => any::<u32>()]
}

fn frame() -> impl Strategy<Value = Frame> {
    let module = prop_oneof![6 => 0u32..4, 1 => Just(0xFFFF_FFF0u32), 1 => Just(Frame::NO_MODULE), 1 => any::<u32>()];
    (module, any::<u64>()).prop_map(|(module, offset)| Frame { module, offset })
}

fn module(paths: Vec<String>) -> impl Strategy<Value = Module> {
    let build_id = prop_oneof![Just(None), Just(Some("00".repeat(20))), "[0-9a-f]{0,64}".prop_map(Some)];
    (proptest::sample::select(paths), any::<u64>(), any::<u64>(), any::<u64>(), build_id).prop_map(|(path, a, b, file_offset, build_id)| Module {
        path,
        start_avma: a.min(b),
        end_avma: a.max(b),
        file_offset,
        build_id,
    })
}

fn task() -> impl Strategy<Value = u64> {
    prop_oneof![8 => (1u64..12).prop_map(|t| t * 0x40), 1 => any::<u64>()]
}

fn event(paths: Vec<String>) -> impl Strategy<Value = Event> {
    prop_oneof![
        6 => (ts(), cpu(), tid(), tid(), any::<u64>(), any::<bool>(), any::<bool>(), any::<u32>()).prop_map(
            |(ts, cpu, prev_tid, next_tid, prev_state, prev_ours, next_ours, cpu_lost)| Event::Switch {
                ts, cpu, prev_tid, next_tid, prev_state: prev_state % 0x400, prev_ours, next_ours, cpu_lost,
            }
        ),
        1 => (ts(), tid(), tid(), ".{0,20}").prop_map(|(ts, tid, parent_tid, name)| Event::NewThread { ts, tid, parent_tid, name }),
        1 => (ts(), tid()).prop_map(|(ts, tid)| Event::Exit { ts, tid }),
        1 => (ts(), tid(), "tokio-rt-worker|main|.{0,16}").prop_map(|(ts, tid, name)| Event::Rename { ts, tid, name }),
        2 => (ts(), cpu(), tid(), any::<bool>(), proptest::collection::vec(frame(), 0..12), any::<bool>()).prop_map(
            |(ts, cpu, tid, blocked, frames, complete)| Event::Stack {
                ts, cpu, tid, reason: if blocked { StackReason::Blocked } else { StackReason::Sample }, frames: frames.into(), complete,
            }
        ),
        1 => (ts(), prop_oneof![0u32..5, Just(0xFFFF_FFF0u32), any::<u32>()], module(paths)).prop_map(|(ts, index, module)| Event::NewModule { ts, index, module: Box::new(module) }),
        4 => (ts(), tid(), task(), frame()).prop_map(|(ts, tid, task, poll_fn)| Event::PollStart { ts, tid, task, poll_fn }),
        4 => (ts(), tid()).prop_map(|(ts, tid)| Event::PollEnd { ts, tid }),
        1 => (ts(), tid(), task()).prop_map(|(ts, tid, task)| Event::TaskSpawn { ts, tid, task }),
        2 => (ts(), tid(), task()).prop_map(|(ts, tid, task)| Event::TaskWake { ts, tid, task }),
        1 => (ts(), tid(), any::<u64>(), prop_oneof![Just(0x1000u64), any::<u64>()]).prop_map(|(ts, tid, index, runtime)| Event::WorkerRun { ts, tid, index: index % 8, runtime }),
        2 => (ts(), tid(), tid(), any::<u32>()).prop_map(|(ts, tid, waker_tid, waker_pid)| Event::Waking { ts, tid, waker_tid, waker_pid }),
        1 => (ts(), tid(), any::<u64>()).prop_map(|(ts, tid, runtime)| Event::CurrentThreadRun { ts, tid, runtime }),
        1 => (ts(), tid(), task(), any::<u64>()).prop_map(|(ts, tid, task, id)| Event::TaskId { ts, tid, task, id }),
    ]
}

/// One capture: start, events in batches, a stop record or none.
#[derive(Debug, Clone)]
struct Case {
    start: Start,
    batches: Vec<Vec<Event>>,
    stop: Option<Stop>,
}

fn case(paths: Vec<String>) -> impl Strategy<Value = Case> {
    let threads = proptest::collection::vec(
        (tid(), "tokio-rt-worker|main|tokio-runtime-w|.{0,8}", proptest::option::of(any::<u64>()), proptest::option::of(any::<u64>())),
        0..6,
    );
    let modules = proptest::collection::vec(module(paths.clone()), 0..4);
    let probes = proptest::sample::select(vec![
        vec![],
        vec!["uprobe:tokio::runtime::task::raw::poll ×3".to_string(), "stacks:blocked switch-outs".to_string()],
        vec!["off:tasks (--no-tasks)".to_string(), "off:stacks (--no-stacks)".to_string()],
        vec!["off:".to_string(), "off:tasks".to_string()],
    ]);
    let batches = proptest::collection::vec(proptest::collection::vec(event(paths), 0..60), 0..6);
    let end = prop_oneof![
        6 => (0u64..5_000_000_000).prop_map(|d| START + d),
        1 => Just(START + 300 * 86_400 * 1_000_000_000),
        1 => Just(1u64 << 62),
        1 => Just(0u64),
        1 => any::<u64>(),
    ];
    let stop = proptest::option::weighted(0.8, (end, proptest::collection::vec((tid(), any::<u64>()), 0..4), any::<u64>()));
    (threads, modules, probes, batches, stop, any::<bool>()).prop_map(|(threads, modules, probes, batches, stop, launched)| Case {
        start: Start {
            tool_version: "fuzz".into(),
            clock: "CLOCK_MONOTONIC".into(),
            pid: 4242,
            command: "fuzzed".into(),
            executable: "/nonexistent".into(),
            start_ns: START,
            threads: threads
                .into_iter()
                .map(|(tid, name, a, b)| ThreadInfo { tid, name, cpu_ns_at_start: a, cpu_ns_at_stop: b })
                .collect(),
            modules,
            probes,
            launch: launched.then(|| Launch { argv: vec!["app".into()], exit_status: None }),
        },
        batches,
        stop: stop.map(|(end_ns, cpu, lost)| Stop {
            end_ns,
            stop_reason: StopReason::Duration,
            lost_events: lost,
            untracked_threads: 0,
            cpu_ns_at_stop: cpu,
            exit_status: Some(0),
        }),
    })
}

fn write(case: &Case, path: &Path) {
    let mut writer = CaptureWriter::new(std::fs::File::create(path).unwrap(), &case.start).unwrap();
    for batch in &case.batches {
        writer.events(batch).unwrap();
    }
    if let Some(stop) = &case.stop {
        writer.finish(stop).unwrap();
    }
}

/// Runs the binary on the capture under the limits: Err says what went wrong.
fn run_limited(args: &[&str]) -> Result<(), String> {
    let mut command = Command::new(profiler_bin());
    command.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    // SAFETY: setrlimit only, between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit { rlim_cur: MEMORY_LIMIT, rlim_max: MEMORY_LIMIT };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|e| e.to_string())?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > TIME_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{args:?} still running after {TIME_LIMIT:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).ok();
    match (status.code(), status.signal()) {
        (Some(0..=3), _) => Ok(()),
        (code, signal) => Err(format!("{args:?} ended with code {code:?} signal {signal:?}:\n{stderr}")),
    }
}

#[test]
fn hostile_captures_never_abort_hang_or_panic_report_and_export() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("module-fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let paths = vec![
        fifo.to_str().unwrap().to_string(),
        "/dev/zero".to_string(),
        "/proc/self/exe".to_string(),
        "/nonexistent/app".to_string(),
        demo_app_path().to_str().unwrap().to_string(),
        String::new(),
    ];
    let cases = std::env::var("FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(CASES);
    let seed: u64 = std::env::var("FUZZ_SEED").ok().and_then(|n| n.parse().ok()).unwrap_or(16);
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config { cases, failure_persistence: None, max_shrink_iters: 64, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes));
    let kept = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz-capture-failure.rscope");
    let result = runner.run(&case(paths), |case| {
        let capture = dir.path().join("case.rscope");
        write(&case, &capture);
        let cap = capture.to_str().unwrap();
        let (pf, js) = (dir.path().join("out.pftrace"), dir.path().join("out.json"));
        for args in [
            vec!["report", cap],
            vec!["report", cap, "--json", "--fail-over", "1"],
            vec!["export", cap, "-o", pf.to_str().unwrap()],
            vec!["export", cap, "-o", js.to_str().unwrap()],
        ] {
            if let Err(why) = run_limited(&args) {
                std::fs::copy(&capture, &kept).ok();
                return Err(TestCaseError::fail(why));
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}\nthe failing capture is kept in {}", kept.display());
    }
}

/// Poll returns lost by the hundred thousand (a full ring buffer, or a
/// return probe that never fired): one task polled again and again, and
/// distinct tasks each nesting in the one before. Both once hung `report`
/// for minutes (work quadratic in the nesting depth).
#[test]
fn polls_without_returns_stay_linear() {
    const N: u64 = 200_000;
    let dir = tempfile::tempdir().unwrap();
    let poll_fn = Frame { module: Frame::NO_MODULE, offset: 0x1000 };
    let starts = |task: &dyn Fn(u64) -> u64| -> Vec<Event> {
        (0..N).map(|i| Event::PollStart { ts: START + 1_000 + i * 1_000, tid: 7, task: task(i), poll_fn }).collect()
    };
    for (name, events) in [("same-task", starts(&|_| 0xa0)), ("nested-tasks", starts(&|i| 0x1000 + i * 0x40))] {
        let case = Case {
            start: Start {
                tool_version: "test".into(),
                clock: "CLOCK_MONOTONIC".into(),
                pid: 4242,
                command: name.into(),
                executable: "/nonexistent".into(),
                start_ns: START,
                threads: vec![ThreadInfo { tid: 7, name: "tokio-rt-worker".into(), cpu_ns_at_start: None, cpu_ns_at_stop: None }],
                modules: Vec::new(),
                probes: vec!["uprobe:tokio::runtime::task::raw::poll ×1".into()],
                launch: None,
            },
            batches: events.chunks(10_000).map(<[Event]>::to_vec).collect(),
            stop: Some(Stop {
                end_ns: START + (N + 2) * 1_000,
                stop_reason: StopReason::Duration,
                lost_events: 0,
                untracked_threads: 0,
                cpu_ns_at_stop: Vec::new(),
                exit_status: None,
            }),
        };
        let capture = dir.path().join(format!("{name}.rscope"));
        write(&case, &capture);
        let cap = capture.to_str().unwrap();
        let (pf, js) = (dir.path().join("out.pftrace"), dir.path().join("out.json"));
        for args in [vec!["report", cap], vec!["export", cap, "-o", pf.to_str().unwrap()], vec!["export", cap, "-o", js.to_str().unwrap()]] {
            run_limited(&args).unwrap_or_else(|why| panic!("{name}: {why}"));
        }
        if name == "same-task" {
            let out = Command::new(profiler_bin()).args(["report", cap]).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains(&format!("{} polls whose return was never seen", N - 1)), "{text}");
        }
    }
}
