use super::{FORMAT_VERSION, Frame, MAGIC, MAX_FRAME_LEN, PREAMBLE_LEN, Start, Stop};
use crate::{Event, Recording, StopReason};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptureError {
    NotACapture,
    /// Written by a newer runtime-scope.
    NewerVersion { found: u16, supported: u16 },
    /// Cut short before its first frame was complete.
    NoStart,
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaptureError::NotACapture => write!(f, "not a runtime-scope capture (bad magic bytes)"),
            CaptureError::NewerVersion { found, supported } => write!(
                f,
                "capture format version {found} is newer than this runtime-scope reads ({supported}): upgrade runtime-scope"
            ),
            CaptureError::NoStart => write!(f, "capture is empty or cut short before its header was complete"),
        }
    }
}

impl std::error::Error for CaptureError {}

/// A capture read back: the recording, and what could not be read.
#[derive(Debug)]
pub struct Loaded {
    pub recording: Recording,
    /// One line each: truncation, corruption, missing stop record.
    pub warnings: Vec<String>,
}

enum Next<'a> {
    Frame(&'a [u8]),
    End,
    Broken(String),
}

fn next_frame(bytes: &[u8], at: usize) -> Next<'_> {
    let rest = &bytes[at..];
    if rest.is_empty() {
        return Next::End;
    }
    if rest.len() < 8 {
        return Next::Broken(format!("cut short inside a frame header at byte {at}"));
    }
    let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
    if len > MAX_FRAME_LEN {
        return Next::Broken(format!("corrupt frame length {len} at byte {at}"));
    }
    let Some(payload) = rest.get(8..8 + len as usize) else {
        return Next::Broken(format!(
            "cut short at byte {}: the last frame needs {} more bytes",
            bytes.len(),
            8 + len as usize - rest.len()
        ));
    };
    if crc32fast::hash(payload) != crc {
        return Next::Broken(format!("checksum mismatch in the frame at byte {at}"));
    }
    Next::Frame(payload)
}

/// Reads what is valid; never panics on any input.
pub fn read(bytes: &[u8]) -> Result<Loaded, CaptureError> {
    let magic_len = bytes.len().min(MAGIC.len());
    if bytes[..magic_len] != MAGIC[..magic_len] {
        return Err(CaptureError::NotACapture);
    }
    if bytes.len() < PREAMBLE_LEN {
        return Err(CaptureError::NoStart);
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version > FORMAT_VERSION {
        return Err(CaptureError::NewerVersion { found: version, supported: FORMAT_VERSION });
    }
    let mut at = PREAMBLE_LEN;
    let mut warnings = Vec::new();
    let mut start: Option<Start> = None;
    let mut stop: Option<Stop> = None;
    let mut events: Vec<Event> = Vec::new();
    loop {
        let payload = match next_frame(bytes, at) {
            Next::Frame(p) => p,
            Next::End => break,
            Next::Broken(why) => {
                warnings.push(format!("capture {why}; {} bytes after it ignored", bytes.len() - at));
                break;
            }
        };
        at += 8 + payload.len();
        match postcard::from_bytes::<Frame>(payload) {
            Ok(Frame::Start(s)) if start.is_none() => start = Some(s),
            Ok(Frame::Events(batch)) if start.is_some() && stop.is_none() => events.extend(batch),
            Ok(Frame::Stop(s)) if start.is_some() && stop.is_none() => stop = Some(s),
            Ok(_) => {
                warnings.push(format!("capture has a frame out of order at byte {}; ignored", at - 8 - payload.len()));
            }
            Err(e) => {
                warnings.push(format!("capture frame at byte {} does not decode ({e}); reading stopped", at - 8 - payload.len()));
                break;
            }
        }
    }
    let start = start.ok_or(CaptureError::NoStart)?;
    let recording = assemble(start, stop, events, &mut warnings);
    Ok(Loaded { recording, warnings })
}

/// The recording that a start record, a stop record (None if it never came)
/// and the events between describe.
pub fn assemble(start: Start, stop: Option<Stop>, events: Vec<Event>, warnings: &mut Vec<String>) -> Recording {
    let mut threads = start.threads;
    let mut launch = start.launch;
    let (end_ns, stop_reason, lost_events, untracked_threads) = match stop {
        Some(stop) => {
            for (tid, ns) in stop.cpu_ns_at_stop {
                if let Some(t) = threads.iter_mut().find(|t| t.tid == tid) {
                    t.cpu_ns_at_stop = Some(ns);
                }
            }
            if let Some(l) = launch.as_mut() {
                l.exit_status = stop.exit_status;
            }
            (stop.end_ns, stop.stop_reason, stop.lost_events, stop.untracked_threads)
        }
        None => {
            warnings.push(format!(
                "capture has no stop record (recording killed or disk full): {} events kept, the window ends at the last one",
                events.len()
            ));
            let last = events.iter().map(Event::ts).max().unwrap_or(start.start_ns);
            (last.max(start.start_ns), StopReason::Incomplete, 0, 0)
        }
    };
    Recording {
        tool_version: start.tool_version,
        pid: start.pid,
        command: start.command,
        executable: start.executable,
        start_ns: start.start_ns,
        end_ns,
        stop_reason,
        lost_events,
        untracked_threads,
        threads,
        events,
        modules: start.modules,
        probes: start.probes,
        launch,
    }
}
