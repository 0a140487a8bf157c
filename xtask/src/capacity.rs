//! Two sections of BENCHMARKS.md that run the recorder as a user would
//! (`record -- CMD`) and watch it from outside:
//!
//! - "Ingest capacity": `demo-app --yield-loop N` (three events per poll: poll
//!   start, poll end, wake) sized to run ~5 s, alone and two at once, with and
//!   without stacks at 999 Hz; events/s ingested and events lost.
//! - "Memory on a 60 s run": the demo app recorded 60 s into a Perfetto
//!   trace; the recorder's RSS high-water mark, the capture and trace sizes,
//!   and the time from "stopped" to the trace written and to exit.
//!
//! Each run's stdout and stderr lines are timestamped as they arrive; the
//! recorder is reaped with wait4 for its ru_maxrss, and its VmRSS / VmHWM are
//! polled from /proc while it runs.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One timestamped line (time since the run started).
type Lines = Arc<Mutex<Vec<(Duration, String)>>>;

/// A finished recorder run.
pub struct Run {
    pub stdout: Vec<(Duration, String)>,
    pub stderr: Vec<(Duration, String)>,
    /// When the process was reaped, since start.
    pub exited: Duration,
    /// wait4's ru_maxrss: the recorder's peak, or a waited-for child's if larger.
    pub max_rss_kib: u64,
    /// (time since start, VmRSS KiB, VmHWM KiB, user+system ticks) of the recorder, every ~100 ms.
    pub rss: Vec<(Duration, u64, u64, u64)>,
    /// Highest VmHWM seen of the recorder's first child (the launched target).
    pub target_hwm_kib: u64,
}

impl Run {
    fn all_text(&self) -> String {
        self.stdout.iter().chain(&self.stderr).map(|(_, l)| l.as_str()).collect::<Vec<_>>().join("\n")
    }

    fn first(&self, needle: &str) -> Option<&(Duration, String)> {
        self.stdout.iter().chain(&self.stderr).find(|(_, l)| l.contains(needle))
    }

    /// Seconds recorded ("runtime-scope: stopped after S s: …") and when that line came.
    pub fn stopped(&self) -> Result<(f64, Duration), String> {
        let (at, line) = self.first("runtime-scope: stopped after ").ok_or_else(|| self.missing("a \"stopped after\" line"))?;
        let secs = line.split("stopped after ").nth(1).and_then(|r| r.split(' ').next()?.parse().ok());
        secs.map(|s| (s, *at)).ok_or_else(|| format!("cannot read the seconds in {line:?}"))
    }

    /// Events lost, from the summary ("no events lost" / "warning: N events lost").
    pub fn lost(&self) -> Result<u64, String> {
        if self.first("no events lost").is_some() {
            return Ok(0);
        }
        let (_, line) = self.first(" events lost").ok_or_else(|| self.missing("a lost-events line"))?;
        line.split("warning: ").nth(1).and_then(|r| r.split(' ').next()?.parse().ok()).ok_or_else(|| format!("cannot read {line:?}"))
    }

    /// Events in the capture ("Capture written to X (N events, …)").
    pub fn events(&self) -> Result<u64, String> {
        let (_, line) = self.first("Capture written to ").ok_or_else(|| self.missing("a \"Capture written\" line"))?;
        line.split(" (").nth(1).and_then(|r| r.split(' ').next()?.parse().ok()).ok_or_else(|| format!("cannot read {line:?}"))
    }

    /// The target's "yield-loop ns-per-poll X".
    pub fn ns_per_poll(&self) -> Result<f64, String> {
        let (_, line) = self.first("yield-loop ns-per-poll ").ok_or_else(|| self.missing("a yield-loop line"))?;
        line.trim().rsplit(' ').next().and_then(|v| v.parse().ok()).ok_or_else(|| format!("cannot read {line:?}"))
    }

    fn missing(&self, what: &str) -> String {
        format!("runtime-scope printed no {what}; its output:\n{}", self.all_text())
    }
}

/// A recorder that is running.
pub struct Running {
    child: std::process::Child,
    started: Instant,
    readers: [JoinHandle<()>; 2],
    stdout: Lines,
    stderr: Lines,
}

