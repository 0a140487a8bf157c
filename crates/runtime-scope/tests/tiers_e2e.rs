//! The cheap default (issue 15), on the real kernel: `--polls auto` keeps
//! exact polls where they are cheap and declines them where they are not,
//! saying so; without them the report still names the task a worker was
//! blocked in, from Tokio's task id read at the switch-out; and the task
//! probes come off in one go (uprobe_multi), with the per-probe fallback
//! still working.

mod common;

use common::{Demo, PROFILER, Run, assert_no_probes_left, debuginfo_demo_path, demo_app_path, require_root, upper_ms};
use serde_json::Value;
use std::process::Command;
use std::time::Instant;

fn record(args: &[&str], env: &[(&str, &str)]) -> (std::path::PathBuf, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("run.rscope");
    let output = Command::new(PROFILER)
        .args(["record", "--no-live", "-o", capture.to_str().unwrap()])
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    // 143: a launched program still running at -d gets SIGTERM, and we
    // exit with its status.
    assert!(matches!(output.status.code(), Some(0 | 143)), "{stderr}");
    (capture, stderr, dir)
}

fn report(capture: &std::path::Path) -> Value {
    let output = Command::new(PROFILER).arg("report").arg(capture).arg("--json").output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn auto_keeps_exact_polls_on_the_demo_and_declines_them_on_a_yield_loop() {
    require_root();
    let demo = demo_app_path();
    let (capture, stderr, _dir) = record(&["--", demo.to_str().unwrap(), "4"], &[]);
    assert!(stderr.contains("within budget: recording every poll"), "{stderr}");
    let json = report(&capture);
    assert_eq!(json["data"]["polls"], true);
    assert!(json["data"]["missing"].as_array().unwrap().is_empty(), "{}", json["data"]);

    // The debuginfo build: its DWARF says where Tokio keeps the task id, so
    // samples carry it whether or not exact polls run.
    let with_dwarf = debuginfo_demo_path();
    let (capture, stderr, _dir) = record(&["-d", "4", "--", with_dwarf.to_str().unwrap(), "--yield-loop", "50000000"], &[]);
    assert!(stderr.contains("(from DWARF)"), "{stderr}");
    let line = stderr.lines().find(|l| l.contains("polls:")).unwrap_or_else(|| panic!("no decision line: {stderr}"));
    assert!(line.contains("would cost") && line.contains("recording task identity at switches and samples"), "{line}");
    let json = report(&capture);
    let missing = json["data"]["missing"].to_string();
    assert!(missing.contains("exact polls only for the first"), "{missing}");
    let sampled = json["sampled_tasks"].as_array().unwrap();
    assert!(sampled.iter().any(|t| t["kind"].as_str().unwrap().contains("yield_loop")), "samples name the loop: {sampled:?}");
}

#[test]
fn without_poll_probes_the_blocked_task_is_still_named() {
    require_root();
    // No poll probe at all: the task id's place comes from DWARF.
    let with_dwarf = debuginfo_demo_path();
    let (capture, stderr, _dir) = record(&["--polls", "off", "--", with_dwarf.to_str().unwrap(), "5"], &[]);
    assert!(stderr.contains("(from DWARF)"), "{stderr}");
    let json = report(&capture);
    assert_eq!(json["data"]["polls"], false);
    let groups = json["long_polls"].as_array().unwrap();
    let observed: Vec<&Value> = groups.iter().filter(|g| g["exact"] == false).collect();
    let sleep = observed
        .iter()
        .find(|g| g["cause"] == "blocked" && g["site"] == "block_in_syscall")
        .unwrap_or_else(|| panic!("the 40 ms sleeps, seen from the task id: {groups:#?}"));
    assert!(sleep["task_kind"].as_str().unwrap().contains("blocking_loop"), "{sleep}");
    // Each is the poll's time off the CPU: blocked from the switch-out to
    // the waking, then waiting for a CPU (still inside the poll). The
    // blocked part is the sleep (seen: 40.1 ms on average with three CPU
    // hogs on this machine's 2 CPUs); before it ended at the waking, CI
    // once read a 69 ms block.
    let number = |field: &str| sleep[field].as_f64().unwrap_or_else(|| panic!("{field}: {sleep}"));
    let blocked_avg = number("total_ms") * number("blocked_pct") / 100.0 / number("count");
    let within = |ms: f64| (39.0..=upper_ms(45.0)).contains(&ms);
    assert!(within(blocked_avg) && within(number("p50_ms")), "blocked 40 ms inside the poll: {sleep}");
    assert_eq!(sleep["woken_by"][0], "a timer or interrupt");
    // Parked workers carry their own loop's id: never reported as a task's stall.
    for g in &observed {
        assert!(!g["task_kind"].as_str().unwrap().contains("worker::run"), "{g}");
    }
}

/// The stock build learns where Tokio keeps the task id while exact polls
/// run, and lands where the debuginfo build's DWARF says (same layout).
#[test]
fn the_task_id_offset_learned_is_the_one_dwarf_states() {
    require_root();
    let data = std::fs::read(debuginfo_demo_path()).unwrap();
    let dwarf = scope_stacks::task_context::context_tls_with(&data, Some(&data)).and_then(|c| c.task_id_field).expect("DWARF states it");
    let demo = Demo::start(30);
    demo.wait_for_workers(2);
    let pid = demo.pid().to_string();
    // Two task ids hold the demo's long polls, so calibration wants 48
    // copies: about 8 a second here (samples in the 30 ms CPU polls, the
    // 40 ms blocking ones). 8 s was too close: once under CI's load, none.
    let (capture, stderr, _dir) = record(&["--polls", "on", "-d", "15", "-p", &pid], &[]);
    let learned = stderr
        .lines()
        .find_map(|l| l.split("task id is at CONTEXT+").nth(1))
        .unwrap_or_else(|| panic!("not learned: {stderr}"))
        .split(';')
        .next()
        .unwrap()
        .parse::<u32>()
        .unwrap();
    assert_eq!(learned, dwarf, "{stderr}");
    // Every id read at a switch-out or sample inside a probed poll with a
    // known Tokio id: the same id, but for samples in the poll's harness,
    // outside Tokio's guard (a few).
    let loaded = scope_model::capture::read(&std::fs::read(&capture).unwrap()).unwrap();
    let tl = scope_model::Timeline::build(&loaded.recording, &scope_model::WorkerRule::default());
    let (mut agreed, mut total) = (0, 0);
    for t in &tl.threads {
        for &(ts, id) in &t.task_marks {
            let inside = t.polls.iter().filter(|p| p.start_ns <= ts && ts < p.end_ns).max_by_key(|p| p.depth);
            if let Some(expected) = inside.and_then(|p| tl.tokio_ids.get(&p.serial)) {
                total += 1;
                agreed += u32::from(*expected == id);
            }
        }
    }
    assert!(total >= 5, "ids read inside probed polls: {total}");
    assert!(agreed * 10 >= total * 9, "{agreed} of {total} ids read inside probed polls named the polled task");
}

/// Seconds from "stopped after" to the process's exit, and its stderr.
fn stop_to_exit(env: &[(&str, &str)]) -> (f64, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.rscope");
    let demo = Demo::start(30);
    demo.wait_for_workers(2);
    let pid = demo.pid().to_string();
    let cmd_args = vec!["record", "--no-live", "--polls", "on", "-o", out.to_str().unwrap(), "-d", "2", "-p", &pid];
    for (k, v) in env {
        // SAFETY: tests in this file set no variable another thread reads.
        unsafe { std::env::set_var(k, v) };
    }
    let mut run = Run::start(&cmd_args);
    for (k, _) in env {
        unsafe { std::env::remove_var(k) };
    }
    run.wait_for_line("runtime-scope: stopped after");
    let stopped = Instant::now();
    let (code, _, stderr) = run.finish();
    assert_eq!(code, 0, "{stderr}");
    (stopped.elapsed().as_secs_f64(), stderr)
}

#[test]
fn task_probes_come_off_in_one_go() {
    require_root();
    let (fast, stderr) = stop_to_exit(&[]);
    assert!(!stderr.contains("no uprobe_multi links"), "{stderr}");
    assert_no_probes_left();
    let (slow, stderr) = stop_to_exit(&[("RUNTIME_SCOPE_NO_UPROBE_MULTI", "1")]);
    assert!(stderr.contains("recording"), "{stderr}");
    assert_no_probes_left();
    eprintln!("stop → exit: {fast:.2} s with uprobe_multi, {slow:.2} s one probe at a time");
    assert!(fast <= 1.0, "stop → exit {fast:.2} s (capture written, probes off)");
    assert!(fast < slow, "one link per program beats one per probe: {fast:.2} vs {slow:.2} s");
}
