//! Perfetto protobuf export (`.pftrace`): one process track, one thread
//! track per thread (workers first, labelled as in the Chrome export) with
//! every poll as a slice and each time a poll blocked the thread
//! ([`slices`]); when each thread ran, on which CPU, why it stopped and who
//! woke it as the kernel's own sched records, from which the viewer draws
//! CPU tracks and each thread's state ([`sched`]); cpu-clock samples with
//! interned callstacks so the UI's flamegraph works on a selected range
//! ([`samples`]); counters (workers on a CPU, tasks waiting for a worker,
//! polls per second); spawn / wake arrows ([`arrows`]). Timestamps are ns
//! since the start of the recording, as in the Chrome export (µs there).
//!
//! Size: nearly all bytes are per slice edge, and the floor there is the
//! packet itself (framing, delta timestamp, sequence id, event type: ~11
//! bytes an END). So the on-CPU / off-CPU picture, two slices a context
//! switch in the Chrome trace, is sched data at ~8 bytes a switch, every
//! repeated string is interned, and ids are small varints.

mod arrows;
pub mod readback;
mod samples;
mod sched;
mod slices;

use crate::counters::Series;
use perfetto_protos::track_event::track_event::Type;
use scope_model::{Symbols, Timeline};
use perfetto_protos::process_descriptor::ProcessDescriptor;
use perfetto_protos::thread_descriptor::ThreadDescriptor;
use perfetto_protos::trace_packet::TracePacket;
use perfetto_protos::trace_packet::trace_packet::SequenceFlags;
use perfetto_protos::track_descriptor::TrackDescriptor;
use perfetto_protos::track_descriptor::track_descriptor::ChildTracksOrdering;
use perfetto_protos::clock_snapshot::ClockSnapshot;
use perfetto_protos::clock_snapshot::clock_snapshot::Clock;
use perfetto_protos::counter_descriptor::CounterDescriptor;
use perfetto_protos::interned_data::InternedData;
use perfetto_protos::trace_packet_defaults::TracePacketDefaults;
use perfetto_protos::track_event::{TrackEvent, TrackEventDefaults};
use protobuf::Message;
use std::io::{self, Write};

fn process_uuid(pid: u32) -> u64 {
    u64::from(pid) << 32
}

fn thread_uuid(pid: u32, tid: u32) -> u64 {
    process_uuid(pid) | u64::from(tid)
}

/// Counter tracks, by their index in `counters::series`, below the tids.
fn counter_uuid(pid: u32, index: usize) -> u64 {
    (process_uuid(pid) | 0xffff_ffff) - index as u64
}

/// Streams length-delimited `Trace.packet` entries.
struct PacketWriter<W: Write> {
    out: W,
    packets: usize,
}

impl<W: Write> PacketWriter<W> {
    fn write(&mut self, packet: &TracePacket) -> io::Result<()> {
        let bytes = packet.write_to_bytes().map_err(io::Error::other)?;
        // Field 1 (packet), wire type 2 (length-delimited).
        let mut head = vec![0x0a];
        let mut len = bytes.len() as u64;
        loop {
            let byte = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                head.push(byte);
                break;
            }
            head.push(byte | 0x80);
        }
        self.out.write_all(&head)?;
        self.out.write_all(&bytes)?;
        self.packets += 1;
        Ok(())
    }
}

fn track_packet(descriptor: TrackDescriptor) -> TracePacket {
    let mut packet = TracePacket::new();
    packet.set_track_descriptor(descriptor);
    packet
}

fn descriptors(tl: &Timeline, counters: &[Series]) -> Vec<TracePacket> {
    let mut packets = Vec::new();
    let mut process = TrackDescriptor::new();
    process.uuid = Some(process_uuid(tl.pid));
    process.child_ordering = Some(ChildTracksOrdering::EXPLICIT.into());
    let mut pd = ProcessDescriptor::new();
    pd.pid = Some(tl.pid as i32);
    pd.process_name = Some(tl.command.clone());
    process.process = Some(pd).into();
    packets.push(track_packet(process));
    for (rank, t) in tl.threads.iter().enumerate() {
        let mut track = TrackDescriptor::new();
        track.uuid = Some(thread_uuid(tl.pid, t.tid));
        track.parent_uuid = Some(process_uuid(tl.pid));
        track.sibling_order_rank = Some(rank as i32);
        let mut td = ThreadDescriptor::new();
        td.pid = Some(tl.pid as i32);
        td.tid = Some(t.tid as i32);
        td.thread_name = Some(t.display_name());
        track.thread = Some(td).into();
        packets.push(track_packet(track));
    }
    for (i, series) in counters.iter().enumerate() {
        let mut track = TrackDescriptor::new();
        track.uuid = Some(counter_uuid(tl.pid, i));
        track.parent_uuid = Some(process_uuid(tl.pid));
        track.sibling_order_rank = Some(-1 - i as i32);
        track.set_name(series.name.into());
        track.counter = Some(CounterDescriptor::new()).into();
        packets.push(track_packet(track));
    }
    packets
}

