//! Every way a recording ends keeps what was recorded: a closed stdout or
//! stderr, a closed terminal (SIGHUP), Ctrl-C while the trace is written;
//! and a program we started is never left running behind us.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn alive(pid: u32) -> bool {
    // A zombie waiting for its parent (us) is gone for this purpose.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
}

/// The pid in `recording demo-app (pid N, …)`.
fn recorded_pid(line: &str) -> u32 {
    line.split("(pid ").nth(1).and_then(|s| s.split([',', ')']).next()).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{line}"))
}

fn hidden_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).filter(|n| n.starts_with('.')).collect()
}

fn assert_perfetto_trace(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let trace = scope_export::perfetto::readback::read(&bytes).unwrap_or_else(|e| panic!("the trace reads back: {e}"));
    assert!(!trace.runs.is_empty(), "the trace holds the recording");
}

/// `record … -- app | head -1`: stdout is the program's; ours never goes
/// there, so its reader leaving changes nothing for the recording.
#[test]
fn closed_stdout_does_not_lose_the_recording() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.pftrace");
    let demo = demo_app_path();
    let mut child = Command::new(profiler_bin())
        .args(["record", "--no-live", "-d", "3", "-o", trace.to_str().unwrap(), "--", demo.to_str().unwrap(), "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.starts_with("demo-app pid"), "the program's own line: {first}");
    drop(stdout); // `head -1` is done
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let status = child.wait().unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(status.code(), Some(143), "the program's status (SIGTERM at -d), as `time` reports it:\n{stderr}");
    assert!(stderr.contains("Trace written to"), "{stderr}");
    assert_perfetto_trace(&trace);
    let pid = recorded_pid(stderr.lines().find(|l| l.contains("runtime-scope: recording")).unwrap());
    assert!(!alive(pid), "the launched program is gone");
    assert_no_probes_left();
}

/// `record … 2>&1 | head -1`: whoever reads our messages left. That is a
/// clean stop: the trace is written, the program we started is stopped.
#[test]
fn closed_stderr_stops_cleanly_with_the_trace_written() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.pftrace");
    let demo = demo_app_path();
    let started = Instant::now();
    let mut child = Command::new(profiler_bin())
        .args(["record", "-o", trace.to_str().unwrap(), "--", demo.to_str().unwrap(), "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("runtime-scope: recording") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "no recording line");
    }
    let pid = recorded_pid(&line);
    drop(stderr); // the reader is gone: the next live line meets EPIPE
    let status = child.wait().unwrap();
    assert!(started.elapsed() < Duration::from_secs(20), "stopped at the next line, not at the program's end");
    assert_ne!(status.code(), Some(101), "no panic");
    assert_eq!(status.code(), Some(143), "the program was stopped (SIGTERM) and its status passed on");
    assert_perfetto_trace(&trace);
    assert!(hidden_files(dir.path()).is_empty(), "{:?}", hidden_files(dir.path()));
    assert!(!alive(pid), "the launched program is not left behind");
    assert_no_probes_left();
}

/// The terminal closed: SIGHUP stops the recording like SIGTERM, with the
/// trace written and no temporary file left (it exited 129 with neither).
#[test]
fn sighup_stops_like_sigterm() {
    require_root();
    let demo = Demo::start(60);
    demo.wait_for_workers(2);
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.pftrace");
    let pid = demo.pid().to_string();
    let mut run = Run::start(&["record", "--no-live", "-p", &pid, "-o", trace.to_str().unwrap()]);
    run.wait_for_line("runtime-scope: recording");
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: signalling the child we started.
    unsafe { libc::kill(run.child.id() as i32, libc::SIGHUP) };
    let (code, stdout, stderr) = run.finish();
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stderr.contains("stopped after") && stderr.contains("Trace written to"), "{stderr}");
    assert_perfetto_trace(&trace);
    assert!(hidden_files(dir.path()).is_empty(), "{:?}", hidden_files(dir.path()));
    assert!(alive(demo.pid()), "an attached program is left as it was");
    assert_no_probes_left();
}

/// Ctrl-C while the trace is written: the first is acknowledged and the
/// export finishes; a second abandons it, says so, and keeps the capture
/// under a visible name.
#[test]
fn ctrl_c_during_the_export_is_answered() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let demo = debuginfo_demo_path();
    let sigint = |run: &Run| unsafe { libc::kill(run.child.id() as i32, libc::SIGINT) };

    let once = dir.path().join("once.pftrace");
    let mut run = Run::start(&["record", "--no-live", "-o", once.to_str().unwrap(), "--", demo.to_str().unwrap(), "2"]);
    run.wait_for_line("runtime-scope: symbolizing");
    sigint(&run);
    let (code, _, stderr) = run.finish();
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("finishing the export; Ctrl-C again to abandon it"), "{stderr}");
    assert_perfetto_trace(&once);

    let twice = dir.path().join("twice.pftrace");
    let mut run = Run::start(&["record", "--no-live", "-o", twice.to_str().unwrap(), "--", demo.to_str().unwrap(), "2"]);
    run.wait_for_line("runtime-scope: symbolizing");
    sigint(&run);
    // Signals of one kind are not queued: the second only after the first was seen.
    run.wait_for_line("Ctrl-C again to abandon");
    sigint(&run);
    let (code, _, stderr) = run.finish();
    assert_eq!(code, 130, "{stderr}");
    let said = stderr.lines().find(|l| l.contains("abandoned writing")).unwrap_or_else(|| panic!("{stderr}"));
    let kept = dir.path().join("twice.pftrace.rscope");
    assert!(said.contains(kept.to_str().unwrap()), "{said}");
    let capture = scope_model::capture::read(&std::fs::read(&kept).unwrap()).expect("the kept capture reads");
    assert!(capture.warnings.is_empty() && !capture.recording.events.is_empty(), "{:?}", capture.warnings);
    assert!(!twice.exists(), "no half-written trace under the final name");
    assert!(hidden_files(dir.path()).is_empty(), "{:?}", hidden_files(dir.path()));
    assert_no_probes_left();
}
