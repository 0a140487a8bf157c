//! Runtime shapes on the real kernel, checked against what the demo program
//! is known to do: workers with a custom thread name next to blocking-pool
//! threads of the same name, a current_thread runtime, two runtimes in one
//! process, `block_in_place`, a `LocalSet`, and a fat-LTO build.

mod common;

use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Long enough (tens of ms) that the program is still alive when the
/// profiler reads its mappings after the exec; a ~1 ms program is gone by
/// then and its poll functions stay unnamed.
const YIELDS: u64 = 20_000;

/// `runtime-scope record -- <demo> args`: the trace and the printed summary,
/// after checking the run.
fn record(demo: &Path, args: &[&str]) -> (Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.json");
    let output = std::process::Command::new(PROFILER)
        .args(["record", "--no-live", "--polls", "on", "-o", out.to_str().unwrap(), "--", demo.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    // Exact counts need every record: a loss is reported, never skipped.
    assert!(stdout.contains("no events lost") || stderr.contains("no events lost"), "{stdout}\n{stderr}");
    // The summary is on stderr (stdout is the program's).
    (read_trace(&out), stderr.into_owned())
}

fn fat_lto_demo_path() -> std::path::PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release-fat-lto/demo-app");
    assert!(path.exists(), "{} is missing: `cargo xtask test` builds it (cargo build --profile release-fat-lto -p demo-app)", path.display());
    path
}

/// One task's polls: its kind, how many, and the threads that ran them.
#[derive(Debug, Default)]
struct Task {
    kind: String,
    polls: BTreeSet<u64>,
    tids: BTreeSet<u32>,
}

fn tasks_of(trace: &Value) -> BTreeMap<u64, Task> {
    let mut tasks: BTreeMap<u64, Task> = BTreeMap::new();
    for e in trace["traceEvents"].as_array().unwrap() {
        if e["cat"] != "poll" && e["cat"] != "poll,long_poll" {
            continue;
        }
        let task = tasks.entry(e["args"]["task"].as_u64().unwrap()).or_default();
        task.kind = e["name"].as_str().unwrap().to_string();
        task.polls.insert(e["args"]["poll"].as_u64().unwrap());
        task.tids.insert(e["tid"].as_u64().unwrap() as u32);
    }
    tasks
}

/// The tasks polled exactly `n` times (numbered 1..=n); fails showing the
/// busiest tasks, and the summary's own poll counts (the model's, before
/// the export), when there are not `count` of them.
fn with_polls<'a>(tasks: &'a BTreeMap<u64, Task>, n: u64, count: usize, summary: &str) -> Vec<&'a Task> {
    let found: Vec<&Task> = tasks.values().filter(|t| t.polls.len() as u64 == n && t.polls.last() == Some(&n)).collect();
    let busiest: Vec<(u64, &str, usize, Option<&u64>)> =
        tasks.iter().filter(|(_, t)| t.polls.len() > 10).map(|(s, t)| (*s, t.kind.as_str(), t.polls.len(), t.polls.last())).collect();
    assert_eq!(found.len(), count, "tasks with exactly {n} polls; (serial, kind, polls, last) of the busiest: {busiest:?}\n{summary}");
    found
}

/// Worker rows as (label without the tid, tid), in the trace's order.
fn worker_rows(trace: &Value) -> Vec<(String, u32)> {
    thread_names(trace)
        .into_iter()
        .filter(|(_, name)| !name.ends_with("· not a worker"))
        .map(|(tid, name)| (name.split(" (tid").next().unwrap().to_string(), tid))
        .collect()
}

#[test]
fn custom_named_workers_are_told_from_blocking_threads_of_the_same_name() {
    require_root();
    custom_names(&demo_app_path());
}

/// Fat LTO inlines `worker::run`: no entry probe, and the names do not
/// match the defaults, so what each thread polled decides alone.
#[test]
fn custom_named_workers_of_a_fat_lto_build_are_told_by_what_they_poll() {
    require_root();
    custom_names(&fat_lto_demo_path());
}

fn custom_names(demo: &Path) {
    let (trace, summary) = record(demo, &["--custom-names", &YIELDS.to_string()]);
    let workers = worker_rows(&trace);
    let labels: Vec<&str> = workers.iter().map(|w| w.0.as_str()).collect();
    assert_eq!(labels, ["worker 0", "worker 1", "worker 2"], "{:?}", thread_names(&trace));
    let blocking: Vec<u32> =
        thread_names(&trace).into_iter().filter(|(_, n)| n.starts_with("api-worker (tid") && n.ends_with("· not a worker")).map(|(t, _)| t).collect();
    assert_eq!(blocking.len(), 4, "four concurrent spawn_blocking calls, four pool threads: {:?}", thread_names(&trace));
    // Ground truth from what each thread ran: the worker loop (a blocking
    // task too) on the worker rows, the demo's closures on the others.
    let tasks = tasks_of(&trace);
    let ran = |tid: u32| tasks.values().filter(|t| t.tids.contains(&tid)).map(|t| t.kind.clone()).collect::<BTreeSet<_>>();
    for (label, tid) in &workers {
        assert!(ran(*tid).contains("spawn_blocking(tokio::runtime::scheduler::multi_thread::worker::run)"), "{label}: {:?}", ran(*tid));
    }
    for tid in &blocking {
        let kinds = ran(*tid);
        assert!(kinds.iter().all(|k| k.starts_with("spawn_blocking(demo_app::shapes::custom_names")), "thread {tid}: {kinds:?}");
    }
    // One task, a poll per yield plus the last.
    let yielding = with_polls(&tasks, YIELDS + 1, 1, &summary);
    assert_eq!(tasks.values().map(|t| t.polls.len() as u64).max(), Some(YIELDS + 1));
    let worker_tids: BTreeSet<u32> = workers.iter().map(|w| w.1).collect();
    assert!(yielding[0].tids.is_subset(&worker_tids), "polled only by workers: {:?}", yielding[0].tids);
}

