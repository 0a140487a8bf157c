//! End to end on the real kernel: the demo app, the real profiler with real
//! probes, the trace read back and checked against the kernel's own
//! accounting (/proc/<pid>/task/<tid>/schedstat) and the demo's known
//! behaviour (a 40 ms blocking sleep every 500 ms).

mod common;

use common::*;

/// (start µs, duration µs, name, state), as [`spans_of`] gives them.
type Span = (f64, f64, String, String);

/// Worker `i`'s states in the trace: they never overlap, their on-CPU time
/// matches schedstat's `kernel_ns` ([`check_on_cpu`]; true when checked
/// strictly). Returns them with the count of its 40 ms sleeps (±20%).
fn check_worker(trace: &serde_json::Value, i: usize, tid: u32, kernel_ns: u64) -> (Vec<Span>, bool, usize) {
    let spans: Vec<_> = spans_of(trace, tid).into_iter().filter(|s| s.2 == "oncpu" || s.2 == "offcpu").collect();
    assert!(!spans.is_empty(), "worker {tid} has no spans");
    for pair in spans.windows(2) {
        assert!(pair[1].0 >= pair[0].0 + pair[0].1 - 0.001, "overlap on {tid}: {:?} then {:?}", pair[0], pair[1]);
    }
    // Shown only if a check fails: where the time went.
    if spans.len() <= 120 {
        let list: Vec<String> = spans.iter().map(|s| format!("{:.0}+{:.0}:{}", s.0, s.1, s.3)).collect();
        eprintln!("worker {i} spans (µs at + µs: state): {}", list.join(" "));
    }
    let on_cpu_us: f64 = spans.iter().filter(|s| s.2 == "oncpu").map(|s| s.1).sum();
    let switches = spans.iter().filter(|s| s.2 == "oncpu").count();
    let strict = check_on_cpu(&format!("worker {i}"), on_cpu_us, kernel_ns as f64 / 1_000.0, switches);
    let sleeps = spans
        .iter()
        .filter(|s| s.2 == "offcpu" && s.3 == "blocked (S)" && (32_000.0..=upper_ms(48.0) * 1e3).contains(&s.1))
        .count();
    (spans, strict, sleeps)
}

#[test]
fn trace_of_demo_matches_kernel_accounting() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let trace_path = dir.path().join("trace.json");
    let run = record_demo_accounted(|pid| {
        ["--pid", pid, "--trace", "--no-live", "--trace-output", trace_path.to_str().unwrap()].map(String::from).to_vec()
    });
    let (workers, pid) = (&run.workers, run.demo.pid());
    let (code, stdout, stderr) = (run.code, &run.stdout, &run.stderr);
    assert_eq!(code, 0, "profiler failed:\n{stdout}\n{stderr}");
    // Our messages and the summary are on stderr: stdout is the target's.
    assert!(stderr.contains("Trace written to") && !stdout.contains("Trace written to"), "{stderr}");
    assert!(stderr.contains("no events lost"), "{stderr}");

    let trace = read_trace(&trace_path);
    assert_eq!(trace["otherData"]["lost_events"], 0);
    // A rare switch record is not delivered by this kernel without any drop
    // counted (docs/design-notes.md); more than a handful means a bug of ours.
    let missing = trace["otherData"]["missing_switches"].as_u64().expect("missing_switches");
    assert!(missing <= 3, "{missing} switches missing:\n{stdout}");
    let names = thread_names(&trace);
    for (i, tid) in workers.iter().enumerate() {
        let expected = format!("worker {i} (tid {tid})");
        assert!(names.contains(&(*tid, expected.clone())), "{expected} missing from {names:?}");
    }
    assert!(
        names.iter().any(|(t, n)| *t == pid && n.contains("not a worker")),
        "main thread should be shown and marked: {names:?}"
    );

    let mut strictly_checked = 0;
    let mut sleeps_found = 0;
    for (i, &tid) in workers.iter().enumerate() {
        let (spans, strict, sleeps) = check_worker(&trace, i, tid, run.kernel_ns[i]);
        // Task polls nest inside on-CPU spans.
        for poll in spans_of(&trace, tid).iter().filter(|s| s.2.starts_with("poll")) {
            let inside = spans.iter().any(|s| s.2 == "oncpu" && s.0 <= poll.0 + 0.001 && poll.0 + poll.1 <= s.0 + s.1 + 0.001);
            assert!(inside, "poll piece {poll:?} not inside an on-CPU span of {tid}");
        }
        strictly_checked += usize::from(strict);
        sleeps_found += sleeps;
    }
    assert!(strictly_checked >= 1, "the CPU-heavy poll should make at least one worker busy");
    // 40 ms sleeps every 500 ms, minus at most 1 s of idle phase in the window.
    assert!(sleeps_found >= 3, "expected ≥3 blocked gaps of 40 ms ±20%, found {sleeps_found}");
}

