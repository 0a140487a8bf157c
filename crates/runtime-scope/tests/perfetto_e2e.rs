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
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trace.pftrace");
    let run = record_demo_accounted(|pid| ["record", "-p", pid, "--no-live", "-o", path.to_str().unwrap()].map(String::from).to_vec());
    assert_eq!(run.code, 0, "profiler failed:\n{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("Perfetto trace"), "{}", run.stderr);

    let d = readback::read(&std::fs::read(&path).unwrap()).unwrap_or_else(|e| panic!("the trace reads back: {e}"));
    let (sysname, _) = d.system.clone().expect("SystemInfo");
    assert_eq!(sysname, "Linux");
    let mut busy_checked = 0;
    for (i, &tid) in run.workers.iter().enumerate() {
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
        // Shown only if a check fails: where the time went.
        if runs.len() <= 60 {
            let first = runs[0].start;
            let list: Vec<String> = runs.iter().map(|r| format!("{}+{}", (r.start - first) / 1_000, (r.end - r.start) / 1_000)).collect();
            eprintln!("{row} on-CPU runs (µs from the first + µs): {}", list.join(" "));
        }
        if check_on_cpu(&row, on_cpu, run.kernel_ns[i] as f64 / 1_000.0, runs.len()) {
            busy_checked += 1;
        }
        assert!(runs.iter().any(|r| r.out_state == 1), "{row} never slept (S)");
    }
    assert!(busy_checked >= 1, "the CPU-heavy poll should make at least one worker busy");

    // The blocking loop sleeps 40 ms inside its poll every 500 ms: a
    // blocked slice with its stack, nested in a poll of that kind (a poll
    // still open when recording stopped ends with the slice, at the stop).
    // A sleep already under way at the start (slice from 0) was switched
    // out before we attached: it has no stack.
    let sleeps: Vec<_> = d
        .slices
        .iter()
        .filter(|s| s.start > 0 && s.name == "blocked (S)" && s.category == "offcpu,blocking" && (32e6..=upper_ms(48.0) * 1e6).contains(&((s.end - s.start) as f64)))
        .collect();
    // What there was instead, if not: every off-CPU slice over 20 ms.
    let offcpu = || -> Vec<String> {
        d.slices
            .iter()
            .filter(|s| s.category.starts_with("offcpu") && s.end - s.start > 20_000_000)
            .map(|s| format!("{} {} at {} ms for {:.1} ms on {}", s.name, s.category, s.start / 1_000_000, (s.end - s.start) as f64 / 1e6, s.track))
            .collect()
    };
    assert!(sleeps.len() >= 3, "expected ≥3 blocked slices of 40 ms ±20%, found {}: {:#?}\n{}", sleeps.len(), offcpu(), run.stderr);
    for s in &sleeps {
        assert!(s.args.get("stack").is_some_and(|st| st.contains("block_in_syscall")), "{s:?}");
        // The innermost poll around it: a worker loop that started in the
        // window (the demo is frozen right after naming its workers) is a
        // poll around every other.
        let poll = d
            .slices
            .iter()
            .filter(|p| p.track == s.track && p.category.ends_with("poll") && p.start < s.start && s.end <= p.end)
            .max_by_key(|p| p.start);
        assert_eq!(poll.map(|p| p.name.as_str()), Some("demo_app::blocking_loop"), "{s:?}");
    }
    let polls = d.slices.iter().filter(|s| s.category.ends_with("poll")).count();
    assert!(polls >= 100, "{polls} polls");
    assert!(d.wakings.iter().any(|w| run.workers.contains(&w.wakee)), "workers are woken");
}
