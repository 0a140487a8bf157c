//! Exports from a recorded fixture (115 events from a real run of the demo
//! app, tids and clock renumbered): snapshot-tested, plus the properties a
//! trace viewer relies on.

mod common;
use common::fixture;
use scope_model::Symbols;

#[test]
fn chrome_trace_snapshot() {
    let value = scope_export::chrome::to_value(&fixture(), &Symbols::default(), "test");
    insta::assert_json_snapshot!("chrome_trace", value);
}

#[test]
fn summary_snapshot() {
    insta::assert_snapshot!("summary", scope_export::summary::render(&fixture(), &Symbols::default()));
}

#[test]
fn chrome_trace_rows_and_spans_are_well_formed() {
    let tl = fixture();
    let value = scope_export::chrome::to_value(&tl, &Symbols::default(), "test");
    let events = value["traceEvents"].as_array().unwrap();
    let names: Vec<&str> = events
        .iter()
        .filter(|e| e["name"] == "thread_name")
        .map(|e| e["args"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["worker 0 (tid 4243)", "worker 1 (tid 4244)", "demo-app (tid 4242) · not a worker"]);
    let window_us = tl.duration_ns() as f64 / 1_000.0;
    for tid in [4243, 4244] {
        let mut spans: Vec<(f64, f64)> = events
            .iter()
            .filter(|e| e["ph"] == "X" && e["tid"] == tid)
            .map(|e| (e["ts"].as_f64().unwrap(), e["dur"].as_f64().unwrap()))
            .collect();
        spans.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(!spans.is_empty(), "worker {tid} should have spans");
        for w in spans.windows(2) {
            assert!(w[1].0 >= w[0].0 + w[0].1 - 1e-6, "overlap {w:?}");
        }
        let (first, last) = (spans[0], spans[spans.len() - 1]);
        assert!(first.0 >= 0.0 && last.0 + last.1 <= window_us + 1e-6);
    }
    let oncpu = events.iter().filter(|e| e["cat"].as_str().is_some_and(|c| c.split(',').next() == Some("oncpu"))).count();
    assert!(events.iter().filter(|e| e["cat"].as_str().is_some_and(|c| c.split(',').next() == Some("oncpu"))).all(|e| e["args"]["worker_id"].is_u64()
        && e["args"]["cpu"].is_u64()
        && e["args"]["duration_us"] == e["dur"]));
    assert!(oncpu > 0);
    assert!(events.iter().any(|e| e["cat"].as_str().is_some_and(|c| c.split(',').next() == Some("offcpu")) && e["args"]["reason"] == "blocked"));
}

#[test]
fn streamed_chrome_file_equals_the_json_value() {
    let (tl, symbols) = common::fixture_with_stacks();
    let mut bytes = Vec::new();
    let count = scope_export::chrome::write(&tl, &symbols, "test", &mut bytes).unwrap();
    let parsed: serde_json::Value = serde_json::from_slice(&bytes).expect("the streamed file is valid JSON");
    let value = scope_export::chrome::to_value(&tl, &symbols, "test");
    assert_eq!(parsed, value);
    assert_eq!(count, value["traceEvents"].as_array().unwrap().len());
}