#[test]
fn a_current_thread_runtime_is_driven_by_the_block_on_thread() {
    require_root();
    current_thread(&demo_app_path());
}

/// Fat LTO inlines `take_core`: the block_on thread is told by its polls.
#[test]
fn a_fat_lto_current_thread_runtime_is_driven_by_the_block_on_thread() {
    require_root();
    current_thread(&fat_lto_demo_path());
}

fn current_thread(demo: &Path) {
    let (trace, summary) = record(demo, &["--current-thread", &YIELDS.to_string()]);
    let pid = trace["traceEvents"].as_array().unwrap().iter().find_map(|e| e["pid"].as_u64()).unwrap() as u32;
    assert_eq!(worker_rows(&trace), [("worker 0".to_string(), pid)], "the main thread called block_on: {:?}", thread_names(&trace));
    let tasks = tasks_of(&trace);
    let yielding = with_polls(&tasks, YIELDS + 1, 1, &summary);
    assert_eq!(yielding[0].tids, BTreeSet::from([pid]), "polled on the block_on thread");
    assert_eq!(yielding[0].kind, "demo_app::shapes::yield_task::{closure}");
}

#[test]
fn two_runtimes_number_their_workers_apart() {
    require_root();
    let (trace, summary) = record(&demo_app_path(), &["--two-runtimes", &YIELDS.to_string()]);
    let workers = worker_rows(&trace);
    let labels: Vec<&str> = workers.iter().map(|w| w.0.as_str()).collect();
    assert_eq!(labels, ["runtime 0 worker 0", "runtime 0 worker 1", "runtime 1 worker 0", "runtime 1 worker 1"], "{:?}", thread_names(&trace));
    // A task only ever runs on its own runtime's workers: each yielding
    // task's threads fall within one runtime's rows, and not the same one.
    let runtime_of = |tid: &u32| workers.iter().find(|w| w.1 == *tid).map(|w| w.0[..9].to_string());
    let tasks = tasks_of(&trace);
    // One yielding task per runtime.
    let yielding = with_polls(&tasks, YIELDS + 1, 2, &summary);
    let runtimes: Vec<BTreeSet<Option<String>>> = yielding.iter().map(|t| t.tids.iter().map(runtime_of).collect()).collect();
    for r in &runtimes {
        assert!(r.len() == 1 && !r.contains(&None), "one runtime's workers per task: {runtimes:?}");
    }
    assert_ne!(runtimes[0], runtimes[1], "{runtimes:?}");
}

/// Fat LTO inlines `worker::run` and `take_core` (workers then fall back to
/// names), but `raw::poll` sits in each task's vtable and stays.
#[test]
fn a_fat_lto_build_still_has_its_polls_recorded_and_named() {
    require_root();
    let demo = fat_lto_demo_path();
    let (trace, _) = record(&demo, &["3"]);
    let tasks = tasks_of(&trace);
    let kinds: BTreeSet<&str> = tasks.values().map(|t| t.kind.as_str()).collect();
    for kind in ["demo_app::cpu_heavy_loop", "demo_app::blocking_loop", "demo_app::short_task_loop", "demo_app::short_task_loop::{closure}"] {
        assert!(kinds.contains(kind), "{kind} missing: {kinds:?}");
    }
    assert!(!kinds.iter().any(|k| k.starts_with("task kind ")), "every kind named: {kinds:?}");
    let short = tasks.values().filter(|t| t.kind == "demo_app::short_task_loop::{closure}").count();
    assert!(short >= 300, "a task every 5 ms for ~2 s of active time: {short}");
    let labels: Vec<String> = worker_rows(&trace).into_iter().map(|w| w.0).collect();
    assert_eq!(labels, ["worker 0", "worker 1"], "{:?}", thread_names(&trace));

    let (trace, summary) = record(&demo, &["--yield-loop", &YIELDS.to_string()]);
    let all = tasks_of(&trace);
    let yielding = with_polls(&all, YIELDS + 1, 1, &summary);
    assert_eq!(yielding[0].kind, "demo_app::shapes::yield_loop::{closure}");
}

