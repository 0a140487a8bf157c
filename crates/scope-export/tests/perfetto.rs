//! The Perfetto export decoded with the Perfetto protos and read back as the
//! trace processor would (`common::perfetto`): tracks, whole polls, blocked
//! spans inside polls, the sched data against the model's on-CPU spans,
//! wakings, counters, and the same content as the Chrome export.

mod common;

use common::perfetto::{Run, decode};
use common::{WORKER, fixture, fixture_blocked_in_poll, fixture_with_stacks, fixture_with_wakings, on_cpu};
use scope_model::{OffReason, SpanState, Symbols, Timeline};
use std::collections::{BTreeMap, BTreeSet};

fn chrome_events(tl: &Timeline, symbols: &Symbols) -> Vec<serde_json::Value> {
    scope_export::chrome::to_value(tl, symbols, "test")["traceEvents"].as_array().unwrap().clone()
}

#[test]
fn tracks_are_named_like_the_chrome_rows() {
    let d = decode(&fixture(), &Symbols::default());
    let names: BTreeSet<&str> = d.tracks.values().map(String::as_str).collect();
    for expected in ["demo-app", "worker 0 (tid 4243)", "worker 1 (tid 4244)", "demo-app (tid 4242) · not a worker", "workers on CPU"] {
        assert!(names.contains(expected), "{expected} missing from {names:?}");
    }
}

/// What the trace processor makes of the sched bundles is exactly the
/// model's on-CPU spans, each leaving in the state of the gap after it.
#[test]
fn sched_data_replays_every_on_cpu_span() {
    for (tl, symbols) in [(fixture(), Symbols::default()), fixture_blocked_in_poll()] {
        let d = decode(&tl, &symbols);
        let mut expected = Vec::new();
        for t in &tl.threads {
            for (i, s) in t.spans.iter().enumerate() {
                let SpanState::OnCpu { cpu: Some(cpu) } = s.state else { continue };
                let out_state = match t.spans.get(i + 1).map(|n| n.state) {
                    Some(SpanState::OffCpu(OffReason::Preempted)) => 0x100,
                    Some(SpanState::OffCpu(OffReason::Blocked { state })) => state.0 as i64 & 0xff,
                    _ if t.exited_ns == Some(s.end_ns) => 0x10,
                    _ => 0,
                };
                expected.push(Run { tid: t.tid, cpu, start: s.start_ns - tl.start_ns, end: s.end_ns - tl.start_ns, out_state });
            }
        }
        expected.sort();
        assert!(expected.len() > 20, "the fixture has switches");
        assert_eq!(d.runs, expected);
        assert!(d.runs.iter().any(|r| r.out_state == 1), "sleeps read as S");
        let (sysname, release) = d.system.clone().expect("SystemInfo: how to read prev_state");
        assert_eq!(sysname, "Linux");
        let version: Vec<u32> = release.split('.').map(|n| n.parse().expect("X.Y.Z")).collect();
        assert!(version.len() == 3 && (version[0], version[1]) >= (4, 14), "{release}: the encoding of 4.14 and later");
    }
}

/// Each waking ends a blocked span of the woken thread, before it runs, and
/// names the thread that woke it when that is one of ours.
#[test]
fn wakings_end_blocked_spans_and_name_our_wakers() {
    let tl = fixture_with_wakings();
    let d = decode(&tl, &Symbols::default());
    let mut expected = Vec::new();
    for t in &tl.threads {
        for (i, s) in t.spans.iter().enumerate().filter(|(_, s)| matches!(s.state, SpanState::OffCpu(OffReason::Blocked { .. }))) {
            let Some(w) = t.woken_by(s) else { continue };
            let ours = w.pid == tl.pid && tl.threads.iter().any(|o| o.tid == w.tid);
            assert!(!ours || on_cpu(&tl, w.tid, w.ts), "the fixture's wakers of ours run then");
            // The blocked span ends at the waking; the switch-in it led to
            // ends the wait for a CPU after it.
            let switch_in = t.wait_after(i).map_or(s.end_ns, |wait| wait.end_ns);
            expected.push((w.ts.min(switch_in - 1) - tl.start_ns, t.tid, if ours { w.tid } else { 0 }));
        }
    }
    expected.sort();
    let got: Vec<(u64, u32, u32)> = d.wakings.iter().map(|w| (w.ts, w.wakee, w.waker)).collect();
    assert!(!got.is_empty());
    assert_eq!(got, expected);
    assert!(got.iter().any(|w| w.2 != 0), "some waker is one of ours");
}

