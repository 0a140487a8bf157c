//! `cargo xtask bench`: overhead on a Tokio server under load (mini-redis
//! from crates.io driven by redis-benchmark), interleaved A/B rounds against
//! no profiler and against perf; kernel-side cost per program; per-poll cost
//! next to the uprobe floor (crate::floor); ingest capacity and memory on a
//! 60 s run (crate::capacity); the flight recorder left on for 10 minutes (crate::soak); output sizes;
//! symbolization (crate::symbench). Prints a markdown table and
//! writes BENCHMARKS.md.

use crate::{cargo, run, workspace_root};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROUNDS: usize = 5;
const PORT: &str = "6399";
const REQUESTS: &str = "50000";
const MINI_REDIS: &str = "0.4.1";

struct Config {
    name: &'static str,
    /// None: no profiler. Some(["rs", args…]) or Some(["perf", args…]).
    profiler: Option<&'static [&'static str]>,
}

const CONFIGS: [Config; 6] = [
    Config { name: "no profiler", profiler: None },
    Config { name: "runtime-scope (default: tasks + stacks)", profiler: Some(&["rs"]) },
    Config { name: "runtime-scope --no-tasks", profiler: Some(&["rs", "--no-tasks"]) },
    Config { name: "runtime-scope --no-tasks --no-stacks", profiler: Some(&["rs", "--no-tasks", "--no-stacks"]) },
    Config { name: "perf record -F 99 -g", profiler: Some(&["perf", "-F", "99", "-g"]) },
    Config { name: "perf record -F 99 --call-graph dwarf", profiler: Some(&["perf", "-F", "99", "--call-graph", "dwarf"]) },
];

#[derive(Default, Clone)]
struct Sample {
    rps: f64,
    p99_ms: f64,
    target_cpu_ns: u64,
    profiler_cpu_ns: u64,
    bpf_ns: u64,
}

fn have(cmd: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {cmd}")]).output().is_ok_and(|o| o.status.success())
}

pub(crate) fn ensure_tools(tools: &Path) -> Result<PathBuf, String> {
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
    let server = tools.join("bin/mini-redis-server");
    if !server.exists() {
        println!("xtask bench: building mini-redis {MINI_REDIS} from crates.io (stock release build)");
        run(Command::new("cargo").args(["install", "--quiet", "mini-redis", "--version", MINI_REDIS, "--root"]).arg(tools))?;
    }
    Ok(server)
}

fn task_cpu_ns(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_to_string(e.path().join("schedstat")).ok())
                .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0)
}

fn proc_cpu_ns(pid: u32) -> u64 {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| {
        let f: Vec<&str> = s.rsplit(')').next()?.split_whitespace().collect();
        Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
    });
    ticks.unwrap_or(0) * 10_000_000 // USER_HZ = 100
}

/// redis-benchmark --csv: "test","rps","avg","min","p50","p95","p99","max".
fn load() -> Result<(f64, f64), String> {
    let out = Command::new("redis-benchmark")
        .args(["-p", PORT, "-t", "set,get", "-n", REQUESTS, "-c", "50", "--csv"])
        .output()
        .map_err(|e| format!("redis-benchmark: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Vec<f64>> = text
        .lines()
        .filter(|l| l.starts_with("\"SET\"") || l.starts_with("\"GET\""))
        .map(|l| l.split(',').skip(1).filter_map(|v| v.trim_matches('"').parse().ok()).collect())
        .collect();
    if rows.len() != 2 || rows.iter().any(|r| r.len() < 6) {
        return Err(format!("unexpected redis-benchmark output: {text}"));
    }
    Ok((rows.iter().map(|r| r[0]).sum::<f64>() / 2.0, rows.iter().map(|r| r[5]).fold(0.0, f64::max)))
}

fn start_profiler(args: &[&str], pid: u32, scope: &Path, out: &Path) -> Result<Child, String> {
    let mut cmd = if args[0] == "rs" {
        let mut c = Command::new(scope);
        c.args(["record", "--no-live", "-p", &pid.to_string(), "-o"]).arg(out).args(&args[1..]);
        c.env("RUNTIME_SCOPE_BPF_STATS", "1");
        c
    } else {
        let mut c = Command::new("perf");
        c.args(["record", "-q", "-o"]).arg(out).args(&args[1..]).args(["-p", &pid.to_string()]);
        c
    };
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().map_err(|e| format!("{args:?}: {e}"))?;
    if args[0] == "rs" {
        // Wait until it says it is recording.
        let stderr = child.stderr.take().expect("piped");
        let mut reader = BufReader::new(stderr);
        let mut line = String::new();
        while reader.read_line(&mut line).map_err(|e| e.to_string())? > 0 {
            if line.contains("runtime-scope: recording") {
                break;
            }
            line.clear();
        }
        child.stderr = None;
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = std::io::Read::read_to_string(&mut reader, &mut rest);
            let _ = std::fs::write("/tmp/runtime-scope-bench.stderr", rest);
        });
    } else {
        std::thread::sleep(Duration::from_millis(1500));
    }
    Ok(child)
}

