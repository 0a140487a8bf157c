//! Task polls on the real kernel, no tokio_unstable, stock release binary:
//! the demo's known tasks checked by count, duration and name; and the probes
//! gone (the target back at full speed) once we exit.

mod common;

use common::*;
use serde_json::Value;
use std::collections::HashMap;

/// Poll pieces: category `poll`, or `poll,long_poll` for long ones.
fn is_poll(e: &Value) -> bool {
    e["cat"] == "poll" || e["cat"] == "poll,long_poll"
}

/// Poll pieces grouped per (kind, task, poll number): (kind, poll_us).
fn polls(trace: &Value) -> Vec<(String, String, u64, f64)> {
    let mut seen = HashMap::new();
    for e in trace["traceEvents"].as_array().unwrap().iter().filter(|e| is_poll(e)) {
        let key = (e["name"].as_str().unwrap().to_string(), e["args"]["task"].as_u64().unwrap().to_string(), e["args"]["poll"].as_u64().unwrap());
        seen.insert(key, e["args"]["poll_us"].as_f64().unwrap());
    }
    seen.into_iter().map(|((k, t, n), us)| (k, t, n, us)).collect()
}

#[test]
fn demo_polls_are_counted_timed_and_named() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.json");
    let demo = demo_app_path();
    // Launch mode: the runtime starts under the probes; run 3 s.
    let output = std::process::Command::new(PROFILER)
        .args(["record", "--no-live", "-o", out.to_str().unwrap(), "--", demo.to_str().unwrap(), "3"])
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    let trace = read_trace(&out);
    let all = polls(&trace);
    let of = |kind: &str| all.iter().filter(|p| p.0 == kind).collect::<Vec<_>>();

    // cpu_heavy_loop: one 30 ms poll every 500 ms, minus the 1 s idle phase.
    // (Emulated, its other polls can take milliseconds too: see `emulated`.)
    let long_us = if emulated() { 25_000.0 } else { 1_000.0 };
    let heavy: Vec<f64> = of("demo_app::cpu_heavy_loop").iter().map(|p| p.3).filter(|us| *us > long_us).collect();
    assert!((3..=7).contains(&heavy.len()), "heavy polls: {heavy:?}");
    assert!(heavy.iter().all(|us| (27_000.0..=upper_ms(40.0) * 1e3).contains(us)), "each burns ~30 ms: {heavy:?}");
    let events = trace["traceEvents"].as_array().unwrap();
    let marked = events.iter().filter(|e| e["cat"] == "poll,long_poll" && e["name"] == "demo_app::cpu_heavy_loop").count();
    assert!(marked >= heavy.len(), "long polls have a category of their own: {marked}");
    // blocking_loop: each long poll is the 40 ms sleep. Emulated, one of
    // its other polls once took 26.7 ms (5.10): there only polls long
    // enough to hold the sleep are looked at (a sleep never ends early).
    let sleep_floor = if emulated() { 38_000.0 } else { long_us };
    let blocking: Vec<f64> = of("demo_app::blocking_loop").iter().map(|p| p.3).filter(|us| *us > sleep_floor).collect();
    assert!(!blocking.is_empty() && blocking.iter().all(|us| (38_000.0..=upper_ms(60.0) * 1e3).contains(us)), "{blocking:?}");
    // short_task_loop spawns one task every 5 ms for ~2 s of active time:
    // a kind with hundreds of distinct tasks polled once each.
    let mut tasks_per_kind: HashMap<&str, (usize, usize)> = HashMap::new();
    for p in &all {
        let e = tasks_per_kind.entry(&p.0).or_default();
        e.0 += 1;
        e.1 = e.1.max(p.2 as usize);
    }
    let spawned = tasks_per_kind.values().filter(|(polls, max_n)| *polls >= 300 && *max_n == 1).count();
    assert_eq!(spawned, 1, "one kind of short-lived spawned task: {tasks_per_kind:?}");
    // Never sampled (a few µs each), still named: from its vtable's drop glue.
    let short = tasks_per_kind.get("demo_app::short_task_loop::{closure}").copied().unwrap_or_default();
    assert!(short.0 >= 300 && short.1 == 1, "spawned block named by its future type: {tasks_per_kind:?}");
    assert!(!tasks_per_kind.keys().any(|k| k.starts_with("task kind ")), "every kind named: {tasks_per_kind:?}\n{stderr}");
    // The ticking loop: one task polled hundreds of times.
    assert!(tasks_per_kind.values().any(|(_, max_n)| *max_n >= 300), "{tasks_per_kind:?}");
    // Tokio's workers run as spawn_blocking tasks; named as such.
    assert!(all.iter().any(|p| p.0.starts_with("spawn_blocking(")), "worker loop not recognised");
    assert!(stderr.contains("tasks (") && stderr.contains("demo_app::cpu_heavy_loop"), "{stderr}");
    // Spawn arrows: one per spawned task, each landing on a poll.
    let starts = events.iter().filter(|e| e["ph"] == "s" && e["cat"] == "spawn").count();
    let ends: Vec<&Value> = events.iter().filter(|e| e["ph"] == "f" && e["cat"] == "spawn").collect();
    assert!(starts >= 300 && starts == ends.len(), "spawn flows: {starts} starts, {} ends", ends.len());
    let poll_starts: std::collections::HashSet<(u64, String)> = events
        .iter()
        .filter(|e| is_poll(e))
        .map(|e| (e["tid"].as_u64().unwrap(), e["ts"].to_string()))
        .collect();
    assert!(ends.iter().all(|e| poll_starts.contains(&(e["tid"].as_u64().unwrap(), e["ts"].to_string()))), "every arrow ends on a poll");
    // Wake arrows: the tickers are woken by the timer hundreds of times,
    // each arrow landing on the next poll of the woken task.
    let wake_ends: Vec<&Value> = events.iter().filter(|e| e["ph"] == "f" && e["cat"] == "wake").collect();
    assert!(wake_ends.len() >= 300, "wake flows: {}", wake_ends.len());
    assert!(wake_ends.iter().all(|e| poll_starts.contains(&(e["tid"].as_u64().unwrap(), e["ts"].to_string()))), "every wake ends on a poll");
    // Workers by what they run (worker::run), with tokio's own indices.
    let rows: Vec<String> = events
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "thread_name")
        .map(|e| e["args"]["name"].as_str().unwrap().to_string())
        .collect();
    let workers: Vec<&str> = rows.iter().filter(|r| r.starts_with("worker ")).map(|r| &r[..8]).collect();
    assert_eq!(workers, ["worker 0", "worker 1"], "{rows:?}");
}

