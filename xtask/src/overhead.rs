//! Overhead on Tokio servers under load: mini-redis (crates.io) and the
//! demo's PING server burning a known CPU time per request, driven by
//! redis-benchmark; every configuration interleaved round by round with
//! no profiler and with perf, medians of per-round ratios. Besides
//! throughput and p99 (which loopback blurs: a slower server makes the
//! load generator cheaper per request), the target's own CPU per request,
//! the recorder's CPU and the kernel's run time of each of our programs
//! (`kernel.bpf_stats_enabled`, in rounds of their own: it slows every
//! program run down).

use crate::bench::median;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const ROUNDS: usize = 5;
/// Rounds of our own configurations with `kernel.bpf_stats_enabled` on,
/// after the measured ones: the BPF columns come from these only. The
/// accounting adds two clock reads to every run of every program, so the
/// throughput, p99 and CPU columns are measured with it off.
pub const ACCOUNTED_ROUNDS: usize = 2;
/// Requests per test (SET and GET, or the two PINGs) before measuring: long
/// enough for `--polls auto` to have decided.
const WARMUP: u64 = 60_000;
const REQUESTS: u64 = 150_000;

pub struct Config {
    pub name: &'static str,
    /// None: no profiler. Some(["rs", args…]) or Some(["perf", args…]).
    pub profiler: Option<&'static [&'static str]>,
}

pub const CONFIGS: [Config; 7] = [
    Config { name: "no profiler", profiler: None },
    Config { name: "runtime-scope (default: --polls auto, stacks)", profiler: Some(&["rs"]) },
    Config { name: "runtime-scope --polls on (every poll and wake)", profiler: Some(&["rs", "--polls", "on"]) },
    Config { name: "runtime-scope --no-tasks", profiler: Some(&["rs", "--no-tasks"]) },
    Config { name: "runtime-scope --no-tasks --no-stacks", profiler: Some(&["rs", "--no-tasks", "--no-stacks"]) },
    Config { name: "perf record -F 99 -g", profiler: Some(&["perf", "-F", "99", "-g"]) },
    // What holding switch-outs and wakings for the switch-in saves.
    Config { name: "runtime-scope default, nothing held (RUNTIME_SCOPE_NO_HOLD)", profiler: Some(&["rs-nohold"]) },
];

/// The synthetic servers run the first three and perf.
const SYNTHETIC: [usize; 4] = [0, 1, 2, 5];

#[derive(Default, Clone)]
pub struct Sample {
    rps: f64,
    p99_ms: f64,
    requests: u64,
    target_cpu_ns: u64,
    profiler_cpu_ns: u64,
    /// (program, run ns) over the whole recording (warm-up included).
    bpf: Vec<(String, u64)>,
    recorded_requests: u64,
    /// `--polls auto`'s decision line, if any.
    decision: Option<String>,
    /// Kernel run time of our programs during the measured load only
    /// (after auto has decided): the steady state.
    bpf_steady_ns: u64,
    /// Recorded with the kernel's BPF accounting on (the BPF columns' run).
    accounted: bool,
}

impl Sample {
    fn bpf_ns(&self) -> u64 {
        self.bpf.iter().map(|(_, ns)| ns).sum()
    }
}

/// (prog id, run_time_ns) of every BPF program `pid` holds open, from
/// /proc (`kernel.bpf_stats_enabled` must be on).
fn bpf_run_ns(pid: u32) -> BTreeMap<u64, u64> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return out };
    for entry in dir.flatten() {
        let Ok(info) = std::fs::read_to_string(entry.path()) else { continue };
        let field = |name: &str| info.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok());
        if let (Some(id), Some(ns)) = (field("prog_id:"), field("run_time_ns:")) {
            out.insert(id, ns);
        }
    }
    out
}

