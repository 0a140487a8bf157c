//! Scale measurements for `cargo xtask bench`: ingest capacity (events/s
//! with zero drops), the profiler's memory high-water mark and its time
//! from stop to trace written on a 60 s run, and the kernel's uprobe floor
//! next to our per-poll cost. Returns a BENCHMARKS.md section.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

#[repr(C)]
struct Rusage {
    utime: [i64; 2],
    stime: [i64; 2],
    maxrss: i64,
    rest: [i64; 13],
}

unsafe extern "C" {
    fn getrusage(who: i32, usage: *mut Rusage) -> i32;
}

const RUSAGE_CHILDREN: i32 = -1;

/// Largest resident set (KiB) of any child waited for so far (the kernel
/// keeps the maximum over all of them).
fn children_max_rss_kib() -> i64 {
    let mut u = Rusage { utime: [0; 2], stime: [0; 2], maxrss: 0, rest: [0; 13] };
    // SAFETY: getrusage fills the struct, whose layout matches struct rusage on x86_64.
    if unsafe { getrusage(RUSAGE_CHILDREN, &mut u) } == 0 { u.maxrss } else { -1 }
}

/// What one recording printed: events written, seconds, events lost.
struct Recorded {
    events: u64,
    seconds: f64,
    lost: u64,
}

fn parse(stdout: &str, stderr: &str) -> Result<Recorded, String> {
    let events = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Capture written to ")?.split(" (").nth(1)?.split(' ').next()?.parse().ok())
        .ok_or_else(|| format!("no capture line in:\n{stdout}"))?;
    let seconds = stderr
        .lines()
        .find_map(|l| l.strip_prefix("runtime-scope: stopped after ")?.split(' ').next()?.parse().ok())
        .ok_or_else(|| format!("no stop line in:\n{stderr}"))?;
    let lost = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("warning: ")?.split(" events lost").next()?.parse().ok())
        .unwrap_or(0);
    Ok(Recorded { events, seconds, lost })
}

/// The yield loop: each iteration is a poll start, a poll end and a wake.
fn capacity(scope: &Path, demo: &Path, extra: &[&str]) -> Result<Recorded, String> {
    let out = Command::new(scope)
        .args(["record", "--no-live", "-o", "/tmp/bench-capacity.rscope"])
        .args(extra)
        .arg("--")
        .arg(demo)
        .args(["--yield-loop", "3000000"])
        .output()
        .map_err(|e| e.to_string())?;
    parse(&String::from_utf8_lossy(&out.stdout), &String::from_utf8_lossy(&out.stderr))
}

