//! Targets as they are found on an ordinary day: rebuilt while running,
//! started through a wrapper, not a Tokio program at all.

mod common;

use common::*;
use scope_model::{Event, capture};
use std::path::Path;

fn load(path: &Path) -> capture::Loaded {
    capture::read(&std::fs::read(path).expect("capture written")).expect("capture readable")
}

fn build_id(path: &Path) -> String {
    use object::Object;
    let data = std::fs::read(path).unwrap();
    let file = object::File::parse(&*data).unwrap();
    file.build_id().unwrap().expect("rustc writes a build-id").iter().map(|b| format!("{b:02x}")).collect()
}

fn polls(rec: &scope_model::Recording) -> usize {
    rec.events.iter().filter(|e| matches!(e, Event::PollStart { .. })).count()
}

/// `cargo build` while the old server runs: the path now holds another
/// build. Probes, unwinding and names must come from the image that runs,
/// and a later export, with only the new file on disk, must say the module
/// cannot be named rather than name it from the wrong file.
#[test]
fn binary_rebuilt_while_running_is_read_as_it_runs() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    std::fs::copy(demo_app_path(), p("app")).unwrap();
    let demo = Demo::start_binary(&p("app"), 60);
    demo.wait_for_workers(2);
    // What a rebuild does: a new file renamed over the old path.
    std::fs::copy(debuginfo_demo_path(), p(".app.new")).unwrap();
    std::fs::rename(p(".app.new"), p("app")).unwrap();
    assert_ne!(build_id(&demo_app_path()), build_id(&p("app")), "the two builds differ");

    let (trace, kept) = (p("run.json"), p("run.rscope"));
    let pid = demo.pid().to_string();
    let (code, stdout, stderr) = profiler_output(&[
        "record", "--no-live", "-p", &pid, "-d", "2", "-o", trace.to_str().unwrap(), "--capture", kept.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(!stderr.contains("recording threads only") && !stderr.contains("cannot"), "{stderr}");
    let rec = load(&kept).recording;
    assert!(polls(&rec) > 50, "task probes attached to the running image: {} polls\n{stderr}", polls(&rec));
    let module = rec.modules.iter().find(|m| m.path == p("app").to_str().unwrap()).expect("the app is a module");
    assert_eq!(module.build_id.as_deref(), Some(build_id(&demo_app_path()).as_str()), "the build-id of what runs");
    let report = format!("{stdout}{stderr}");
    assert!(report.contains("demo_app::short_task_loop"), "kinds named from the running image:\n{report}");
    let json = std::fs::read_to_string(&trace).unwrap();
    assert!(json.contains("cpu_heavy_poll"), "stacks unwound and named from the running image");
    drop(demo);

    // Later, only the new build is on disk: no names from it.
    let later = p("later.json");
    let (code, stdout, stderr) = profiler_output(&["export", kept.to_str().unwrap(), "-o", later.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let said = format!("{stdout}{stderr}");
    assert!(said.contains(&format!("{} is not the binary that ran", p("app").display())), "{said}");
    let json = std::fs::read_to_string(&later).unwrap();
    assert!(!json.contains("demo_app::") && !json.contains("cpu_heavy_poll"), "nothing named from a different build");
    assert!(json.contains("[unknown] app+0x"), "frames say which module they are in");

    // With the recorded build back at the path, the same capture is named.
    std::fs::copy(demo_app_path(), p("app")).unwrap();
    let (code, _, stderr) = profiler_output(&["export", kept.to_str().unwrap(), "-o", later.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(std::fs::read_to_string(&later).unwrap().contains("cpu_heavy_poll"));
    assert_no_probes_left();
}

fn launched(args: &[&str]) -> (i32, String, capture::Loaded) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.rscope");
    let mut all = vec!["record", "--no-live", "-o", out.to_str().unwrap(), "--"];
    all.extend(args);
    let (code, stdout, stderr) = profiler_output(&all);
    assert!(out.exists(), "{stdout}\n{stderr}");
    (code, stderr, load(&out))
}

/// `record -- env X=1 app` and `-- sh -c "exec app"`: the probes follow the
/// exec into the program that runs (they sat on env / sh, and every poll
/// was lost); a program started as a child is said not to be followed.
#[test]
fn exec_through_a_wrapper_is_followed() {
    require_root();
    let demo = demo_app_path().canonicalize().unwrap();
    let demo = demo.to_str().unwrap();
    let (code, stderr, loaded) = launched(&["env", "RUST_LOG=x", demo, "2"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains(&format!("executed {demo}: task probes moved to it")), "one line says so:\n{stderr}");
    assert!(polls(&loaded.recording) > 100, "polls recorded after the exec: {}\n{stderr}", polls(&loaded.recording));
    assert!(loaded.recording.all_modules().iter().any(|m| m.path == demo), "the new image's modules are in the capture");

    let exec = format!("exec {demo} 2");
    let (code, stderr, loaded) = launched(&["sh", "-c", &exec]);
    assert_eq!(code, 0, "{stderr}");
    assert!(polls(&loaded.recording) > 100, "{stderr}");

    let child = format!("{demo} 1; true");
    let (code, stderr, loaded) = launched(&["sh", "-c", &child]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("the target started 1 child process, not recorded"), "{stderr}");
    assert_eq!(polls(&loaded.recording), 0);
    assert_no_probes_left();
}

/// A kernel thread or a zombie runs no program: one line, exit 2, before
/// anything is attached (they were recorded as an empty success). So is a
/// `-t` the process does not map (0 polls, silently).
#[test]
fn targets_that_run_no_tokio_program_are_refused() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.pftrace");
    let out = out.to_str().unwrap();
    let (code, _, stderr) = profiler_output(&["record", "-p", "2", "-d", "1", "-o", out]);
    assert_eq!((code, stderr.lines().count()), (2, 1), "{stderr}");
    assert!(stderr.contains("2 is a kernel thread"), "{stderr}");

    let mut zombie = std::process::Command::new("true").spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200)); // exited, not reaped
    let (code, _, stderr) = profiler_output(&["record", "-p", &zombie.id().to_string(), "-d", "1", "-o", out]);
    zombie.wait().unwrap();
    assert_eq!((code, stderr.lines().count()), (2, 1), "{stderr}");
    assert!(stderr.contains("has exited (a zombie"), "{stderr}");

    let demo = Demo::start(30);
    let pid = demo.pid().to_string();
    for args in [vec!["--pid", &pid, "-t", "/bin/true", "-d", "1"], vec!["record", "-p", &pid, "-t", "/bin/true", "-d", "1", "-o", out]] {
        let (code, _, stderr) = profiler_output(&args);
        assert_eq!((code, stderr.lines().count()), (2, 1), "{stderr}");
        assert!(stderr.contains("does not map this file"), "{stderr}");
    }
    assert!(!Path::new(out).exists());
}
