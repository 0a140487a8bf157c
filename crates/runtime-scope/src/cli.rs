//! Command line: the prototype's flat CLI (kept as documented) plus the
//! record / export / report subcommands.

use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

const MAX_DURATION_S: u64 = 24 * 60 * 60;

#[derive(Parser, Debug)]
#[command(
    name = "runtime-scope",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    about = "Timeline profiler for async Rust (Tokio): records what every runtime thread did and when, with eBPF, no code changes.",
    after_help = "\
Examples:
  # Watch a running program for 30 s, one line per second per worker
  sudo runtime-scope --pid 1234

  # Record 10 s quietly and write a Chrome trace (open in ui.perfetto.dev)
  sudo runtime-scope --pid 1234 --trace --duration 10 --no-live --trace-output trace.json

  # Record into a Perfetto trace; start the program under the profiler
  sudo runtime-scope record -o trace.pftrace -- ./target/release/my-app --port 8080

  # Keep the capture, convert it later (no root needed)
  sudo runtime-scope record -p 1234 -d 10 -o run.rscope
  runtime-scope export run.rscope -o run.json
  runtime-scope report run.rscope

  # What this kernel offers (Linux 5.10+; what older kernels lose)
  sudo runtime-scope check

Needs root to record (see README, \"Running without root\"). Recording
stops at the duration, on Ctrl-C, SIGTERM or SIGHUP, or when the target
exits; the output is written in every case. Our messages and the summary
go to stderr."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub seed: SeedArgs,
}

/// The flat CLI of the prototype.
#[derive(ClapArgs, Debug)]
pub struct SeedArgs {
    /// Process ID to attach to.
    #[arg(short, long, required = true)]
    pub pid: Option<u32>,

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

    #[command(flatten)]
    pub view: ViewArgs,

    #[command(flatten)]
    pub stacks: StackArgs,

    /// Also save the raw recording as JSON (for fixtures and bug reports).
    #[arg(long, value_name = "FILE", hide = true)]
    pub save_recording: Option<PathBuf>,
}

/// How stacks are captured.
#[derive(ClapArgs, Debug, Clone)]
pub struct StackArgs {
    /// cpu-clock sampling frequency of the target's threads, 1 to 10000 Hz; 0 turns sampling off.
    #[arg(long, default_value_t = 99, value_name = "HZ",
          value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub frequency: u32,

    /// Bytes of user stack copied per stack (512 to 32768). Deeper stacks
    /// are cut at this depth (the frames nearest the thread's start are lost).
    #[arg(long, default_value_t = 16384, value_name = "BYTES",
          value_parser = clap::value_parser!(u32).range(512..=32768))]
    pub stack_size: u32,

    /// Bytes of user stack copied when a thread blocks (512 to 32768, at
    /// most --stack-size). A worker's park is shallow, but a wait inside a
    /// task (a mutex, a blocking read) can sit as deep as samples land:
    /// 16384 copies those whole where the kernel's verifier takes it
    /// (Linux 6.18 does; 6.1 and 5.10 reject sched_switch with it).
    #[arg(long, default_value_t = 8192, value_name = "BYTES",
          value_parser = clap::value_parser!(u32).range(512..=32768))]
    pub blocked_stack_size: u32,

    /// Budget for stacks copied when a thread blocks, bytes per second over
    /// all CPUs; copies over budget are skipped and counted. 0: none.
    #[arg(long, default_value_t = 8 * 1024 * 1024, value_name = "BYTES_PER_SEC")]
    pub stack_budget: u64,

    /// No stacks at all (timeline only).
    #[arg(long)]
    pub no_stacks: bool,

    /// No task information at all: neither poll probes nor Tokio's task id
    /// at switches and samples (threads, stacks and scheduling only).
    #[arg(long)]
    pub no_tasks: bool,

    /// Exact polls: a probe on every poll of every task (and wake), about
    /// 1.9 µs per poll with its wake on Linux 6.18 (BENCHMARKS.md, Cost per
    /// poll). `starts` probes each poll's start only (about 0.9 µs, no
    /// wakes): a poll then ends at most where its worker is next seen
    /// outside it, and lengths are upper bounds (≤). `auto` measures the
    /// poll rate for a moment and keeps exact polls only while they cost
    /// less than --overhead-budget of the target's CPU (or their starts
    /// alone, when only those fit); otherwise tasks are
    /// seen through Tokio's task id at switches and samples, which costs
    /// nothing per poll. `--polls` alone means `on`.
    #[arg(long, value_enum, default_value_t = PollTier::Auto, num_args = 0..=1, default_missing_value = "on", value_name = "WHEN")]
    pub polls: PollTier,

    /// CPU budget for exact polls with --polls auto, in percent of the
    /// target's own CPU time (exact polls costing under 2 ms of CPU a
    /// second are kept anyway; 0: never kept once task ids are found).
    #[arg(long, default_value_t = 2.0, value_name = "PERCENT", value_parser = budget_pct)]
    pub overhead_budget: f64,
}

