//! "## Flight recorder soak" of BENCHMARKS.md: `runtime-scope watch` left on
//! a busy server. mini-redis is started under the watch (`watch -- server`)
//! and kept busy by `redis-benchmark -l` (SET/GET, 50 clients, looping) for
//! the whole run (600 s by default: `cargo xtask bench soak SECONDS`); every
//! 60 s a SIGUSR1 asks for a snapshot. The recorder's RSS (VmRSS, VmHWM)
//! and CPU, and the server's CPU, are sampled every second from /proc. The
//! question: does the recorder's memory stay flat while the ring turns over
//! and snapshots are cut, written and analysed?

use crate::capacity::{self, cpu_ticks, first_child};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PORT: &str = "6398";
const SNAPSHOT_EVERY: Duration = Duration::from_secs(60);
const ROW_EVERY: u64 = 60;

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
}

fn mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

/// (VmRSS, VmHWM, RssAnon, RssFile) in KiB: anonymous memory is the heap;
/// file pages are the binaries and libraries mapped (page cache).
fn memory_of(pid: u32) -> Option<[u64; 4]> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| status.lines().find_map(|l| l.strip_prefix(key)?.trim().strip_suffix(" kB")?.trim().parse().ok());
    Some([kib("VmRSS:")?, kib("VmHWM:")?, kib("RssAnon:")?, kib("RssFile:")?])
}

/// One sample: (seconds, recorder memory, recorder CPU ticks, server CPU ticks, snapshots asked so far).
type Sample = (u64, [u64; 4], u64, u64, u32);

pub fn section(scope: &Path, server: &Path, seconds: u64) -> Result<String, String> {
    println!("xtask bench: soak: watch on mini-redis under redis-benchmark -l for {seconds} s");
    let dir = std::env::temp_dir().join("bench-soak");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let pattern = dir.join("soak-%n.pftrace").to_string_lossy().into_owned();
    let server = server.to_string_lossy().into_owned();
    let args = ["--on", "long-poll=100", "--on", "signal", "--cooldown", "30", "-o", &pattern];
    let watch = capacity::start_command(scope, "watch", &args, &[&server, "--port", PORT])?;
    let pid = watch.pid();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !watch.stderr_has("runtime-scope: recording") {
        if Instant::now() > deadline {
            return Err("watch never started recording".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut load = Command::new("redis-benchmark")
        .args(["-p", PORT, "-t", "set,get", "-c", "50", "-n", "1000000", "-l", "-q"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("redis-benchmark: {e}"))?;
    let started = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    let mut asked = 0u32;
    let mut next_snapshot = started + SNAPSHOT_EVERY;
    for second in 1..=seconds {
        let at = started + Duration::from_secs(second);
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        if Instant::now() >= next_snapshot {
            signal(pid, "-USR1");
            asked += 1;
            next_snapshot += SNAPSHOT_EVERY;
        }
        let memory = memory_of(pid).ok_or("the recorder exited during the soak")?;
        let target = first_child(pid).and_then(cpu_ticks).unwrap_or(0);
        samples.push((second, memory, cpu_ticks(pid).unwrap_or(0), target, asked));
    }
    let _ = load.kill();
    let _ = load.wait();
    signal(pid, "-INT");
    let run = capacity::finish(vec![watch], Duration::from_secs(seconds + 120))?.remove(0);
    let written = std::fs::read_dir(&dir).map(|d| d.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "pftrace")).count()).unwrap_or(0);
    let snapshot_bytes: u64 = std::fs::read_dir(&dir).map(|d| d.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum()).unwrap_or(0);
    let _ = std::fs::remove_dir_all(&dir);
    let stderr: Vec<&str> = run.stderr.iter().map(|(_, l)| l.as_str()).collect();
    let line = |needle: &str| stderr.iter().find(|l| l.contains(needle)).map(|l| l.trim_start_matches("runtime-scope: ").to_string());
    Ok(render(seconds, &samples, written, snapshot_bytes, line("the ring holds"), line("poll probes are off"), line("snapshot taken").or(line("snapshots taken"))))
}

fn render(seconds: u64, samples: &[Sample], written: usize, snapshot_bytes: u64, ring: Option<String>, tier: Option<String>, end: Option<String>) -> String {
    let mut s = String::from("## Flight recorder soak\n\n");
    s.push_str(&format!(
        "`runtime-scope watch --on long-poll=100 --on signal --cooldown 30 -o soak-%n.pftrace -- mini-redis-server` (defaults otherwise: \
         --keep 10, --polls auto, stacks at 99 Hz) for {seconds} s, the server under `redis-benchmark -t set,get -c 50 -l` the whole time, \
         a SIGUSR1 every {} s (each a snapshot: a capture and a Perfetto trace of the last 10 s, analysed and summarised). \
         RSS is the recorder's, sampled every second from /proc: VmRSS, split into anonymous memory (RssAnon: the heap, \
         the ring among it) and file pages (RssFile: the binaries and libraries mapped, page cache), and VmHWM, its \
         high-water mark (reached while a snapshot is analysed). CPU is user + system over the minute before each row \
         (or since the start), the recorder's as a share of the server's.\n\n",
        SNAPSHOT_EVERY.as_secs()
    ));
    s.push_str("| time | recorder RSS | of which anonymous / file | RSS high-water | snapshots asked | recorder CPU / server CPU |\n|---|---|---|---|---|---|\n");
    let at = |t: u64| samples.iter().find(|x| x.0 == t);
    let mut rows: Vec<u64> = vec![5, 30];
    rows.extend((ROW_EVERY..=seconds).step_by(ROW_EVERY as usize));
    if !seconds.is_multiple_of(ROW_EVERY) {
        rows.push(seconds);
    }
    for t in rows {
        let (Some(now), Some(before)) = (at(t), at(t.saturating_sub(ROW_EVERY).max(1))) else { continue };
        let share = if now.3 > before.3 { format!("{:.1}%", (now.2 - before.2) as f64 * 100.0 / (now.3 - before.3) as f64) } else { "–".into() };
        let [rss, hwm, anon, file] = now.1;
        s.push_str(&format!("| {t} s | {:.1} MB | {:.1} / {:.1} MB | {:.1} MB | {} | {share} |\n", mb(rss), mb(anon), mb(file), mb(hwm), now.4));
    }
    let after_fill: Vec<[u64; 4]> = samples.iter().filter(|x| x.0 >= 30).map(|x| x.1).collect();
    let range = |i: usize| {
        let v: Vec<u64> = after_fill.iter().map(|m| m[i]).collect();
        (v.iter().min().copied().unwrap_or(0), v.iter().max().copied().unwrap_or(0), v.last().copied().unwrap_or(0))
    };
    if !after_fill.is_empty() {
        let ((lo, hi, last), (alo, ahi, alast)) = (range(0), range(2));
        s.push_str(&format!(
            "\nAfter the ring filled (from 30 s on), RSS stayed between {:.1} and {:.1} MB ({:.1} MB at the end), its anonymous part \
             between {:.1} and {:.1} MB ({:.1} MB at the end). {written} snapshots written ({:.1} MB on disk).",
            mb(lo),
            mb(hi),
            mb(last),
            mb(alo),
            mb(ahi),
            mb(alast),
            snapshot_bytes as f64 / 1e6
        ));
    }
    for said in [ring, tier, end].into_iter().flatten() {
        s.push_str(&format!(" The recorder said: \"{said}\"."));
    }
    s.push_str("\n\n");
    s
}