/// Each counter on a sequence of its own, its track the sequence's default
/// (an explicit 64-bit track uuid would be half of each packet). Values
/// are bucketed (`counters`), so a packet each is affordable.
fn counter_packets(tl: &Timeline, index: usize, series: &Series, seq: &mut Sequence, emit: &mut dyn FnMut(&TracePacket) -> io::Result<()>) -> io::Result<()> {
    emit(&sequence_start(seq.id, Some(counter_uuid(tl.pid, index)), InternedData::new()))?;
    for &(ts, value) in &series.points {
        let mut event = TrackEvent::new();
        event.set_type(Type::TYPE_COUNTER);
        event.set_counter_value(value);
        emit(&seq.packet(ts - tl.start_ns, event))?;
    }
    Ok(())
}

/// Sequence-scoped clock whose packet timestamps are deltas from the
/// previous packet on the same sequence (what the Perfetto SDK does): most
/// deltas fit in 1–3 bytes instead of 4–5 for absolute times.
const INCREMENTAL_CLOCK: u32 = 64;
const BUILTIN_CLOCK_BOOTTIME: u32 = 6;

/// First packet of a delta-timed sequence: clears incremental state,
/// defines the delta clock and the default track, and carries the
/// interning.
fn sequence_start(sequence: u32, track: Option<u64>, interned: InternedData) -> TracePacket {
    let mut snapshot = ClockSnapshot::new();
    for (id, incremental) in [(INCREMENTAL_CLOCK, true), (BUILTIN_CLOCK_BOOTTIME, false)] {
        let mut clock = Clock::new();
        clock.clock_id = Some(id);
        clock.timestamp = Some(0);
        if incremental {
            clock.is_incremental = Some(true);
        }
        snapshot.clocks.push(clock);
    }
    let mut defaults = TracePacketDefaults::new();
    defaults.timestamp_clock_id = Some(INCREMENTAL_CLOCK);
    if let Some(track) = track {
        let mut event_defaults = TrackEventDefaults::new();
        event_defaults.track_uuid = Some(track);
        defaults.track_event_defaults = Some(event_defaults).into();
    }

    let mut packet = TracePacket::new();
    packet.set_timestamp(0);
    packet.set_timestamp_clock_id(BUILTIN_CLOCK_BOOTTIME);
    packet.set_trusted_packet_sequence_id(sequence);
    packet.set_sequence_flags(SequenceFlags::SEQ_INCREMENTAL_STATE_CLEARED as u32);
    packet.set_first_packet_on_sequence(true);
    packet.set_clock_snapshot(snapshot);
    packet.trace_packet_defaults = Some(defaults).into();
    packet.interned_data = Some(interned).into();
    packet
}

/// Packets of one sequence, in time order, turned into deltas on write.
struct Sequence {
    id: u32,
    last_ts: u64,
}

impl Sequence {
    /// A packet at `ts` (not before the previous one).
    fn stamp(&mut self, ts: u64) -> TracePacket {
        let mut packet = TracePacket::new();
        packet.set_timestamp(ts - self.last_ts);
        self.last_ts = ts;
        // No SEQ_NEEDS_INCREMENTAL_STATE flag: 2 bytes a packet, and it only
        // matters for sequences with gaps, which a file we write never has.
        packet.set_trusted_packet_sequence_id(self.id);
        packet
    }

    fn packet(&mut self, ts: u64, event: TrackEvent) -> TracePacket {
        let mut packet = self.stamp(ts);
        packet.set_track_event(event);
        packet
    }
}

/// Writes the trace; returns the number of packets.
pub fn write(tl: &Timeline, symbols: &Symbols, out: impl Write) -> io::Result<usize> {
    let mut writer = PacketWriter { out, packets: 0 };
    let flows = crate::flows::flows(tl);
    let counters = crate::counters::series(tl, &flows);
    for packet in descriptors(tl, &counters) {
        writer.write(&packet)?;
    }
    let mut emit = |packet: &TracePacket| writer.write(packet).map(|_| ());
    sched::write(tl, &mut emit)?;
    // One sequence per thread (its track is the sequence default), one for
    // the samples, one per counter.
    let kinds = crate::tasks::kind_names(tl, symbols);
    let geometry: Vec<Vec<slices::Slice>> = tl.threads.iter().map(slices::geometry).collect();
    let arrows = arrows::flow_ids(tl, &geometry, &flows);
    // Placed on their slices: the list (32 bytes an arrow) can go.
    drop(flows);
    let mut ids = 1..;
    for ((t, slices), arrows) in tl.threads.iter().zip(geometry).zip(arrows) {
        let mut seq = Sequence { id: ids.next().unwrap(), last_ts: 0 };
        let input = slices::ThreadInput { slices, flows: arrows.on_slices, instants: arrows.instants };
        slices::thread_packets(tl, t, symbols, &kinds, input, &mut seq, &mut emit)?;
    }
    let mut seq = Sequence { id: ids.next().unwrap(), last_ts: 0 };
    samples::write(tl, symbols, &mut seq, &mut emit)?;
    for (i, series) in counters.iter().enumerate() {
        let mut seq = Sequence { id: ids.next().unwrap(), last_ts: 0 };
        counter_packets(tl, i, series, &mut seq, &mut emit)?;
    }
    writer.out.flush()?;
    Ok(writer.packets)
}
