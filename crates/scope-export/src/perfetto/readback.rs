//! Our Perfetto trace read back with the official protos the way the trace
//! processor reads it (record first, read your own output to validate):
//! per-sequence interning, default tracks and delta clocks for track
//! events; for the compact sched bundles, each CPU's previous thread is its
//! last `next_pid` (the first switch only primes it) and a waking's waker
//! is whoever that stream has on the bundle's CPU. Anything the viewer
//! would reject or misread is an error. Used by the tests, unit and kernel.

use perfetto_protos::trace::Trace;
use perfetto_protos::track_event::track_event::Type;
use protobuf::Message;
use std::collections::BTreeMap;

/// A slice: track name, start, end (ns since the start), name, category,
/// annotations by name (uint values as text), flow ids.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Slice {
    pub track: String,
    pub start: u64,
    pub end: u64,
    pub name: String,
    pub category: String,
    pub args: BTreeMap<String, String>,
    pub flows: Vec<u64>,
}

/// A stretch a thread ran on a CPU, as the sched data says, and the state
/// it left in (`prev_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Run {
    pub tid: u32,
    pub cpu: u32,
    pub start: u64,
    pub end: u64,
    pub out_state: i64,
}

/// A waking: when, the woken tid, and the waker (0: the idle task).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Waking {
    pub ts: u64,
    pub wakee: u32,
    pub waker: u32,
}

#[derive(Default)]
pub struct Decoded {
    pub tracks: BTreeMap<u64, String>,
    /// Sorted by track name, then start.
    pub slices: Vec<Slice>,
    /// Instants: (track name, ts, name, flow ids).
    pub instants: Vec<(String, u64, String, Vec<u64>)>,
    /// Counter values by track name.
    pub counters: BTreeMap<String, Vec<(u64, i64)>>,
    /// Sorted by thread, then CPU, then start (not by time across CPUs).
    pub runs: Vec<Run>,
    /// Sorted by time.
    pub wakings: Vec<Waking>,
    /// `SystemInfo.utsname` (sysname, release).
    pub system: Option<(String, String)>,
    pub bytes: usize,
}

#[derive(Default)]
struct SeqState {
    names: BTreeMap<u64, String>,
    categories: BTreeMap<u64, String>,
    annotation_names: BTreeMap<u64, String>,
    strings: BTreeMap<u64, String>,
    track: Option<u64>,
    ts: Option<u64>,
}

/// Fails with what is wrong.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

fn get<'a, V>(map: &'a BTreeMap<u64, V>, key: u64, what: &str) -> Result<&'a V, String> {
    map.get(&key).ok_or_else(|| format!("{what} {key} not interned"))
}

