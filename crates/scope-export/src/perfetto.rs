//! Perfetto protobuf export (`.pftrace`): one process track, one thread
//! track per thread (workers first, labelled as in the Chrome export), every
//! on-CPU span and off-CPU gap as a slice with interned name and category,
//! and a counter of workers on a CPU. Timestamps are ns since the start of
//! the recording, as in the Chrome export (µs there). One packet sequence per
//! track, so packets carry neither a track id nor an absolute time.

use scope_model::{OffReason, SpanState, ThreadTimeline, Timeline};
use perfetto_protos::debug_annotation::{DebugAnnotation, DebugAnnotationName};
use perfetto_protos::interned_data::InternedData;
use perfetto_protos::process_descriptor::ProcessDescriptor;
use perfetto_protos::thread_descriptor::ThreadDescriptor;
use perfetto_protos::trace_packet::TracePacket;
use perfetto_protos::trace_packet::trace_packet::SequenceFlags;
use perfetto_protos::track_descriptor::TrackDescriptor;
use perfetto_protos::track_descriptor::track_descriptor::ChildTracksOrdering;
use perfetto_protos::clock_snapshot::ClockSnapshot;
use perfetto_protos::clock_snapshot::clock_snapshot::Clock;
use perfetto_protos::counter_descriptor::CounterDescriptor;
use perfetto_protos::trace_packet_defaults::TracePacketDefaults;
use perfetto_protos::track_event::track_event::Type;
use perfetto_protos::track_event::{EventCategory, EventName, TrackEvent, TrackEventDefaults};
use protobuf::Message;
use std::collections::BTreeMap;
use std::io::{self, Write};

const CATEGORY_ONCPU: u64 = 1;
const CATEGORY_OFFCPU: u64 = 2;
const ANNOTATION_CPU: u64 = 1;
const ANNOTATION_STATE: u64 = 2;

fn process_uuid(pid: u32) -> u64 {
    u64::from(pid) << 32
}

fn thread_uuid(pid: u32, tid: u32) -> u64 {
    process_uuid(pid) | u64::from(tid)
}

fn counter_uuid(pid: u32) -> u64 {
    process_uuid(pid) | 0xffff_ffff
}

