use super::{FORMAT_VERSION, Frame, MAGIC, MAX_FRAME_LEN, PREAMBLE_LEN, Start, Stop};
use crate::{Event, Recording, StopReason};
use std::fmt;
use std::io::Read;

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

enum Next {
    Frame,
    End,
    Broken(String),
}

/// Reads the next frame's payload into `payload`; `at` is its offset.
fn next_frame(input: &mut impl Read, at: u64, payload: &mut Vec<u8>) -> Next {
    let mut head = [0u8; 8];
    let got = read_up_to(input, &mut head);
    if got == 0 {
        return Next::End;
    }
    if got < 8 {
        return Next::Broken(format!("cut short inside a frame header at byte {at}"));
    }
    let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
    if len > MAX_FRAME_LEN {
        return Next::Broken(format!("corrupt frame length {len} at byte {at}"));
    }
    payload.clear();
    // Grows with what is there: a crafted length allocates nothing by itself.
    let read = input.take(u64::from(len)).read_to_end(payload).unwrap_or(0);
    if read < len as usize {
        return Next::Broken(format!(
            "cut short at byte {}: the last frame needs {} more bytes",
            at + 8 + read as u64,
            len as usize - read
        ));
    }
    if crc32fast::hash(payload) != crc {
        return Next::Broken(format!("checksum mismatch in the frame at byte {at}"));
    }
    Next::Frame
}

/// Gives each stack written as [`super::repeat`] the frames of its
/// thread's stack that many back in the batch (none if there is none: a
/// damaged frame).
pub(super) fn restore_repeats(batch: &mut [Event]) {
    let mut recent = super::RecentStacks::default();
    for i in 0..batch.len() {
        let Event::Stack { tid, frames, .. } = &batch[i] else { continue };
        let earlier = recent.before(*tid, i);
        if let [only] = &frames[..]
            && only.module == super::REPEAT.module
        {
            let from = usize::try_from(only.offset).ok().and_then(|back| *earlier.get(back)?);
            let base = from.and_then(|p| match &batch[p] {
                Event::Stack { frames, complete, .. } => Some((frames.clone(), *complete)),
                _ => None,
            });
            if let Event::Stack { frames, complete, .. } = &mut batch[i] {
                (*frames, *complete) = base.unwrap_or((std::sync::Arc::from([]), false));
            }
        }
    }
}

/// Fills `buf` as far as the input goes; how many bytes it got.
fn read_up_to(input: &mut impl Read, buf: &mut [u8]) -> usize {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    got
}

/// Reads what is valid; never panics on any input.
pub fn read(bytes: &[u8]) -> Result<Loaded, CaptureError> {
    read_from(bytes)
}

/// As [`read`], from a stream (a file is not loaded whole first: the
/// frames are decoded as they are read, and a crafted frame length
/// allocates only what the input holds).
pub fn read_from(input: impl Read) -> Result<Loaded, CaptureError> {
    let mut warnings = Vec::new();
    let mut frames = Frames::open(input)?;
    let mut start: Option<Start> = None;
    let mut stop: Option<Stop> = None;
    let mut events: Vec<Event> = Vec::new();
    while let Some(frame) = frames.next(&mut warnings) {
        match frame {
            Frame::Start(s) => start = Some(s),
            Frame::Events(batch) => events.extend(batch),
            Frame::Stop(s) => stop = Some(s),
        }
    }
    let start = start.ok_or(CaptureError::NoStart)?;
    let recording = assemble(start, stop, events, &mut warnings);
    Ok(Loaded { recording, warnings })
}

/// A capture's valid frames in file order: one start, then events, then at
/// most one stop; what is out of order or damaged is skipped with a warning.
pub(super) struct Frames<R> {
    input: R,
    at: u64,
    payload: Vec<u8>,
    started: bool,
    stopped: bool,
    done: bool,
}

impl<R: Read> Frames<R> {
    /// Checks the preamble.
    pub(super) fn open(mut input: R) -> Result<Self, CaptureError> {
        let mut preamble = [0u8; PREAMBLE_LEN];
        let got = read_up_to(&mut input, &mut preamble);
        let magic_len = got.min(MAGIC.len());
        if preamble[..magic_len] != MAGIC[..magic_len] {
            return Err(CaptureError::NotACapture);
        }
        if got < PREAMBLE_LEN {
            return Err(CaptureError::NoStart);
        }
        let version = u16::from_le_bytes([preamble[8], preamble[9]]);
        if version > FORMAT_VERSION {
            return Err(CaptureError::NewerVersion { found: version, supported: FORMAT_VERSION });
        }
        Ok(Frames { input, at: PREAMBLE_LEN as u64, payload: Vec::new(), started: false, stopped: false, done: false })
    }