fn stop_profiler(mut child: Child) -> Result<(), String> {
    // SAFETY: signalling our own child.
    unsafe { libc_kill(child.id() as i32, 2) };
    child.wait().map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(200));
    Ok(())
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

fn bpf_ns_from_stderr() -> u64 {
    std::fs::read_to_string("/tmp/runtime-scope-bench.stderr")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split("run_ns=").nth(1)?.trim().parse::<u64>().ok())
        .sum()
}

/// The flight recorder's soak: ten minutes of `watch` on a busy server.
const SOAK_SECONDS: u64 = 600;

/// `cargo xtask bench floor|memory|scale|soak`: the newer sections alone, printed;
/// BENCHMARKS.md is left as it is. scale: floor, ingest capacity and memory
/// (ingest is sized from the floor run's per-poll cost).
pub fn part(name: &str) -> Result<(), String> {
    run(cargo().args(["build", "--release", "-p", "runtime-scope", "-p", "demo-app"]))?;
    let root = workspace_root();
    let (scope, demo) = (root.join("target/release/runtime-scope"), root.join("target/release/demo-app"));
    let sections = match name {
        "floor" => vec![crate::floor::section(&scope, &demo)?.0],
        "memory" => vec![crate::capacity::memory(&scope, &demo)?],
        "soak" => {
            let server = ensure_tools(&root.join("target/bench-tools"))?;
            let seconds = std::env::args().nth(3).and_then(|s| s.parse().ok()).unwrap_or(SOAK_SECONDS);
            vec![crate::soak::section(&scope, &server, seconds)?]
        }
        "scale" => {
            let (floor, probed_ns) = crate::floor::section(&scope, &demo)?;
            vec![floor, crate::capacity::ingest(&scope, &demo, probed_ns)?, crate::capacity::memory(&scope, &demo)?]
        }
        _ => return Err(format!("no bench part {name:?}: floor, memory, scale or soak [SECONDS]")),
    };
    println!("{}", sections.concat());
    Ok(())
}