#[derive(ClapArgs, Debug, Clone)]
pub struct ViewArgs {
    /// No per-second activity lines; only progress every 2 s and the summary.
    #[arg(long)]
    pub no_live: bool,

    /// Thread-name prefix of runtime workers, in addition to Tokio's defaults
    /// (tokio-rt-worker, tokio-runtime-w). Repeatable.
    #[arg(long = "workers", value_name = "PREFIX")]
    pub worker_prefixes: Vec<String>,

    /// Polls at least this long are reported as long polls, with their cause
    /// (cpu / blocked / preempted) and call site.
    #[arg(long, value_name = "MS", default_value_t = 10.0, value_parser = positive_ms)]
    pub long_poll: f64,

    /// The target's DWARF in a separate file (`objcopy --only-keep-debug`),
    /// used to name task kinds exactly; it must carry the binary's build-id.
    /// Files under /usr/lib/debug/.build-id/ are found without it. Repeatable.
    #[arg(long = "debug-file", value_name = "FILE")]
    pub debug_files: Vec<PathBuf>,
}

/// Whether to put a probe on every poll.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollTier {
    /// Exact polls while they fit the budget; over it, poll starts only
    /// if those fit; task identity otherwise.
    Auto,
    /// Always exact polls and wakes.
    On,
    /// Every poll's start, not its return, and no wakes: about half the
    /// cost of `on` per poll. A poll ends at most where its worker is next
    /// seen outside it (its next poll, a switch or sample under another
    /// task): durations are upper bounds, marked ≤.
    Starts,
    /// Never: task identity only.
    Off,
}

fn budget_pct(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=100.0).contains(&v) => Ok(v),
        Ok(_) => Err("a percentage from 0 to 100".into()),
        Err(e) => Err(format!("{e}: give a percentage, e.g. 2 or 0.5")),
    }
}

pub(crate) fn positive_ms(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() && v <= 86_400_000.0 => Ok(v),
        Ok(_) => Err("must be a number of milliseconds above 0".into()),
        Err(e) => Err(format!("{e}: give milliseconds, e.g. 10 or 0.5")),
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Record a running process (-p) or a program started under the profiler (-- CMD).
    #[command(after_help = "\
The output format follows the extension of -o: .pftrace / .perfetto-trace →
Perfetto, .json → Chrome trace, .rscope → the capture itself; or --format.

A program started with `-- CMD` is held before its first instruction until
the probes are attached, so nothing it does is missed. Its stdout and stderr
pass through. Recording ends when it exits, at --duration, or on Ctrl-C; a
program still running then is sent SIGTERM (and SIGKILL 5 s later): it was
started for this recording. runtime-scope then exits with the program's exit
status (128 + N if killed by signal N), as `time` and `strace` do.")]
    Record(RecordArgs),
    /// Live dashboard of a running program: worker lanes, hot tasks, long polls.
    #[command(after_help = "\
Examples:
  sudo runtime-scope top -p 1234
  # keep what you watched, to export or report on afterwards
  sudo runtime-scope top -p 1234 --record watched.rscope

Keys: q quit · p pause (recording goes on) · s sort the task table ·
tab switch list · j/k move · enter details · w write a snapshot of the
last --window seconds (to --snapshot) · ? help.
Lanes, one per worker, scroll in time over the last --window seconds:
█ busy, ▓ blocked inside a task's poll, ░ preempted, · idle.")]
    Top(TopArgs),
    /// Flight recorder: record continuously, keep the last seconds in memory, write them out when a trigger fires.
    #[command(after_help = crate::watch::args::AFTER_HELP)]
    Watch(crate::watch::args::WatchArgs),
    /// Convert a capture (.rscope) to Perfetto or Chrome trace. No root needed.
    Export(ExportArgs),
    /// Print the end-of-run summary of a capture, or its JSON for CI. No root needed.
    #[command(after_help = "\
Examples:
  runtime-scope report run.rscope
  runtime-scope report run.rscope --long-poll 5
  # CI: fail when any poll blocked the runtime for more than 50 ms
  runtime-scope report run.rscope --fail-over 50
  runtime-scope report run.rscope --json | jq '.long_polls[] | select(.max_ms > 50)'

Long polls are grouped by cause and call site: cpu (on a CPU: the hottest
frames), blocked (off-CPU waiting inside the poll: the stack at the
switch-out), preempted (runnable, but another thread had the CPU).")]
    Report(ReportArgs),
    /// Say what this kernel offers runtime-scope: each BPF feature newer than
    /// Linux 5.10 that it uses, and what a recording loses without it. Needs root.
    #[command(after_help = "\
Example:
  sudo runtime-scope check

Prints one line per feature: yes or no, its key, what it is, the first Linux
release that has it, and what runtime-scope does without it. Exits 1 when
this kernel cannot record at all (older than 5.10, no BTF), saying why.")]
    Check,
}