fn read_lines(stream: impl Read + Send + 'static, started: Instant) -> (Lines, JoinHandle<()>) {
    let lines: Lines = Arc::default();
    let out = lines.clone();
    let handle = std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut v) = out.lock() {
                v.push((started.elapsed(), line));
            }
        }
    });
    (lines, handle)
}

pub fn start(scope: &Path, args: &[&str], target: &[&str]) -> Result<Running, String> {
    start_command(scope, "record", args, target)
}

/// `runtime-scope SUBCOMMAND ARGS -- TARGET`.
pub fn start_command(scope: &Path, subcommand: &str, args: &[&str], target: &[&str]) -> Result<Running, String> {
    let all: Vec<&str> = [subcommand].iter().chain(args).chain(&["--"]).chain(target).copied().collect();
    start_args(scope, &all)
}

/// `runtime-scope ARGS`, watched as [`finish`] does.
pub fn start_args(scope: &Path, args: &[&str]) -> Result<Running, String> {
    let started = Instant::now();
    let mut child = Command::new(scope)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", scope.display()))?;
    let (stdout, out_reader) = read_lines(child.stdout.take().expect("piped"), started);
    let (stderr, err_reader) = read_lines(child.stderr.take().expect("piped"), started);
    Ok(Running { child, started, readers: [out_reader, err_reader], stdout, stderr })
}

#[repr(C)]
#[derive(Default)]
struct Timeval {
    sec: i64,
    usec: i64,
}

/// struct rusage (Linux, 64-bit).
#[repr(C)]
#[derive(Default)]
struct Rusage {
    utime: Timeval,
    stime: Timeval,
    maxrss: i64,
    rest: [i64; 13],
}

unsafe extern "C" {
    fn wait4(pid: i32, status: *mut i32, options: i32, rusage: *mut Rusage) -> i32;
}

const WNOHANG: i32 = 1;

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether a stderr line so far contains `needle`.
    pub fn stderr_has(&self, needle: &str) -> bool {
        self.stderr.lock().is_ok_and(|v| v.iter().any(|(_, l)| l.contains(needle)))
    }
}

/// (VmRSS, VmHWM) in KiB.
pub(crate) fn rss_of(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| status.lines().find_map(|l| l.strip_prefix(key)?.trim().strip_suffix(" kB")?.trim().parse().ok());
    Some((kib("VmRSS:")?, kib("VmHWM:")?))
}

/// User + system CPU of a process, in clock ticks (USER_HZ, 100 per second).
pub(crate) fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

pub(crate) fn first_child(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?.split_whitespace().next()?.parse().ok()
}

/// Waits for every recorder (polling them together, so each exit time is
/// right to ~5 ms), sampling their memory. Kills all after `limit`.
pub fn finish(runs: Vec<Running>, limit: Duration) -> Result<Vec<Run>, String> {
    // Per run: the recorder, (exit time, ru_maxrss) once reaped, its samples, the target's VmHWM.
    type State = (Running, Option<(Duration, u64)>, Vec<(Duration, u64, u64, u64)>, u64);
    let mut state: Vec<State> = runs.into_iter().map(|r| (r, None, Vec::new(), 0)).collect();
    let mut last_sample = Instant::now() - Duration::from_secs(1);
    let mut timed_out = false;
    while state.iter().any(|s| s.1.is_none()) {
        let sample = last_sample.elapsed() >= Duration::from_millis(100);
        if sample {
            last_sample = Instant::now();
        }
        for (run, done, rss, target_hwm) in state.iter_mut().filter(|s| s.1.is_none()) {
            let pid = run.child.id();
            if sample {
                if let (Some((now, hwm)), Some(ticks)) = (rss_of(pid), cpu_ticks(pid)) {
                    rss.push((run.started.elapsed(), now, hwm, ticks));
                }
                if let Some((_, hwm)) = first_child(pid).and_then(rss_of) {
                    *target_hwm = (*target_hwm).max(hwm);
                }
            }
            if !timed_out && run.started.elapsed() > limit {
                let _ = run.child.kill();
            }
            let mut usage = Rusage::default();
            let mut status = 0;
            // SAFETY: our own child; valid out-pointers.
            let r = unsafe { wait4(pid as i32, &mut status, WNOHANG, &mut usage) };
            if r == pid as i32 {
                *done = Some((run.started.elapsed(), usage.maxrss.max(0) as u64));
            } else if r < 0 {
                return Err(format!("wait4({pid}): {}", std::io::Error::last_os_error()));
            }
        }
        timed_out |= state.iter().any(|s| s.0.started.elapsed() > limit);
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut out = Vec::new();
    for (run, done, rss, target_hwm_kib) in state {
        let (exited, max_rss_kib) = done.expect("loop ends when all are done");
        for reader in run.readers {
            let _ = reader.join();
        }
        let take = |l: &Lines| l.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default();
        out.push(Run { stdout: take(&run.stdout), stderr: take(&run.stderr), exited, max_rss_kib, rss, target_hwm_kib });
    }
    if timed_out {
        return Err(format!("a recorder ran over {} s and was killed", limit.as_secs()));
    }
    Ok(out)
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// Ctrl-C (SIGINT) to a process we started.
pub(crate) fn interrupt(pid: u32) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc_kill(pid as i32, 2) };
}

