//! The Perfetto export decoded with the Perfetto protos and checked: tracks,
//! interned names, balanced and ordered slices, and the same spans as the
//! Chrome export.

mod common;

use common::fixture;
use scope_model::Symbols;
use perfetto_protos::trace::Trace;
use perfetto_protos::track_event::track_event::Type;
use protobuf::Message;
use std::collections::{BTreeMap, BTreeSet};

struct Decoded {
    tracks: BTreeMap<u64, String>,
    /// (track name, start ns, end ns, slice name, category)
    slices: Vec<(String, u64, u64, String, String)>,
    counters: Vec<(u64, i64)>,
    bytes: usize,
}

fn decode() -> Decoded {
    let mut bytes = Vec::new();
    scope_export::perfetto::write(&fixture(), &Symbols::default(), &mut bytes).unwrap();
    let trace = Trace::parse_from_bytes(&bytes).expect("valid Trace proto");
    let mut tracks = BTreeMap::new();
    // Interning, default track and clock are per sequence.
    #[derive(Default)]
    struct SeqState {
        names: BTreeMap<u64, String>,
        categories: BTreeMap<u64, String>,
        track: Option<u64>,
        counter_tracks: Vec<u64>,
        ts: Option<u64>,
    }
    let mut sequences: BTreeMap<u32, SeqState> = BTreeMap::new();
    let mut open: BTreeMap<u64, Vec<(u64, String, String)>> = BTreeMap::new();
    let mut slices = Vec::new();
    let mut counters = Vec::new();
    for packet in &trace.packet {
        if packet.has_track_descriptor() {
            let td = packet.track_descriptor();
            let name = match td.thread.as_ref() {
                Some(t) => t.thread_name().to_string(),
                None => td.process.as_ref().map_or(td.name().to_string(), |p| p.process_name().to_string()),
            };
            tracks.insert(td.uuid(), name);
            continue;
        }
        let seq = sequences.entry(packet.trusted_packet_sequence_id()).or_default();
        if packet.sequence_flags() & 1 != 0 {
            assert!(packet.first_packet_on_sequence(), "state cleared only at sequence start here");
            let clocks = &packet.clock_snapshot().clocks;
            let inc = clocks.iter().find(|c| c.clock_id() == 64).expect("incremental clock defined");
            assert!(inc.is_incremental());
            assert!(clocks.iter().any(|c| c.clock_id() == 6), "incremental clock anchored to BOOTTIME");
            seq.ts = Some(inc.timestamp());
            let defaults = packet.trace_packet_defaults.as_ref().expect("defaults");
            assert_eq!(defaults.timestamp_clock_id(), 64);
            seq.track = defaults.track_event_defaults.as_ref().map(|d| d.track_uuid());
            seq.counter_tracks = defaults.track_event_defaults.as_ref().map_or(Vec::new(), |d| d.extra_counter_track_uuids.clone());
            let interned = packet.interned_data.as_ref().expect("interned data");
            seq.names = interned.event_names.iter().map(|n| (n.iid(), n.name().to_string())).collect();
            seq.categories = interned.event_categories.iter().map(|c| (c.iid(), c.name().to_string())).collect();
            continue;
        }
        if packet.has_track_event() {
            let ts = seq.ts.expect("clock defined before events") + packet.timestamp();
            seq.ts = Some(ts);
            let ev = packet.track_event();
            let track = ev.track_uuid.or(seq.track).expect("a track");
            assert!(tracks.contains_key(&track), "event on undeclared track {track}");
            // Counter values may ride on any event, for the sequence's
            // default counter tracks.
            assert!(ev.extra_counter_values.len() <= seq.counter_tracks.len(), "a counter track for each value");
            for (&value, &uuid) in ev.extra_counter_values.iter().zip(&seq.counter_tracks) {
                assert_eq!(tracks.get(&uuid).map(String::as_str), Some("workers on CPU"));
                counters.push((ts, value));
            }
            match ev.type_() {
                Type::TYPE_SLICE_BEGIN => {
                    let name = seq.names.get(&ev.name_iid()).expect("name interned").clone();
                    let cat: Vec<String> = ev.category_iids.iter().map(|i| seq.categories.get(i).expect("category interned").clone()).collect();
                    let cat = cat.join(",");
                    open.entry(track).or_default().push((ts, name, cat));
                }
                Type::TYPE_SLICE_END => {
                    let (start, name, cat) = open.get_mut(&track).and_then(Vec::pop).expect("END matches a BEGIN");
                    assert!(ts > start, "slice has positive length");
                    slices.push((tracks[&track].clone(), start, ts, name, cat));
                }
                Type::TYPE_COUNTER => counters.push((ts, ev.counter_value())),
                other => panic!("unexpected event type {other:?}"),
            }
        }
    }
    assert!(open.values().all(Vec::is_empty), "unclosed slices");
    // Sequences are written one after another; the viewer sorts by time.
    counters.sort();
    Decoded { tracks, slices, counters, bytes: bytes.len() }
}

#[test]
fn tracks_are_named_like_the_chrome_rows() {
    let d = decode();
    let names: BTreeSet<&str> = d.tracks.values().map(String::as_str).collect();
    for expected in ["demo-app", "worker 0 (tid 4243)", "worker 1 (tid 4244)", "demo-app (tid 4242) · not a worker", "workers on CPU"] {
        assert!(names.contains(expected), "{expected} missing from {names:?}");
    }
}