/// Polls are whole slices (their off-CPU time is the state track's to
/// show), named by kind, with their task and number.
#[test]
fn polls_are_whole_slices() {
    let (tl, symbols) = fixture_with_stacks();
    let d = decode(&tl, &symbols);
    let kinds = scope_export::tasks::kind_names(&tl, &symbols);
    let mut expected = Vec::new();
    for t in &tl.threads {
        for p in &t.polls {
            expected.push((t.display_name(), p.start_ns - tl.start_ns, p.end_ns - tl.start_ns, kinds[&tl.poll_fn(p)].clone(), p.number.to_string()));
        }
    }
    let got: Vec<_> = d.slices.iter().filter(|s| s.category == "poll").map(|s| (s.track.clone(), s.start, s.end, s.name.clone(), s.args["poll"].clone())).collect();
    assert_eq!(got.len(), 2);
    assert_eq!(got, expected);
    assert_eq!(got[0].3, "demo_app::spawned");
}

/// Where the runtime stalled, blocked inside a poll, the poll holds a slice
/// for it with the stack it blocked in: the same span as in the Chrome
/// trace. Blocking outside polls (a worker parking) is only sched data.
#[test]
fn blocking_inside_a_poll_is_a_slice_with_its_stack() {
    let (tl, symbols) = fixture_blocked_in_poll();
    let d = decode(&tl, &symbols);
    let blocked: Vec<_> = d.slices.iter().filter(|s| s.category.starts_with("offcpu")).collect();
    assert_eq!(blocked.len(), 1, "{blocked:?}");
    let b = blocked[0];
    assert_eq!((b.name.as_str(), b.category.as_str()), ("blocked (S)", "offcpu,blocking"));
    assert_eq!(b.args["blocked_in"], "block_in_syscall (src/main.rs:7)");
    assert!(b.args["stack"].starts_with("std::thread::sleep (src/main.rs:7)\nblock_in_syscall"), "{}", b.args["stack"]);
    let poll = d.slices.iter().find(|s| s.name == "demo_app::sleeper").expect("the sleeping poll");
    assert_eq!(poll.category, if poll.end - poll.start >= 10_000_000 { "long_poll" } else { "poll" });
    assert!(poll.start < b.start && b.end < poll.end, "nested in the poll");
    let chrome: Vec<(u64, u64)> = chrome_events(&tl, &symbols)
        .iter()
        .filter(|e| e["cat"] == "offcpu,blocking")
        .map(|e| {
            let us = |k: &str| (e[k].as_f64().unwrap() * 1000.0).round() as u64;
            (us("ts"), us("ts") + us("dur"))
        })
        .collect();
    assert_eq!(chrome.len(), 1);
    assert!(chrome[0].0.abs_diff(b.start) <= 1 && chrome[0].1.abs_diff(b.end) <= 1, "{chrome:?} vs {b:?}");
}

/// Spawn and wake arrows: one leaving outside every slice starts at an
/// instant of its own; every id is on at least two events.
#[test]
fn arrows_leave_from_slices_or_instants() {
    let (tl, symbols) = fixture_with_stacks();
    let d = decode(&tl, &symbols);
    assert_eq!(d.instants.len(), 1, "{:?}", d.instants);
    let (track, ts, name, flows) = &d.instants[0];
    assert_eq!((track.as_str(), name.as_str()), ("worker 0 (tid 4243)", "spawn"));
    assert_eq!(*ts, tl.spawns[0].ts - tl.start_ns, "at the spawn");
    let mut uses: BTreeMap<u64, usize> = BTreeMap::new();
    for id in d.slices.iter().flat_map(|s| &s.flows).chain(flows) {
        *uses.entry(*id).or_default() += 1;
    }
    assert!(uses.values().all(|&n| n >= 2), "{uses:?}");
    assert!(d.slices.iter().filter(|s| s.category == "poll").all(|s| !s.flows.is_empty()), "both polls are reached by an arrow");
}

