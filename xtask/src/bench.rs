//! `cargo xtask bench`: overhead on a Tokio server under load (mini-redis
//! from crates.io driven by redis-benchmark), interleaved A/B rounds against
//! no profiler and against perf; kernel-side cost per program; per-poll cost
//! next to the uprobe floor (crate::floor); ingest capacity and memory on a
//! 60 s run (crate::capacity); the flight recorder left on for 10 minutes (crate::soak); output sizes;
//! symbolization (crate::symbench). Prints a markdown table and
//! writes BENCHMARKS.md.

use crate::{cargo, overhead, run, workspace_root};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PORT: &str = "6399";
use crate::crates_io::MINI_REDIS;

fn have(cmd: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {cmd}")]).output().is_ok_and(|o| o.status.success())
}

/// redis-benchmark and perf (apt), and mini-redis (crates_io).
pub(crate) fn ensure_tools() -> Result<PathBuf, String> {
    let mut missing = Vec::new();
    if !have("redis-benchmark") {
        missing.push("redis-tools");
    }
    if !have("perf") {
        missing.push("linux-perf");
    }
    if !missing.is_empty() {
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        run(Command::new("apt-get").args(["install", "-y", "-qq"]).args(&missing).env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    let server = crate::crates_io::mini_redis("stock")?;
    Ok(server)
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

/// The flight recorder's soak: ten minutes of `watch` on a busy server.
const SOAK_SECONDS: u64 = 600;

/// `cargo xtask bench overhead|floor|tax|memory|endphase|scale|soak [SECONDS]`: the newer sections alone, printed;
/// BENCHMARKS.md is left as it is. scale: floor, ingest capacity and memory
/// (ingest is sized from the floor run's per-poll cost).
pub fn part(name: &str) -> Result<(), String> {
    run(cargo().args(["build", "--release", "-p", "runtime-scope", "-p", "demo-app"]))?;
    let root = workspace_root();
    let (scope, demo) = (root.join("target/release/runtime-scope"), root.join("target/release/demo-app"));
    let dwarf_demo = dwarf_demo()?;
    let sections = match name {
        "floor" => vec![crate::floor::section(&scope, &demo, &dwarf_demo)?.0],
        "tax" => vec![crate::switch_tax::section(&scope, &demo)?],
        "overhead" => vec![mini_redis(&ensure_tools()?, &scope)?],
        "memory" => vec![crate::capacity::memory(&scope, &demo)?],
        "endphase" => vec![crate::endphase::section(&scope, &demo, &ensure_tools()?)?],
        "soak" => {
            let server = ensure_tools()?;
            let seconds = std::env::args().nth(3).and_then(|s| s.parse().ok()).unwrap_or(SOAK_SECONDS);
            vec![crate::soak::section(&scope, &server, seconds)?]
        }
        "scale" => {
            let (floor, probed_ns) = crate::floor::section(&scope, &demo, &dwarf_demo)?;
            vec![floor, crate::capacity::ingest(&scope, &demo, probed_ns)?, crate::capacity::memory(&scope, &demo)?]
        }
        _ => return Err(format!("no bench part {name:?}: overhead, floor, tax, memory, endphase, scale or soak [SECONDS]")),
    };
    println!("{}", sections.concat());
    Ok(())
}

/// mini-redis under load, every configuration: the section's text.
fn mini_redis(server: &Path, scope: &Path) -> Result<String, String> {
    let mut srv = overhead::start_server(server, &["--port", PORT])?;
    let all: Vec<usize> = (0..overhead::CONFIGS.len()).collect();
    let target = overhead::Target { label: "mini-redis", pid: srv.id(), port: PORT, tests: "set,get" };
    let redis = overhead::measure(&target, &all, scope);
    let _ = srv.kill();
    let _ = srv.wait();
    redis.map(|redis| {
        format!(
            "## Overhead on a Tokio server under load\n\nmini-redis {MINI_REDIS} (crates.io, stock release build) under `redis-benchmark -t set,get -c 50`, \
             {} interleaved rounds of every configuration; in each, a warm-up load (not measured: `--polls auto` decides in it) then the measured one. \
             Ratios are medians of per-round ratios to the same round's run alone. Target CPU is the server's schedstat time per request; recorder \
             CPU its own user+system time over the measured load; BPF the kernel's run time of our programs (`kernel.bpf_stats_enabled`, read from \
             the recorder's /proc/PID/fdinfo) over the measured load (the steady state), per request and as a share of the target's CPU, and over the \
             whole recording (the warm-up too, while `--polls auto` takes its first look) per recorded request. The BPF columns come from {} more \
             rounds of our configurations with that accounting on, the others from rounds without it (it adds two clock reads to every program run: \
             measured with it, the tax on other processes nearly doubled).\n\n{}{}",
            overhead::ROUNDS,
            overhead::ACCOUNTED_ROUNDS,
            overhead::table(&redis),
            overhead::per_program(&redis, 1),
        )
    })
}

/// The demo built with DWARF (`--polls starts` finds Tokio's task id there at once).
fn dwarf_demo() -> Result<std::path::PathBuf, String> {
    run(cargo().args(["build", "--profile", "release-debuginfo", "-p", "demo-app"]))?;
    Ok(workspace_root().join("target/release-debuginfo/demo-app"))
}

pub fn bench() -> Result<(), String> {
    let root = workspace_root();
    let server = ensure_tools()?;
    run(cargo().args(["build", "--release", "-p", "runtime-scope", "-p", "demo-app"]))?;
    let scope = root.join("target/release/runtime-scope");
    let demo = root.join("target/release/demo-app");
    let dwarf_demo = dwarf_demo()?;
    let started = Instant::now();
    let redis = mini_redis(&server, &scope);
    // A section that fails says so in its place; the others are kept (a
    // full run is the better part of an hour).
    let mut failed = Vec::new();
    let mut section = |name: &str, result: Result<String, String>| match result {
        Ok(s) => s,
        Err(e) => {
            eprintln!("xtask bench: {name} failed: {e}");
            failed.push(name.to_string());
            format!("## {name}\n\nNot measured in this run: {e}\n\n")
        }
    };
    let synthetic = overhead::synthetic(&demo, &scope, &[10, 100]);
    let overhead = section("Overhead on a Tokio server under load", redis);
    let synthetic = section(
        "Overhead with a known CPU cost per request",
        synthetic.map(|t| format!("The same with the demo app's PING server burning a known CPU time per request (`demo-app --serve PORT US`, `redis-benchmark -t ping`):\n\n{t}")),
    );
    let _ = Command::new("sysctl").args(["-qw", "kernel.bpf_stats_enabled=0"]).status();
    let tax = section("The tax on other processes", crate::switch_tax::section(&scope, &demo));
    let floor = crate::floor::section(&scope, &demo, &dwarf_demo);
    let probed_ns = floor.as_ref().map_or(2000.0, |f| f.1);
    let per_poll = section("Cost per poll", floor.map(|f| f.0));
    let ingest = section("Ingest capacity", crate::capacity::ingest(&scope, &demo, probed_ns));
    let memory = section("Memory on a 60 s run", crate::capacity::memory(&scope, &demo));
    let end_phase = section("End-phase memory", crate::endphase::section(&scope, &demo, &server));
    let (sizes, stacks) = match output_sizes(&scope, &demo) {
        Ok((sizes, stacks)) => (sizes, stacks),
        Err(e) => (Vec::new(), section("Output size", Err(e))),
    };
    let symbolization = section("Symbolization", crate::symbench::section());
    let soak = section("Flight recorder soak", crate::soak::section(&scope, &server, SOAK_SECONDS));
    let overhead = overhead + &synthetic;
    let report = render(&overhead, &[&tax, &per_poll, &ingest, &memory, &end_phase, &soak], &sizes, &[&stacks, &symbolization], started.elapsed());
    let previous = std::fs::read_to_string(root.join("BENCHMARKS.md")).unwrap_or_default();
    let report = report + &by_hand(&previous);
    println!("{report}");
    std::fs::write(root.join("BENCHMARKS.md"), report).map_err(|e| e.to_string())?;
    println!("xtask bench: wrote BENCHMARKS.md");
    if failed.is_empty() { Ok(()) } else { Err(format!("not measured: {}", failed.join(", "))) }
}

/// (format, bytes, events in the capture, seconds of the demo recorded).
/// The recorder's stacks line, e.g. `848 stacks (100% unwound …); 6100 KiB
/// of stack copied (1219.2 KiB/s)`, as a sentence for BENCHMARKS.md.
fn stacks_sentence(stderr: &str) -> String {
    match stderr.lines().find_map(|l| l.strip_prefix("runtime-scope: ").filter(|l| l.contains(" stacks (") && l.contains("KiB/s"))) {
        Some(line) => format!("Stacks over the same 5 s at the default 99 Hz (samples, plus blocked switch-outs within the budget): {line}.\n\n"),
        None => "Stacks: the recorder printed no stacks line.\n\n".to_string(),
    }
}

/// (format, bytes, events) of each output, and the stacks sentence.
type Sizes = (Vec<(String, u64, u64)>, String);

fn output_sizes(scope: &Path, demo: &Path) -> Result<Sizes, String> {
    let capture = std::env::temp_dir().join("bench-demo.rscope");
    let out = Command::new(scope)
        .args(["record", "--no-live", "-o"])
        .arg(&capture)
        .arg("--")
        .arg(demo)
        .arg("5")
        .output()
        .map_err(|e| e.to_string())?;
    // Our messages are on stderr (stdout is the launched program's).
    let text = String::from_utf8_lossy(&out.stderr);
    let stacks = stacks_sentence(&text);
    // "Capture written to FILE (N events, M MB)." (the summary before it
    // has other parenthesised counts: polls, samples).
    let events: u64 = text
        .lines()
        .filter(|l| l.starts_with("Capture written to "))
        .find_map(|l| l.split(" (").nth(1)?.split(" events").next()?.parse().ok())
        .ok_or_else(|| format!("no event count in: {text}"))?;
    let mut sizes = vec![("capture (.rscope)".to_string(), std::fs::metadata(&capture).map_err(|e| e.to_string())?.len(), events)];
    for (name, ext) in [("Perfetto (.pftrace)", "pftrace"), ("Chrome JSON (.json)", "json")] {
        let path = capture.with_extension(ext);
        run(Command::new(scope).arg("export").arg(&capture).arg("-o").arg(&path).stdout(Stdio::null()).stderr(Stdio::null()))?;
        sizes.push((name.to_string(), std::fs::metadata(&path).map_err(|e| e.to_string())?.len(), events));
    }
    let throughput = write_throughput(&[("the 5 s demo capture above", capture.to_string_lossy().into_owned()), ("the 60 s demo capture of Memory", crate::capacity::memory_capture())]);
    let _ = std::fs::remove_file(crate::capacity::memory_capture());
    Ok((sizes, format!("{}{stacks}", throughput?)))
}

/// Perfetto and Chrome writers side by side on the same captures
/// (`export_speed` example: the writer alone, into memory, median of 3
/// alternating runs).
fn write_throughput(captures: &[(&str, String)]) -> Result<String, String> {
    let mut s = String::from(
        "Write throughput: each format written from the same analysed capture into memory, the writer alone (reading, analysing and \
         symbolizing come first and are not timed), median of 3 alternating runs: \
         `cargo run --release -p scope-export --example export_speed -- X.rscope`.\n\n\
         | capture | events | Perfetto | Chrome JSON | Perfetto time / Chrome time |\n|---|---|---|---|---|\n",
    );
    for (name, path) in captures {
        println!("xtask bench: write throughput on {name}");
        let out = Command::new("cargo")
            .args(["run", "--quiet", "--release", "-p", "scope-export", "--example", "export_speed", "--"])
            .arg(path)
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout);
        // "perfetto EVENTS BYTES SECONDS" then "chrome …".
        let rows: Vec<(u64, f64, f64)> = text
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((f.get(1)?.parse().ok()?, f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?))
            })
            .collect();
        let [(events, p_bytes, p_secs), (_, c_bytes, c_secs)] = rows[..] else {
            return Err(format!("export_speed printed {text}{}", String::from_utf8_lossy(&out.stderr)));
        };
        let cell = |bytes: f64, secs: f64| format!("{:.1} ms, {:.2} M events/s, {:.0} MB/s", secs * 1e3, events as f64 / secs / 1e6, bytes / secs / 1e6);
        s.push_str(&format!("| {name} | {events} | {} | {} | {:.2} |\n", cell(p_bytes, p_secs), cell(c_bytes, c_secs), p_secs / c_secs));
    }
    s.push('\n');
    Ok(s)
}

