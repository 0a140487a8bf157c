//! `record` / `export` / `report` end to end on the real kernel: launch mode,
//! the capture round trip, exit statuses, and a recorder killed mid-way.

mod common;

use common::*;
use scope_model::{Event, StopReason, capture};
use std::process::Command;

fn profiler(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(PROFILER).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn load(path: &std::path::Path) -> capture::Loaded {
    capture::read(&std::fs::read(path).expect("capture written")).expect("capture readable")
}

#[test]
fn launch_mode_sees_the_program_from_its_first_instruction() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.rscope");
    let demo = demo_app_path();
    let (code, stdout, stderr) =
        profiler(&["record", "--no-live", "-o", out.to_str().unwrap(), "--", demo.to_str().unwrap(), "2"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("demo-app pid"), "the program's stdout passes through: {stdout}");
    assert!(stderr.contains("exited normally"), "{stderr}");
    let loaded = load(&out);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let rec = loaded.recording;
    assert_eq!(rec.stop_reason, StopReason::TargetExited);
    assert_eq!(rec.command, "demo-app");
    assert_eq!(rec.threads.len(), 1, "attached while only the main thread existed");
    assert_eq!(rec.threads[0].name, "demo-app");
    assert_eq!(rec.launch.as_ref().and_then(|l| l.exit_status), Some(0));
    // Tokio's workers were created after we attached: we saw them born.
    let born: Vec<&str> = rec
        .events
        .iter()
        .filter(|e| matches!(e, Event::NewThread { .. }))
        .filter_map(|e| match e {
            Event::NewThread { tid, .. } => rec.events.iter().rev().find_map(|r| match r {
                Event::Rename { tid: t, name, .. } if t == tid => Some(name.as_str()),
                _ => None,
            }),
            _ => None,
        })
        .collect();
    let events_of_threads: Vec<&Event> =
        rec.events.iter().filter(|e| matches!(e, Event::NewThread { .. } | Event::Rename { .. } | Event::Exit { .. })).collect();
    assert_eq!(born.iter().filter(|n| **n == "tokio-rt-worker").count(), 2, "{born:?} from {events_of_threads:?}\n{stderr}");
    assert!(rec.modules.iter().any(|m| m.path.ends_with("/demo-app") && m.build_id.is_some()), "{:?}\n{stderr}", rec.modules);
    // And the report reads it back without root's help.
    let (code, stdout, _) = profiler(&["report", out.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(stdout.contains("worker 0") && stdout.contains("worker 1"), "{stdout}");
}

/// The done-when: a Perfetto trace recorded from a launched
/// program, and the capture kept beside it re-exported after the program
/// is gone, are the same bytes; the trace reads back as the viewer reads it.
#[test]
fn capture_round_trip_equals_direct_export() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let demo = demo_app_path();
    let (code, stdout, stderr) = profiler(&[
        "record", "--no-live", "-o", &p("direct.pftrace"), "--capture", &p("kept.rscope"), "--", demo.to_str().unwrap(), "2",
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stderr.contains("Capture kept in"), "{stderr}");
    let kept = p("kept.rscope");
    for (name, format) in [("again.pftrace", None), ("again.json", None), ("again.trace", Some("chrome"))] {
        let out = p(name);
        let mut args = vec!["export", &kept[..], "-o", &out[..]];
        if let Some(f) = format {
            args.extend(["--format", f]);
        }
        let (code, stdout, stderr) = profiler(&args);
        assert_eq!(code, 0, "{stdout}\n{stderr}");
    }
    let direct = std::fs::read(p("direct.pftrace")).unwrap();
    assert_eq!(direct, std::fs::read(p("again.pftrace")).unwrap(), "export of the capture differs from the direct trace");
    let json = std::fs::read(p("again.json")).unwrap();
    assert_eq!(json, std::fs::read(p("again.trace")).unwrap(), "--format chrome writes what .json does");
    let d = scope_export::perfetto::readback::read(&direct).unwrap_or_else(|e| panic!("the trace reads back: {e}"));
    assert!(d.tracks.values().any(|n| n.starts_with("worker 0 (tid ")) && d.tracks.values().any(|n| n.starts_with("worker 1 (tid ")), "{:?}", d.tracks);
    assert!(d.slices.iter().any(|s| s.name == "demo_app::short_task_loop::{closure}"), "polls named by kind");
    assert!(d.slices.iter().any(|s| !s.flows.is_empty()), "arrows");
    assert!(!d.runs.is_empty() && !d.wakings.is_empty(), "sched data");
    // No temporary files left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
}

#[test]
fn launched_program_exit_status_is_ours() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.json");
    let (code, _, stderr) = profiler(&["record", "--no-live", "-o", out.to_str().unwrap(), "--", "sh", "-c", "exit 3"]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("exited with status 3"), "{stderr}");
    assert!(out.exists(), "trace still written");
    let (code, _, stderr) = profiler(&["record", "-o", out.to_str().unwrap(), "--", "no-such-program-xyz"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("cannot run no-such-program-xyz: not found in PATH"), "{stderr}");
}

#[test]
fn recorder_killed_mid_way_leaves_a_readable_capture() {
    require_root();
    let demo = Demo::start(30);
    demo.wait_for_workers(2);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("k.rscope");
    let pid = demo.pid().to_string();
    let mut run = Run::start(&["record", "--no-live", "-p", &pid, "-o", out.to_str().unwrap()]);
    run.wait_for_line("runtime-scope: recording");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    run.child.kill().unwrap(); // SIGKILL: no chance to finish the file
    run.child.wait().unwrap();
    assert!(!out.exists(), "a capture never appears half-written under its final name");
    let tmp = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with(".k.rscope.tmp"))
        .expect("the in-progress capture stays on disk");
    let loaded = load(&tmp);
    assert_eq!(loaded.recording.stop_reason, StopReason::Incomplete);
    assert!(loaded.recording.events.len() > 50, "{} events", loaded.recording.events.len());
    assert!(loaded.warnings.iter().any(|w| w.contains("no stop record")), "{:?}", loaded.warnings);
    let (code, stdout, stderr) = profiler(&["report", tmp.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("no stop record") && stdout.contains("recording incomplete"), "{stdout}{stderr}");
    assert_no_probes_left();
}