/// 60 s of the demo in the default mode: (max RSS KiB, stop → written s, trace bytes, events).
fn long_run(scope: &Path, demo: &Path) -> Result<(i64, f64, u64, Recorded), String> {
    let trace = Path::new("/tmp/bench-60s.pftrace");
    let capture = Path::new("/tmp/bench-60s.rscope");
    let mut child = Command::new(scope)
        .args(["record", "--no-live", "-d", "60", "-o"])
        .arg(trace)
        .arg("--capture")
        .arg(capture)
        .arg("--")
        .arg(demo)
        .arg("70")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    // VmHWM only grows: its last reading before exit is the run's peak.
    let status = format!("/proc/{}/status", child.id());
    let hwm = std::thread::spawn(move || {
        let mut last = -1i64;
        while let Ok(text) = std::fs::read_to_string(&status) {
            if let Some(kib) = text.lines().find_map(|l| l.strip_prefix("VmHWM:")?.trim().strip_suffix(" kB")?.trim().parse().ok()) {
                last = kib;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        last
    });
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let reader = std::thread::spawn(move || {
        let mut stopped = None;
        let mut text = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.starts_with("runtime-scope: stopped after") {
                stopped = Some(Instant::now());
            }
            text.push_str(&line);
            text.push('\n');
        }
        (stopped, text)
    });
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let exited = Instant::now();
    let (stopped, stderr) = reader.join().map_err(|_| "stderr reader panicked")?;
    let stopped = stopped.ok_or_else(|| format!("no stop line in:\n{stderr}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let recorded = parse_long(&stdout, &stderr)?;
    let size = std::fs::metadata(trace).map_err(|e| e.to_string())?.len();
    let peak = hwm.join().map_err(|_| "VmHWM reader panicked")?;
    Ok((peak, exited.duration_since(stopped).as_secs_f64(), size, recorded))
}

/// The 60 s run writes a Perfetto trace: its packet count stands in for events.
fn parse_long(stdout: &str, stderr: &str) -> Result<Recorded, String> {
    let events = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Trace written to ")?.split("trace, ").nth(1)?.split(' ').next()?.parse::<u64>().ok())
        .ok_or_else(|| format!("no trace line in:\n{stdout}"))?;
    let mut r = parse(&format!("Capture written to x ({events} events"), stderr)?;
    r.lost = stdout.lines().find_map(|l| l.trim().strip_prefix("warning: ")?.split(" events lost").next()?.parse().ok()).unwrap_or(0);
    Ok(r)
}

/// File offsets of every `raw::poll` instance (symbol value → offset via
/// the LOAD segments), for bare tracefs uprobes.
fn raw_poll_offsets(binary: &Path) -> Result<Vec<u64>, String> {
    let text = |cmd: &mut Command| -> Result<String, String> {
        let out = cmd.output().map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let segments: Vec<(u64, u64, u64)> = text(Command::new("readelf").arg("-lW").arg(binary))?
        .lines()
        .filter(|l| l.trim_start().starts_with("LOAD"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
            Some((hex(f.get(1)?)?, hex(f.get(2)?)?, hex(f.get(5)?)?))
        })
        .collect();
    let offsets: Vec<u64> = text(Command::new("nm").arg("-C").arg(binary))?
        .lines()
        .filter(|l| l.ends_with(" tokio::runtime::task::raw::poll"))
        .filter_map(|l| u64::from_str_radix(l.split_whitespace().next()?, 16).ok())
        .filter_map(|v| segments.iter().find(|s| v >= s.1 && v < s.1 + s.2).map(|s| v - s.1 + s.0))
        .collect();
    if offsets.is_empty() { Err(format!("no raw::poll symbols in {}", binary.display())) } else { Ok(offsets) }
}

fn yield_ns(demo: &Path) -> Result<f64, String> {
    let out = Command::new(demo).args(["--yield-loop", "500000"]).output().map_err(|e| e.to_string())?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("yield-loop ns-per-poll ")?.trim().parse().ok())
        .ok_or_else(|| "no ns-per-poll line".to_string())
}

/// (ns per poll without probes, with bare uprobes on every raw::poll): the
/// kernel's own cost of a uprobe hit (trap, lookup, an ftrace record), with
/// no BPF program and no uretprobe.
fn uprobe_floor(demo: &Path) -> Result<(f64, f64), String> {
    let tracefs = Path::new("/sys/kernel/tracing");
    let events = tracefs.join("uprobe_events");
    let offsets = raw_poll_offsets(demo)?;
    let mut defs = String::new();
    for (i, off) in offsets.iter().enumerate() {
        defs.push_str(&format!("p:scopefloor/p{i} {}:{off:#x}\n", demo.display()));
    }
    let add = std::fs::OpenOptions::new().append(true).open(&events).map_err(|e| format!("{}: {e}", events.display()));
    std::io::Write::write_all(&mut add?, defs.as_bytes()).map_err(|e| format!("adding uprobes: {e}"))?;
    let enable = |on: &str| std::fs::write(tracefs.join("events/scopefloor/enable"), on);
    let result = (|| {
        enable("1").map_err(|e| format!("enabling uprobes: {e}"))?;
        let (mut base, mut probed) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            enable("0").map_err(|e| e.to_string())?;
            base.push(yield_ns(demo)?);
            enable("1").map_err(|e| e.to_string())?;
            probed.push(yield_ns(demo)?);
        }
        Ok((crate::bench::median(base), crate::bench::median(probed)))
    })();
    let _ = enable("0");
    let removal: String = (0..offsets.len()).map(|i| format!("-:scopefloor/p{i}\n")).collect();
    let _ = std::fs::OpenOptions::new().append(true).open(&events).and_then(|mut f| std::io::Write::write_all(&mut f, removal.as_bytes()));
    let _ = std::fs::write(tracefs.join("trace"), "");
    result
}

pub fn section(scope: &Path, demo: &Path, probed_poll_ns: f64) -> Result<String, String> {
    let started = Instant::now();
    let plain = capacity(scope, demo, &["--no-stacks"])?;
    let loaded = capacity(scope, demo, &["--frequency", "999"])?;
    // The largest child so far: a 9M-event recording, exported.
    let capacity_rss = children_max_rss_kib();
    let (floor_base, floor) = uprobe_floor(demo)?;
    let (rss_kib, stop_to_written, trace_bytes, long) = long_run(scope, demo)?;
    let mut s = String::from("## Capacity, memory and stop-to-written\n\n");
    s.push_str("Ingest: one Tokio task yielding 3,000,000 times under the profiler (`demo-app --yield-loop`): each iteration is a poll start, a poll end and a wake record, all from one thread.\n\n");
    s.push_str("| configuration | events recorded | seconds | events/s | events lost |\n|---|---|---|---|---|\n");
    for (name, r) in [("tasks, no stacks", &plain), ("tasks + stacks at 999 Hz", &loaded)] {
        s.push_str(&format!("| {name} | {} | {:.2} | {:.0} | {} |\n", r.events, r.seconds, r.events as f64 / r.seconds.max(1e-9), r.lost));
    }
    s.push_str(&format!(
        "\nThe profiler's peak memory over those runs: {:.0} MB. The capture streams to disk while recording, but it is read back whole to export it: about {:.0} bytes of memory per recorded event.\n",
        capacity_rss as f64 / 1024.0,
        capacity_rss as f64 * 1024.0 / plain.events.max(loaded.events).max(1) as f64
    ));
    s.push_str(&format!(
        "\nUprobe floor: the same loop with a bare tracefs uprobe (no BPF program, no uretprobe) on every `raw::poll` instance: {floor_base:.0} → {floor:.0} ns per iteration, **{:.0} ns per uprobe hit**; our task probes cost {:.0} ns per iteration (two uprobes and a uretprobe with their programs, plus the wake).\n\n",
        floor - floor_base,
        probed_poll_ns
    ));
    s.push_str(&format!(
        "A 60 s recording of the demo in the default mode (tasks + stacks), written as Perfetto: {} packets, {:.1} MB; profiler memory high-water mark **{:.0} MB** (max RSS, recording and export); **{:.2} s from stop to trace written** (reading the capture back, symbolizing, exporting); {} events lost.\n\n",
        long.events,
        trace_bytes as f64 / 1e6,
        rss_kib as f64 / 1024.0,
        stop_to_written,
        long.lost
    ));
    println!("xtask bench: scale measurements took {:.0} s", started.elapsed().as_secs_f64());
    Ok(s)
}
