//! Kernel end-to-end tests of `watch`, the flight recorder: the demo runs
//! normally (30 ms CPU polls, 40 ms blocking polls, short tasks, an idle
//! second every 4 s), then one task blocks its worker for 200 ms in
//! `stall_once` (`demo-app --stall-once 8`). Watching it with
//! `--on long-poll=100 --keep 5` must write exactly one snapshot, holding
//! the stall, the 5 s before it and `--after` after it, whose report names
//! the stalling task and the blocking call; in both tiers (exact polls, and
//! task identity only).

mod common;

use common::{Demo, PROFILER, Run, assert_no_probes_left, require_root};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const STALL_AT_S: &str = "8";

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

/// Waits until `dir` holds a file ending in `ext`.
fn wait_for_file(dir: &Path, ext: &str, run: &Run) -> PathBuf {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(p) = files(dir).into_iter().find(|p| p.extension().is_some_and(|e| e == ext)) {
            return p;
        }
        assert!(Instant::now() < deadline, "no .{ext} in {}; stderr so far: {:?}", dir.display(), run.stderr);
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn interrupt(run: &Run) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(run.child.id() as i32, libc::SIGINT) };
}

fn report_json(capture: &Path) -> Value {
    let out = std::process::Command::new(PROFILER).args(["report", "--json", "--long-poll", "100"]).arg(capture).output().unwrap();
    assert!(out.status.success(), "report failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Watches the stalling demo with `extra` flags; checks the one snapshot.
/// `exact`: whether the stall is seen as a probed poll.
fn one_stall_one_snapshot(extra: &[&str], exact: bool) {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let pattern = dir.path().join("stall-%t.pftrace");
    let demo = Demo::start_args(&["--stall-once", STALL_AT_S, "30"]);
    demo.wait_for_workers(2);
    let pid = demo.pid().to_string();
    let mut args = vec!["watch", "-p", &pid, "--on", "long-poll=100", "--keep", "5", "--after", "1", "-o", pattern.to_str().unwrap()];
    args.extend_from_slice(extra);
    let mut run = Run::start(&args);
    let fired = run.wait_for_line("runtime-scope: trigger: snapshot 1");
    assert!(fired.contains("demo_app::stall_task"), "{fired}");
    let trace = wait_for_file(dir.path(), "pftrace", &run);
    // Nothing else in the demo's normal life is a 100 ms poll: wait a
    // little to see that no second snapshot comes.
    std::thread::sleep(Duration::from_millis(2500));
    interrupt(&run);
    let (code, stdout, stderr) = run.finish();
    assert_eq!(code, 0, "{stderr}");
    let capture = trace.with_extension("rscope");
    assert_eq!(files(dir.path()), vec![trace.clone(), capture.clone()], "exactly one snapshot: its capture and its trace; stderr: {stderr}");
    assert!(std::fs::metadata(&trace).unwrap().len() > 1000, "a trace was written");
    assert!(stderr.contains("runtime-scope: 1 snapshot taken"), "{stderr}");

    // Printed (stderr: stdout is a launched program's): the trigger first, in the snapshot's own names, then the report.
    let block: Vec<&str> = stderr.lines().skip_while(|l| !l.starts_with("snapshot 1:")).collect();
    assert!(block.len() > 5, "no snapshot report on stderr: {stderr}");
    assert!(block[0].contains("demo_app::stall_task"), "{stderr}");
    assert!(block[1].starts_with("  task demo_app::stall_task") && block[1].contains("worker"), "{stderr}");
    assert!(block[2].starts_with("  blocked in") && block[2].contains("std::thread") && block[2].ends_with("stall_once"), "{stderr}");
    assert!(stderr.contains("recorded (flight-recorder snapshot (watch))"), "{stderr}");

    assert!(!stdout.contains("snapshot 1:"), "stdout belongs to a launched program: {stdout}");

    // The capture alone, read back later: the stall, 5 s before, 1 s after.
    let report = report_json(&capture);
    let groups = report["long_polls"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "only the stall is ≥ 100 ms: {groups:?}");
    let stall = &groups[0];
    assert!(stall["task_kind"].as_str().unwrap().contains("stall_task"), "{stall}");
    assert_eq!(stall["site"], "stall_once", "{stall}");
    assert_eq!(stall["exact"], exact, "{stall}");
    let took = stall["max_ms"].as_f64().unwrap();
    assert!((200.0..260.0).contains(&took), "the demo sleeps 200 ms: {took}");
    let at = stall["longest_at_ms"].as_f64().unwrap();
    assert!((4950.0..5400.0).contains(&at), "--keep 5: the stall starts {at} ms into the snapshot");
    let duration = report["duration_ms"].as_f64().unwrap();
    let after = duration - at - took;
    assert!((850.0..1600.0).contains(&after), "--after 1: {after} ms after the stall (snapshot {duration} ms)");
    assert_eq!(report["stop_reason"], "flight-recorder snapshot (watch)");
    assert_eq!(report["workers"].as_array().unwrap().len(), 2, "{report}");
    drop(demo);
    assert_no_probes_left();
}

#[test]
fn a_stall_writes_one_snapshot_with_the_seconds_around_it() {
    one_stall_one_snapshot(&["--polls", "on"], true);
}

#[test]
fn a_stall_seen_without_poll_probes_writes_one_snapshot_too() {
    // --overhead-budget 0 takes the poll probes off once Tokio's task id is
    // located (samples at 999 Hz find it within a second on the demo).
    one_stall_one_snapshot(&["--overhead-budget", "0", "--frequency", "999"], false);
}

#[test]
fn a_stall_with_no_stack_at_all_is_seen_on_a_worker_whose_loop_id_is_known() {
    // No blocked stacks (--stack-budget 0): the worker's own loop id is
    // learned from samples, and any other id blocked on it is a task.
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let pattern = dir.path().join("stall-%t.rscope");
    let demo = Demo::start_args(&["--stall-once", STALL_AT_S, "30"]);
    demo.wait_for_workers(2);
    let pid = demo.pid().to_string();
    let flags = ["--overhead-budget", "0", "--frequency", "999", "--stack-budget", "0", "--on", "long-poll=100", "--keep", "5", "-o"];
    let mut args = vec!["watch", "-p", &pid];
    args.extend(flags);
    args.push(pattern.to_str().unwrap());
    let mut run = Run::start(&args);
    let fired = run.wait_for_line("runtime-scope: trigger: snapshot 1");
    assert!(fired.contains("task (tokio id") && fired.contains("blocked inside its poll"), "{fired}");
    let capture = wait_for_file(dir.path(), "rscope", &run);
    std::thread::sleep(Duration::from_millis(2500));
    interrupt(&run);
    let (code, _, stderr) = run.finish();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(files(dir.path()), vec![capture], "exactly one snapshot; stderr: {stderr}");
    let block: Vec<&str> = stderr.lines().skip_while(|l| !l.starts_with("snapshot 1:")).collect();
    assert!(block.len() > 3, "{stderr}");
    let into: f64 = block[0].rsplit('(').next().and_then(|r| r.split(" s into").next()).and_then(|v| v.parse().ok()).unwrap_or(-1.0);
    assert!((4.95..5.4).contains(&into), "--keep 5: {}", block[0]);
    let took: f64 = block[1].split("blocked ").nth(1).and_then(|r| r.split(" ms").next()).and_then(|v| v.parse().ok()).unwrap_or(-1.0);
    assert!(block[1].starts_with("  task (tokio id") && (200.0..260.0).contains(&took), "the demo sleeps 200 ms: {stderr}");
    drop(demo);
    assert_no_probes_left();
}

#[test]
fn sigusr1_snapshots_and_a_full_disk_is_reported_while_recording_goes_on() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("tiny");
    std::fs::create_dir(&mount).unwrap();
    let mounted = std::process::Command::new("mount").args(["-t", "tmpfs", "-o", "size=16k", "tmpfs"]).arg(&mount).status().unwrap();
    assert!(mounted.success(), "cannot mount a 16 KiB tmpfs to fill up");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mount.clone());
    let demo = Demo::start(30);
    demo.wait_for_workers(2);
    let pid = demo.pid().to_string();
    let pattern = mount.join("snap-%n.pftrace");
    let mut run = Run::start(&["watch", "-p", &pid, "--on", "signal", "--keep", "3", "-o", pattern.to_str().unwrap()]);
    run.wait_for_line("the ring holds the last");
    for n in 1..=2 {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(run.child.id() as i32, libc::SIGUSR1) };
        run.wait_for_line(&format!("trigger: snapshot {n} asked for by hand"));
        let failed = run.wait_for_line(&format!("runtime-scope: snapshot {n}:"));
        assert!(failed.contains("No space left on device") && failed.ends_with("recording goes on"), "{failed}");
    }
    assert!(run.child.try_wait().unwrap().is_none(), "still recording after the disk filled up");
    interrupt(&run);
    let (code, _, stderr) = run.finish();
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("runtime-scope: 2 snapshots taken"), "{stderr}");
    assert_eq!(files(&mount), Vec::<PathBuf>::new(), "nothing half-written is left");
    // The report of each window was printed even though no file could be.
    let reports = stderr.lines().filter(|l| l.starts_with("snapshot ") && l.contains("asked for by hand")).count();
    assert_eq!(reports, 2, "{stderr}");
    drop(demo);
    assert_no_probes_left();
}