/// `block_in_place` hands the worker's core to another thread while the
/// calling thread sleeps: every thread that ran the worker loop is worker 0
/// (Tokio's index), the runtime keeps polling meanwhile, and each sleep is a
/// long poll blocked inside `block_in_place`.
#[test]
fn block_in_place_moves_worker_0_between_threads() {
    require_root();
    let calls = 10;
    let (trace, summary) = record(&demo_app_path(), &["--block-in-place", &calls.to_string()]);
    let tasks = tasks_of(&trace);
    let kinds: BTreeSet<&str> = tasks.values().map(|t| t.kind.as_str()).collect();
    assert!(!kinds.iter().any(|k| k.starts_with("task kind ")), "every kind named: {kinds:?}\n{summary}");
    let workers = worker_rows(&trace);
    assert!(workers.len() >= 2 && workers.iter().all(|w| w.0 == "worker 0"), "the core moved between threads: {workers:?}");
    let worker_tids: BTreeSet<u32> = workers.iter().map(|w| w.1).collect();
    let user = "demo_app::shapes::block_in_place::{closure}";
    for t in tasks.values().filter(|t| t.kind == user) {
        assert!(t.tids.is_subset(&worker_tids), "polled by workers only: {:?} of {worker_tids:?}", t.tids);
    }
    // The ticker (1 ms sleeps, ~2 ms apart) went on while the caller slept
    // 300 ms; without the hand-off it could only tick between the sleeps.
    let ticks = tasks.values().filter(|t| t.kind == "demo_app::shapes::tick_every_ms").map(|t| t.polls.len()).max().unwrap_or(0);
    assert!(ticks >= 100, "the runtime kept polling during block_in_place: {ticks} ticker polls\n{summary}");
    let long: Vec<&Value> = trace["traceEvents"].as_array().unwrap().iter().filter(|e| e["cat"] == "poll,long_poll").collect();
    let blocked: BTreeSet<(u64, u64)> = long.iter().map(|e| (e["args"]["task"].as_u64().unwrap(), e["args"]["poll"].as_u64().unwrap())).collect();
    assert_eq!(blocked.len(), calls, "one long poll per call: {summary}");
    assert!(summary.contains("blocked") && summary.contains("block_in_place ←"), "{summary}");
}

/// A `LocalSet` task is named as one (`spawn_local(…)`, from the
/// `Cell<F, Arc<local::Shared>>` drop glue) and polled on the thread that
/// drives the set, here the current_thread runtime's `block_on` thread.
#[test]
fn local_set_tasks_are_named_spawn_local() {
    require_root();
    let (trace, summary) = record(&demo_app_path(), &["--local-set", &YIELDS.to_string()]);
    let pid = trace["traceEvents"].as_array().unwrap().iter().find_map(|e| e["pid"].as_u64()).unwrap() as u32;
    let tasks = tasks_of(&trace);
    let local = with_polls(&tasks, YIELDS + 1, 1, &summary);
    assert_eq!(local[0].kind, "spawn_local(demo_app::shapes::local_set::{closure})");
    assert_eq!(local[0].tids, BTreeSet::from([pid]), "polled on the thread driving the set");
    assert_eq!(worker_rows(&trace), [("worker 0".to_string(), pid)]);
}

/// A fully stripped build (`strip`: no symbols at all): the poll probes go
/// on the task vtables found by shape, and threads are told by what they
/// poll (async tasks vs `spawn_blocking` work, by the vtable's scheduler
/// size; the worker loop by the polls it holds), never by the shared name.
#[test]
fn custom_named_workers_of_a_stripped_build_are_told_by_what_they_poll() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let stripped = dir.path().join("demo-app");
    std::fs::copy(demo_app_path(), &stripped).unwrap();
    assert!(std::process::Command::new("strip").arg(&stripped).status().expect("strip (binutils)").success());
    let (trace, summary) = record(&stripped, &["--custom-names", &YIELDS.to_string()]);
    let workers = worker_rows(&trace);
    let labels: Vec<&str> = workers.iter().map(|w| w.0.as_str()).collect();
    assert_eq!(labels, ["worker 0", "worker 1", "worker 2"], "{:?}", thread_names(&trace));
    let blocking = thread_names(&trace).into_iter().filter(|(_, n)| n.starts_with("api-worker (tid") && n.ends_with("· not a worker")).count();
    assert_eq!(blocking, 4, "{:?}", thread_names(&trace));
    let tasks = tasks_of(&trace);
    let yielding = with_polls(&tasks, YIELDS + 1, 1, &summary);
    // Named by where it is spawned: `yield_task`'s `tokio::spawn`.
    assert!(yielding[0].kind.starts_with("task spawned at crates/demo-app/src/shapes.rs:"), "{}", yielding[0].kind);
    let worker_tids: BTreeSet<u32> = workers.iter().map(|w| w.1).collect();
    assert!(yielding[0].tids.is_subset(&worker_tids), "polled only by workers: {:?}", yielding[0].tids);
}