/// Run time added between two [`bpf_run_ns`] readings, over the programs
/// open at both.
fn bpf_between(before: &BTreeMap<u64, u64>, after: &BTreeMap<u64, u64>) -> u64 {
    after.iter().filter_map(|(id, ns)| Some(ns.saturating_sub(*before.get(id)?))).sum()
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

/// utime + stime of a process, ns (clock ticks of 10 ms).
fn proc_cpu_ns(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let f: Vec<&str> = s.rsplit(')').next()?.split_whitespace().collect();
            Some((f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?) * 10_000_000)
        })
        .unwrap_or(0)
}

/// Starts a server to load (`server ARGS`, its output dropped) and gives
/// it half a second to listen.
pub(crate) fn start_server(server: &Path, args: &[&str]) -> Result<Child, String> {
    let srv = Command::new(server)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", server.display()))?;
    std::thread::sleep(Duration::from_millis(500));
    Ok(srv)
}

/// redis-benchmark --csv: "test","rps","avg","min","p50","p95","p99","max".
/// Returns (requests/s over both tests, worst p99 ms, requests).
pub(crate) fn load(port: &str, tests: &str, requests: u64) -> Result<(f64, f64, u64), String> {
    let n = requests.to_string();
    let out = Command::new("redis-benchmark")
        .args(["-p", port, "-t", tests, "-n", &n, "-c", "50", "--csv"])
        .output()
        .map_err(|e| format!("redis-benchmark: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Vec<f64>> = text
        .lines()
        .filter(|l| !l.starts_with("\"test\""))
        .map(|l| l.split(',').skip(1).filter_map(|f| f.trim_matches('"').parse().ok()).collect())
        .filter(|r: &Vec<f64>| r.len() >= 6)
        .collect();
    if rows.len() < 2 {
        return Err(format!("unexpected redis-benchmark output: {text}"));
    }
    let rps = rows.iter().map(|r| r[0]).sum::<f64>() / rows.len() as f64;
    Ok((rps, rows.iter().map(|r| r[5]).fold(0.0, f64::max), requests * rows.len() as u64))
}


/// `rs…`: runtime-scope (else perf).
fn is_ours(args: &[&str]) -> bool {
    args[0].starts_with("rs")
}

struct Profiler {
    child: Child,
    stderr: std::thread::JoinHandle<String>,
}

fn start_profiler(args: &[&str], pid: u32, scope: &Path, out: &Path) -> Result<Profiler, String> {
    let mut cmd = if is_ours(args) {
        let mut c = Command::new(scope);
        c.args(["record", "--no-live", "-p", &pid.to_string(), "-o"]).arg(out).args(&args[1..]);
        c.env("RUNTIME_SCOPE_BPF_STATS", "1");
        if args[0] == "rs-nohold" {
            c.env("RUNTIME_SCOPE_NO_HOLD", "1");
        }
        c
    } else {
        let mut c = Command::new("perf");
        c.args(["record", "-q", "-o"]).arg(out).args(&args[1..]).args(["-p", &pid.to_string()]);
        c
    };
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().map_err(|e| format!("{args:?}: {e}"))?;
    let mut reader = BufReader::new(child.stderr.take().expect("piped"));
    if is_ours(args) {
        let mut line = String::new();
        while reader.read_line(&mut line).map_err(|e| e.to_string())? > 0 && !line.contains("runtime-scope: recording") {
            line.clear();
        }
    } else {
        std::thread::sleep(Duration::from_millis(1500));
    }
    let stderr = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut reader, &mut rest);
        rest
    });
    Ok(Profiler { child, stderr })
}

/// Stops it (SIGINT); returns its stderr.
fn stop_profiler(mut p: Profiler) -> Result<String, String> {
    crate::capacity::interrupt(p.child.id());
    p.child.wait().map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(200));
    Ok(p.stderr.join().unwrap_or_default())
}

fn bpf_programs(stderr: &str) -> Vec<(String, u64)> {
    stderr
        .lines()
        .filter_map(|l| {
            let rest = l.split("bench bpf program=").nth(1)?;
            let name = rest.split_whitespace().next()?.to_string();
            Some((name, rest.split("run_ns=").nth(1)?.trim().parse().ok()?))
        })
        .collect()
}

