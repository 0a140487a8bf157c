//! One recording session: attach, pump the ring buffer until a stop
//! condition, detach, and hand back a [`Recording`].

use crate::live::LiveView;
use crate::probes::Probes;
use crate::process::{Target, monotonic_ns};
use crate::tracefs;
use anyhow::Result;
use scope_model::{Recording, StopReason, ThreadInfo, WorkerRule, decode};
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The kernel side wakes us only when a lot is waiting; this is how stale
/// a live view or a drain can get otherwise.
const POLL_MS: i32 = 100;

pub struct Settings {
    pub duration_ns: u64,
    pub live: bool,
    pub rule: WorkerRule,
}

/// Waits until the ring buffer or the target's pidfd is readable, a signal
/// arrives (EINTR), or the timeout passes. Returns true if the target exited.
fn wait(ring_fd: i32, exit_fd: i32, timeout_ms: i32) -> bool {
    let mut fds = [
        libc::pollfd { fd: ring_fd, events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: exit_fd, events: libc::POLLIN, revents: 0 },
    ];
    // SAFETY: two valid pollfd entries.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) };
    n > 0 && fds[1].revents & libc::POLLIN != 0
}

pub fn record(target: &Target, settings: &Settings, stop: &Arc<AtomicBool>) -> Result<Recording> {
    let tracefs = tracefs::ensure_mounted()?;
    let offsets = tracefs::field_offsets(&tracefs)?;
    let mut probes = Probes::load(target.pid, &offsets)?;
    // Follow thread creation before listing threads, so none slips between.
    probes.attach("task_newtask", "task")?;
    probes.attach("sched_process_exit", "sched")?;
    let tids = target.threads();
    if tids.is_empty() {
        anyhow::bail!("process {} exited before we could attach", target.pid);
    }
    let initial: Vec<(u32, String)> = tids
        .iter()
        .map(|&t| (t, target.thread_name(t).unwrap_or_else(|| format!("tid {t}"))))
        .collect();
    probes.follow_threads(&initial)?;
    probes.attach("sched_switch", "sched")?;
    let mut ring = probes.take_ring()?;

    let start_ns = monotonic_ns();
    let mut threads: Vec<ThreadInfo> = initial
        .iter()
        .map(|(tid, name)| ThreadInfo {
            tid: *tid,
            name: name.clone(),
            cpu_ns_at_start: target.thread_cpu_ns(*tid),
            cpu_ns_at_stop: None,
        })
        .collect();
    eprintln!(
        "runtime-scope: recording {} (pid {}, {} threads) for {} s; Ctrl-C stops early",
        target.command,
        target.pid,
        threads.len(),
        settings.duration_ns / 1_000_000_000
    );
    let names: HashMap<u32, String> = initial.into_iter().collect();
    let mut view = LiveView::new(settings.live, settings.rule.clone(), names, start_ns, settings.duration_ns);
    let deadline = start_ns + settings.duration_ns;
    let mut events = Vec::new();
    let mut undecodable = 0u64;
    let mut drain = |ring: &mut aya::maps::RingBuf<aya::maps::MapData>, view: &mut LiveView| {
        while let Some(item) = ring.next() {
            match decode::decode(&item) {
                Ok(event) => {
                    view.feed(&event);
                    events.push(event);
                }
                Err(_) => undecodable += 1,
            }
        }
    };
    let ring_fd = ring.as_raw_fd();
    let reason = loop {
        let now = monotonic_ns();
        let left_ms = (deadline.saturating_sub(now) / 1_000_000) as i32;
        let exited = wait(ring_fd, target.exit_fd.as_raw_fd(), left_ms.clamp(0, POLL_MS));
        drain(&mut ring, &mut view);
        let now = monotonic_ns();
        if exited {
            break StopReason::TargetExited;
        }
        if stop.load(Ordering::Relaxed) {
            break StopReason::Signal;
        }
        if now >= deadline {
            break StopReason::Duration;
        }
        // No map syscalls while recording: they would blind our programs on
        // this CPU for as long as we are preempted inside them.
        view.tick(now);
    };
    let end_ns = monotonic_ns();
    for t in threads.iter_mut() {
        t.cpu_ns_at_stop = target.thread_cpu_ns(t.tid);
    }
    eprintln!("runtime-scope: stopped after {:.2} s: {}", (end_ns - start_ns) as f64 / 1e9, reason.describe());
    // Records already in the buffer still belong to the window.
    drain(&mut ring, &mut view);
    drop(ring);
    // Counters are read only now, after the window closed (see view.tick).
    let lost_events = probes.lost_events()?;
    let untracked_threads = probes.untracked_threads()?;
    drop(probes);
    if undecodable > 0 {
        eprintln!("runtime-scope: warning: {undecodable} records could not be decoded (version mismatch?)");
    }
    Ok(Recording {
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        pid: target.pid,
        command: target.command.clone(),
        executable: target.executable.display().to_string(),
        start_ns,
        end_ns,
        stop_reason: reason,
        lost_events,
        untracked_threads,
        threads,
        events,
    })
}
