//! The capture file (`.rscope`): a recording kept on disk so it can be
//! reported on and exported later, without root and after the target is gone.
//!
//! Layout (docs/capture-format.md): an 12-byte preamble — magic
//! `RSCOPE\n\0`, format version (u16 LE), flags (u16 LE, 0) — then frames,
//! each `len: u32 LE, crc32: u32 LE, payload[len]`, the payload a postcard
//! encoded [`Frame`]. One `Start`, any number of `Events`, one `Stop`. Frames
//! are appended while recording, so a capture cut short (SIGKILL, full disk)
//! is readable up to its last complete frame.

mod read;
mod replay;
mod write;

pub use read::{CaptureError, Loaded, MAX_WINDOW_NS, assemble, read, read_from};
pub use replay::{Indexed, Replay, index, replay};
pub use write::{CaptureWriter, encode_events};

use crate::{Event, Launch, Module, StopReason, ThreadInfo};
use serde::{Deserialize, Serialize};

pub const MAGIC: [u8; 8] = *b"RSCOPE\n\0";
/// 2: a stack equal to the previous one of its thread in the same frame is
/// written as the one-frame [`REPEAT`] stack (version 1 readers would name
/// that frame wrongly instead of refusing the file).
/// 3: or equal to one of its thread's few stacks before that ([`repeat`]).
pub const FORMAT_VERSION: u16 = 3;
/// The only frame of a stack written as "the same frames (and completeness)
/// as this thread's previous stack in this events frame": most blocked
/// stacks of a server repeat (96% on mini-redis under load, where their
/// frames were 40% of the capture). No module has this index.
pub const REPEAT: crate::Frame = repeat(0);
/// How far back [`repeat`] reaches: an idle Tokio worker alternates between
/// two waits (its condvar and epoll), and a sample may come between.
pub const REPEAT_BACK: usize = 4;

/// The only frame of a stack written as "the same as this thread's stack
/// `back` stacks before the previous one in this events frame" (0: the
/// previous one, [`REPEAT`]).
pub const fn repeat(back: u64) -> crate::Frame {
    crate::Frame { module: u32::MAX - 1, offset: back }
}

/// Per thread, the indexes in a batch of its last [`REPEAT_BACK`] stacks,
/// the latest first: what a [`repeat`] marker counts back through, kept
/// the same way by the writer and the reader.
#[derive(Default)]
struct RecentStacks(std::collections::HashMap<u32, [Option<usize>; REPEAT_BACK]>);

impl RecentStacks {
    /// `tid`'s stacks before the one at `index`, which becomes its latest.
    fn before(&mut self, tid: u32, index: usize) -> [Option<usize>; REPEAT_BACK] {
        let recent = self.0.entry(tid).or_default();
        let earlier = *recent;
        recent.rotate_right(1);
        recent[0] = Some(index);
        earlier
    }
}
pub const PREAMBLE_LEN: usize = 12;
/// Larger frames are taken as corruption, not allocated.
pub const MAX_FRAME_LEN: u32 = 256 * 1024 * 1024;

/// What is known when recording starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Start {
    pub tool_version: String,
    /// Clock of every timestamp in the capture.
    pub clock: String,
    pub pid: u32,
    pub command: String,
    pub executable: String,
    pub start_ns: u64,
    pub threads: Vec<ThreadInfo>,
    pub modules: Vec<Module>,
    pub probes: Vec<String>,
    pub launch: Option<Launch>,
}

/// What is known when recording stops.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stop {
    pub end_ns: u64,
    pub stop_reason: StopReason,
    pub lost_events: u64,
    pub untracked_threads: u64,
    /// (tid, schedstat ns) of the threads alive at stop.
    pub cpu_ns_at_stop: Vec<(u32, u64)>,
    pub exit_status: Option<i32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    Start(Start),
    Events(Vec<Event>),
    Stop(Stop),
}

pub const CLOCK_MONOTONIC: &str = "CLOCK_MONOTONIC";

impl Start {
    /// The start record of an in-memory recording (threads without stop times).
    pub fn of(rec: &crate::Recording) -> Start {
        Start {
            tool_version: rec.tool_version.clone(),
            clock: CLOCK_MONOTONIC.to_string(),
            pid: rec.pid,
            command: rec.command.clone(),
            executable: rec.executable.clone(),
            start_ns: rec.start_ns,
            threads: rec.threads.iter().map(|t| ThreadInfo { cpu_ns_at_stop: None, ..t.clone() }).collect(),
            modules: rec.modules.clone(),
            probes: rec.probes.clone(),
            launch: rec.launch.as_ref().map(|l| Launch { exit_status: None, ..l.clone() }),
        }
    }
}

impl Stop {
    pub fn of(rec: &crate::Recording) -> Stop {
        Stop {
            end_ns: rec.end_ns,
            stop_reason: rec.stop_reason,
            lost_events: rec.lost_events,
            untracked_threads: rec.untracked_threads,
            cpu_ns_at_stop: rec.threads.iter().filter_map(|t| Some((t.tid, t.cpu_ns_at_stop?))).collect(),
            exit_status: rec.launch.as_ref().and_then(|l| l.exit_status),
        }
    }
}

/// Writes a whole in-memory recording as a capture.
pub fn write_recording(rec: &crate::Recording, out: impl std::io::Write) -> std::io::Result<()> {
    let mut writer = CaptureWriter::new(out, &Start::of(rec))?;
    for batch in rec.events.chunks(4096) {
        writer.events(batch)?;
    }
    writer.finish(&Stop::of(rec))?;
    Ok(())
}

#[cfg(test)]
mod tests;
