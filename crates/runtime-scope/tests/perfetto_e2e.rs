//! The Perfetto trace of a real recording, read back as the trace processor
//! reads it: the worker rows, each worker's on-CPU time from the sched
//! records against the kernel's own accounting (schedstat), the demo's
//! 40 ms sleeps as blocked slices inside their polls, and wakings.

mod common;

use common::*;
use scope_export::perfetto::readback;

#[test]
fn perfetto_trace_of_demo_matches_kernel_accounting() {
    require_root();
    let demo = Demo::start(60);
    let workers = demo.wait_for_workers(2);
    let pid = demo.pid();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trace.pftrace");
    let pid_arg = pid.to_string();
    let mut run = Run::start(&["record", "-p", &pid_arg, "-d", "3", "--no-live", "-o", path.to_str().unwrap()]);
    run.wait_for_line("runtime-scope: recording");
    let before: Vec<u64> = workers.iter().map(|&t| schedstat_ns(pid, t)).collect();
    run.wait_for_line("runtime-scope: stopped");
    let after: Vec<u64> = workers.iter().map(|&t| schedstat_ns(pid, t)).collect();
    let (code, stdout, stderr) = run.finish();
    assert_eq!(code, 0, "profiler failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("Perfetto trace"), "{stdout}");

    let d = readback::read(&std::fs::read(&path).unwrap()).unwrap_or_else(|e| panic!("the trace reads back: {e}"));
    let (sysname, _) = d.system.clone().expect("SystemInfo");
    assert_eq!(sysname, "Linux");
    let mut busy_checked = 0;
    for (i, &tid) in workers.iter().enumerate() {
        let row = format!("worker {i} (tid {tid})");
        assert!(d.tracks.values().any(|n| *n == row), "{row} missing from {:?}", d.tracks);
        let mut runs: Vec<_> = d.runs.iter().filter(|r| r.tid == tid).collect();
        assert!(!runs.is_empty(), "no sched data for {row}");
        // Over all CPUs, in time order.
        runs.sort_by_key(|r| r.start);
        for pair in runs.windows(2) {
            assert!(pair[1].start >= pair[0].end, "{row} ran twice at once: {pair:?}");
        }
        let on_cpu = runs.iter().map(|r| r.end - r.start).sum::<u64>() as f64 / 1_000.0;
        let kernel = (after[i] - before[i]) as f64 / 1_000.0;
        eprintln!("{row}: sched records {on_cpu:.0} µs, schedstat {kernel:.0} µs, {} runs", runs.len());
        // As for the Chrome trace (kernel_e2e): tracepoint timestamps are a
        // few µs from the kernel's accounting at each switch.
        if kernel >= 50_000.0 {
            busy_checked += 1;
            assert!((on_cpu - kernel).abs() <= kernel * 0.10, "{row}: {on_cpu} vs kernel {kernel} µs");
        } else {
            assert!((on_cpu - kernel).abs() <= kernel * 0.10 + 25.0 * runs.len() as f64, "{row}: {on_cpu} vs {kernel} µs");
        }
        assert!(runs.iter().any(|r| r.out_state == 1), "{row} never slept (S)");
    }
    assert!(busy_checked >= 1, "the CPU-heavy poll should make at least one worker busy");

    // The blocking loop sleeps 40 ms inside its poll every 500 ms: a
    // blocked slice with its stack, nested in a poll of that kind.
    let sleeps: Vec<_> = d
        .slices
        .iter()
        .filter(|s| s.name == "blocked (S)" && s.category == "offcpu,blocking" && (32_000_000..=48_000_000).contains(&(s.end - s.start)))
        .collect();
    assert!(sleeps.len() >= 3, "expected ≥3 blocked slices of 40 ms ±20%, found {}", sleeps.len());
    for s in &sleeps {
        assert!(s.args.get("stack").is_some_and(|st| st.contains("block_in_syscall")), "{s:?}");
        let poll = d.slices.iter().find(|p| p.track == s.track && p.category.ends_with("poll") && p.start < s.start && s.end < p.end);
        assert_eq!(poll.map(|p| p.name.as_str()), Some("demo_app::blocking_loop"), "{s:?}");
    }
    let polls = d.slices.iter().filter(|s| s.category.ends_with("poll")).count();
    assert!(polls >= 100, "{polls} polls");
    assert!(d.wakings.iter().any(|w| workers.contains(&w.wakee)), "workers are woken");
}
