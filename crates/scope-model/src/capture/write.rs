use super::{FORMAT_VERSION, MAGIC, Start, Stop};
use crate::Event;
use serde::Serialize;
use std::io::{self, Write};

/// A frame borrowed from its owner: encodes exactly as [`super::Frame`]
/// (same variants in the same order; a slice is a sequence like a Vec), so
/// a batch is written without being copied first.
#[derive(Serialize)]
enum FrameRef<'a> {
    Start(&'a Start),
    Events(Batch<'a>),
    Stop(&'a Stop),
}

/// A batch of events, encoded as the `Vec<Event>` it is, except that a
/// stack equal to one of its thread's last few in the batch is the
/// one-frame [`super::repeat`] stack (the reader puts the frames back).
struct Batch<'a>(&'a [Event]);

impl Serialize for Batch<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeSeq, SerializeStructVariant};
        let mut recent = super::RecentStacks::default();
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for (i, event) in self.0.iter().enumerate() {
            let Event::Stack { ts, cpu, tid, reason, frames, complete } = event else {
                seq.serialize_element(event)?;
                continue;
            };
            let back = recent.before(*tid, i).iter().position(|p| {
                matches!(p.map(|p| &self.0[p]), Some(Event::Stack { frames: f, complete: c, .. }) if f == frames && c == complete)
            });
            let Some(back) = back else {
                seq.serialize_element(event)?;
                continue;
            };
            // As the derive encodes `Event::Stack` (postcard: variant index, then the fields in order).
            struct Repeat<'a>(&'a u64, &'a u32, &'a u32, &'a crate::StackReason, crate::Frame, &'a bool);
            impl Serialize for Repeat<'_> {
                fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                    let mut v = serializer.serialize_struct_variant("Event", STACK_VARIANT, "stack", 6)?;
                    v.serialize_field("ts", self.0)?;
                    v.serialize_field("cpu", self.1)?;
                    v.serialize_field("tid", self.2)?;
                    v.serialize_field("reason", self.3)?;
                    v.serialize_field("frames", &[self.4][..])?;
                    v.serialize_field("complete", self.5)?;
                    v.end()
                }
            }
            seq.serialize_element(&Repeat(ts, cpu, tid, reason, super::repeat(back as u64), complete))?;
        }
        seq.end()
    }
}

/// `Event::Stack`'s variant index (checked by a test against the derive).
const STACK_VARIANT: u32 = 4;

/// A frame as a capture lays it out: length, CRC-32, payload. Encoded in
/// place into `buf` (cleared) after room for the two: the recorder encodes
/// every batch, so no second copy of the payload, and `buf`'s allocation
/// is reused.
fn encode_into(frame: &FrameRef<'_>, mut buf: Vec<u8>) -> io::Result<Vec<u8>> {
    buf.clear();
    buf.extend_from_slice(&[0; 8]);
    let mut buf = postcard::serialize_with_flavor(frame, Bytes(buf)).map_err(io::Error::other)?;
    let len = u32::try_from(buf.len() - 8).map_err(io::Error::other)?;
    let crc = crc32fast::hash(&buf[8..]);
    buf[..4].copy_from_slice(&len.to_le_bytes());
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(buf)
}

/// postcard's output into a `Vec`, a field at a time. Its own `to_extend`
/// appends each varint with `extend_from_slice`, a `memmove` call for 1–10
/// bytes: 11% of the recorder's CPU on a busy server (perf, mini-redis).
/// Short pieces are pushed byte by byte into reserved room instead.
struct Bytes(Vec<u8>);

impl postcard::ser_flavors::Flavor for Bytes {
    type Output = Vec<u8>;

    #[inline(always)]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    #[inline(always)]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if data.len() > 16 {
            self.0.extend_from_slice(data);
        } else {
            self.0.reserve(data.len());
            for &byte in data {
                self.0.push(byte);
            }
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

/// An `Events` frame, encoded once and kept (the flight recorder's ring),
/// to be appended to captures later with [`CaptureWriter::encoded_events`].
pub fn encode_events(events: &[Event]) -> io::Result<Vec<u8>> {
    encode_into(&FrameRef::Events(Batch(events)), Vec::new())
}

/// Appends frames to a capture; each frame is flushed as a unit so what is on
/// disk is always a valid prefix.
pub struct CaptureWriter<W: Write> {
    out: W,
    bytes: u64,
    events: u64,
    /// The last frame encoded (its allocation is reused).
    scratch: Vec<u8>,
}

impl<W: Write> CaptureWriter<W> {
    pub fn new(mut out: W, start: &Start) -> io::Result<Self> {
        out.write_all(&MAGIC)?;
        out.write_all(&FORMAT_VERSION.to_le_bytes())?;
        out.write_all(&0u16.to_le_bytes())?;
        let mut writer = CaptureWriter { out, bytes: super::PREAMBLE_LEN as u64, events: 0, scratch: Vec::new() };
        writer.frame(&FrameRef::Start(start))?;
        Ok(writer)
    }

    fn frame(&mut self, frame: &FrameRef<'_>) -> io::Result<()> {
        let framed = encode_into(frame, std::mem::take(&mut self.scratch))?;
        let written = self.raw(&framed);
        self.scratch = framed;
        written
    }

    fn raw(&mut self, framed: &[u8]) -> io::Result<()> {
        self.out.write_all(framed)?;
        self.out.flush()?;
        self.bytes += framed.len() as u64;
        Ok(())
    }

    pub fn events(&mut self, events: &[Event]) -> io::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        self.events += events.len() as u64;
        self.frame(&FrameRef::Events(Batch(events)))
    }

    /// Appends a frame made by [`encode_events`] holding `count` events.
    pub fn encoded_events(&mut self, framed: &[u8], count: u64) -> io::Result<()> {
        self.events += count;
        self.raw(framed)
    }

    pub fn finish(mut self, stop: &Stop) -> io::Result<W> {
        self.frame(&FrameRef::Stop(stop))?;
        Ok(self.out)
    }

    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }

    pub fn events_written(&self) -> u64 {
        self.events
    }
}