#[test]
fn counters_are_the_chrome_series() {
    let (tl, symbols) = fixture_with_stacks();
    let d = decode(&tl, &symbols);
    let series = scope_export::counters::series(&tl, &scope_export::flows::flows(&tl));
    assert_eq!(series.len(), 3, "workers, ready tasks, poll rate");
    for s in &series {
        let expected: Vec<(u64, i64)> = s.points.iter().map(|&(ts, v)| (ts - tl.start_ns, v)).collect();
        assert_eq!(d.counters.get(s.name), Some(&expected), "{}", s.name);
    }
    let workers = &d.counters["workers on CPU"];
    assert!(workers.iter().all(|&(_, v)| (0..=1).contains(&v)) && workers.iter().any(|&(_, v)| v == 1), "{workers:?}");
}

/// A worker's thread state comes from the sched data, so the busy worker's
/// state changes are all there: many more than its slices.
#[test]
fn perfetto_is_much_smaller_than_chrome_json() {
    let (tl, symbols) = fixture_with_stacks();
    let d = decode(&tl, &symbols);
    let json = serde_json::to_vec(&scope_export::chrome::to_value(&tl, &symbols, "test")).unwrap();
    let ratio = json.len() as f64 / d.bytes as f64;
    eprintln!("perfetto {} B, chrome {} B, ratio {ratio:.1}", d.bytes, json.len());
    assert!(ratio >= 5.0, "perfetto {} B vs chrome {} B", d.bytes, json.len());
    assert!(d.runs.iter().filter(|r| r.tid == WORKER).count() > 10);
}

#[test]
fn perfetto_dump_snapshot() {
    let (tl, symbols) = fixture_blocked_in_poll();
    let d = decode(&tl, &symbols);
    let mut text = String::new();
    for (uuid, name) in &d.tracks {
        text.push_str(&format!("track {uuid:#x} {name}\n"));
    }
    for s in &d.slices {
        text.push_str(&format!("{:>22} {:>10} {:>10} {:<18} {:<16} {:?} flows {:?}\n", s.track, s.start, s.end, s.name, s.category, s.args.keys().collect::<Vec<_>>(), s.flows));
    }
    for r in d.runs.iter().take(12) {
        text.push_str(&format!("run tid {} cpu {} {:>10} {:>10} out {:#x}\n", r.tid, r.cpu, r.start, r.end, r.out_state));
    }
    for w in d.wakings.iter().take(6) {
        text.push_str(&format!("waking {:>10} tid {} by {}\n", w.ts, w.wakee, w.waker));
    }
    insta::assert_snapshot!("perfetto_dump", text);
}

/// Polls carry Tokio's task id where the probe read it (else our serial),
/// as one interned-name annotation.
#[test]
fn polls_carry_tokio_task_ids() {
    let (mut tl, symbols) = fixture_with_stacks();
    let serials: BTreeSet<u32> = tl.threads.iter().flat_map(|t| t.polls.iter().map(|p| p.serial)).collect();
    let named = *serials.iter().next().expect("the fixture has polls");
    tl.tokio_ids.insert(named, 4242);
    let polls_of_named = tl.threads.iter().flat_map(|t| &t.polls).filter(|p| p.serial == named).count();
    let d = decode(&tl, &symbols);
    let ids: Vec<&String> = d.slices.iter().filter_map(|s| s.args.get("tokio_task_id")).collect();
    assert_eq!(ids.len(), polls_of_named);
    assert!(ids.iter().all(|&id| id == "4242"));
    let serial_tagged = d.slices.iter().filter(|s| s.args.contains_key("task")).count();
    let all_polls = tl.threads.iter().map(|t| t.polls.len()).sum::<usize>();
    assert_eq!(serial_tagged + ids.len(), all_polls, "one task annotation per poll");
}
