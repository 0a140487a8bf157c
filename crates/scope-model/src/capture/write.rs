use super::{FORMAT_VERSION, Frame, MAGIC, Start, Stop};
use crate::Event;
use std::io::{self, Write};

/// Appends frames to a capture; each frame is flushed as a unit so what is on
/// disk is always a valid prefix.
pub struct CaptureWriter<W: Write> {
    out: W,
    bytes: u64,
    events: u64,
}

impl<W: Write> CaptureWriter<W> {
    pub fn new(mut out: W, start: &Start) -> io::Result<Self> {
        out.write_all(&MAGIC)?;
        out.write_all(&FORMAT_VERSION.to_le_bytes())?;
        out.write_all(&0u16.to_le_bytes())?;
        let mut writer = CaptureWriter { out, bytes: super::PREAMBLE_LEN as u64, events: 0 };
        writer.frame(&Frame::Start(start.clone()))?;
        Ok(writer)
    }

    fn frame(&mut self, frame: &Frame) -> io::Result<()> {
        let payload = postcard::to_stdvec(frame).map_err(io::Error::other)?;
        let len = u32::try_from(payload.len()).map_err(io::Error::other)?;
        let mut head = [0u8; 8];
        head[..4].copy_from_slice(&len.to_le_bytes());
        head[4..].copy_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        self.out.write_all(&head)?;
        self.out.write_all(&payload)?;
        self.out.flush()?;
        self.bytes += 8 + u64::from(len);
        Ok(())
    }

    pub fn events(&mut self, events: &[Event]) -> io::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        self.events += events.len() as u64;
        self.frame(&Frame::Events(events.to_vec()))
    }

    pub fn finish(mut self, stop: &Stop) -> io::Result<W> {
        self.frame(&Frame::Stop(stop.clone()))?;
        Ok(self.out)
    }

    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }

    pub fn events_written(&self) -> u64 {
        self.events
    }
}