/// One target: a server pid and the redis-benchmark tests that drive it.
pub struct Target<'a> {
    pub label: &'a str,
    pub pid: u32,
    pub port: &'a str,
    pub tests: &'a str,
}

/// Every config in `which`, `ROUNDS` interleaved rounds.
pub fn measure(target: &Target<'_>, which: &[usize], scope: &Path) -> Result<BTreeMap<usize, Vec<Sample>>, String> {
    let mut results: BTreeMap<usize, Vec<Sample>> = BTreeMap::new();
    let out = std::env::temp_dir().join("bench-out");
    let stats = |on: bool| Command::new("sysctl").args(["-qw", &format!("kernel.bpf_stats_enabled={}", u8::from(on))]).status();
    for round in 0..ROUNDS + ACCOUNTED_ROUNDS {
        // The kernel's run time of each program is what the BPF columns read.
        let accounted = round >= ROUNDS;
        let _ = stats(accounted);
        for &i in which {
            let config = &CONFIGS[i];
            if accounted && config.profiler.is_none_or(|a| !is_ours(a)) {
                continue;
            }
            let what = if accounted { "with BPF accounting" } else { "measured" };
            println!("xtask bench: {}: round {}/{}: {} ({what})", target.label, round + 1, ROUNDS + ACCOUNTED_ROUNDS, config.name);
            let profiler = match config.profiler {
                Some(args) => Some(start_profiler(args, target.pid, scope, &out.with_extension(if is_ours(args) { "rscope" } else { "perf" }))?),
                None => None,
            };
            let prof_pid = profiler.as_ref().map(|p| p.child.id());
            let (_, _, warmup) = load(target.port, target.tests, WARMUP)?;
            let (cpu0, prof0) = (task_cpu_ns(target.pid), prof_pid.map_or(0, proc_cpu_ns));
            let bpf0 = prof_pid.map(bpf_run_ns).unwrap_or_default();
            let (rps, p99_ms, requests) = load(target.port, target.tests, REQUESTS)?;
            let target_cpu_ns = task_cpu_ns(target.pid) - cpu0;
            let profiler_cpu_ns = prof_pid.map_or(0, proc_cpu_ns).saturating_sub(prof0);
            let bpf_steady_ns = prof_pid.map_or(0, |p| bpf_between(&bpf0, &bpf_run_ns(p)));
            let stderr = match profiler {
                Some(p) => stop_profiler(p)?,
                None => String::new(),
            };
            let decision = stderr.lines().find(|l| l.contains("runtime-scope: polls:")).map(|l| l.trim_start_matches("runtime-scope: ").to_string());
            results.entry(i).or_default().push(Sample {
                rps,
                p99_ms,
                requests,
                target_cpu_ns,
                profiler_cpu_ns,
                bpf: bpf_programs(&stderr),
                recorded_requests: warmup + requests,
                decision,
                bpf_steady_ns,
                accounted,
            });
        }
    }
    let _ = stats(false);
    Ok(results)
}