/// The sections of `previous` measured by hand (their text starts with
/// "Measured by hand"): this bench cannot redo them, so they are carried
/// over as they are, with their own dates.
fn by_hand(previous: &str) -> String {
    let mut kept = String::new();
    for section in previous.split("\n## ").skip(1) {
        let body = section.split_once('\n').map_or("", |(_, b)| b).trim_start();
        if body.starts_with("Measured by hand") {
            kept.push_str("## ");
            kept.push_str(section.trim_end());
            kept.push_str("\n\n");
        }
    }
    kept
}

fn render(overhead: &str, measured: &[&str], sizes: &[(String, u64, u64)], sections: &[&str], took: Duration) -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let date = Command::new("date").arg("-u").arg("+%Y-%m-%d").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    let mut s = String::new();
    s.push_str("# Benchmarks\n\n");
    s.push_str(&format!(
        "Measured {date} on Linux {} ({cpus} CPUs, a VM), by `cargo xtask bench` ({:.0} s). Reproduce: `cargo xtask bench` (as root).\n\n",
        kernel.trim(),
        took.as_secs_f64()
    ));
    s.push_str(overhead);
    for section in measured {
        s.push_str(section);
    }
    s.push_str("## Output size\n\nThe demo app recorded 5 s from launch (tasks and stacks on), then exported.\n\n| format | bytes | bytes per recorded event |\n|---|---|---|\n");
    for (name, bytes, events) in sizes {
        s.push_str(&format!("| {name} | {bytes} | {:.1} |\n", *bytes as f64 / (*events).max(1) as f64));
    }
    s.push('\n');
    for section in sections {
        s.push_str(section);
    }
    s
}
