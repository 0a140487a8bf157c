//! A capture read for the end phase in two passes, so that its events are
//! never all in memory at once (decoded, they take ~4× the file): the first
//! pass keeps everything but the events, and where each frame's earliest
//! event lies; the second yields the events in time order, holding only
//! those that a later frame could still precede.

use super::read::{Extent, Frames, assemble_header, earliest_kept, keep_range, warn_left_out};
use super::{CaptureError, Frame, Loaded};
use crate::Event;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::io::Read;

/// The first pass: the recording without its events (only the rare
/// `NewModule` ones, which name modules), and what the second pass needs.
#[derive(Debug)]
pub struct Indexed {
    /// Its `recording.events` holds the `NewModule` events alone.
    pub loaded: Loaded,
    /// Per events frame, in file order: the earliest time of it and of every
    /// frame after it (the events that will be kept only).
    later_floor: Vec<u64>,
    events: u64,
    keep: (u64, u64),
}

/// Reads a capture once without keeping its events (see the module doc).
pub fn index(input: impl Read) -> Result<Indexed, CaptureError> {
    let mut warnings = Vec::new();
    let mut frames = Frames::open(input)?;
    let (mut start, mut stop, mut extent) = (None, None, None);
    let mut frame_floor = Vec::new();
    let mut modules = Vec::new();
    while let Some(frame) = frames.next(&mut warnings) {
        match frame {
            Frame::Start(s) => {
                extent = Some(Extent::new(s.start_ns));
                start = Some(s);
            }
            Frame::Events(batch) => {
                // Frames only come after the start.
                let Some((extent, start)) = extent.as_mut().zip(start.as_ref()) else { continue };
                let lowest_kept = earliest_kept(start.start_ns);
                let mut floor = u64::MAX;
                for e in batch {
                    let ts = e.ts();
                    extent.see(ts);
                    if ts >= lowest_kept {
                        floor = floor.min(ts);
                    }
                    if matches!(e, Event::NewModule { .. }) {
                        modules.push(e);
                    }
                }
                frame_floor.push(floor);
            }
            Frame::Stop(s) => stop = Some(s),
        }
    }
    let (start, extent) = start.zip(extent).ok_or(CaptureError::NoStart)?;
    let mut recording = assemble_header(start, stop, &extent, &mut warnings);
    let keep = keep_range(&recording);
    modules.retain(|e| (keep.0..=keep.1).contains(&e.ts()));
    recording.events = modules;
    let mut later_floor = frame_floor;
    for i in (0..later_floor.len().saturating_sub(1)).rev() {
        later_floor[i] = later_floor[i].min(later_floor[i + 1]);
    }
    Ok(Indexed { loaded: Loaded { recording, warnings }, later_floor, events: extent.count, keep })
}

/// The second pass: `input` must be the same capture `indexed` was read from.
pub fn replay<R: Read>(input: R, indexed: &Indexed) -> Result<Replay<R>, CaptureError> {
    Ok(Replay {
        frames: Frames::open(input)?,
        later_floor: indexed.later_floor.clone(),
        next_frame: 0,
        frames_done: false,
        pending: BinaryHeap::new(),
        read: 0,
        expected: indexed.events,
        keep: indexed.keep,
        left_out: 0,
    })
}

/// The capture's kept events in time order; ties keep their file order (as a
/// stable sort of them all would).
pub struct Replay<R> {
    frames: Frames<R>,
    later_floor: Vec<u64>,
    next_frame: usize,
    frames_done: bool,
    pending: BinaryHeap<Reverse<Pending>>,
    read: u64,
    expected: u64,
    keep: (u64, u64),
    left_out: u64,
}

struct Pending {
    ts: u64,
    order: u64,
    event: Event,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.ts, self.order) == (other.ts, other.order)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.ts, self.order).cmp(&(other.ts, other.order))
    }
}

impl<R: Read> Replay<R> {
    /// What the first pass could not know: events left out by the window, a
    /// file that changed between the passes.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        warn_left_out(self.left_out, &mut warnings);
        if self.frames_done && self.read != self.expected {
            warnings.push(format!(
                "capture changed while it was read ({} events, then {}): the timeline may be wrong; read a copy that is not being written",
                self.expected, self.read
            ));
        }
        warnings
    }

    /// Events yielded so far.
    pub fn kept(&self) -> u64 {
        self.read - self.left_out - self.pending.len() as u64
    }

    /// Reads the next events frame into `pending`; false at the end.
    fn load_frame(&mut self) -> bool {
        // Warnings were the first pass's to give.
        let mut ignored = Vec::new();
        loop {
            match self.frames.next(&mut ignored) {
                Some(Frame::Events(batch)) => {
                    self.next_frame += 1;
                    for event in batch {
                        let ts = event.ts();
                        self.read += 1;
                        if (self.keep.0..=self.keep.1).contains(&ts) {
                            self.pending.push(Reverse(Pending { ts, order: self.read, event }));
                        } else {
                            self.left_out += 1;
                        }
                    }
                    return true;
                }
                Some(_) => {}
                None => {
                    self.frames_done = true;
                    return false;
                }
            }
        }
    }
}

impl<R: Read> Iterator for Replay<R> {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        loop {
            // No event of a frame not read yet is earlier than this.
            let floor = if self.frames_done { u64::MAX } else { self.later_floor.get(self.next_frame).copied().unwrap_or(u64::MAX) };
            if self.pending.peek().is_some_and(|Reverse(p)| p.ts < floor) || (self.frames_done && !self.pending.is_empty()) {
                return self.pending.pop().map(|Reverse(p)| p.event);
            }
            if !self.frames_done && self.load_frame() {
                continue;
            }
            if self.pending.is_empty() {
                return None;
            }
        }
    }
}