pub(crate) fn mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

fn tmp(name: &str) -> String {
    std::env::temp_dir().join(name).to_string_lossy().into_owned()
}

const SECONDS: f64 = 5.0;

struct Load {
    name: &'static str,
    args: &'static [&'static str],
    loops: usize,
}

const LOADS: [Load; 3] = [
    Load { name: "one loop, --no-stacks", args: &["--no-stacks"], loops: 1 },
    Load { name: "one loop, stacks at --frequency 999", args: &["--frequency", "999"], loops: 1 },
    Load { name: "two loops at once (two recorders), --no-stacks", args: &["--no-stacks"], loops: 2 },
];

/// "## Ingest capacity". `probed_ns`: ns per poll of the loop under the recorder (Cost per poll), to size N.
pub fn ingest(scope: &Path, demo: &Path, probed_ns: f64) -> Result<String, String> {
    let demo = demo.to_string_lossy().into_owned();
    if !probed_ns.is_finite() || probed_ns <= 0.0 {
        return Err(format!("cannot size the ingest runs from {probed_ns} ns per probed poll"));
    }
    let n = ((SECONDS * 1e9 / probed_ns) as u64).clamp(200_000, 50_000_000);
    let n_text = n.to_string();
    println!("xtask bench: ingest capacity: {probed_ns:.0} ns per probed poll → --yield-loop {n}");
    let mut rows = Vec::new();
    for load in &LOADS {
        println!("xtask bench: ingest capacity: {}", load.name);
        let mut running = Vec::new();
        for i in 0..load.loops {
            let out = tmp(&format!("bench-ingest-{i}.rscope"));
            let mut args = vec!["--no-live", "--polls", "on", "-o", &out];
            args.extend(load.args);
            running.push((start(scope, &args, &[&demo, "--yield-loop", &n_text])?, out));
        }
        let (running, outs): (Vec<_>, Vec<_>) = running.into_iter().unzip();
        let runs = finish(running, Duration::from_secs(300))?;
        for out in outs {
            let _ = std::fs::remove_file(out);
        }
        let (mut events, mut lost, mut rate, mut secs, mut rss, mut stop_to_exit) = (0, 0, 0.0, 0.0f64, 0, 0.0f64);
        let mut rss_at_stop = 0;
        for run in &runs {
            let (s, at) = run.stopped()?;
            rss_at_stop = rss_at_stop.max(run.rss.iter().filter(|r| r.0 <= at).map(|r| r.2).max().unwrap_or(0));
            let e = run.events()?;
            events += e;
            lost += run.lost()?;
            rate += e as f64 / s;
            secs = secs.max(s);
            rss = rss.max(run.max_rss_kib);
            stop_to_exit = stop_to_exit.max((run.exited - at).as_secs_f64());
        }
        let ns: Vec<String> = runs.iter().map(|r| r.ns_per_poll().map(|v| format!("{v:.0}"))).collect::<Result<_, _>>()?;
        rows.push(format!(
            "| {} | {events} | {secs:.1} | **{:.2} M** | {lost} | {} | {:.0} / {:.0} | {stop_to_exit:.1} |\n",
            load.name,
            rate / 1e6,
            ns.join(" / "),
            mb(rss_at_stop),
            mb(rss)
        ));
    }
    let mut s = String::from("## Ingest capacity\n\n");
    s.push_str(&format!(
        "The fastest event source we have: `demo-app --yield-loop {n}`, one task yielding on a 1-worker runtime; each iteration is a poll start, \
         a poll end and a wake (N sized from the Cost per poll run under the recorder to last ~{SECONDS:.0} s). Recorded with \
         `runtime-scope record --no-live -o X.rscope -- demo-app --yield-loop {n}`; events are the capture's, per second of recording \
         (\"stopped after\"), summed over recorders when two loops run at once (each under its own recorder: a recorder follows one process; \
         with 2 CPUs, two loops and two recorders compete for the CPUs). Lost is the summary's count of events the ring buffer \
         (8 MiB) had no room for. One run of each.\n\n"
    ));
    s.push_str("| load | events | seconds | events/s | lost | target ns per poll | recorder RSS high-water at stop / whole run (MB) | stopped → exit (s) |\n|---|---|---|---|---|---|---|---|\n");
    for row in rows {
        s.push_str(&row);
    }
    s.push_str(
        "\nThe uprobes are synchronous, so the target can produce events no faster than the probes run (see Cost per poll): \
         the loop slows to the rate the kernel side sustains, and the question is only whether the recorder drains the ring buffer in time. \
         While recording the recorder's memory stays small (events stream to the capture file); its peak and the time after \
         stopping are the end of the run (the capture read back into a timeline for the summary), which grow with the events recorded.\n\n",
    );
    Ok(s)
}

