//! When each thread ran, on which CPU, and why it stopped, written the way
//! the kernel's own `sched_switch` / `sched_waking` records are in a
//! Perfetto trace (ftrace bundles in the compact form). The trace processor
//! then builds what it builds for `perf sched`-like data: a track per CPU
//! and, for each thread, its state track (Running on CPU n, Runnable,
//! Runnable (Preempted), Sleeping, Uninterruptible Sleep) with who woke it.
//! That is the on-CPU / off-CPU picture of the Chrome export at about 8
//! bytes a switch and 10 a waking (the demo) instead of two slices (~70).
//!
//! Rules of the trace processor this follows (its ftrace tokenizer and
//! sched tracker): a switch's previous thread is the last `next_pid` on that
//! CPU, so each CPU's stream starts with a switch to the idle task (pid 0)
//! that only primes it; a waking's waker is whoever that stream has on the
//! bundle's CPU; `prev_state` is read by kernel version, hence the
//! `SystemInfo` packet. Other processes' threads are not recorded: between
//! our threads a CPU runs pid 0, which the CPU tracks leave empty.

use perfetto_protos::ftrace_event_bundle::FtraceEventBundle;
use perfetto_protos::ftrace_event_bundle::ftrace_event_bundle::CompactSched;
use perfetto_protos::system_info::{SystemInfo, Utsname};
use perfetto_protos::trace_packet::TracePacket;
use scope_model::{OffReason, SpanState, ThreadTimeline, Timeline};
use std::collections::{BTreeMap, HashMap};
use std::io;

/// `prev_state` as kernels since 4.14 report it (`TASK_REPORT`): the bit
/// after the state bits marks a preemption.
const PREEMPTED: i64 = 0x100;
const STATE_BITS: u64 = 0xff;
/// A thread that exited: `EXIT_DEAD`.
const DEAD: i64 = 0x10;
/// The default priority (nice 0); the capture has none.
const PRIO: i32 = 120;
/// Records per bundle, as the kernel's per-page bundles keep them small.
const BUNDLE: usize = 4096;

/// One stretch on a CPU: thread (index into `tl.threads`), from, to, and
/// the `prev_state` it switched out with.
#[derive(Clone, Copy)]
struct Run {
    thread: usize,
    start: u64,
    end: u64,
    out_state: i64,
}

/// A record of one CPU's stream, at ns since the start of the recording.
#[derive(Clone, Copy)]
enum Record {
    /// The CPU switched to `next` (None: the idle task), the thread before
    /// it leaving in `prev_state`.
    Switch { ts: u64, prev_state: i64, next: Option<usize> },
    /// `wakee` was woken by what the stream has on this CPU.
    Waking { ts: u64, wakee: usize, target_cpu: u32 },
}

impl Record {
    fn ts(&self) -> u64 {
        match *self {
            Record::Switch { ts, .. } | Record::Waking { ts, .. } => ts,
        }
    }
}

fn out_state(t: &ThreadTimeline, next: Option<&scope_model::Span>, end: u64) -> i64 {
    match next.map(|s| s.state) {
        Some(SpanState::OffCpu(OffReason::Preempted)) => PREEMPTED,
        Some(SpanState::OffCpu(OffReason::Blocked { state })) => (state.0 & STATE_BITS) as i64,
        _ if t.exited_ns == Some(end) => DEAD,
        // The recording ended with it on the CPU.
        _ => 0,
    }
}

/// Every on-CPU span whose CPU is known, per CPU, by start.
fn runs(tl: &Timeline) -> BTreeMap<u32, Vec<Run>> {
    let mut out: BTreeMap<u32, Vec<Run>> = BTreeMap::new();
    for (thread, t) in tl.threads.iter().enumerate() {
        for (i, span) in t.spans.iter().enumerate() {
            let SpanState::OnCpu { cpu: Some(cpu) } = span.state else { continue };
            let (start, end) = (span.start_ns.saturating_sub(tl.start_ns), span.end_ns.saturating_sub(tl.start_ns));
            let run = Run { thread, start, end, out_state: out_state(t, t.spans.get(i + 1), span.end_ns) };
            out.entry(cpu).or_default().push(run);
        }
    }
    for runs in out.values_mut() {
        runs.sort_by_key(|r| (r.start, r.end));
    }
    out
}

/// One CPU's switches: a priming switch to idle at the start, then each run
/// switched in and out; a run that starts as the previous one ends is one
/// switch. Runs that overlap (events lost) cut the earlier one short.
fn switches(runs: &[Run]) -> Vec<Record> {
    let mut out = vec![Record::Switch { ts: 0, prev_state: 0, next: None }];
    let mut pending: Option<(u64, i64)> = None;
    for run in runs {
        let mut prev_state = 0;
        if let Some((end, state)) = pending.take() {
            if end < run.start {
                out.push(Record::Switch { ts: end, prev_state: state, next: None });
            } else {
                prev_state = state;
            }
        }
        out.push(Record::Switch { ts: run.start, prev_state, next: Some(run.thread) });
        pending = Some((run.end, run.out_state));
    }
    if let Some((end, state)) = pending {
        out.push(Record::Switch { ts: end, prev_state: state, next: None });
    }
    out
}

/// What a CPU's stream has on it at `ts`, after any switch at `ts` (None: idle).
fn running_at(stream: &[Record], ts: u64) -> Option<usize> {
    let upto = stream.partition_point(|r| r.ts() <= ts);
    match stream[..upto].last() {
        Some(Record::Switch { next, .. }) => *next,
        _ => None,
    }
}

