//! What a recording says about the kernel it ran on agrees with what that
//! kernel has (`runtime-scope check`), and with what the trace holds. Runs
//! on whatever kernel runs the tests: the kernel matrix (`cargo xtask
//! test-kernels`) runs it in each guest, from 5.10 on.

mod common;

use common::*;
use std::process::Command;

#[test]
fn a_recording_says_what_this_kernel_lacks_and_loses_only_that() {
    require_root();
    let check = Command::new(PROFILER).arg("check").output().unwrap();
    let listing = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(check.status.success(), "check failed: {listing}{}", String::from_utf8_lossy(&check.stderr));
    // "  no   uprobe-cookies     BPF cookies on uprobes (Linux 5.15+): Tokio task ids are left out (…)"
    let features: Vec<(bool, &str, &str)> = listing
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let present = match words.next()? {
                "yes" => true,
                "no" => false,
                _ => return None,
            };
            let key = words.next()?;
            Some((present, key, l.split_once(key)?.1.trim()))
        })
        .collect();
    assert!(features.iter().any(|f| f.1 == "uprobe-cookies"), "{listing}");

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.json");
    let demo = demo_app_path();
    let output = Command::new(PROFILER)
        .args(["record", "--no-live", "-o", out.to_str().unwrap(), "--", demo.to_str().unwrap(), "2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let release = listing.split_whitespace().nth(1).unwrap().trim_end_matches(':');
    let notes: Vec<&str> = stderr.lines().filter_map(|l| l.strip_prefix(&format!("runtime-scope: kernel {release}: no "))).collect();
    // Each note is one line naming a feature `check` says is missing.
    for note in &notes {
        assert!(features.iter().any(|(present, _, text)| !present && text == note), "note {note:?} is not a missing feature of:\n{listing}");
    }
    // No cookies: no task ids, and the recording said so; cookies: ids.
    let cookies = features.iter().find(|f| f.1 == "uprobe-cookies").unwrap().0;
    let said = notes.iter().any(|n| n.starts_with("BPF cookies on uprobes"));
    let trace = read_trace(&out);
    let ids = trace["traceEvents"].as_array().unwrap().iter().filter(|e| e["args"]["tokio_task_id"].is_u64()).count();
    let polls = trace["traceEvents"].as_array().unwrap().iter().filter(|e| e["cat"].as_str().is_some_and(|c| c.starts_with("poll"))).count();
    assert!(polls > 100, "polls are recorded either way: {polls}");
    if cookies {
        assert!(!said && ids > 100, "cookies: {ids} polls with Tokio task ids; notes {notes:?}");
    } else {
        assert!(said && ids == 0, "no cookies: said {said}, {ids} polls with task ids:\n{stderr}");
    }
}
