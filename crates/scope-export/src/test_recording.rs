//! A recording made up in a unit test: worker-named threads.

use scope_model::{Event, Recording, ThreadInfo};

/// Worker-named threads `tids`, the window [start, end), these events.
pub fn recording(start_ns: u64, end_ns: u64, tids: &[u32], events: Vec<Event>) -> Recording {
    Recording::made_up(start_ns, end_ns, tids.iter().map(|&tid| ThreadInfo::named(tid, "tokio-rt-worker")).collect(), events)
}
