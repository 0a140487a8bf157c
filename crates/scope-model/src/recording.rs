use serde::{Deserialize, Serialize};

/// One decoded kernel record. Timestamps are CLOCK_MONOTONIC nanoseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A context switch on `cpu`; `prev_ours`/`next_ours` say which side is a
    /// thread of the target.
    Switch {
        ts: u64,
        cpu: u32,
        prev_tid: u32,
        next_tid: u32,
        prev_state: u64,
        prev_ours: bool,
        next_ours: bool,
        /// Records lost on this CPU so far.
        #[serde(default, skip_serializing_if = "is_zero")]
        cpu_lost: u32,
    },
    NewThread { ts: u64, tid: u32, parent_tid: u32, name: String },
    Exit { ts: u64, tid: u32 },
    /// The thread's name changed (observed at a switch-out).
    Rename { ts: u64, tid: u32, name: String },
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Event {
    pub fn ts(&self) -> u64 {
        match self {
            Event::Switch { ts, .. }
            | Event::NewThread { ts, .. }
            | Event::Exit { ts, .. }
            | Event::Rename { ts, .. } => *ts,
        }
    }
}

/// A thread known at attach time (from /proc) or created while recording.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadInfo {
    pub tid: u32,
    /// Name when first seen; later renames are `Event::Rename`.
    pub name: String,
    /// Kernel's exact on-CPU nanoseconds (`/proc/.../schedstat`) at start and
    /// stop of the recording, where the thread was alive to be read.
    pub cpu_ns_at_start: Option<u64>,
    pub cpu_ns_at_stop: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Duration,
    Signal,
    TargetExited,
}

/// Everything one recording session produced, enough to rebuild the timeline
/// later without the target or root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recording {
    pub tool_version: String,
    pub pid: u32,
    /// The target's command name.
    pub command: String,
    pub executable: String,
    /// Window of the recording, CLOCK_MONOTONIC ns.
    pub start_ns: u64,
    pub end_ns: u64,
    pub stop_reason: StopReason,
    /// Records the kernel could not deliver (ring buffer full).
    pub lost_events: u64,
    /// Threads the kernel filter had no room for.
    pub untracked_threads: u64,
    pub threads: Vec<ThreadInfo>,
    pub events: Vec<Event>,
}