/// The table of one target: ratios to the same round's run alone.
pub fn table(results: &BTreeMap<usize, Vec<Sample>>) -> String {
    let base: Vec<&Sample> = results[&0].iter().filter(|r| !r.accounted).collect();
    let mut s = String::from(
        "| configuration | throughput | p99 | target CPU per request | recorder CPU / target CPU | BPF / target CPU | BPF per request | BPF / target CPU, whole recording |\n|---|---|---|---|---|---|---|---|\n",
    );
    for (&i, all) in results {
        let runs: Vec<&Sample> = all.iter().filter(|r| !r.accounted).collect();
        let accounted: Vec<&Sample> = all.iter().filter(|r| r.accounted).collect();
        let ratio = |f: &dyn Fn(&Sample) -> f64| median(runs.iter().zip(&base).map(|(r, b)| f(r) / f(b)).collect());
        let per_request = |r: &Sample| r.target_cpu_ns as f64 / r.requests.max(1) as f64;
        let share_of = |runs: &[&Sample], f: &dyn Fn(&Sample) -> u64| median(runs.iter().map(|r| f(r) as f64 * 100.0 / r.target_cpu_ns.max(1) as f64).collect());
        let share = |f: &dyn Fn(&Sample) -> u64| share_of(&runs, f);
        let cpu = format!(
            "{:.2} µs (×{:.3})",
            median(runs.iter().map(|r| per_request(r) / 1e3).collect()),
            ratio(&per_request)
        );
        let (prof, bpf, bpf_req, bpf_whole) = match CONFIGS[i].profiler {
            None => ("–".into(), "–".into(), "–".into(), "–".into()),
            Some(a) if a[0] == "perf" => (format!("{:.1}%", share(&|r| r.profiler_cpu_ns)), "n/a".into(), "n/a".into(), "n/a".into()),
            // Steady: the measured load only. Whole: the recording with its
            // warm-up (the first look of --polls auto), per recorded request.
            Some(_) => (
                format!("{:.1}%", share(&|r| r.profiler_cpu_ns)),
                format!("{:.1}%", share_of(&accounted, &|r| r.bpf_steady_ns)),
                format!("{:.0} ns", median(accounted.iter().map(|r| r.bpf_steady_ns as f64 / r.requests.max(1) as f64).collect())),
                format!("{:.1}%", median(accounted.iter().map(|r| r.bpf_ns() as f64 * 100.0 / (per_request(r) * r.recorded_requests as f64).max(1.0)).collect())),
            ),
        };
        s.push_str(&format!(
            "| {} | {:.3} | ×{:.2} | {cpu} | {prof} | {bpf} | {bpf_req} | {bpf_whole} |\n",
            CONFIGS[i].name,
            ratio(&|r| r.rps),
            ratio(&|r| r.p99_ms)
        ));
    }
    s.push_str(&format!(
        "\nAlone: {:.0} requests/s, p99 {:.2} ms, {:.2} µs of the target's CPU per request.\n\n",
        median(base.iter().map(|r| r.rps).collect()),
        median(base.iter().map(|r| r.p99_ms).collect()),
        median(base.iter().map(|r| r.target_cpu_ns as f64 / r.requests.max(1) as f64 / 1e3).collect())
    ));
    s
}

/// Where the default configuration's BPF time goes, per request.
pub fn per_program(results: &BTreeMap<usize, Vec<Sample>>, config: usize) -> String {
    let Some(runs) = results.get(&config) else { return String::new() };
    let mut by: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in runs.iter().filter(|r| r.accounted) {
        for (name, ns) in &r.bpf {
            by.entry(name.clone()).or_default().push(*ns as f64 / r.recorded_requests.max(1) as f64);
        }
    }
    let mut s = format!("Kernel time of each program, `{}`, over the whole recording, ns per recorded request (median over rounds):\n\n| program | ns per request |\n|---|---|\n", CONFIGS[config].name);
    for (name, v) in by {
        s.push_str(&format!("| {name} | {:.0} |\n", median(v)));
    }
    if let Some(d) = runs.iter().find_map(|r| r.decision.clone()) {
        s.push_str(&format!("\n`--polls auto` said: `{d}`\n"));
    }
    s.push('\n');
    s
}

/// The synthetic servers' rows, one table per CPU cost.
pub fn synthetic(server: &Path, scope: &Path, work_us: &[u64]) -> Result<String, String> {
    let mut s = String::new();
    for (k, &us) in work_us.iter().enumerate() {
        let port = (6410 + k as u16).to_string();
        let mut srv = start_server(server, &["--serve", &port, &us.to_string()])?;
        let label = format!("demo PING server, {us} µs per request");
        let target = Target { label: &label, pid: srv.id(), port: &port, tests: "ping" };
        let results = measure(&target, &SYNTHETIC, scope);
        let _ = srv.kill();
        let _ = srv.wait();
        s.push_str(&format!("### {label}\n\n{}", table(&results?)));
    }
    Ok(s)
}
