//! `runtime-scope top` in a real terminal (tmux) against the running demo:
//! the worker lanes, task names and long polls appear; `w` writes a
//! snapshot of the window; `q` exits 0 with the terminal restored and the
//! `--record` capture and the snapshot readable.

mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

const SESSION: &str = "runtime-scope-top-test";

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux").args(args).output().expect("tmux is installed by `cargo xtask setup`");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pane() -> String {
    tmux(&["capture-pane", "-t", SESSION, "-p"])
}

/// Polls the pane until `ok` holds or `secs` pass; returns the last screen.
fn wait_for(secs: u64, ok: impl Fn(&str) -> bool) -> (bool, String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let screen = pane();
        if ok(&screen) || Instant::now() > deadline {
            return (ok(&screen), screen);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

struct Session;

impl Drop for Session {
    fn drop(&mut self) {
        tmux(&["kill-session", "-t", SESSION]);
    }
}

#[test]
fn top_shows_workers_tasks_and_long_polls_then_quits_cleanly() {
    require_root();
    let demo = Demo::start(30);
    demo.wait_for_workers(2);
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("watched.rscope");
    tmux(&["kill-session", "-t", SESSION]);
    let snapshot = dir.path().join("snap-%n.rscope");
    let command =
        format!("{PROFILER} top -p {} --record {} --snapshot {}; echo EXITED $?; sleep 60", demo.pid(), capture.display(), snapshot.display());
    let status = Command::new("tmux")
        .args(["new-session", "-d", "-s", SESSION, "-x", "150", "-y", "40", "sh", "-c", &command])
        .status()
        .unwrap();
    assert!(status.success(), "tmux new-session failed");
    let _session = Session;

    // Within a few seconds: both lanes, the heavy task by name, its long
    // polls, and the blocking poll with its call (waited for too: the
    // dashboard can be complete but for it within a second).
    let (ok, screen) = wait_for(10, |s| {
        s.contains("worker 0 (tid")
            && s.contains("worker 1 (tid")
            && s.contains("demo_app::cpu_heavy_loop")
            && s.contains("cpu_heavy_poll")
            && s.contains("block_in_syscall")
    });
    assert!(ok, "dashboard incomplete (lanes, the heavy task, its polls, the blocking poll's call):\n{screen}");
    assert!(screen.contains('█'), "busy cells on the lanes:\n{screen}");
    assert!(!screen.contains("recording…"), "our progress lines must not scribble on the dashboard:\n{screen}");

    // Help, then the details of the first long poll, then back.
    tmux(&["send-keys", "-t", SESSION, "?"]);
    let (ok, screen) = wait_for(5, |s| s.contains("keys (esc closes)"));
    assert!(ok, "? shows the keys:\n{screen}");
    tmux(&["send-keys", "-t", SESSION, "Escape", "Tab", "Enter"]);
    let (ok, screen) = wait_for(5, |s| s.contains("details (esc closes)") && s.contains(" poll of "));
    assert!(ok, "enter shows the selected long poll:\n{screen}");
    tmux(&["send-keys", "-t", SESSION, "Escape"]);
    // `w`: the last --window seconds, written while the dashboard goes on.
    tmux(&["send-keys", "-t", SESSION, "w"]);
    let (ok, screen) = wait_for(20, |s| s.contains("snapshot 1 written to"));
    assert!(ok, "w writes a snapshot:\n{screen}");
    // A resize redraws at the new size.
    tmux(&["resize-window", "-t", SESSION, "-x", "100", "-y", "30"]);
    let (ok, screen) = wait_for(5, |s| s.lines().any(|l| l.starts_with('└') && l.chars().count() == 100));
    assert!(ok, "redrawn at 100 columns:\n{screen}");

    tmux(&["send-keys", "-t", SESSION, "q"]);
    let (ok, screen) = wait_for(15, |s| s.contains("EXITED"));
    assert!(ok, "q did not exit:\n{screen}");
    assert!(screen.contains("EXITED 0"), "{screen}");
    assert!(!screen.contains("latest long polls"), "the terminal was not restored:\n{screen}");
    assert!(screen.contains("runtime-scope: recording demo-app"), "held messages are shown after exit:\n{screen}");

    let report = Command::new(PROFILER).arg("report").arg(&capture).output().unwrap();
    let text = String::from_utf8_lossy(&report.stdout);
    assert!(report.status.success() && text.contains("demo_app::cpu_heavy_loop"), "the recorded capture reads back:\n{text}");
    let report = Command::new(PROFILER).arg("report").arg(dir.path().join("snap-1.rscope")).output().unwrap();
    let text = String::from_utf8_lossy(&report.stdout);
    assert!(report.status.success() && text.contains("flight-recorder snapshot") && text.contains("demo_app::cpu_heavy_loop"), "the snapshot reads back:\n{text}");
    assert_no_probes_left();
}