pub fn bench() -> Result<(), String> {
    let root = workspace_root();
    let tools = root.join("target/bench-tools");
    let server = ensure_tools(&tools)?;
    run(cargo().args(["build", "--release", "-p", "runtime-scope", "-p", "demo-app"]))?;
    let scope = root.join("target/release/runtime-scope");
    let demo = root.join("target/release/demo-app");
    let _ = Command::new("sysctl").args(["-qw", "kernel.bpf_stats_enabled=1"]).status();
    let mut srv = Command::new(&server).args(["--port", PORT]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(500));
    let pid = srv.id();
    let started = Instant::now();
    let mut results: BTreeMap<usize, Vec<Sample>> = BTreeMap::new();
    let out = std::env::temp_dir().join("bench-out");
    for round in 0..ROUNDS {
        for (i, config) in CONFIGS.iter().enumerate() {
            println!("xtask bench: round {}/{ROUNDS}: {}", round + 1, config.name);
            let profiler = match config.profiler {
                Some(args) => Some(start_profiler(args, pid, &scope, &out.with_extension(if args[0] == "rs" { "pftrace" } else { "perf" }))?),
                None => None,
            };
            let prof_pid = profiler.as_ref().map(|c| c.id());
            let cpu0 = task_cpu_ns(pid);
            let (rps, p99) = load()?;
            let target_cpu_ns = task_cpu_ns(pid) - cpu0;
            let profiler_cpu_ns = prof_pid.map_or(0, proc_cpu_ns);
            if let Some(child) = profiler {
                stop_profiler(child)?;
            }
            let bpf_ns = if config.profiler.is_some_and(|a| a[0] == "rs") { bpf_ns_from_stderr() } else { 0 };
            results.entry(i).or_default().push(Sample { rps, p99_ms: p99, target_cpu_ns, profiler_cpu_ns, bpf_ns });
        }
    }
    let _ = srv.kill();
    let _ = srv.wait();
    let _ = Command::new("sysctl").args(["-qw", "kernel.bpf_stats_enabled=0"]).status();
    let (per_poll, probed_ns) = crate::floor::section(&scope, &demo)?;
    let ingest = crate::capacity::ingest(&scope, &demo, probed_ns)?;
    let memory = crate::capacity::memory(&scope, &demo)?;
    let (sizes, stacks) = output_sizes(&scope, &demo)?;
    let symbolization = crate::symbench::section()?;
    let soak = crate::soak::section(&scope, &server, SOAK_SECONDS)?;
    let report = render(&results, &[&per_poll, &ingest, &memory, &soak], &sizes, &[&stacks, &symbolization], started.elapsed());
    println!("{report}");
    std::fs::write(root.join("BENCHMARKS.md"), report).map_err(|e| e.to_string())?;
    println!("xtask bench: wrote BENCHMARKS.md");
    Ok(())
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

fn output_sizes(scope: &Path, demo: &Path) -> Result<(Vec<(String, u64, u64)>, String), String> {
    let capture = std::env::temp_dir().join("bench-demo.rscope");
    let out = Command::new(scope)
        .args(["record", "--no-live", "-o"])
        .arg(&capture)
        .arg("--")
        .arg(demo)
        .arg("5")
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let stacks = stacks_sentence(&String::from_utf8_lossy(&out.stderr));
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

fn render(
    results: &BTreeMap<usize, Vec<Sample>>,
    measured: &[&str],
    sizes: &[(String, u64, u64)],
    sections: &[&str],
    took: Duration,
) -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let date = Command::new("date").arg("-u").arg("+%Y-%m-%d").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    let base = &results[&0];
    let mut s = String::new();
    s.push_str("# Benchmarks\n\n");
    s.push_str(&format!(
        "Measured {date} on Linux {} ({cpus} CPUs, a VM), by `cargo xtask bench` ({:.0} s). Reproduce: `cargo xtask bench` (as root).\n\n",
        kernel.trim(),
        took.as_secs_f64()
    ));
    s.push_str(&format!(
        "## Overhead on a Tokio server under load\n\nmini-redis {MINI_REDIS} (crates.io, stock release build) under `redis-benchmark -t set,get -n {REQUESTS} -c 50`, \
         {ROUNDS} interleaved rounds of every configuration; ratios are medians of per-round ratios to the same round's run without a profiler. \
         Profiler CPU is its own user+system time while recording (not the export afterwards); BPF is the kernel's run time of our programs \
         (`kernel.bpf_stats_enabled`); both as a share of the target's CPU time (schedstat) in the same run.\n\n"
    ));
    s.push_str("| configuration | throughput ratio | p99 latency ratio | profiler CPU / target CPU | BPF time / target CPU |\n|---|---|---|---|---|\n");
    for (i, config) in CONFIGS.iter().enumerate() {
        let runs = &results[&i];
        let ratio = |f: fn(&Sample) -> f64| median(runs.iter().zip(base).map(|(r, b)| f(r) / f(b)).collect());
        let share = |f: fn(&Sample) -> u64| median(runs.iter().map(|r| f(r) as f64 * 100.0 / r.target_cpu_ns.max(1) as f64).collect());
        let (prof, bpf) = if i == 0 {
            ("–".into(), "–".into())
        } else if config.name.starts_with("perf") {
            (format!("{:.1}%", share(|r| r.profiler_cpu_ns)), "n/a".into())
        } else {
            (format!("{:.1}%", share(|r| r.profiler_cpu_ns)), format!("{:.1}%", share(|r| r.bpf_ns)))
        };
        s.push_str(&format!("| {} | {:.3} | {:.2} | {prof} | {bpf} |\n", config.name, ratio(|r| r.rps), ratio(|r| r.p99_ms)));
    }
    s.push_str(&format!(
        "\nBaseline median: {:.0} requests/s, p99 {:.2} ms.\n\n",
        median(base.iter().map(|r| r.rps).collect()),
        median(base.iter().map(|r| r.p99_ms).collect())
    ));
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
