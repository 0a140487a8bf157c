//! Stacks in the exports, from the fixture with synthetic stacks and names:
//! span names, blocked stacks, samples and their frame trees / callstacks.

mod common;

use common::{WORKER, fixture_with_stacks};
use perfetto_protos::trace::Trace;
use protobuf::Message;
use std::collections::BTreeMap;

#[test]
fn chrome_names_spans_and_carries_stacks() {
    let (tl, symbols) = fixture_with_stacks();
    let value = scope_export::chrome::to_value(&tl, &symbols, "test");
    let events = value["traceEvents"].as_array().unwrap();
    let on = events.iter().filter(|e| e["cat"].as_str().is_some_and(|c| c.split(',').next() == Some("oncpu")) && e["tid"] == WORKER);
    assert!(on.clone().any(|e| e["name"] == "demo_app::mix_step"), "span named by its sample's innermost user frame");
    let blocked: Vec<_> = events.iter().filter(|e| e["cat"].as_str().is_some_and(|c| c.split(',').next() == Some("offcpu")) && e["tid"] == WORKER && e["args"]["reason"] == "blocked").collect();
    assert!(!blocked.is_empty());
    for b in &blocked {
        assert_eq!(b["args"]["blocked_in"], "block_in_syscall (src/main.rs:7)");
        assert_eq!(b["args"]["stack"][0], "std::thread::sleep (src/main.rs:7)");
        assert_eq!(b["args"]["stack"][3], "clone3 (src/main.rs:7)");
    }
    let sample = events.iter().find(|e| e["cat"] == "sample").expect("sample event");
    assert_eq!(sample["args"]["stack"].as_array().unwrap().len(), 4, "inlined frame expanded");
    // sf → leaf; walking parents gives the stack outermost last.
    let frames = value["stackFrames"].as_object().unwrap();
    let mut id = sample["sf"].as_str().unwrap().to_string();
    let mut walked = Vec::new();
    loop {
        let node = &frames[&id];
        walked.push(node["name"].as_str().unwrap().to_string());
        match node["parent"].as_str() {
            Some(p) => id = p.to_string(),
            None => break,
        }
    }
    assert_eq!(walked[0], "demo_app::mix_step (src/main.rs:7) [inlined]");
    assert_eq!(walked.last().unwrap(), "clone3 (src/main.rs:7)");
    insta::assert_json_snapshot!("chrome_stack_frames", value["stackFrames"]);
}

#[test]
fn perfetto_samples_resolve_to_interned_callstacks() {
    let (tl, symbols) = fixture_with_stacks();
    let mut bytes = Vec::new();
    scope_export::perfetto::write(&tl, &symbols, &mut bytes).unwrap();
    let trace = Trace::parse_from_bytes(&bytes).unwrap();
    let mut functions = BTreeMap::new();
    let mut frames = BTreeMap::new();
    let mut callstacks = BTreeMap::new();
    let mut strings = BTreeMap::new();
    let mut samples = Vec::new();
    for p in &trace.packet {
        if let Some(i) = p.interned_data.as_ref() {
            for s in &i.function_names {
                functions.insert(s.iid(), String::from_utf8(s.str().to_vec()).unwrap());
            }
            for f in &i.frames {
                frames.insert(f.iid(), f.function_name_id());
                assert!(i.mappings.iter().any(|m| m.iid() == f.mapping_id()), "frame's mapping interned");
            }
            for c in &i.callstacks {
                callstacks.insert(c.iid(), c.frame_ids.clone());
            }
            for s in &i.debug_annotation_string_values {
                strings.insert(s.iid(), String::from_utf8(s.str().to_vec()).unwrap());
            }
        }
        if p.has_perf_sample() {
            samples.push(p.perf_sample().clone());
        }
    }
    assert_eq!(samples.len(), 1);
    let s = &samples[0];
    assert_eq!((s.tid(), s.cpu()), (WORKER, 1));
    let names: Vec<&str> = callstacks[&s.callstack_iid()].iter().map(|f| functions[&frames[f]].as_str()).collect();
    assert_eq!(names, ["clone3", "tokio::runtime::task::raw::poll", "cpu_heavy_poll", "demo_app::mix_step"], "outermost first");
    // Its blocked spans are outside polls: only the sched data shows them
    // (`perfetto.rs` has one inside a poll).
    assert!(strings.is_empty(), "{strings:?}");
}

