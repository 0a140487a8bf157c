//! Counter tracks from a fixture whose tasks are known: one task spawned,
//! polled, woken by itself and polled again.

mod common;

use common::fixture_with_stacks;
use perfetto_protos::trace::Trace;
use perfetto_protos::track_event::track_event::Type;
use protobuf::Message;
use scope_export::counters::{POLLS_PER_SECOND, READY_TASKS, WORKERS_ON_CPU, series};
use std::collections::BTreeMap;

#[test]
fn ready_tasks_rise_at_spawn_and_wake_and_fall_at_the_poll() {
    let (tl, _) = fixture_with_stacks();
    let all = series(&tl, &scope_export::flows::flows(&tl));
    let values = |name: &str| -> Vec<i64> { all.iter().find(|s| s.name == name).unwrap().points.iter().map(|p| p.1).collect() };
    let ready = values(READY_TASKS);
    assert_eq!(ready.iter().max(), Some(&1), "one task waits at a time: {ready:?}");
    assert_eq!(ready.last(), Some(&0), "and it was polled: {ready:?}");
    // 2 polls in one 100 ms bucket: 20 per second there.
    assert!(values(POLLS_PER_SECOND).contains(&20), "{:?}", values(POLLS_PER_SECOND));
    assert_eq!(values(WORKERS_ON_CPU).iter().max(), Some(&1), "one worker in the fixture");
}

#[test]
fn perfetto_and_chrome_carry_the_task_counters() {
    let (tl, symbols) = fixture_with_stacks();
    let mut bytes = Vec::new();
    scope_export::perfetto::write(&tl, &symbols, &mut bytes).unwrap();
    let trace = Trace::parse_from_bytes(&bytes).unwrap();
    let mut tracks: BTreeMap<u64, String> = BTreeMap::new();
    let mut defaults: BTreeMap<u32, u64> = BTreeMap::new();
    let mut values: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for p in &trace.packet {
        if p.has_track_descriptor() {
            let td = p.track_descriptor();
            if td.counter.is_some() {
                tracks.insert(td.uuid(), td.name().to_string());
            }
        }
        let seq = p.trusted_packet_sequence_id();
        if let Some(track) = p.trace_packet_defaults.as_ref().and_then(|d| d.track_event_defaults.as_ref()).map(|d| d.track_uuid()) {
            defaults.insert(seq, track);
        }
        if p.has_track_event() && p.track_event().type_() == Type::TYPE_COUNTER {
            let ev = p.track_event();
            let track = ev.track_uuid.or(defaults.get(&seq).copied()).expect("a track");
            let name = tracks.get(&track).expect("counter on a declared counter track").clone();
            values.entry(name).or_default().push(ev.counter_value());
        }
    }
    assert_eq!(values.get(READY_TASKS).and_then(|v| v.iter().max()), Some(&1), "{values:?}");
    assert!(values.get(POLLS_PER_SECOND).is_some_and(|v| v.contains(&20)), "{values:?}");
    let chrome = scope_export::chrome::to_value(&tl, &symbols, "test");
    let counters = chrome["traceEvents"].as_array().unwrap().iter().filter(|e| e["ph"] == "C" && e["name"] == READY_TASKS).count();
    assert!(counters >= 2, "the same series in the Chrome trace (a rise and a fall): {counters}");
}
