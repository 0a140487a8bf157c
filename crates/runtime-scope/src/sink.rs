//! Where recorded events go while recording: kept in memory, or streamed to
//! a capture file (memory stays flat on long runs).

use crate::output;
use anyhow::{Context, Result};
use scope_model::capture::{self, CaptureWriter, Start, Stop};
use scope_model::{Event, Recording};
use std::fs::File;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};

pub trait Sink {
    fn begin(&mut self, start: &Start) -> io::Result<()>;
    fn events(&mut self, batch: &[Event]) -> io::Result<()>;
    fn end(&mut self, stop: &Stop) -> io::Result<()>;
}

#[derive(Default)]
pub struct MemorySink {
    start: Option<Start>,
    events: Vec<Event>,
    stop: Option<Stop>,
}

impl Sink for MemorySink {
    fn begin(&mut self, start: &Start) -> io::Result<()> {
        self.start = Some(start.clone());
        Ok(())
    }

    fn events(&mut self, batch: &[Event]) -> io::Result<()> {
        self.events.extend_from_slice(batch);
        Ok(())
    }

    fn end(&mut self, stop: &Stop) -> io::Result<()> {
        self.stop = Some(stop.clone());
        Ok(())
    }
}

impl MemorySink {
    pub fn into_recording(self) -> Result<Recording> {
        let start = self.start.context("recording never started")?;
        let mut warnings = Vec::new();
        Ok(capture::assemble(start, self.stop, self.events, &mut warnings))
    }
}

/// Streams frames to a temporary name beside `path`, renamed into place
/// when recording ends. If we are killed, the temporary file is a valid
/// (incomplete) capture. A `path` that is not a regular file (a device, a
/// pipe, `/dev/stdout`) gets the finished capture copied in by
/// [`CaptureSink::deliver`]; meanwhile it is read from the temporary file.
pub struct CaptureSink {
    path: PathBuf,
    tmp: PathBuf,
    /// `path` is written in place, not renamed over.
    in_place: bool,
    writer: Option<CaptureWriter<BufWriter<File>>>,
}

impl CaptureSink {
    pub fn create(path: &Path) -> Result<CaptureSink> {
        let in_place = output::destination(path)? != output::Destination::File;
        let tmp = if in_place { output::capture_temp(path) } else { output::temp_path(path) };
        Ok(CaptureSink { path: path.to_path_buf(), tmp, in_place, writer: None })
    }

    /// Where the finished capture can be read.
    pub fn path(&self) -> &Path {
        if self.in_place { &self.tmp } else { &self.path }
    }

    /// Puts the finished capture where it was asked for, if that is not a
    /// regular file (a regular file is in place already).
    pub fn deliver(&self) -> Result<()> {
        if self.in_place {
            let mut capture = File::open(&self.tmp).with_context(|| format!("reading {}", self.tmp.display()))?;
            output::write_atomically(&self.path, |out| io::copy(&mut capture, out))?;
            let _ = std::fs::remove_file(&self.tmp);
        }
        Ok(())
    }
}

impl Sink for CaptureSink {
    fn begin(&mut self, start: &Start) -> io::Result<()> {
        let file = output::create_private(&self.tmp)?;
        self.writer = Some(CaptureWriter::new(BufWriter::new(file), start)?);
        Ok(())
    }

    fn events(&mut self, batch: &[Event]) -> io::Result<()> {
        self.writer.as_mut().ok_or_else(|| io::Error::other("capture not started"))?.events(batch)
    }

    fn end(&mut self, stop: &Stop) -> io::Result<()> {
        let writer = self.writer.take().ok_or_else(|| io::Error::other("capture not started"))?;
        let file = writer.finish(stop)?.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        if self.in_place { Ok(()) } else { std::fs::rename(&self.tmp, &self.path) }
    }
}

impl Drop for CaptureSink {
    fn drop(&mut self) {
        if self.writer.is_some() {
            say!(
                "runtime-scope: the capture was not completed; what was recorded is in {}",
                self.tmp.display()
            );
        }
    }
}

/// What a live consumer (the `top` UI) receives.
pub enum Feed {
    Begin(Box<Start>),
    Events(Vec<Event>),
    End,
}

/// Hands every batch to a consumer on another thread, and optionally to a
/// capture. The consumer can never stall collection: when its queue is
/// full the batch is skipped for it (counted) but still captured.
pub struct TeeSink {
    pub capture: Option<CaptureSink>,
    feed: std::sync::mpsc::SyncSender<Feed>,
    skipped: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl TeeSink {
    pub fn new(capture: Option<CaptureSink>, feed: std::sync::mpsc::SyncSender<Feed>, skipped: std::sync::Arc<std::sync::atomic::AtomicU64>) -> Self {
        TeeSink { capture, feed, skipped }
    }

    fn send(&self, feed: Feed) {
        if self.feed.try_send(feed).is_err() {
            self.skipped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Sink for TeeSink {
    fn begin(&mut self, start: &Start) -> io::Result<()> {
        if let Some(c) = &mut self.capture {
            c.begin(start)?;
        }
        // The consumer cannot work without it: wait for room.
        let _ = self.feed.send(Feed::Begin(Box::new(start.clone())));
        Ok(())
    }

    fn events(&mut self, batch: &[Event]) -> io::Result<()> {
        if let Some(c) = &mut self.capture {
            c.events(batch)?;
        }
        if !batch.is_empty() {
            self.send(Feed::Events(batch.to_vec()));
        }
        Ok(())
    }

    fn end(&mut self, stop: &Stop) -> io::Result<()> {
        let _ = self.feed.send(Feed::End);
        match &mut self.capture {
            Some(c) => c.end(stop),
            None => Ok(()),
        }
    }
}

/// Two sinks fed the same batches, in order (`top`: its dashboard and
/// capture, then the flight recorder behind `w`).
pub struct Both<'a>(pub &'a mut dyn Sink, pub &'a mut dyn Sink);

impl Sink for Both<'_> {
    fn begin(&mut self, start: &Start) -> io::Result<()> {
        self.0.begin(start)?;
        self.1.begin(start)
    }

    fn events(&mut self, batch: &[Event]) -> io::Result<()> {
        self.0.events(batch)?;
        self.1.events(batch)
    }

    fn end(&mut self, stop: &Stop) -> io::Result<()> {
        // Both end, whatever the first says.
        let first = self.0.end(stop);
        self.1.end(stop).and(first)
    }
}
