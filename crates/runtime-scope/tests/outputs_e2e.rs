//! Outputs that are not regular files: a FIFO or a device is written in
//! place, `/dev/stdout` pipes the trace, and nothing that is not a regular
//! file is ever renamed over (as root, `--capture /dev/null` replaced the
//! system's /dev/null with a 0600 file).

mod common;

use common::*;
use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::{Command, Stdio};

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// Safe to run against an older build: only files in a temporary directory.
#[test]
fn a_fifo_is_written_in_place_and_a_symlink_is_not_replaced() {
    require_root();
    let demo = Demo::start(60);
    demo.wait_for_workers(2);
    let pid = demo.pid().to_string();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("trace.json");
    mkfifo(&fifo);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            std::fs::File::open(&fifo).unwrap().read_to_string(&mut text).unwrap();
            text
        })
    };
    let (code, _, stderr) = profiler_output(&["record", "--no-live", "-p", &pid, "-d", "1", "-o", fifo.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(), "still a FIFO");
    let trace: serde_json::Value = serde_json::from_str(&reader.join().unwrap()).expect("the reader got the whole trace");
    assert!(!thread_names(&trace).is_empty());

    let real = dir.path().join("real.json");
    std::fs::write(&real, b"keep me").unwrap();
    let link = dir.path().join("link.json");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let (code, _, stderr) = profiler_output(&["record", "--no-live", "-p", &pid, "-d", "1", "-o", link.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("is a symbolic link"), "{stderr}");
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read(&real).unwrap(), b"keep me");
    assert_no_probes_left();
}

/// `-o /dev/null`, `--capture /dev/null` and `-o /dev/stdout` (pipe the
/// trace): written to, never replaced. Not for older builds: they replace
/// the system's /dev/null and /dev/stdout.
#[test]
fn devices_and_our_stdout_are_written_not_replaced() {
    require_root();
    let demo = Demo::start(60);
    demo.wait_for_workers(2);
    let pid = demo.pid().to_string();
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.pftrace");
    let (code, _, stderr) = profiler_output(&[
        "record", "--no-live", "-p", &pid, "-d", "1", "-o", "/dev/null", "--format", "chrome",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = profiler_output(&[
        "record", "--no-live", "-p", &pid, "-d", "1", "-o", trace.to_str().unwrap(), "--capture", "/dev/null",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(trace.exists(), "{stderr}");
    let null = std::fs::metadata("/dev/null").unwrap();
    assert!(null.file_type().is_char_device(), "/dev/null is still the device");
    assert!(std::fs::read_dir("/dev").unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().contains(".tmp-")));

    let out = Command::new(profiler_bin())
        .args(["record", "--no-live", "-p", &pid, "-d", "1", "-o", "/dev/stdout", "--format", "perfetto"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let piped = scope_export::perfetto::readback::read(&out.stdout).unwrap_or_else(|e| panic!("the piped trace reads back: {e}"));
    assert!(!piped.runs.is_empty());
    assert!(std::fs::symlink_metadata("/dev/stdout").unwrap().file_type().is_symlink(), "/dev/stdout is still a link");
    assert_no_probes_left();
}

/// The final write fails (disk full: /dev/full): the recording survives,
/// and the error says where.
#[test]
fn a_failed_write_says_where_the_capture_is() {
    require_root();
    let demo = Demo::start(60);
    demo.wait_for_workers(2);
    let pid = demo.pid().to_string();
    let (code, _, stderr) = profiler_output(&["record", "--no-live", "-p", &pid, "-d", "1", "-o", "/dev/full", "--format", "chrome"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    let kept = stderr.split("the capture is kept in ").nth(1).and_then(|s| s.split(';').next()).unwrap_or_else(|| panic!("{stderr}"));
    let bytes = std::fs::read(kept).unwrap_or_else(|e| panic!("{kept}: {e}"));
    let loaded = scope_model::capture::read(&bytes).expect("the kept capture reads");
    assert!(!loaded.recording.events.is_empty());
    assert!(!Path::new(kept).file_name().unwrap().to_string_lossy().starts_with('.'), "visible: {kept}");
    std::fs::remove_file(kept).unwrap();
    assert_no_probes_left();
}
