//! Bad input: each case ends with one clear line, a non-zero exit (2 for
//! usage, 1 for runtime failures) and the target untouched.

mod common;

use common::*;
use std::os::unix::process::CommandExt;
use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(PROFILER).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn rejects_zero_and_absurd_durations() {
    let me = std::process::id().to_string();
    for bad in ["0", "100000", "-3", "soon"] {
        let (code, err) = run(&["--pid", &me, &format!("--duration={bad}")]);
        assert_eq!(code, 2, "--duration {bad}: {err}");
        assert!(err.contains("--duration"), "{err}");
    }
}

#[test]
fn missing_process_is_a_usage_error() {
    let (code, err) = run(&["--pid", "999999999", "--duration", "1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no process with pid 999999999"), "{err}");
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
}

#[test]
fn thread_id_is_not_a_process() {
    let handle = std::thread::spawn(|| {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        std::thread::sleep(std::time::Duration::from_millis(500));
        tid
    });
    std::thread::sleep(std::time::Duration::from_millis(100));
    let tid = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|&t| t != std::process::id())
        .unwrap();
    let (code, err) = run(&["--pid", &tid.to_string(), "--duration", "1"]);
    handle.join().unwrap();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is a thread of process"), "{err}");
}

#[test]
fn unwritable_trace_path_fails_before_recording() {
    let me = std::process::id().to_string();
    let (code, err) = run(&["--pid", &me, "--trace", "--trace-output", "/nonexistent-dir/t.json"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot write /nonexistent-dir/t.json"), "{err}");
    assert!(!err.contains("recording"), "must fail before attaching: {err}");
}

#[test]
fn unprivileged_user_is_told_to_use_root() {
    require_root(); // to switch to an unprivileged uid at all
    // The build tree may not be reachable by `nobody`: run a copy.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let copy = dir.path().join("runtime-scope");
    std::fs::copy(PROFILER, &copy).unwrap();
    let demo = Demo::start(30);
    let out = Command::new(&copy)
        .args(["--pid", &demo.pid().to_string(), "--duration", "1"])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("needs root") && err.contains("CAP_BPF"), "{err}");
}

#[test]
fn non_tokio_process_is_recorded_with_a_warning() {
    require_root();
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let (code, err) = run(&["--pid", &sleeper.id().to_string(), "--duration", "1", "--no-live"]);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("no Tokio worker threads found"), "{err}");
}