pub fn read(bytes: &[u8]) -> Result<Decoded, String> {
    let trace = Trace::parse_from_bytes(bytes).map_err(|e| format!("not a Trace proto: {e}"))?;
    let mut d = Decoded { bytes: bytes.len(), ..Decoded::default() };
    let mut sequences: BTreeMap<u32, SeqState> = BTreeMap::new();
    let mut open: BTreeMap<u64, Vec<Slice>> = BTreeMap::new();
    let mut counter_tracks = std::collections::BTreeSet::new();
    // Per CPU: what runs since when (None before the priming switch).
    let mut cpus: BTreeMap<u32, Option<(u32, u64)>> = BTreeMap::new();
    for packet in &trace.packet {
        if packet.has_track_descriptor() {
            let td = packet.track_descriptor();
            let name = match td.thread.as_ref() {
                Some(t) => t.thread_name().to_string(),
                None => td.process.as_ref().map_or(td.name().to_string(), |p| p.process_name().to_string()),
            };
            d.tracks.insert(td.uuid(), name);
            if td.counter.is_some() {
                counter_tracks.insert(td.uuid());
            }
            continue;
        }
        if packet.has_system_info() {
            let uts = packet.system_info().utsname.as_ref().ok_or("SystemInfo without utsname")?;
            d.system = Some((uts.sysname().to_string(), uts.release().to_string()));
            continue;
        }
        if packet.has_ftrace_events() {
            let bundle = packet.ftrace_events();
            ensure!(bundle.cpu.is_some(), "a bundle without its CPU (the trace processor drops it)");
            sched(bundle, cpus.entry(bundle.cpu()).or_default(), &mut d)?;
            continue;
        }
        let seq = sequences.entry(packet.trusted_packet_sequence_id()).or_default();
        if packet.sequence_flags() & 1 != 0 {
            ensure!(packet.first_packet_on_sequence(), "state cleared other than at a sequence's start");
            let clocks = &packet.clock_snapshot().clocks;
            let inc = clocks.iter().find(|c| c.clock_id() == 64).ok_or("no incremental clock")?;
            ensure!(inc.is_incremental(), "clock 64 not incremental");
            ensure!(clocks.iter().any(|c| c.clock_id() == 6), "incremental clock not anchored to BOOTTIME");
            seq.ts = Some(inc.timestamp());
            let defaults = packet.trace_packet_defaults.as_ref().ok_or("sequence without defaults")?;
            ensure!(defaults.timestamp_clock_id() == 64, "default clock {}", defaults.timestamp_clock_id());
            seq.track = defaults.track_event_defaults.as_ref().map(|d| d.track_uuid());
            let interned = packet.interned_data.as_ref().ok_or("sequence start without interned data")?;
            seq.names = interned.event_names.iter().map(|n| (n.iid(), n.name().to_string())).collect();
            seq.categories = interned.event_categories.iter().map(|c| (c.iid(), c.name().to_string())).collect();
            seq.annotation_names = interned.debug_annotation_names.iter().map(|n| (n.iid(), n.name().to_string())).collect();
            seq.strings = interned.debug_annotation_string_values.iter().map(|s| (s.iid(), String::from_utf8_lossy(s.str()).into_owned())).collect();
            continue;
        }
        if !packet.has_track_event() {
            continue;
        }
        let ts = seq.ts.ok_or("an event before its sequence's clock")? + packet.timestamp();
        seq.ts = Some(ts);
        let ev = packet.track_event();
        let track = ev.track_uuid.or(seq.track).ok_or("an event without a track")?;
        let track_name = get(&d.tracks, track, "track")?.clone();
        #[allow(deprecated)]
        let flows = ev.flow_ids_old.clone();
        match ev.type_() {
            Type::TYPE_SLICE_BEGIN => {
                let name = get(&seq.names, ev.name_iid(), "name")?.clone();
                let category = ev.category_iids.iter().map(|&i| get(&seq.categories, i, "category").cloned()).collect::<Result<Vec<_>, _>>()?;
                let mut args = BTreeMap::new();
                for a in &ev.debug_annotations {
                    let key = get(&seq.annotation_names, a.name_iid(), "annotation name")?.clone();
                    let value = if a.has_string_value_iid() { get(&seq.strings, a.string_value_iid(), "string")?.clone() } else { a.uint_value().to_string() };
                    args.insert(key, value);
                }
                open.entry(track).or_default().push(Slice { track: track_name, start: ts, end: 0, name, category: category.join(","), args, flows });
            }
            Type::TYPE_SLICE_END => {
                let mut slice = open.get_mut(&track).and_then(Vec::pop).ok_or_else(|| format!("an END without a BEGIN on {track_name} at {ts}"))?;
                ensure!(ts > slice.start, "a slice of no length: {slice:?}");
                slice.end = ts;
                d.slices.push(slice);
            }
            Type::TYPE_INSTANT => d.instants.push((track_name, ts, get(&seq.names, ev.name_iid(), "name")?.clone(), flows)),
            Type::TYPE_COUNTER => {
                ensure!(counter_tracks.contains(&track), "a counter value on {track_name}, not a counter track");
                d.counters.entry(track_name).or_default().push((ts, ev.counter_value()));
            }
            other => return Err(format!("unexpected event type {other:?}")),
        }
    }
    ensure!(open.values().all(Vec::is_empty), "unclosed slices: {open:?}");
    // Sequences are written one after another; the viewer sorts by time.
    d.slices.sort();
    d.runs.sort();
    d.wakings.sort();
    Ok(d)
}

/// One bundle of one CPU, replayed: every switch closes what ran before it.
fn sched(bundle: &perfetto_protos::ftrace_event_bundle::FtraceEventBundle, current: &mut Option<(u32, u64)>, d: &mut Decoded) -> Result<(), String> {
    let s = bundle.compact_sched.as_ref().ok_or("a bundle without compact sched")?;
    let n = s.switch_timestamp.len();
    ensure!([s.switch_prev_state.len(), s.switch_next_pid.len(), s.switch_next_prio.len(), s.switch_next_comm_index.len()].iter().all(|&l| l == n), "switch arrays of different lengths");
    let w = s.waking_timestamp.len();
    ensure!([s.waking_pid.len(), s.waking_target_cpu.len(), s.waking_prio.len(), s.waking_comm_index.len()].iter().all(|&l| l == w), "waking arrays of different lengths");
    ensure!(s.switch_next_comm_index.iter().chain(&s.waking_comm_index).all(|&i| (i as usize) < s.intern_table.len()), "a comm index past the table");
    // Switches and wakings interleave by time on the CPU.
    let mut events: Vec<(u64, usize, bool)> = Vec::new();
    let mut ts = 0;
    for (i, delta) in s.switch_timestamp.iter().enumerate() {
        ts += delta;
        events.push((ts, i, true));
    }
    ts = 0;
    for (i, delta) in s.waking_timestamp.iter().enumerate() {
        ts += delta;
        events.push((ts, i, false));
    }
    events.sort_by_key(|e| (e.0, !e.2));
    for (ts, i, switch) in events {
        if switch {
            if let Some((tid, since)) = *current
                && tid != 0
            {
                d.runs.push(Run { tid, cpu: bundle.cpu(), start: since, end: ts, out_state: s.switch_prev_state[i] });
            }
            *current = Some((s.switch_next_pid[i] as u32, ts));
        } else {
            let (waker, _) = current.ok_or("a waking on a CPU before its first switch (the trace processor drops it)")?;
            d.wakings.push(Waking { ts, wakee: s.waking_pid[i] as u32, waker });
        }
    }
    Ok(())
}