#[test]
fn same_spans_as_the_chrome_export() {
    let d = decode();
    let chrome = scope_export::chrome::to_value(&fixture(), &Symbols::default(), "test");
    let thread_names: BTreeMap<u64, String> = chrome["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == "thread_name")
        .map(|e| (e["tid"].as_u64().unwrap(), e["args"]["name"].as_str().unwrap().to_string()))
        .collect();
    let from_chrome: BTreeSet<(String, u64, u64, String, String)> = chrome["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "X")
        .map(|e| {
            let start = (e["ts"].as_f64().unwrap() * 1000.0).round() as u64;
            let dur = (e["dur"].as_f64().unwrap() * 1000.0).round() as u64;
            (
                thread_names[&e["tid"].as_u64().unwrap()].clone(),
                start,
                start + dur,
                e["name"].as_str().unwrap().to_string(),
                e["cat"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let from_perfetto: BTreeSet<_> = d.slices.iter().cloned().collect();
    assert_eq!(from_perfetto.len(), d.slices.len(), "no duplicate slices");
    // Chrome rounds to ns through µs floats: compare with a 1 ns slack.
    assert_eq!(from_perfetto.len(), from_chrome.len());
    for (p, c) in from_perfetto.iter().zip(&from_chrome) {
        assert_eq!((&p.0, &p.3, &p.4), (&c.0, &c.3, &c.4));
        assert!(p.1.abs_diff(c.1) <= 1 && p.2.abs_diff(c.2) <= 1, "{p:?} vs {c:?}");
    }
}

#[test]
fn worker_counter_stays_within_worker_count() {
    let d = decode();
    assert!(!d.counters.is_empty());
    assert!(d.counters.iter().all(|&(_, v)| (0..=2).contains(&v)), "{:?}", d.counters);
    assert_eq!(d.counters.last().unwrap().1, 0, "all spans closed at the end");
}

#[test]
fn worker_counter_follows_the_on_cpu_slices() {
    let d = decode();
    let mut changes: BTreeMap<u64, i64> = BTreeMap::new();
    for s in d.slices.iter().filter(|s| s.0.starts_with("worker ") && s.4.split(',').next() == Some("oncpu")) {
        *changes.entry(s.1).or_default() += 1;
        *changes.entry(s.2).or_default() -= 1;
    }
    let mut level = 0;
    let expected: Vec<(u64, i64)> = changes
        .into_iter()
        .filter(|&(_, delta)| delta != 0)
        .map(|(ts, delta)| {
            level += delta;
            (ts, level)
        })
        .collect();
    assert_eq!(d.counters, expected, "one value per change, at its instant");
}

#[test]
fn perfetto_is_much_smaller_than_chrome_json() {
    let d = decode();
    let json = serde_json::to_vec(&scope_export::chrome::to_value(&fixture(), &Symbols::default(), "test")).unwrap();
    let ratio = json.len() as f64 / d.bytes as f64;
    eprintln!("perfetto {} B, chrome {} B, ratio {ratio:.1}", d.bytes, json.len());
    assert!(ratio >= 3.0, "perfetto {} B vs chrome {} B", d.bytes, json.len());
}

#[test]
fn perfetto_dump_snapshot() {
    let d = decode();
    let mut text = String::new();
    for (uuid, name) in &d.tracks {
        text.push_str(&format!("track {uuid:#x} {name}\n"));
    }
    for s in d.slices.iter().take(40) {
        text.push_str(&format!("{:>44} {:>10} {:>10} {:<12} {}\n", s.0, s.1, s.2, s.3, s.4));
    }
    insta::assert_snapshot!("perfetto_dump", text);
}


/// Polls carry Tokio's task id where the probe read it (else our serial),
/// as one interned-name annotation.
#[test]
fn polls_carry_tokio_task_ids() {
    let (mut tl, symbols) = common::fixture_with_stacks();
    let serials: BTreeSet<u32> = tl.threads.iter().flat_map(|t| t.polls.iter().map(|p| p.serial)).collect();
    let named = *serials.iter().next().expect("the fixture has polls");
    tl.tokio_ids.insert(named, 4242);
    let polls_of_named = tl.threads.iter().flat_map(|t| &t.polls).filter(|p| p.serial == named).count();
    let mut bytes = Vec::new();
    scope_export::perfetto::write(&tl, &symbols, &mut bytes).unwrap();
    let trace = Trace::parse_from_bytes(&bytes).unwrap();
    let mut names: BTreeMap<(u32, u64), String> = BTreeMap::new();
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for packet in &trace.packet {
        let seq = packet.trusted_packet_sequence_id();
        if let Some(interned) = packet.interned_data.as_ref() {
            for n in &interned.debug_annotation_names {
                names.insert((seq, n.iid()), n.name().to_string());
            }
        }
        if packet.has_track_event() {
            for a in &packet.track_event().debug_annotations {
                let name = names.get(&(seq, a.name_iid())).expect("annotation name interned").clone();
                seen.entry(name).or_default().push(a.uint_value());
            }
        }
    }
    let ids = seen.get("tokio_task_id").cloned().unwrap_or_default();
    assert_eq!(ids.len(), polls_of_named, "{seen:?}");
    assert!(ids.iter().all(|&id| id == 4242));
    let serial_tagged = seen.get("task").map_or(0, Vec::len);
    let all_polls = tl.threads.iter().map(|t| t.polls.len()).sum::<usize>();
    assert_eq!(serial_tagged + ids.len(), all_polls, "one task annotation per poll");
}