#[derive(ClapArgs, Debug)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["pid", "command"]))]
pub struct RecordArgs {
    /// Process ID to attach to.
    #[arg(short, long)]
    pub pid: Option<u32>,

    /// With -p: the binary holding tokio, if not the program itself (a
    /// library); it must be mapped by the process [default: /proc/PID/exe].
    #[arg(short, long, value_name = "PATH", requires = "pid")]
    pub target: Option<PathBuf>,

    /// Stop after this many seconds (1 to 86400) [default: until Ctrl-C or the target exits].
    #[arg(short, long, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=MAX_DURATION_S))]
    pub duration: Option<u64>,

    /// Output file; its extension picks the format.
    #[arg(short, long, default_value = "trace.pftrace", value_name = "FILE")]
    pub output: PathBuf,

    /// Output format, overriding the extension of -o.
    #[arg(long, value_enum)]
    pub format: Option<Format>,

    /// Also keep the capture here, to export or report on later.
    #[arg(long, value_name = "FILE")]
    pub capture: Option<PathBuf>,

    #[command(flatten)]
    pub view: ViewArgs,

    #[command(flatten)]
    pub stacks: StackArgs,

    /// Program to start and record, with its arguments (after --).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(ClapArgs, Debug)]
pub struct ExportArgs {
    /// Capture file written by `record`.
    pub capture: PathBuf,

    /// Output file; its extension picks the format.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,

    /// Output format, overriding the extension of -o.
    #[arg(long, value_enum)]
    pub format: Option<Format>,

    /// Thread-name prefix of runtime workers, in addition to Tokio's defaults
    /// (tokio-rt-worker, tokio-runtime-w). Repeatable.
    #[arg(long = "workers", value_name = "PREFIX")]
    pub worker_prefixes: Vec<String>,

    /// The target's DWARF in a separate file, to name task kinds exactly (see record --help). Repeatable.
    #[arg(long = "debug-file", value_name = "FILE")]
    pub debug_files: Vec<PathBuf>,
}

#[derive(ClapArgs, Debug)]
pub struct TopArgs {
    /// Process ID to watch.
    #[arg(short, long)]
    pub pid: u32,

    /// Stop after this many seconds (1 to 86400) [default: until q or the target exits].
    #[arg(short, long, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=MAX_DURATION_S))]
    pub duration: Option<u64>,

    /// Also keep the capture (a .rscope file) here while watching.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,

    /// Seconds of history the lanes and the task table cover (2 to 300).
    #[arg(long, default_value_t = 10, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(2..=300))]
    pub window: u64,

    /// Polls at least this long are listed as long polls.
    #[arg(long, value_name = "MS", default_value_t = 10.0, value_parser = positive_ms)]
    pub long_poll: f64,

    /// Where the `w` key writes a snapshot of the last --window seconds (a
    /// capture beside the trace; %t: local time, %n: its number; see `watch`)
    /// [default: top-%t.pftrace].
    #[arg(long, value_name = "PATTERN")]
    pub snapshot: Option<PathBuf>,

    /// Thread-name prefix of runtime workers, in addition to Tokio's defaults
    /// (tokio-rt-worker, tokio-runtime-w). Repeatable.
    #[arg(long = "workers", value_name = "PREFIX")]
    pub worker_prefixes: Vec<String>,

    #[command(flatten)]
    pub stacks: StackArgs,
}

#[derive(ClapArgs, Debug)]
pub struct ReportArgs {
    /// Capture file written by `record`.
    pub capture: PathBuf,

    /// Thread-name prefix of runtime workers, in addition to Tokio's defaults
    /// (tokio-rt-worker, tokio-runtime-w). Repeatable.
    #[arg(long = "workers", value_name = "PREFIX")]
    pub worker_prefixes: Vec<String>,

    /// The target's DWARF in a separate file, to name task kinds exactly (see record --help). Repeatable.
    #[arg(long = "debug-file", value_name = "FILE")]
    pub debug_files: Vec<PathBuf>,

    /// Polls at least this long are reported as long polls.
    #[arg(long, value_name = "MS", default_value_t = 10.0, value_parser = positive_ms)]
    pub long_poll: f64,

    /// Print the report as JSON (schema runtime-scope.report/1, see
    /// docs/report-json.md) instead of the terminal summary.
    #[arg(long)]
    pub json: bool,

    /// Exit with status 3 if any poll took longer than MS: a CI gate.
    #[arg(long, value_name = "MS", value_parser = positive_ms)]
    pub fail_over: Option<f64>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Perfetto protobuf trace (ui.perfetto.dev).
    Perfetto,
    /// Chrome trace event JSON (chrome://tracing, ui.perfetto.dev).
    Chrome,
    /// runtime-scope capture, to export or report on later.
    Capture,
}