/// Slice name and category of a span; None for spans we do not show.
fn slice_label(state: &SpanState) -> Option<(String, u64)> {
    match state {
        SpanState::OnCpu { .. } => Some(("on-cpu".into(), CATEGORY_ONCPU)),
        SpanState::OffCpu(OffReason::Preempted) => Some(("preempted".into(), CATEGORY_OFFCPU)),
        SpanState::OffCpu(OffReason::Blocked { state }) => {
            Some((format!("blocked ({})", state.letter()), CATEGORY_OFFCPU))
        }
        SpanState::OffCpu(OffReason::Unknown) => None,
    }
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

fn descriptors(tl: &Timeline) -> Vec<TracePacket> {
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
    let mut counter = TrackDescriptor::new();
    counter.uuid = Some(counter_uuid(tl.pid));
    counter.parent_uuid = Some(process_uuid(tl.pid));
    counter.sibling_order_rank = Some(-1);
    counter.set_name("workers on CPU".into());
    counter.counter = Some(CounterDescriptor::new()).into();
    packets.push(track_packet(counter));
    packets
}

/// Every slice name used, with its interning id.
fn name_ids(tl: &Timeline) -> BTreeMap<String, u64> {
    let mut names = BTreeMap::new();
    for t in &tl.threads {
        for span in &t.spans {
            if let Some((name, _)) = slice_label(&span.state) {
                let next = names.len() as u64 + 1;
                names.entry(name).or_insert(next);
            }
        }
    }
    names
}

/// Sequence-scoped clock whose packet timestamps are deltas from the
/// previous packet on the same sequence (what the Perfetto SDK does): most
/// deltas fit in 1–3 bytes instead of 4–5 for absolute times.
const INCREMENTAL_CLOCK: u32 = 64;
const BUILTIN_CLOCK_BOOTTIME: u32 = 6;

/// First packet of a sequence: clears incremental state, defines the delta
/// clock and the default track, and interns every name the sequence uses.
fn sequence_start(sequence: u32, track: u64, names: &BTreeMap<String, u64>) -> TracePacket {
    let mut interned = InternedData::new();
    for (name, &iid) in names {
        let mut n = EventName::new();
        n.iid = Some(iid);
        n.name = Some(name.clone());
        interned.event_names.push(n);
    }
    for (iid, name) in [(CATEGORY_ONCPU, "oncpu"), (CATEGORY_OFFCPU, "offcpu")] {
        let mut c = EventCategory::new();
        c.iid = Some(iid);
        c.name = Some(name.into());
        interned.event_categories.push(c);
    }
    for (iid, name) in [(ANNOTATION_CPU, "cpu"), (ANNOTATION_STATE, "state")] {
        let mut a = DebugAnnotationName::new();
        a.iid = Some(iid);
        a.name = Some(name.into());
        interned.debug_annotation_names.push(a);
    }
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
    let mut event_defaults = TrackEventDefaults::new();
    event_defaults.track_uuid = Some(track);
    let mut defaults = TracePacketDefaults::new();
    defaults.timestamp_clock_id = Some(INCREMENTAL_CLOCK);
    defaults.track_event_defaults = Some(event_defaults).into();

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
    fn packet(&mut self, ts: u64, event: TrackEvent) -> TracePacket {
        let mut packet = TracePacket::new();
        packet.set_timestamp(ts - self.last_ts);
        self.last_ts = ts;
        // No SEQ_NEEDS_INCREMENTAL_STATE flag: 2 bytes a packet, and it only
        // matters for sequences with gaps, which a file we write never has.
        packet.set_trusted_packet_sequence_id(self.id);
        packet.set_track_event(event);
        packet
    }
}

fn annotation(name_iid: u64) -> DebugAnnotation {
    let mut a = DebugAnnotation::new();
    a.set_name_iid(name_iid);
    a
}

fn slice_packets(tl: &Timeline, t: &ThreadTimeline, names: &BTreeMap<String, u64>, seq: &mut Sequence) -> Vec<TracePacket> {
    let mut packets = Vec::new();
    for span in &t.spans {
        let Some((name, category)) = slice_label(&span.state) else { continue };
        let mut begin = TrackEvent::new();
        begin.set_type(Type::TYPE_SLICE_BEGIN);
        begin.set_name_iid(names[&name]);
        begin.category_iids.push(category);
        match span.state {
            SpanState::OnCpu { cpu: Some(cpu) } => {
                let mut a = annotation(ANNOTATION_CPU);
                a.set_uint_value(u64::from(cpu));
                begin.debug_annotations.push(a);
            }
            SpanState::OffCpu(OffReason::Blocked { state }) => {
                let mut a = annotation(ANNOTATION_STATE);
                a.set_string_value(state.describe().into());
                begin.debug_annotations.push(a);
            }
            _ => {}
        }
        let mut end = TrackEvent::new();
        end.set_type(Type::TYPE_SLICE_END);
        packets.push(seq.packet(span.start_ns - tl.start_ns, begin));
        packets.push(seq.packet(span.end_ns - tl.start_ns, end));
    }
    packets
}

fn counter_packets(tl: &Timeline, seq: &mut Sequence) -> Vec<TracePacket> {
    let mut changes: BTreeMap<u64, i64> = BTreeMap::new();
    for t in tl.workers() {
        for span in t.spans.iter().filter(|s| matches!(s.state, SpanState::OnCpu { .. })) {
            *changes.entry(span.start_ns - tl.start_ns).or_default() += 1;
            *changes.entry(span.end_ns - tl.start_ns).or_default() -= 1;
        }
    }
    let mut level = 0;
    let mut packets = Vec::new();
    for (ts, delta) in changes {
        if delta == 0 {
            continue;
        }
        level += delta;
        let mut event = TrackEvent::new();
        event.set_type(Type::TYPE_COUNTER);
        event.set_counter_value(level);
        packets.push(seq.packet(ts, event));
    }
    packets
}

/// Writes the trace; returns the number of packets.
pub fn write(tl: &Timeline, out: impl Write) -> io::Result<usize> {
    let mut writer = PacketWriter { out, packets: 0 };
    for packet in descriptors(tl) {
        writer.write(&packet)?;
    }
    let names = name_ids(tl);
    // One sequence per thread (its track is the sequence default), one for the counter.
    for (i, t) in tl.threads.iter().enumerate() {
        let mut seq = Sequence { id: i as u32 + 1, last_ts: 0 };
        writer.write(&sequence_start(seq.id, thread_uuid(tl.pid, t.tid), &names))?;
        for packet in slice_packets(tl, t, &names, &mut seq) {
            writer.write(&packet)?;
        }
    }
    let mut seq = Sequence { id: tl.threads.len() as u32 + 1, last_ts: 0 };
    writer.write(&sequence_start(seq.id, counter_uuid(tl.pid), &names))?;
    for packet in counter_packets(tl, &mut seq) {
        writer.write(&packet)?;
    }
    writer.out.flush()?;
    Ok(writer.packets)
}
