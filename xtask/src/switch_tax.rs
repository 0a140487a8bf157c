//! The tax on everything else: every context switch and waking on the
//! machine runs our scheduler programs, which return at once for threads
//! not in the target. Measured with `perf bench sched pipe` (two threads
//! pinned to one CPU passing a byte back and forth: each round trip is two
//! switches and two wakings) alone and while runtime-scope records an idle
//! program, interleaved rounds, medians.

use crate::bench::median;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const ROUNDS: usize = 9;
const LOOPS: &str = "400000";

/// µs per round trip, from `perf bench sched pipe`'s "usecs/op" line.
fn pipe_us() -> Result<f64, String> {
    let out = Command::new("taskset")
        .args(["-c", "0", "perf", "bench", "sched", "pipe", "-l", LOOPS])
        .output()
        .map_err(|e| format!("perf bench: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.contains("usecs/op"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no usecs/op in perf bench output: {text}"))
}

/// Records the idle demo (`idle`) while `perf bench sched pipe` runs: its
/// µs per round trip, and our two scheduler programs' kernel time per run
/// if `stats` (read from the recorder's report of `kernel.bpf_stats_enabled`).
fn recorded_pipe(scope: &Path, idle: u32, stats: bool) -> Result<(f64, Option<f64>), String> {
    let mut rec = Command::new(scope);
    rec.args(["record", "--no-live", "-p", &idle.to_string(), "-o"]).arg(std::env::temp_dir().join("bench-switch-tax.rscope"));
    if stats {
        rec.env("RUNTIME_SCOPE_BPF_STATS", "1");
    }
    let rec = rec.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(1500));
    let us = pipe_us();
    crate::capacity::interrupt(rec.id());
    let out = rec.wait_with_output().map_err(|e| e.to_string())?;
    let (mut runs, mut ns) = (0u64, 0u64);
    for line in String::from_utf8_lossy(&out.stderr).lines().filter(|l| l.contains("program=sched_switch") || l.contains("program=sched_waking")) {
        let field = |key: &str| line.split(key).nth(1)?.split_whitespace().next()?.parse::<u64>().ok();
        runs += field("runs=").unwrap_or(0);
        ns += field("run_ns=").unwrap_or(0);
    }
    Ok((us?, (runs > 0).then(|| ns as f64 / runs as f64)))
}

pub fn section(scope: &Path, demo: &Path) -> Result<String, String> {
    let mut idle = Command::new(demo).arg("100000").stdout(Stdio::null()).stderr(Stdio::null()).spawn().map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(500));
    let (mut alone, mut recorded, mut with_stats, mut per_run) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        println!("xtask bench: switch tax: round {}/{ROUNDS}", round + 1);
        alone.push(pipe_us()?);
        // The tax as users pay it: without the kernel's BPF accounting,
        // which adds two clock reads to every run of every program.
        recorded.push(recorded_pipe(scope, idle.id(), false)?.0);
        let _ = Command::new("sysctl").args(["-qw", "kernel.bpf_stats_enabled=1"]).status();
        let measured = recorded_pipe(scope, idle.id(), true);
        let _ = Command::new("sysctl").args(["-qw", "kernel.bpf_stats_enabled=0"]).status();
        let (us, ns) = measured?;
        with_stats.push(us);
        per_run.extend(ns);
    }
    let _ = idle.kill();
    let _ = idle.wait();
    let added = |recorded: &[f64]| median(alone.iter().zip(recorded).map(|(a, r)| (r - a) * 1000.0 / 2.0).collect());
    Ok(format!(
        "## The tax on other processes\n\nEvery switch and waking on the machine runs our `sched_switch` and `sched_waking` programs, which check the \
         thread's process in `task_struct` and return. `perf bench sched pipe -l {LOOPS}` pinned to one CPU (each round trip: two switches, two \
         wakings), alone and while `runtime-scope record` follows an idle demo app, {ROUNDS} interleaved rounds; in each, a recording as users \
         run it and one with the kernel's accounting of our programs on (`kernel.bpf_stats_enabled`, which adds two clock reads to every run of \
         every program: it inflates the tax it measures).\n\n\
         | | µs per round trip (median) | added per switch and its waking (median of per-round differences) |\n|---|---|---|\n\
         | alone | {:.3} | |\n| while recording another process | {:.3} | **{:.0} ns** |\n\
         | the same with `kernel.bpf_stats_enabled` | {:.3} | {:.0} ns |\n\n\
         The wall clock of a loaded VM moves by tens of ns between runs. Our programs' own time per run, by the kernel's accounting, almost all \
         of them other processes' switches and wakings: **{:.0} ns** (median over rounds).\n\n",
        median(alone.clone()),
        median(recorded.clone()),
        added(&recorded),
        median(with_stats.clone()),
        added(&with_stats),
        median(per_run)
    ))
}