/// Most switch-outs and wakings of the target are held in the kernel and
/// ride in the thread's next switch-in record; those still held when the
/// recording stops (every thread is frozen then) are read from their slots.
/// Either way nothing may go missing: the workers' traced on-CPU time
/// must match schedstat, and their 40 ms sleeps must be there.
#[test]
fn switches_held_for_the_switch_in_still_account_exactly() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let trace_path = dir.path().join("trace.json");
    let run = record_demo_accounted_with(
        |pid| ["--pid", pid, "--trace", "--no-live", "--trace-output", trace_path.to_str().unwrap()].map(String::from).to_vec(),
        &[("RUNTIME_SCOPE_BPF_STATS", "1")],
    );
    assert_eq!(run.code, 0, "profiler failed:\n{}", run.stderr);
    let held: u64 = run
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("runtime-scope: bench held="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no held count in:\n{}", run.stderr));
    // 3 s of the demo: two workers parking and waking hundreds of times.
    assert!(held >= 100, "only {held} switch-outs and wakings held:\n{}", run.stderr);
    let trace = read_trace(&trace_path);
    let missing = trace["otherData"]["missing_switches"].as_u64().expect("missing_switches");
    assert!(missing <= 3, "{missing} switches missing:\n{}", run.stderr);
    let mut sleeps_found = 0;
    for (i, &tid) in run.workers.iter().enumerate() {
        sleeps_found += check_worker(&trace, i, tid, run.kernel_ns[i]).2;
    }
    assert!(sleeps_found >= 3, "expected ≥3 blocked gaps of 40 ms ±20%, found {sleeps_found}");
}

#[test]
fn stops_when_target_exits_and_still_writes_trace() {
    require_root();
    let demo = Demo::start(2);
    demo.wait_for_workers(2);
    let dir = tempfile::tempdir().unwrap();
    let trace_path = dir.path().join("t.json");
    let pid = demo.pid().to_string();
    let run = Run::start(&[
        "--pid", &pid, "--trace", "--duration", "20", "--trace-output", trace_path.to_str().unwrap(),
    ]);
    let started = std::time::Instant::now();
    let (code, stdout, stderr) = run.finish();
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(started.elapsed().as_secs() < 10, "should stop when the target exits");
    assert!(stderr.contains("the target process exited"), "{stderr}");
    assert!(stderr.contains("recorded (the target process exited)"), "{stderr}");
    let trace = read_trace(&trace_path);
    assert!(thread_names(&trace).iter().any(|(_, n)| n.starts_with("worker 0")));
    // Live mode printed per-second lines, not one per event.
    let live_lines = stderr.lines().filter(|l| l.starts_with('[') && l.contains("events/s")).count();
    assert!((1..=4).contains(&live_lines), "expected ~1 live line per second:\n{stderr}");
    // And each long poll as it ended (the demo's 30 ms and 40 ms polls).
    assert!(stderr.lines().any(|l| l.starts_with('[') && l.contains("long poll") && l.contains("on worker ")), "{stderr}");
}

#[test]
fn ctrl_c_stops_cleanly_with_trace_and_detaches() {
    require_root();
    let demo = Demo::start(60);
    demo.wait_for_workers(2);
    let dir = tempfile::tempdir().unwrap();
    let trace_path = dir.path().join("t.json");
    let pid = demo.pid().to_string();
    let mut run = Run::start(&[
        "--pid", &pid, "--trace", "--duration", "30", "--no-live",
        "--trace-output", trace_path.to_str().unwrap(),
    ]);
    run.wait_for_line("runtime-scope: recording");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(run.child.id() as i32, libc::SIGINT) };
    let (code, stdout, stderr) = run.finish();
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stderr.contains("interrupted by signal"), "{stderr}");
    let trace = read_trace(&trace_path);
    assert!(!spans_of(&trace, demo.wait_for_workers(2)[0]).is_empty());
    assert_no_probes_left();
}