const MEMORY_SECONDS: &str = "60";

/// The 60 s capture `memory` leaves behind.
pub fn memory_capture() -> String {
    tmp("bench-memory.rscope")
}

/// "## Memory on a 60 s run".
pub fn memory(scope: &Path, demo: &Path) -> Result<String, String> {
    println!("xtask bench: memory: recording the demo app for {MEMORY_SECONDS} s");
    let (trace, capture) = (tmp("bench-memory.pftrace"), memory_capture());
    let demo = demo.to_string_lossy().into_owned();
    let args = ["--no-live", "-d", MEMORY_SECONDS, "-o", &trace, "--capture", &capture];
    let run = finish(vec![start(scope, &args, &[&demo, "70"])?], Duration::from_secs(300))?.remove(0);
    let size = |p: &str| std::fs::metadata(p).map(|m| m.len()).map_err(|e| format!("{p}: {e}"));
    let (trace_bytes, capture_bytes) = (size(&trace)?, size(&capture)?);
    // The capture stays for the write throughput (`bench::output_sizes`).
    let _ = std::fs::remove_file(&trace);
    let (secs, stop_at) = run.stopped()?;
    let lost = run.lost()?;
    // The summary's first line ("demo-app (pid N): … recorded") follows reading the capture back.
    let summary_at = run.first(" recorded (").map(|(t, _)| *t).ok_or_else(|| run.missing("a summary"))?;
    let written_at = run.first("Trace written to ").map(|(t, _)| *t).ok_or_else(|| run.missing("a \"Trace written\" line"))?;
    let sample_at = |t: Duration| run.rss.iter().rfind(|r| r.0 <= t).copied();
    let rss_at = |t: Duration| sample_at(t).map_or("–".to_string(), |r| format!("{:.1} MB", mb(r.1)));
    let hwm_at_stop = sample_at(stop_at).map_or(0, |r| r.2);
    let polled_peak = run.rss.iter().map(|r| r.2).max().unwrap_or(0);
    // ru_maxrss also covers waited-for children: it is the recorder's when above the target's own peak.
    let whole_run = if run.max_rss_kib > run.target_hwm_kib { run.max_rss_kib.max(polled_peak) } else { polled_peak };
    // CPU the recorder used between two instants, from the nearest samples.
    let cpu = |from: Duration, to: Duration| match (sample_at(from), sample_at(to)) {
        (Some(a), Some(b)) => format!("{:.2} s", b.3.saturating_sub(a.3) as f64 / 100.0),
        _ => "–".to_string(),
    };
    let phase = |from: Duration, to: Duration| format!("{:.2} s (CPU {})", (to.saturating_sub(from)).as_secs_f64(), cpu(from, to));
    let mut s = String::from("## Memory on a 60 s run\n\n");
    s.push_str(&format!(
        "`runtime-scope record --no-live -d {MEMORY_SECONDS} -o X.pftrace --capture X.rscope -- demo-app 70` (default mode: tasks + stacks), \
         one run. RSS is the recorder process's: VmRSS / VmHWM polled from /proc every 100 ms (times from its start), and wait4's \
         ru_maxrss when it is reaped, which covers the very end (the target's own peak was {:.1} MB, so ru_maxrss is the recorder's).\n\n",
        mb(run.target_hwm_kib)
    ));
    s.push_str("| | |\n|---|---|\n");
    s.push_str(&format!("| recorded | {secs:.2} s, {lost} events lost |\n"));
    s.push_str(&format!(
        "| RSS at 5 s / 30 s / at stop | {} / {} / {} |\n",
        rss_at(Duration::from_secs(5)),
        rss_at(Duration::from_secs(30)),
        rss_at(stop_at)
    ));
    s.push_str(&format!("| RSS high-water while recording (VmHWM at stop) | **{:.1} MB** |\n", mb(hwm_at_stop)));
    s.push_str(&format!("| RSS high-water of the whole run (ru_maxrss, with the end phase) | **{:.1} MB** |\n", mb(whole_run)));
    s.push_str(&format!("| capture (.rscope) | {:.1} MB |\n", capture_bytes as f64 / 1e6));
    s.push_str(&format!("| Perfetto trace (.pftrace) | {:.1} MB |\n", trace_bytes as f64 / 1e6));
    s.push_str(&format!("| **stopped → trace written** | **{:.2} s** |\n", written_at.saturating_sub(stop_at).as_secs_f64()));
    s.push_str(&format!("| stopped → summary (end the capture, read it back, timeline, symbolize) | {} |\n", phase(stop_at, summary_at)));
    s.push_str(&format!("| summary → trace written (Perfetto export) | {} |\n", phase(summary_at, written_at)));
    s.push_str(&format!("| trace written → process exit (waiting for the uprobes to come off, begun at stop) | {} |\n", phase(written_at, run.exited)));
    s.push_str(
        "\nStopped is when stderr says `runtime-scope: stopped after`; summary and trace written are when those lines reach our pipe \
         (both on stderr). CPU is the recorder's user + system time over the same span (from the 100 ms samples): where it is far below \
         the wall time, the recorder is waiting, not working.\n\n",
    );
    Ok(s)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    fn run(stdout: &[&str], stderr: &[&str]) -> super::Run {
        let lines = |v: &[&str]| v.iter().enumerate().map(|(i, l)| (Duration::from_secs(i as u64), l.to_string())).collect();
        super::Run { stdout: lines(stdout), stderr: lines(stderr), exited: Duration::ZERO, max_rss_kib: 0, rss: Vec::new(), target_hwm_kib: 0 }
    }

    #[test]
    fn reads_the_recorder_output() {
        let r = run(
            &["yield-loop ns-per-poll 2136.1", "  warning: 1234 events lost (ring buffer full); parts …", "Capture written to /tmp/x.rscope (9000102 events, 153.6 MB). Convert"],
            &["runtime-scope: recording demo-app", "runtime-scope: stopped after 6.41 s: the target process exited"],
        );
        assert_eq!(r.lost(), Ok(1234));
        assert_eq!(r.events(), Ok(9000102));
        assert_eq!(r.stopped(), Ok((6.41, Duration::from_secs(1))));
        assert_eq!(r.ns_per_poll(), Ok(2136.1));
        let ok = run(&["  no events lost"], &[]);
        assert_eq!(ok.lost(), Ok(0));
        assert!(ok.events().is_err() && ok.stopped().is_err() && run(&[], &[]).lost().is_err());
    }
}
