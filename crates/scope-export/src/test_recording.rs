//! A recording made up in a unit test: the fields a test does not care
//! about set once.

use scope_model::{Event, Recording, StopReason, ThreadInfo};

/// Worker-named threads `tids`, the window [start, end), these events.
pub fn recording(start_ns: u64, end_ns: u64, tids: &[u32], events: Vec<Event>) -> Recording {
    Recording {
        tool_version: "test".into(),
        pid: 1,
        command: "app".into(),
        executable: "/bin/app".into(),
        start_ns,
        end_ns,
        stop_reason: StopReason::Duration,
        modules: vec![],
        probes: vec![],
        launch: None,
        lost_events: 0,
        untracked_threads: 0,
        threads: tids.iter().map(|&tid| ThreadInfo { tid, name: "tokio-rt-worker".into(), cpu_ns_at_start: None, cpu_ns_at_stop: None }).collect(),
        events,
    }
}
