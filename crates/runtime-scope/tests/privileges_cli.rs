//! Running without root: with CAP_BPF and CAP_PERFMON but no read access
//! to tracefs (root-only by default), the error says exactly that; it said
//! "tracefs is not mounted" and sent users the wrong way.

mod common;

use common::*;
use std::os::unix::process::CommandExt;
use std::process::Command;

#[test]
fn capabilities_without_tracefs_access_are_told_apart_from_no_tracefs() {
    require_root(); // to set capabilities and switch users
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata("/sys/kernel/tracing").expect("tracefs is mounted here").permissions().mode();
    assert_eq!(mode & 0o005, 0, "this test needs tracefs unreadable by others (the default, mode 700); it is {mode:o}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.path().join("runtime-scope");
    std::fs::copy(profiler_bin(), &copy).unwrap();
    let setcap = Command::new("setcap").args(["cap_bpf,cap_perfmon+ep", copy.to_str().unwrap()]).status().expect("setcap (libcap2-bin)");
    assert!(setcap.success(), "setcap failed");
    let outputs = dir.path().join("out");
    std::fs::create_dir(&outputs).unwrap();
    std::fs::set_permissions(&outputs, std::fs::Permissions::from_mode(0o777)).unwrap();
    let trace = outputs.join("t.json");
    let demo = Demo::start(30);
    let out = Command::new(&copy)
        .args(["record", "-p", &demo.pid().to_string(), "-d", "1", "-o", trace.to_str().unwrap()])
        .current_dir(dir.path())
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("tracefs is mounted at /sys/kernel/tracing but this user (uid 65534) cannot read it"), "{err}");
    assert!(!err.contains("not mounted"), "{err}");
}
