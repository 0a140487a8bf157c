//! `--polls starts` on the real kernel: a probe on each poll's entry and
//! none on its return. Checked against the truth of the same polls: a
//! second recorder with `--polls on` attached to the same demo at the same
//! time (both clocks are CLOCK_MONOTONIC, so the two captures' polls are
//! matched by thread, Tokio task id and start). Every bounded end must be
//! at or after the poll's real return, and close to it.

mod common;

use common::{Demo, PROFILER, debuginfo_demo_path, demo_app_path, require_root};
use scope_model::{Event, Poll, Timeline, WorkerRule};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn record(pid: u32, polls: &str, out: &std::path::Path) -> std::thread::JoinHandle<Output> {
    let (pid, polls, out) = (pid.to_string(), polls.to_string(), out.to_owned());
    std::thread::spawn(move || {
        Command::new(PROFILER).args(["record", "--no-live", "-d", "6", "--polls", &polls, "-p", &pid, "-o"]).arg(&out).output().unwrap()
    })
}

fn timeline(path: &std::path::Path) -> (Timeline, Vec<Event>) {
    let rec = scope_model::capture::read(&std::fs::read(path).unwrap()).unwrap().recording;
    (Timeline::build(&rec, &WorkerRule::default()), rec.events)
}

/// (tid, Tokio id, poll) of every poll whose task id was read.
fn polls(tl: &Timeline) -> Vec<(u32, u64, Poll)> {
    tl.threads
        .iter()
        .flat_map(|t| t.polls.iter().filter_map(move |p| Some((t.tid, *tl.tokio_ids.get(&p.serial)?, *p))))
        .collect()
}

/// The DWARF demo: Tokio's task id is found at once, so the returns are
/// never attached (the stock build's path, learning it with the returns
/// on, is the next test's).
#[test]
fn poll_starts_end_each_poll_at_or_after_its_real_return() {
    require_root();
    let demo = Demo::start_binary(&debuginfo_demo_path(), 14);
    demo.wait_for_workers(2);
    let dir = tempfile::tempdir().unwrap();
    let (exact_path, starts_path) = (dir.path().join("on.rscope"), dir.path().join("starts.rscope"));
    let exact = record(demo.pid(), "on", &exact_path);
    let starts = record(demo.pid(), "starts", &starts_path);
    for (what, run) in [("on", exact.join().unwrap()), ("starts", starts.join().unwrap())] {
        assert!(run.status.success(), "--polls {what}: {}", String::from_utf8_lossy(&run.stderr));
    }
    let (truth, _) = timeline(&exact_path);
    let (bounded, events) = timeline(&starts_path);

    let off = bounded.poll_returns_off_ns.expect("the returns were off from the start");
    assert!(!events.iter().any(|e| matches!(e, Event::TaskWake { .. })), "--polls starts records no wakes");
    assert!(
        !events.iter().any(|e| matches!(e, Event::PollEnd { ts, .. } if *ts >= off)),
        "no return is recorded after the returns came off"
    );

    let truth = polls(&truth);
    let after: Vec<(u32, u64, Poll)> = polls(&bounded).into_iter().filter(|(_, _, p)| p.start_ns > off && p.finished).collect();
    assert!(after.len() >= 300, "the demo polls hundreds of times in the window: {}", after.len());
    assert!(after.iter().all(|(_, _, p)| p.bounded), "every poll after the switch is bounded");
    let (mut gaps, mut early) = (Vec::new(), Vec::new());
    for (tid, id, p) in &after {
        // Two probes on the same instruction: the same poll starts within
        // microseconds in both captures.
        let same = truth.iter().filter(|(t, i, q)| t == tid && i == id && q.start_ns.abs_diff(p.start_ns) < 50_000);
        let Some((_, _, real)) = same.min_by_key(|(_, _, q)| q.start_ns.abs_diff(p.start_ns)) else { continue };
        if !real.finished {
            continue;
        }
        // The two programs run one after the other at the same return: a
        // few µs of slack. Beyond it, only Tokio's bookkeeping after the
        // task's id is unset (its state stored, its JoinHandle woken) can
        // run past a bound: a worker blocked or sampled there reads its
        // loop's id (a preemption there ends nothing, see poll_ends).
        if p.end_ns + 20_000 < real.end_ns {
            early.push((real.end_ns - p.end_ns, *p, *real));
        }
        gaps.push(p.end_ns.saturating_sub(real.end_ns));
    }
    assert!(gaps.len() * 10 >= after.len() * 9, "{} of {} polls matched the exact capture", gaps.len(), after.len());
    assert!(early.len() * 200 <= gaps.len(), "bounded ends before the real return: {early:?}");
    assert!(early.iter().all(|(by, _, _)| *by < 200_000), "bookkeeping after a task's code takes µs, not more: {early:?}");
    gaps.sort_unstable();
    let median = gaps[gaps.len() / 2];
    assert!(median < 200_000, "a bounded end is where the worker is next seen, µs after the return: median {median} ns");

    // The report says what the lengths are.
    let report = Command::new(PROFILER).arg("report").arg(&starts_path).arg("--json").output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    let missing = json["data"]["missing"].to_string();
    assert!(missing.contains("poll returns not probed") && missing.contains("upper bounds"), "{missing}");
    let long = json["long_polls"].as_array().unwrap();
    assert!(long.iter().any(|g| g["upper_bound"] == true && g["task_kind"].as_str().unwrap().contains("cpu_heavy")), "{long:?}");
}

