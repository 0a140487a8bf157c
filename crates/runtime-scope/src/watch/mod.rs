//! `runtime-scope watch`: the flight recorder. Records continuously in the
//! cheap tier, keeps the last seconds in a bounded ring of capture frames
//! (`ring`), notices triggers as events are drained (`triggers`, judged by
//! `judge`), and writes snapshots on a thread of their own (`snapshot`),
//! each with its trigger described first (`incident`). `flight` ties these
//! to the recorder as its sink; `top` uses the same sink for its key.

pub mod args;
pub mod flight;
mod incident;
pub mod judge;
mod ring;
pub mod snapshot;
mod triggers;

use crate::{commands, privileges, recorder};
use anyhow::Result;
use args::{On, WatchArgs};
use flight::{FlightSink, Policy};
use scope_model::{StopReason, WorkerRule};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use triggers::Thresholds;

const MIB: usize = 1024 * 1024;

fn ns(ms: f64) -> u64 {
    (ms * 1e6) as u64
}

/// The thresholds asked for, and whether SIGUSR1 is one (the default: a
/// long poll of 100 ms, and the signal).
fn triggers(on: &[On]) -> (Thresholds, bool) {
    let on = if on.is_empty() { &[On::LongPoll(100.0), On::Signal][..] } else { on };
    let mut limits = Thresholds::default();
    let mut signal = false;
    for o in on {
        let lower = |slot: &mut Option<u64>, ms: f64| *slot = Some(slot.map_or(ns(ms), |v| v.min(ns(ms))));
        match *o {
            On::LongPoll(ms) => lower(&mut limits.long_poll_ns, ms),
            On::Blocked(ms) => lower(&mut limits.blocked_ns, ms),
            On::SchedDelay(ms) => lower(&mut limits.sched_delay_ns, ms),
            On::Signal => signal = true,
        }
    }
    (limits, signal)
}

fn describe_triggers(limits: &Thresholds, signal: bool) -> String {
    let mut parts = Vec::new();
    let ms = |v: u64| v as f64 / 1e6;
    if let Some(v) = limits.long_poll_ns {
        parts.push(format!("a poll ≥ {} ms", ms(v)));
    }
    if let Some(v) = limits.blocked_ns {
        parts.push(format!("a worker blocked in a poll ≥ {} ms", ms(v)));
    }
    if let Some(v) = limits.sched_delay_ns {
        parts.push(format!("a wait for a CPU ≥ {} ms", ms(v)));
    }
    if signal {
        parts.push(format!("SIGUSR1 (kill -USR1 {})", std::process::id()));
    }
    parts.join(", ")
}

/// glibc raises its mmap threshold (up to 32 MiB) each time a large
/// mmapped block is freed: after a snapshot's analysis frees its tens of
/// MB, the ring's frames (a batch each, often over 128 KiB) come from the
/// heap instead, and the heap fragments as the ring turns over. Measured
/// on mini-redis under load, a snapshot every 15 s: anonymous memory grew
/// from 25 to 62 MB over ten snapshots; with the threshold fixed, it stayed
/// between 18 and 28 MB. Fixing it is what `MALLOC_MMAP_THRESHOLD_` does.
fn keep_large_blocks_out_of_the_heap() {
    // SAFETY: mallopt only changes the allocator's settings.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) };
}

pub fn run(args: WatchArgs) -> Result<i32> {
    keep_large_blocks_out_of_the_heap();
    let view = crate::cli::ViewArgs { no_live: true, worker_prefixes: args.worker_prefixes.clone(), long_poll: args.long_poll, debug_files: args.debug_files.clone() };
    let mut settings = commands::settings(&view, &args.stacks, args.duration);
    // Our lines would interleave with the snapshots' reports on stderr.
    settings.quiet = true;
    settings.live = false;
    // Snapshots and lanes end now: every switch-out held so far is in them.
    settings.held_due_ns = 0;
    let rule: WorkerRule = settings.rule.clone();
    let out = snapshot::Output::checked(&args.output, args.format, &rule, args.debug_files.clone(), args.long_poll)?;
    privileges::check()?;
    // Before a program is started: a signal from now on stops cleanly.
    let session = crate::stopping::install()?;
    let mut target = commands::open_target(args.pid, &args.command, None, &args.stacks, &args.debug_files, &mut settings)?;
    let (limits, signal) = triggers(&args.on);
    let manual = Arc::new(AtomicBool::new(false));
    if signal {
        signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(&manual))?;
    }
    let policy = Policy {
        keep_ns: (args.keep * 1e9) as u64,
        after_ns: (args.after * 1e9) as u64,
        cooldown_ns: (args.cooldown * 1e9) as u64,
        max_snapshots: args.max_snapshots,
        limits,
        ring_bytes: args.ring_size as usize * MIB,
    };
    say!(
        "runtime-scope: watching: the last {} s stay in memory (at most {} MiB); a snapshot is written on {} to {}",
        args.keep,
        args.ring_size,
        describe_triggers(&limits, signal),
        args.output.display()
    );
    let writer = snapshot::Writer::spawn(move |s| snapshot::write(&out, s));
    let queue = writer.sender();
    let mut sink = FlightSink::new(
        policy,
        rule,
        judge::Symbolizing::start(),
        manual,
        {
            let session = Arc::clone(&session);
            Box::new(move || session.stop.request(StopReason::Duration))
        },
        Box::new(move |s| {
            let _ = queue.send(s);
        }),
        Box::new(|line| say!("runtime-scope: {line}")),
    );
    let recorded = recorder::record(&mut target, settings, &session.stop, &mut sink);
    let (tally, ring_bytes, exit_status, loops) = (sink.tally, sink.ring_bytes(), sink.exit_status, sink.loops_known());
    drop(sink);
    if tally.snapshots > 0 {
        say!("runtime-scope: finishing the snapshots…");
    }
    writer.finish();
    recorded?;
    let mut end = format!("runtime-scope: {} snapshot{} taken", tally.snapshots, if tally.snapshots == 1 { "" } else { "s" });
    if tally.held_back > 0 {
        end.push_str(&format!("; {} more triggers came while one was pending or within --cooldown", tally.held_back));
    }
    if tally.unattributed > 0 {
        end.push_str(&format!(
            "; {} stretches over a threshold had no stack naming their task, so did not trigger (a worker's own loop id, which lets a stretch there trigger without one, was learned on {})",
            tally.unattributed,
            scope_export::labels::count(loops as u64, "thread")
        ));
    }
    end.push_str(&format!("; the ring held {:.1} MiB at the end", ring_bytes as f64 / MIB as f64));
    say!("{end}");
    Ok(exit_status.unwrap_or(0))
}
