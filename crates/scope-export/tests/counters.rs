//! Counter tracks from a fixture whose tasks are known: one task spawned,
//! polled, woken by itself and polled again.

mod common;

use common::fixture_with_stacks;
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
    // Read back as the viewer reads it: a counter on an undeclared track is an error.
    let counters = common::perfetto::decode(&tl, &symbols).counters;
    let values: BTreeMap<String, Vec<i64>> = counters.into_iter().map(|(name, points)| (name, points.into_iter().map(|p| p.1).collect())).collect();
    assert_eq!(values.get(READY_TASKS).and_then(|v| v.iter().max()), Some(&1), "{values:?}");
    assert!(values.get(POLLS_PER_SECOND).is_some_and(|v| v.contains(&20)), "{values:?}");
    let chrome = scope_export::chrome::to_value(&tl, &symbols, "test");
    let counters = chrome["traceEvents"].as_array().unwrap().iter().filter(|e| e["ph"] == "C" && e["name"] == READY_TASKS).count();
    assert!(counters >= 2, "the same series in the Chrome trace (a rise and a fall): {counters}");
}
