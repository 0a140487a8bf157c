//! `report` and `export` on captures made here (no root, no kernel): what
//! they decide from what a capture holds, and what they refuse to write.

mod common;

use common::*;
use scope_model::{Event, Recording, StopReason, ThreadInfo, capture};
use std::path::{Path, PathBuf};

/// A 1 s recording of one worker switching twice; `probes` says what was
/// probed (what `record` writes).
fn recording(probes: &[&str]) -> Recording {
    let switch = |ts, prev, next, state| Event::Switch {
        ts,
        cpu: 0,
        prev_tid: prev,
        next_tid: next,
        prev_state: state,
        prev_ours: prev != 0,
        next_ours: next != 0,
        cpu_lost: 0,
    };
    Recording {
        tool_version: "test".into(),
        pid: 40,
        command: "quiet".into(),
        executable: "/nonexistent/quiet".into(),
        start_ns: 1_000_000_000,
        end_ns: 2_000_000_000,
        stop_reason: StopReason::Duration,
        lost_events: 0,
        untracked_threads: 0,
        threads: vec![ThreadInfo { tid: 41, name: "tokio-rt-worker".into(), cpu_ns_at_start: Some(0), cpu_ns_at_stop: Some(1_000) }],
        events: vec![switch(1_100_000_000, 0, 41, 0), switch(1_100_500_000, 41, 0, 1)],
        modules: vec![],
        probes: probes.iter().map(|p| p.to_string()).collect(),
        launch: None,
    }
}

fn write_capture(dir: &Path, name: &str, rec: &Recording) -> PathBuf {
    let path = dir.join(name);
    capture::write_recording(rec, std::fs::File::create(&path).unwrap()).unwrap();
    path
}

/// A quiet program is not a failure: with task probes on and nothing
/// polled, `--fail-over` passes (and says why); a capture recorded without
/// task probes cannot pass a gate on polls.
#[test]
fn fail_over_passes_a_quiet_program_and_fails_a_capture_without_task_probes() {
    let dir = tempfile::tempdir().unwrap();
    let quiet = write_capture(dir.path(), "quiet.rscope", &recording(&["uprobe:tokio::runtime::task::raw::poll ×4"]));
    let (code, stdout, stderr) = profiler_output(&["report", quiet.to_str().unwrap(), "--fail-over", "10"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stderr.contains("no task was polled in the window"), "{stderr}");
    assert!(stdout.contains("no task was polled in the window") && !stdout.contains("--no-tasks"), "{stdout}");

    let blind = write_capture(dir.path(), "blind.rscope", &recording(&["off:tasks (--no-tasks)"]));
    let (code, stdout, stderr) = profiler_output(&["report", blind.to_str().unwrap(), "--fail-over", "10"]);
    assert_eq!(code, 3, "{stdout}{stderr}");
    assert!(stderr.contains("recorded without task probes"), "{stderr}");
}

/// An output that is the input, or two outputs that are one file, would
/// destroy the capture: refused before anything is written.
#[test]
fn outputs_that_destroy_the_capture_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let capture = write_capture(dir.path(), "same.rscope", &recording(&[]));
    let before = std::fs::read(&capture).unwrap();
    let path = capture.to_str().unwrap();
    let (code, _, stderr) = profiler_output(&["export", path, "-o", path]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("is also the capture being read"), "{stderr}");
    std::fs::hard_link(&capture, dir.path().join("alias.rscope")).unwrap();
    let alias = dir.path().join("alias.rscope");
    let (code, _, stderr) = profiler_output(&["export", path, "-o", alias.to_str().unwrap()]);
    assert_eq!(code, 2, "the same file under another name: {stderr}");
    assert_eq!(std::fs::read(&capture).unwrap(), before, "the capture is intact");

    let both = dir.path().join("both.json");
    let (code, _, stderr) = profiler_output(&["record", "-p", "1", "-o", both.to_str().unwrap(), "--capture", both.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("is also the --capture file"), "{stderr}");
}

/// `sudo runtime-scope record …` then `runtime-scope export …` as yourself:
/// outputs made under sudo belong to the user who ran sudo.
#[test]
fn outputs_made_under_sudo_belong_to_the_user() {
    require_root(); // to give files away at all
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let capture = write_capture(dir.path(), "run.rscope", &recording(&[]));
    let out = dir.path().join("run.json");
    let status = std::process::Command::new(profiler_bin())
        .args(["export", capture.to_str().unwrap(), "-o", out.to_str().unwrap()])
        .env("SUDO_UID", "65534")
        .env("SUDO_GID", "65533")
        .status()
        .unwrap();
    assert!(status.success());
    let meta = std::fs::metadata(&out).unwrap();
    assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o777), (65534, 65533, 0o600));
}

/// The CLI says the same things the same way everywhere (issue 16 item
/// 16): every option has help, the cost per poll is one figure, `top`
/// keeps only captures, and takes -d like `record`, which takes -t.
#[test]
fn every_option_is_explained_and_consistent() {
    let help = |args: &[&str]| profiler_output(args).1;
    for command in ["top", "export", "report", "record"] {
        let text = help(&[command, "--help"]);
        assert!(text.contains("--workers <PREFIX>") && text.contains("Thread-name prefix of runtime workers"), "{command}: {text}");
    }
    assert!(help(&["export", "--help"]).contains("Output format, overriding the extension of -o"));
    assert!(help(&["top", "--help"]).contains("-d, --duration <SECONDS>"));
    assert!(help(&["record", "--help"]).contains("-t, --target <PATH>"));
    let record = help(&["record", "--help"]);
    assert!(record.contains("1.9 µs per poll"), "the figure BENCHMARKS.md measured: {record}");
    assert!(record.contains("starts") && record.contains("about 0.9 µs"), "poll starts alone, as BENCHMARKS.md measured them: {record}");
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("watched.json");
    let (code, _, stderr) = profiler_output(&["top", "-p", "1", "--record", json.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("keeps a capture: give it a .rscope name"), "{stderr}");
}