/// The demo's PING server burning 60 µs a request under a steady load: a
/// poll and a wake a request. With their returns and wakes they would cost
/// it ~4% (2.7 µs of 62), their starts alone ~1.6%: `--polls auto` keeps
/// poll starts, and says so.
#[test]
fn auto_keeps_poll_starts_where_whole_polls_are_over_the_budget() {
    require_root();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = Command::new(demo_app_path()).args(["--serve", &port.to_string(), "60"]).stdout(Stdio::null()).spawn().unwrap();
    let server = Demo { child: server };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the demo server did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let stop = stop.clone();
            let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
            conn.set_nodelay(true).unwrap();
            std::thread::spawn(move || {
                let mut reply = [0u8; 7];
                while !stop.load(Ordering::Relaxed) {
                    if conn.write_all(b"PING\r\n").is_err() || conn.read_exact(&mut reply).is_err() {
                        return;
                    }
                    assert_eq!(&reply, b"+PONG\r\n");
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("auto.rscope");
    let run = record(server.pid(), "auto", &capture).join().unwrap();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let line = stderr.lines().find(|l| l.contains("polls:")).unwrap_or_else(|| panic!("no decision line: {stderr}"));
    assert!(line.contains("recording poll starts only"), "{line}");
    let (tl, events) = timeline(&capture);
    let off = tl.poll_returns_off_ns.expect("the returns came off");
    assert!(!events.iter().any(|e| matches!(e, Event::TaskWake { ts, .. } if *ts > off + 100_000_000)), "wakes came off with them");
    let after: Vec<Poll> = polls(&tl).into_iter().map(|(_, _, p)| p).filter(|p| p.start_ns > off && p.finished).collect();
    assert!(after.len() >= 1000, "the server polled its connections on: {}", after.len());
    assert!(after.iter().all(|p| p.bounded));
    // Each poll burns 60 µs: no bound may be shorter than that work.
    let short = after.iter().filter(|p| p.duration_ns() < 55_000).count();
    assert!(short * 100 <= after.len(), "{short} of {} bounded polls shorter than the 60 µs each burns", after.len());
}

/// Launched under `--polls starts` with the task id known from DWARF: the
/// returns are never attached, and from the program's first instruction
/// every poll is counted once, none taken for one whose return was lost,
/// and the worker loop's own poll (a blocking task's) holds the task polls
/// entered from it.
#[test]
fn a_launched_program_s_every_poll_is_counted_without_returns() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("launched.rscope");
    let run = Command::new(PROFILER)
        .args(["record", "--no-live", "--no-stacks", "--polls", "starts", "-o"])
        .arg(&capture)
        .arg("--")
        .arg(debuginfo_demo_path())
        .args(["--yield-loop", "200000"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let (tl, events) = timeline(&capture);
    assert_eq!(tl.poll_returns_off_ns, Some(tl.start_ns), "off from the window's start");
    assert!(!events.iter().any(|e| matches!(e, Event::PollEnd { .. })), "no return probe was attached");
    assert!(tl.polls_without_return.is_empty(), "{} polls taken for lost returns", tl.polls_without_return.len());
    let worker = tl.workers().next().expect("the runtime's worker");
    let loop_poll = worker.polls.iter().find(|p| p.depth == 0).expect("the worker loop's poll");
    let tasks: Vec<&Poll> = worker.polls.iter().filter(|p| p.depth == 1).collect();
    assert!(tasks.len() >= 200_000, "every iteration's poll, nested in the loop's: {}", tasks.len());
    assert!(tasks.iter().all(|p| p.start_ns >= loop_poll.start_ns && p.end_ns <= loop_poll.end_ns));
}
