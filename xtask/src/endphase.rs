//! "End-phase memory": what `report` and `export` need to read a capture
//! back, against its size (issue 16's target: peak RSS ≤ 64 MB + 10% of the
//! capture). Captures of known shape are recorded first (`record -o
//! X.rscope`), then each command's peak is wait4's ru_maxrss: the demo's
//! and a yield loop's, and a real server's under load (mini-redis from
//! crates.io: many threads, a stack at nearly every wait).

use crate::capacity::{finish, interrupt, mb, start, start_args};
use std::path::Path;
use std::time::{Duration, Instant};

/// (row label, record options, target arguments after the demo binary).
const CAPTURES: [(&str, &[&str], &[&str]); 3] = [
    ("demo, 10 s, tasks + stacks", &["-d", "10"], &["70"]),
    ("yield loop, 300 000 polls, --no-stacks --polls on", &["--no-stacks", "--polls", "on"], &["--yield-loop", "300000"]),
    ("yield loop, 1 500 000 polls, --no-stacks --polls on", &["--no-stacks", "--polls", "on"], &["--yield-loop", "1500000"]),
];

const LIMIT: Duration = Duration::from_secs(600);

/// The mini-redis row: recorded in the default mode while
/// `redis-benchmark -t set,get -c 50` sends this many requests per test.
const MINI_REDIS: &str = "mini-redis under redis-benchmark, 2 × 150 000 requests, default mode";
const MINI_REDIS_REQUESTS: u64 = 150_000;
const MINI_REDIS_PORT: &str = "6397";

/// Records mini-redis (`server`) into `capture` while it serves a load;
/// the recording is stopped with Ctrl-C once the load is done.
fn record_mini_redis(scope: &Path, server: &Path, capture: &str) -> Result<(), String> {
    let mut srv = crate::overhead::start_server(server, &["--port", MINI_REDIS_PORT])?;
    let pid = srv.id().to_string();
    let recorded = start_args(scope, &["record", "--no-live", "-p", &pid, "-o", capture, "-d", "300"]).and_then(|rec| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !rec.stderr_has("runtime-scope: recording") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let load = crate::overhead::load(MINI_REDIS_PORT, "set,get", MINI_REDIS_REQUESTS);
        interrupt(rec.pid());
        finish(vec![rec], LIMIT)?;
        load.map(|_| ())
    });
    let _ = srv.kill();
    let _ = srv.wait();
    recorded
}

/// Peak RSS (KiB) and wall seconds of `runtime-scope ARGS`, which must succeed.
fn peak(scope: &Path, args: &[&str]) -> Result<(u64, f64), String> {
    let run = finish(vec![start_args(scope, args)?], LIMIT)?.remove(0);
    let failed = run.stderr.iter().find(|(_, l)| l.starts_with("Error") || l.contains("error:"));
    if let Some((_, line)) = failed {
        return Err(format!("runtime-scope {}: {line}", args.join(" ")));
    }
    Ok((run.max_rss_kib, run.exited.as_secs_f64()))
}

fn size_mb(path: &str) -> Result<f64, String> {
    std::fs::metadata(path).map(|m| m.len() as f64 / 1e6).map_err(|e| format!("{path}: {e}"))
}

/// "## End-phase memory".
pub fn section(scope: &Path, demo: &Path, server: &Path) -> Result<String, String> {
    let dir = std::env::temp_dir();
    let (capture, trace) = (dir.join("bench-endphase.rscope"), dir.join("bench-endphase.pftrace"));
    let (capture, trace) = (capture.to_string_lossy().into_owned(), trace.to_string_lossy().into_owned());
    let demo = demo.to_string_lossy().into_owned();
    let mut rows = String::new();
    let demo_rows = CAPTURES.iter().map(|&(label, options, target)| (label, Some((options, target))));
    for (label, demo_run) in demo_rows.chain([(MINI_REDIS, None)]) {
        println!("xtask bench: end phase: recording {label}");
        match demo_run {
            Some((options, target)) => {
                let mut args = vec!["--no-live", "-o", capture.as_str()];
                args.extend(options);
                let mut command = vec![demo.as_str()];
                command.extend(target);
                finish(vec![start(scope, &args, &command)?], LIMIT)?;
            }
            None => record_mini_redis(scope, server, &capture)?,
        }
        let capture_mb = size_mb(&capture)?;
        let (report_kib, report_s) = peak(scope, &["report", &capture])?;
        let (export_kib, export_s) = peak(scope, &["export", &capture, "-o", &trace])?;
        let target_mb = 64.0 + capture_mb / 10.0;
        let mark = |kib: u64| if mb(kib) <= target_mb { "✓" } else { "✗" };
        rows.push_str(&format!(
            "| {label} | {capture_mb:.1} MB | {target_mb:.0} MB | {:.0} MB {} ({report_s:.1} s) | {:.0} MB {} ({export_s:.1} s) | {:.1} MB |\n",
            mb(report_kib),
            mark(report_kib),
            mb(export_kib),
            mark(export_kib),
            size_mb(&trace)?,
        ));
    }
    let _ = std::fs::remove_file(&capture);
    let _ = std::fs::remove_file(&trace);
    Ok(format!(
        "## End-phase memory\n\n`cargo xtask bench endphase`: captures of known shape recorded with `runtime-scope record --no-live -o X.rscope [options] \
         -- demo-app …`, and of mini-redis (crates.io) recorded with `-p PID` while `redis-benchmark -t set,get -c 50` loads it, then `report X.rscope` and `export X.rscope -o X.pftrace` each run alone; peak is wait4's ru_maxrss, time the \
         wall time. Target (issue 16): peak ≤ 64 MB + 10% of the capture's size.\n\n\
         | capture of | size | target | report: peak (time) | export to Perfetto: peak (time) | trace |\n|---|---|---|---|---|---|\n{rows}\n"
    ))
}