/// The wakings that ended blocked spans, each on the CPU its waker ran on
/// (a thread of ours), else on a CPU our streams leave idle then (another
/// process, an interrupt): the trace processor names the waker from there.
/// Strictly before the switch-in they led to.
fn wakings(tl: &Timeline, streams: &BTreeMap<u32, Vec<Record>>) -> Vec<(u32, Record)> {
    let index: HashMap<u32, usize> = tl.threads.iter().enumerate().map(|(i, t)| (t.tid, i)).collect();
    let mut out = Vec::new();
    for (wakee, t) in tl.threads.iter().enumerate() {
        for (i, span) in t.spans.iter().enumerate() {
            if !matches!(span.state, SpanState::OffCpu(OffReason::Blocked { .. })) {
                continue;
            }
            let Some(w) = t.woken_by(span) else { continue };
            // A blocked span ends at its waking; the wait for a CPU after
            // it (a `Woken` span) ends at the switch-in.
            let (switch_in, next) = match t.wait_after(i) {
                Some(wait) => (wait.end_ns, t.spans.get(i + 2)),
                None => (span.end_ns, t.spans.get(i + 1)),
            };
            let ts = w.ts.min(switch_in.saturating_sub(1)).max(span.start_ns).saturating_sub(tl.start_ns);
            let target_cpu = match next.map(|s| s.state) {
                Some(SpanState::OnCpu { cpu: Some(cpu) }) => Some(cpu),
                _ => None,
            };
            let waker = (w.pid == tl.pid).then(|| index.get(&w.tid)).flatten().copied();
            let on = |cpu: &u32| running_at(&streams[cpu], ts);
            let cpu = match waker {
                Some(waker) => streams.keys().find(|c| on(c) == Some(waker)).copied(),
                None => target_cpu.filter(|c| streams.contains_key(c) && on(c).is_none()).or_else(|| streams.keys().find(|c| on(c).is_none()).copied()),
            };
            if let Some(cpu) = cpu {
                out.push((cpu, Record::Waking { ts, wakee, target_cpu: target_cpu.unwrap_or(cpu) }));
            }
        }
    }
    out
}

/// A bundle of one CPU's records (sorted by time), timestamps delta-coded
/// from 0 as the tokenizer reads them, thread names interned.
fn bundle(tl: &Timeline, cpu: u32, records: &[Record]) -> TracePacket {
    let mut sched = CompactSched::new();
    let mut names: HashMap<Option<usize>, u32> = HashMap::new();
    let mut comm = |thread: Option<usize>, sched: &mut CompactSched| {
        *names.entry(thread).or_insert_with(|| {
            sched.intern_table.push(thread.map_or("swapper".to_string(), |i| tl.threads[i].name.clone()));
            sched.intern_table.len() as u32 - 1
        })
    };
    let (mut last_switch, mut last_waking) = (0, 0);
    for record in records {
        match *record {
            Record::Switch { ts, prev_state, next } => {
                sched.switch_timestamp.push(ts - last_switch);
                last_switch = ts;
                sched.switch_prev_state.push(prev_state);
                sched.switch_next_pid.push(next.map_or(0, |i| tl.threads[i].tid as i32));
                sched.switch_next_prio.push(PRIO);
                let index = comm(next, &mut sched);
                sched.switch_next_comm_index.push(index);
            }
            Record::Waking { ts, wakee, target_cpu } => {
                sched.waking_timestamp.push(ts - last_waking);
                last_waking = ts;
                sched.waking_pid.push(tl.threads[wakee].tid as i32);
                sched.waking_target_cpu.push(target_cpu as i32);
                sched.waking_prio.push(PRIO);
                let index = comm(Some(wakee), &mut sched);
                sched.waking_comm_index.push(index);
            }
        }
    }
    let mut bundle = FtraceEventBundle::new();
    // Required: a bundle without its CPU is dropped.
    bundle.cpu = Some(cpu);
    bundle.compact_sched = Some(sched).into();
    let mut packet = TracePacket::new();
    packet.set_ftrace_events(bundle);
    packet
}

/// How to read `prev_state`: the trace processor assumes a 4.4 kernel
/// without it. The capture does not record the kernel; ours encodes states
/// as every kernel since 4.14 does, and the release written is the
/// exporting machine's (4.14.0 if unreadable).
fn system_info() -> TracePacket {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let numeric: Vec<&str> = release.trim().split(|c: char| !c.is_ascii_digit()).take(3).collect();
    let release = if numeric.len() == 3 && numeric.iter().all(|n| !n.is_empty()) { numeric.join(".") } else { "4.14.0".to_string() };
    let mut uts = Utsname::new();
    uts.sysname = Some("Linux".into());
    uts.release = Some(release);
    let mut info = SystemInfo::new();
    info.utsname = Some(uts).into();
    let mut packet = TracePacket::new();
    packet.set_system_info(info);
    packet
}

/// The scheduling packets: system info, then each CPU's bundles.
pub(super) fn write(tl: &Timeline, emit: &mut dyn FnMut(&TracePacket) -> io::Result<()>) -> io::Result<()> {
    let streams: BTreeMap<u32, Vec<Record>> = runs(tl).iter().map(|(&cpu, runs)| (cpu, switches(runs))).collect();
    if streams.is_empty() {
        return Ok(());
    }
    emit(&system_info())?;
    let wakings = wakings(tl, &streams);
    let mut per_cpu = streams;
    for (cpu, waking) in wakings {
        per_cpu.get_mut(&cpu).expect("a waking goes on a CPU with a stream").push(waking);
    }
    for (cpu, mut records) in per_cpu {
        // Stable: at one instant a waking stays after the switch that put
        // its waker on the CPU.
        records.sort_by_key(Record::ts);
        for chunk in records.chunks(BUNDLE) {
            emit(&bundle(tl, cpu, chunk))?;
        }
    }
    Ok(())
}
