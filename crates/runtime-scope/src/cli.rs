//! Command line: the prototype's flat CLI, kept as documented.

use clap::Parser;
use std::path::PathBuf;

const MAX_DURATION_S: u64 = 24 * 60 * 60;

#[derive(Parser, Debug)]
#[command(
    name = "runtime-scope",
    version,
    about = "Timeline profiler for async Rust (Tokio): records what every runtime thread did and when, with eBPF, no code changes.",
    after_help = "\
Examples:
  # Watch a running program for 30 s, one line per second per worker
  sudo runtime-scope --pid 1234

  # Record 10 s quietly and write a Chrome trace (open in ui.perfetto.dev)
  sudo runtime-scope --pid 1234 --trace --duration 10 --no-live --trace-output trace.json

  # Threads named by a custom Builder::thread_name are workers too
  sudo runtime-scope --pid 1234 --workers api-worker --trace

Needs root (or CAP_BPF + CAP_PERFMON). Stops at --duration, on Ctrl-C or
SIGTERM, or when the target exits; the trace is written in every case."
)]
pub struct Args {
    /// Process ID to attach to.
    #[arg(short, long)]
    pub pid: u32,

    /// Path to the target binary [default: /proc/PID/exe].
    #[arg(short, long, value_name = "PATH")]
    pub target: Option<PathBuf>,

    /// Write a Chrome trace (JSON) when recording stops.
    #[arg(long)]
    pub trace: bool,

    /// How long to record, in seconds (1 to 86400).
    #[arg(short, long, default_value_t = 30, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=MAX_DURATION_S))]
    pub duration: u64,

    /// Where to write the trace with --trace.
    #[arg(long, default_value = "trace.json", value_name = "FILE")]
    pub trace_output: PathBuf,

    /// No per-second activity lines; only progress every 2 s and the summary.
    #[arg(long)]
    pub no_live: bool,

    /// Thread-name prefix of runtime workers, in addition to Tokio's defaults
    /// (tokio-rt-worker, tokio-runtime-w). Repeatable.
    #[arg(long = "workers", value_name = "PREFIX")]
    pub worker_prefixes: Vec<String>,

    /// Also save the raw recording as JSON (for fixtures and bug reports).
    #[arg(long, value_name = "FILE", hide = true)]
    pub save_recording: Option<PathBuf>,
}
