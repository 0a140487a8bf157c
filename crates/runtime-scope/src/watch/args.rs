//! `watch`'s command line.

use crate::cli::{Format, StackArgs, positive_ms};
use clap::Args as ClapArgs;
use std::path::PathBuf;

/// One `--on`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum On {
    LongPoll(f64),
    Blocked(f64),
    SchedDelay(f64),
    Signal,
}

fn parse_on(s: &str) -> Result<On, String> {
    if s == "signal" {
        return Ok(On::Signal);
    }
    let (name, ms) = s.split_once('=').ok_or_else(|| format!("{s:?}: give long-poll=MS, blocked=MS, sched-delay=MS or signal"))?;
    let ms = positive_ms(ms)?;
    match name {
        "long-poll" => Ok(On::LongPoll(ms)),
        "blocked" => Ok(On::Blocked(ms)),
        "sched-delay" => Ok(On::SchedDelay(ms)),
        _ => Err(format!("{name:?} is not a trigger: long-poll=MS, blocked=MS, sched-delay=MS or signal")),
    }
}

fn seconds(range: std::ops::RangeInclusive<f64>) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
    move |s: &str| match s.parse::<f64>() {
        Ok(v) if range.contains(&v) => Ok(v),
        Ok(_) => Err(format!("seconds from {} to {}", range.start(), range.end())),
        Err(e) => Err(format!("{e}: give seconds, e.g. 10 or 0.5")),
    }
}

#[derive(ClapArgs, Debug)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["pid", "command"]))]
pub struct WatchArgs {
    /// Process ID to watch.
    #[arg(short, long)]
    pub pid: Option<u32>,

    /// Where snapshots go: the extension picks the trace format (.pftrace,
    /// .json, or .rscope for the capture alone); %t is the trigger's local
    /// time (YYYYMMDD-HHMMSS), %n its number. The capture is written beside
    /// each trace (same name, .rscope), for `report` and `export` later.
    #[arg(short, long, default_value = "snapshot-%t.pftrace", value_name = "PATTERN")]
    pub output: PathBuf,

    /// Trace format, overriding the extension of -o.
    #[arg(long, value_enum)]
    pub format: Option<Format>,

    /// What writes a snapshot (repeatable): long-poll=MS, blocked=MS,
    /// sched-delay=MS, signal [default: long-poll=100 and signal].
    #[arg(long = "on", value_name = "TRIGGER", value_parser = parse_on)]
    pub on: Vec<On>,

    /// Seconds before the trigger a snapshot holds (1 to 600).
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS", value_parser = seconds(1.0..=600.0))]
    pub keep: f64,

    /// Seconds to keep recording after the trigger (after the stall ends,
    /// when it was caught still going) before the snapshot is written (0 to 60).
    #[arg(long, default_value_t = 1.0, value_name = "SECONDS", value_parser = seconds(0.0..=60.0))]
    pub after: f64,

    /// After a snapshot's trigger, seconds during which no other trigger
    /// writes one (a signal still does).
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS", value_parser = seconds(0.0..=86_400.0))]
    pub cooldown: f64,

    /// Snapshots written at most; then watching stops.
    #[arg(long, default_value_t = 20, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_snapshots: u32,

    /// Memory the ring of recent events may take, in MiB; a busier target
    /// then has fewer seconds in it (each snapshot says so).
    #[arg(long, default_value_t = 256, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub ring_size: u64,

    /// Stop after this many seconds [default: until Ctrl-C or the target exits].
    #[arg(short, long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub duration: Option<u64>,

    /// Polls at least this long are listed in each snapshot's report.
    #[arg(long, value_name = "MS", default_value_t = 10.0, value_parser = positive_ms)]
    pub long_poll: f64,

    #[arg(long = "workers", value_name = "PREFIX")]
    pub worker_prefixes: Vec<String>,

    /// The target's DWARF in a separate file, to name task kinds exactly (see record --help). Repeatable.
    #[arg(long = "debug-file", value_name = "FILE")]
    pub debug_files: Vec<PathBuf>,

    #[command(flatten)]
    pub stacks: StackArgs,

    /// Program to start and watch, with its arguments (after --).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub const AFTER_HELP: &str = "\
Examples:
  # Keep the last 10 s; write them (and 1 s after) when a poll takes 100 ms
  sudo runtime-scope watch -p 1234 --on long-poll=100 -o incidents/stall-%t.pftrace
  # A worker blocked inside a task for 50 ms, or kill -USR1 <runtime-scope's pid>
  sudo runtime-scope watch -p 1234 --on blocked=50 --on signal
  # Start the program under the watch
  sudo runtime-scope watch --on sched-delay=20 -- ./target/release/my-app

Records continuously in the cheap tier (--polls auto: exact polls while
they cost under --overhead-budget, else Tokio's task id at switch-outs and
samples) and keeps the last --keep seconds in memory (bounded by --ring-size;
the ring's size is said once it is full). A trigger writes a snapshot: a
capture and a trace of those seconds plus --after, and prints the report of
that window with the triggering event first. After one, others wait for
--cooldown; at --max-snapshots watching stops.

Triggers:
  long-poll=MS    a poll of an async task took MS or more (caught while still
                  running). Without poll probes: the task's thread was blocked
                  inside it for MS (a lower bound of the poll), or every sample
                  over MS saw the same task id (a CPU-bound stall; samples
                  cannot tell one long poll from several back to back).
  blocked=MS      a worker was blocked (off the CPU, waiting) inside a task's
                  poll for MS.
  sched-delay=MS  a worker woken or preempted waited MS for a CPU, or (with
                  exact polls and wakes) a woken task waited MS for its poll.
  signal          SIGUSR1 writes a snapshot now (not rate-limited).
spawn_blocking work and Tokio's own worker loop never trigger: they are
allowed to block. Whose task it is comes from its stacks: a stretch with no
stack copied (over --stack-budget, --no-stacks) cannot be attributed and
does not trigger (counted at the end).";