    pub(super) fn next(&mut self, warnings: &mut Vec<String>) -> Option<Frame> {
        while !self.done {
            match next_frame(&mut self.input, self.at, &mut self.payload) {
                Next::Frame => {}
                Next::End => break,
                Next::Broken(why) => {
                    let rest = std::io::copy(&mut self.input, &mut std::io::sink()).unwrap_or(0);
                    warnings.push(format!("capture {why}; the bytes after it ignored ({rest} more)"));
                    break;
                }
            }
            let frame_at = self.at;
            self.at += 8 + self.payload.len() as u64;
            match postcard::from_bytes::<Frame>(&self.payload) {
                Ok(frame @ Frame::Start(_)) if !self.started => {
                    self.started = true;
                    return Some(frame);
                }
                Ok(Frame::Events(mut batch)) if self.started && !self.stopped => {
                    restore_repeats(&mut batch);
                    return Some(Frame::Events(batch));
                }
                Ok(frame @ Frame::Stop(_)) if self.started && !self.stopped => {
                    self.stopped = true;
                    return Some(frame);
                }
                Ok(_) => warnings.push(format!("capture has a frame out of order at byte {frame_at}; ignored")),
                Err(e) => {
                    warnings.push(format!("capture frame at byte {frame_at} does not decode ({e}); reading stopped"));
                    break;
                }
            }
        }
        self.done = true;
        None
    }
}

/// No recording is this long (the CLI records up to a day with -d, and
/// until Ctrl-C otherwise): a stop time past it is damage, and every
/// allocation sized by the window must stay bounded.
pub const MAX_WINDOW_NS: u64 = 366 * 24 * 3600 * 1_000_000_000;

/// The recording that a start record, a stop record (None if it never came)
/// and the events between describe.
pub fn assemble(start: Start, stop: Option<Stop>, mut events: Vec<Event>, warnings: &mut Vec<String>) -> Recording {
    let mut extent = Extent::new(start.start_ns);
    for e in &events {
        extent.see(e.ts());
    }
    let mut recording = assemble_header(start, stop, &extent, warnings);
    let (from, to) = keep_range(&recording);
    let before = events.len();
    events.retain(|e| (from..=to).contains(&e.ts()));
    warn_left_out((before - events.len()) as u64, warnings);
    recording.events = events;
    recording
}

/// What the window's bounds need to know of the events' times, gathered as
/// they pass (so a capture need not be held whole to place its window).
#[derive(Clone, Debug)]
pub(super) struct Extent {
    start_ns: u64,
    pub(super) count: u64,
    /// The last event time no later than a year after the start.
    last_within_year: Option<u64>,
    /// The same, but not before the start.
    last_in_window: Option<u64>,
}

impl Extent {
    pub(super) fn new(start_ns: u64) -> Self {
        Extent { start_ns, count: 0, last_within_year: None, last_in_window: None }
    }

    pub(super) fn see(&mut self, ts: u64) {
        self.count += 1;
        if ts <= self.start_ns.saturating_add(MAX_WINDOW_NS) {
            self.last_within_year = self.last_within_year.max(Some(ts));
            if ts >= self.start_ns {
                self.last_in_window = self.last_in_window.max(Some(ts));
            }
        }
    }
}

/// Events this far outside the window are damage; closer ones straddle its
/// ends (records in flight at start and stop, attaching takes time) and are kept.
const SLACK_NS: u64 = 60 * 1_000_000_000;

/// The earliest time of an event kept, whatever the window's end.
pub(super) fn earliest_kept(start_ns: u64) -> u64 {
    start_ns.saturating_sub(SLACK_NS)
}

/// The times of the events a recording keeps.
pub(super) fn keep_range(rec: &Recording) -> (u64, u64) {
    (earliest_kept(rec.start_ns), rec.end_ns.saturating_add(SLACK_NS))
}

/// Said once the events outside [`keep_range`] were counted.
pub(super) fn warn_left_out(count: u64, warnings: &mut Vec<String>) {
    if count > 0 {
        warnings.push(format!("{count} events lie outside the recording's window and were left out"));
    }
}

/// Everything but the events: the window is kept within [start, start +
/// MAX_WINDOW_NS] (a stop time of 2^62 ns, or one event far in the future,
/// must not size a per-second series of billions of entries).
pub(super) fn assemble_header(start: Start, stop: Option<Stop>, extent: &Extent, warnings: &mut Vec<String>) -> Recording {
    let mut rec = assemble_as_written(start, stop, extent, warnings);
    let limit = rec.start_ns.saturating_add(MAX_WINDOW_NS);
    if rec.end_ns < rec.start_ns || rec.end_ns > limit {
        warnings.push(format!(
            "capture's stop time ({} ns) is not after its start ({} ns) or over a year later: the window ends at its last plausible event",
            rec.end_ns, rec.start_ns
        ));
        rec.end_ns = extent.last_in_window.unwrap_or(rec.start_ns);
    }
    rec
}

fn assemble_as_written(start: Start, stop: Option<Stop>, extent: &Extent, warnings: &mut Vec<String>) -> Recording {
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
                extent.count
            ));
            // The last event within a year: one bogus far-future time must not stretch the window.
            let last = extent.last_within_year.unwrap_or(start.start_ns);
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
        events: Vec::new(),
        modules: start.modules,
        probes: start.probes,
        launch,
    }
}