#[test]
fn a_yield_loop_is_n_polls_with_n_self_wakes() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.json");
    let n = 2_000;
    let demo = demo_app_path();
    let output = std::process::Command::new(PROFILER)
        .args(["record", "--no-live", "--polls", "on", "-o", out.to_str().unwrap(), "--", demo.to_str().unwrap(), "--yield-loop", &n.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("yield-loop ns-per-poll"), "the program's output passes through: {stdout}");
    let trace = read_trace(&out);
    let all = polls(&trace);
    let most = all.iter().map(|p| p.2).max().unwrap_or(0);
    assert_eq!(most, n + 1, "the yielding task: one poll per yield plus the last");
    // Named by its own future type, though its drop glue was merged with
    // the short task block's (see docs/design-notes.md).
    let kind = all.iter().find(|p| p.2 == most).map(|p| p.0.as_str());
    assert_eq!(kind, Some("demo_app::shapes::yield_loop::{closure}"));
    let events = trace["traceEvents"].as_array().unwrap();
    // Tokio's own id for the task, read from the task's memory, is the one
    // the task printed itself, on each of its polls.
    let printed: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("yield-loop task-id "))
        .and_then(|id| id.trim().parse().ok())
        .unwrap_or_else(|| panic!("no task id printed: {stdout}"));
    let mut ids: Vec<&Value> = events.iter().filter(|e| is_poll(e) && e["args"]["poll"] == most).map(|e| &e["args"]["tokio_task_id"]).collect();
    ids.dedup();
    assert_eq!(ids, vec![&Value::from(printed)], "the yielding task's last poll carries its Tokio id");
    let task = events.iter().find(|e| is_poll(e) && e["args"]["poll"] == most).unwrap()["args"]["task"].clone();
    let other_ids = events
        .iter()
        .filter(|e| is_poll(e) && e["args"]["task"] == task && e["args"]["tokio_task_id"] != printed)
        .count();
    assert_eq!(other_ids, 0, "every poll of that task has the same id");
    let arrows = |cat: &str| events.iter().filter(|e| e["ph"] == "s" && e["cat"] == cat).count() as u64;
    let (self_wakes, wakes) = (arrows("self-wake"), arrows("wake"));
    assert_eq!(self_wakes + wakes, n, "one wake arrow per yield");
    // A deferred wake after the thread blocked (a page fault in D state,
    // say) is not counted as a self-wake: allow a handful.
    assert!(self_wakes + 5 >= n, "each yield is a self-wake: {self_wakes} self, {wakes} other");
    let rows: Vec<&str> = events
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "thread_name")
        .map(|e| e["args"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(rows.iter().filter(|r| r.starts_with("worker ")).count(), 1, "one worker: {rows:?}");
}

#[test]
fn non_tokio_target_falls_back_to_threads() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.json");
    let output = std::process::Command::new(PROFILER)
        .args(["record", "--no-live", "-o", out.to_str().unwrap(), "--", "sleep", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(stderr.matches("no tokio::runtime::task::raw::poll").count(), 1, "said once: {stderr}");
    assert!(out.exists());
}

/// After the profiler exits, neither its programs nor its uprobes remain on
/// the target (which keeps running).
#[test]
fn probes_are_gone_after_exit() {
    require_root();
    let demo = Demo::start(30);
    demo.wait_for_workers(2);
    let pid = demo.pid().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.json");
    let status = std::process::Command::new(PROFILER)
        .args(["record", "--no-live", "--polls", "on", "-d", "1", "-p", &pid, "-o", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(status.status.code(), Some(0));
    // No uprobe of ours left in the kernel's list for this binary.
    let events = std::fs::read_to_string("/sys/kernel/tracing/uprobe_events").unwrap_or_default();
    assert!(!events.contains("demo-app"), "uprobes left behind:\n{events}");
    assert_no_probes_left();
}

/// After we exit, the target runs at its original speed: its own yield rate
/// before, while and after an attached recording with task probes.
#[test]
fn target_speed_is_back_after_we_exit() {
    use std::io::BufRead;
    require_root();
    let mut child = std::process::Command::new(demo_app_path())
        .args(["--yield-rate", "30"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel::<(std::time::Instant, f64)>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rate) = line.strip_prefix("yields/s ").and_then(|r| r.parse().ok()) {
                let _ = tx.send((std::time::Instant::now(), rate));
            }
        }
    });
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let collect = |secs: f64| {
        let until = std::time::Instant::now() + std::time::Duration::from_secs_f64(secs);
        let mut v = Vec::new();
        while let Ok((at, rate)) = rx.recv_timeout(std::time::Duration::from_secs(2)) {
            v.push(rate);
            if at >= until {
                break;
            }
        }
        v
    };
    let before = median(collect(2.0));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.rscope");
    let mut recorder = std::process::Command::new(PROFILER)
        .args(["record", "--no-live", "--no-stacks", "--polls", "on", "-d", "3", "-p", &pid.to_string(), "-o", out.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1_500));
    let _ = collect(0.1); // drop readings that straddle the attach
    let during = median(collect(1.0));
    assert!(recorder.wait().unwrap().success());
    let _ = collect(0.3); // and the detach
    // Alone, the loop's rate swings by a quarter on this VM (2.3–3.2 M/s
    // over tens of seconds, measured with no profiler around; CI failed
    // "after" at 0.77–0.80 of "before" twice). Our probes left in place
    // make it ~6x slower: the best of up to three windows must be over
    // 0.65 of the rate before.
    let mut after = 0.0_f64;
    for _ in 0..3 {
        after = after.max(median(collect(2.0)));
        if after > before * 0.65 {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    // Attached mid-run, with polls entered every microsecond: a poll whose
    // entry was probed must have its return probed too, or it stays open
    // for the whole window with every later poll nested inside it.
    let json = dir.path().join("t.json");
    let status = std::process::Command::new(PROFILER)
        .args(["export", out.to_str().unwrap(), "-o", json.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let all = polls(&read_trace(&json));
    let longest = all.iter().map(|p| p.3).fold(0.0, f64::max);
    assert!(all.len() > 1000 && longest < 100_000.0, "{} polls, the longest {longest:.0} µs", all.len());
    assert!(before > 0.0 && during < before * 0.6, "the probes must show while attached: before {before:.0}/s, during {during:.0}/s");
    assert!(after > before * 0.65, "back to full speed after we exit: before {before:.0}/s, after {after:.0}/s (during {during:.0}/s)");
    assert_no_probes_left();
}