#[test]
fn arrows_go_from_spawn_to_first_poll_and_from_wake_to_next_poll() {
    let (tl, symbols) = fixture_with_stacks();
    let value = scope_export::chrome::to_value(&tl, &symbols, "test");
    let events = value["traceEvents"].as_array().unwrap();
    let polls: Vec<&serde_json::Value> = events.iter().filter(|e| e["cat"] == "poll").collect();
    assert_eq!(polls.len(), 2, "the spawned task is polled twice");
    assert_eq!(polls[0]["name"], "demo_app::spawned", "kind named from the generic in its symbol");
    let arrow = |cat: &str| {
        let end = |ph: &str| events.iter().find(|e| e["cat"] == cat && e["ph"] == ph).unwrap_or_else(|| panic!("{cat} {ph}")).clone();
        (end("s"), end("f"))
    };
    let (start, finish) = arrow("spawn");
    assert_eq!(start["id"], finish["id"]);
    assert_eq!(finish["ts"], polls[0]["ts"], "arrow lands on the first poll");
    assert!(start["ts"].as_f64() < finish["ts"].as_f64());
    let (start, finish) = arrow("self-wake");
    assert_ne!(start["id"], polls[0]["args"]["task"], "ids of spawn and wake arrows differ");
    assert_eq!(start["id"], finish["id"]);
    assert_eq!(finish["ts"], polls[1]["ts"], "the wake lands on the next poll");
    let within = |ts: &serde_json::Value, poll: &serde_json::Value| {
        let (t, s, d) = (ts.as_f64().unwrap(), poll["ts"].as_f64().unwrap(), poll["dur"].as_f64().unwrap());
        s <= t && t <= s + d
    };
    assert!(within(&start["ts"], polls[0]), "the wake leaves from inside the first poll");
    assert_eq!(events.iter().filter(|e| e["ph"] == "s").count(), 2);

    // Perfetto links the slices carrying one flow id in time order, so an
    // arrow leaving the slice where another arrived may share its id.
    let mut bytes = Vec::new();
    scope_export::perfetto::write(&tl, &symbols, &mut bytes).unwrap();
    let trace = Trace::parse_from_bytes(&bytes).unwrap();
    let mut now: BTreeMap<u32, u64> = BTreeMap::new();
    let mut names: BTreeMap<(u32, u64), String> = BTreeMap::new();
    let mut by_id: BTreeMap<u64, Vec<(u64, String)>> = BTreeMap::new();
    for p in &trace.packet {
        let seq = p.trusted_packet_sequence_id();
        if let Some(i) = p.interned_data.as_ref() {
            names.extend(i.event_names.iter().map(|n| ((seq, n.iid()), n.name().to_string())));
        }
        if !p.has_track_event() {
            continue;
        }
        let ts = now.entry(seq).or_default();
        *ts += p.timestamp();
        let ev = p.track_event();
        assert!(ev.flow_ids.is_empty(), "ids as varints");
        #[allow(deprecated)]
        for id in &ev.flow_ids_old {
            by_id.entry(*id).or_default().push((*ts, names[&(seq, ev.name_iid())].clone()));
        }
    }
    let mut arrows = Vec::new();
    for slices in by_id.values_mut() {
        slices.sort();
        assert!(slices.len() >= 2, "no id on a lone slice: {slices:?}");
        arrows.extend(slices.windows(2).map(|w| (w[0].clone(), w[1].clone())));
    }
    arrows.sort();
    assert_eq!(arrows.len(), 2, "a spawn and a wake arrow: {arrows:?}");
    let us = |v: &serde_json::Value| (v.as_f64().unwrap() * 1000.0).round() as u64;
    assert_eq!(arrows[0].1, (us(&polls[0]["ts"]), "demo_app::spawned".to_string()), "spawn lands on the first poll");
    assert_eq!(arrows[1].0, arrows[0].1, "the wake leaves from the first poll");
    assert_eq!(arrows[1].1, (us(&polls[1]["ts"]), "demo_app::spawned".to_string()), "the wake lands on the next poll");
}

/// A stack not unwound to its thread's start says so as its outermost
/// frame, in both formats: a short stack is never shown as a whole one.
#[test]
fn stacks_cut_short_say_so() {
    let (mut tl, symbols) = fixture_with_stacks();
    for stack in &mut tl.stacks {
        stack.complete = false;
    }
    let value = scope_export::chrome::to_value(&tl, &symbols, "test");
    let events = value["traceEvents"].as_array().unwrap();
    let blocked = events.iter().find(|e| e["cat"].as_str().is_some_and(|c| c.starts_with("offcpu")) && e["args"]["stack"].is_array()).expect("a blocked stack");
    let lines = blocked["args"]["stack"].as_array().unwrap();
    assert_eq!(lines.last().unwrap(), scope_model::CUT_SHORT, "{lines:?}");
    assert_eq!(lines[0], "std::thread::sleep (src/main.rs:7)");
    let mut bytes = Vec::new();
    scope_export::perfetto::write(&tl, &symbols, &mut bytes).unwrap();
    let trace = Trace::parse_from_bytes(&bytes).unwrap();
    let names: Vec<String> = trace
        .packet
        .iter()
        .filter_map(|p| p.interned_data.as_ref())
        .flat_map(|i| i.function_names.iter().map(|s| String::from_utf8(s.str().to_vec()).unwrap()))
        .collect();
    assert!(names.iter().any(|n| n == scope_model::CUT_SHORT), "{names:?}");
}
