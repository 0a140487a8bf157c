//! One recording session: attach, pump the ring buffer into a [`Sink`]
//! until a stop condition, detach.

use crate::kernel_features::KernelFeatures;
use crate::held::HeldSlots;
use crate::live::LiveView;
use crate::modules;
use crate::cli::PollTier;
use crate::poll_returns::PollReturns;
use crate::probes::{ProbeSet, Probes};
use crate::tiers::Auto;
use crate::process::{Target, monotonic_ns};
use crate::sink::Sink;
use crate::stacks::StackCollector;
use crate::identity::{Decision, Identity};
use crate::thread_names::ThreadNames;
use crate::tracefs;
use anyhow::{Context, Result};
use scope_model::capture::{CLOCK_MONOTONIC, Start, Stop};
use scope_common::{StackConfig, TaskIdLayout};
use scope_model::{Event, Launch, StopReason, ThreadInfo, WorkerRule, decode};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use crate::stopping::StopFlag;

/// The kernel side wakes us only when a lot is waiting; this is how stale
/// a live view or a drain can get otherwise.
const POLL_MS: i32 = 100;
/// How often the buffer is read while `--polls auto` still looks at the
/// poll rate (its first decision may come 50 ms in).
const FIRST_LOOK_POLL_MS: i32 = 20;

const PROBES: [&str; 5] = [
    "tracepoint:task/task_newtask",
    "tracepoint:sched/sched_process_exit",
    "tracepoint:sched/sched_process_exec",
    "tp_btf:sched_switch",
    "tp_btf:sched_waking",
];

/// Probes being removed after a recording (see `finish_detaching`).
static DETACHING: std::sync::Mutex<Option<std::thread::JoinHandle<std::time::Duration>>> = std::sync::Mutex::new(None);

/// Waits until the last recording's probes are gone: the target runs at
/// full speed again once we exit. Says so when it is still at it.
pub fn finish_detaching() {
    let Some(handle) = DETACHING.lock().unwrap_or_else(|e| e.into_inner()).take() else { return };
    if !handle.is_finished() {
        say!("runtime-scope: removing the probes from the target…");
    }
    if let Ok(took) = handle.join()
        && std::env::var_os("RUNTIME_SCOPE_BPF_STATS").is_some()
    {
        say!("runtime-scope: bench uprobes-detached-ms={}", took.as_millis());
    }
}

/// Tokio's task ids count up from 1; no program spawns 2^48 tasks.
const IMPLAUSIBLE_TASK_ID: u64 = 1 << 48;

/// The binary holding tokio, with the file offsets of its `raw::poll` and
/// `OwnedTasks::bind_inner` (spawn) instances.
pub struct PollProbes {
    pub binary: std::path::PathBuf,
    pub polls: Vec<u64>,
    /// `Vtable::id_offset` of the poll instances (by file offset) whose
    /// vtable was validated: their probes read Tokio's task id.
    pub id_offsets: HashMap<u64, u64>,
    pub spawns: Vec<u64>,
    pub wakes: Vec<u64>,
    pub worker_runs: Vec<u64>,
    pub take_cores: Vec<u64>,
    /// File offset ranges of the worker's park code
    /// (`scope_stacks::probe_points::PARK_CODE`).
    pub parks: Vec<std::ops::Range<u64>>,
    /// Tokio's CONTEXT thread-local, where the current task's id is.
    pub context: Option<scope_stacks::task_context::ContextTls>,
}

impl PollProbes {
    /// Where the kernel side finds CONTEXT (all zeros: nowhere).
    pub fn task_id_layout(&self) -> TaskIdLayout {
        self.context.map_or_else(TaskIdLayout::default, |c| TaskIdLayout {
            context_from_fs: c.from_thread_pointer,
            context_len: c.size.min(scope_common::CONTEXT_COPY_MAX as u64) as u32,
            _pad: 0,
        })
    }
}

/// What the capture says was probed, and what was left off and why: the
/// report's "missing" lines name the real reason (`off:tasks (--no-tasks)`
/// vs task probes on and nothing polled).
fn probes_used(settings: &Settings) -> Vec<String> {
    let mut used: Vec<String> = PROBES.iter().map(|p| p.to_string()).collect();
    used.push(match &settings.polls {
        Ok(_) if settings.tier == PollTier::Off => "off:tasks (--polls off)".to_string(),
        Ok(p) => format!("uprobe:tokio::runtime::task::raw::poll ×{}", p.polls.len()),
        Err(why) => format!("off:tasks ({why})"),
    });
    let stacks = settings.stacks.stack_bytes > 0;
    used.push(match (stacks, settings.frequency) {
        (false, _) => "off:stacks (--no-stacks)".to_string(),
        (true, 0) => "off:samples (--frequency 0)".to_string(),
        (true, hz) => format!("perf_event:cpu-clock {hz} Hz"),
    });
    if stacks {
        used.push("stacks:blocked switch-outs".to_string());
    }
    used
}

pub struct Settings {
    /// Record task polls; else why not (threads only).
    pub polls: Result<PollProbes, String>,
    /// The program the task probes were looked for in (followed through exec).
    pub program: Option<std::path::PathBuf>,
    /// Sampling frequency (0: off), stack bytes and blocked-stack budget.
    pub stacks: StackConfig,
    /// The id's offset in CONTEXT when known before recording (DWARF);
    /// otherwise learned while exact polls run.
    pub task_id_field: Option<u32>,
    /// Whether exact poll probes run (see `tiers`), within what budget.
    pub tier: PollTier,
    pub budget_pct: f64,
    pub frequency: u32,
    /// None: until a signal or the target exits.
    pub duration_ns: Option<u64>,
    pub live: bool,
    /// Polls at least this long get a live line as they end.
    pub long_poll_ns: u64,
    /// Print nothing while recording (the dashboard owns the terminal).
    pub quiet: bool,
    /// Do not wait for the probes to come off, even if the target still
    /// runs (`top`: the terminal is given back at once after `q`).
    pub detach_after_exit: bool,
    /// Switch-outs and wakings the kernel holds for a switch-in are
    /// delivered from their slots once this old (see `held`).
    pub held_due_ns: u64,
    pub rule: WorkerRule,
    /// Launch mode: the held child; writing to this releases it into exec.
    pub release: Option<OwnedFd>,
    pub launch: Option<Launch>,
    /// Launch mode: the child, reaped (or stopped) when recording ends,
    /// and stopped if recording fails.
    pub child: Option<crate::launch::Launched>,
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

fn attach(target: &Target, settings: &Settings) -> Result<(Probes, Vec<(u32, String)>)> {
    let tracefs = tracefs::ensure_mounted()?;
    let offsets = tracefs::field_offsets(&tracefs)?;
    let task_ids = settings.polls.as_ref().ok().map_or_else(TaskIdLayout::default, PollProbes::task_id_layout);
    let kernel = KernelFeatures::detect()?;
    for note in kernel.notes() {
        say!("runtime-scope: {note}");
    }
    // RUNTIME_SCOPE_NO_HOLD: every switch and waking sent at once, to
    // measure what holding saves (`cargo xtask bench`).
    let hold = std::env::var_os("RUNTIME_SCOPE_NO_HOLD").is_none();
    let mut probes = Probes::load(target.pid, &offsets, &settings.stacks, &task_ids, &kernel, hold)?;
    // Follow thread creation before listing threads, so none slips between.
    probes.attach("task_newtask", "task")?;
    probes.attach("sched_process_exit", "sched")?;
    probes.attach("sched_process_exec", "sched")?;
    let tids = target.threads();
    if tids.is_empty() {
        anyhow::bail!("process {} exited before we could attach", target.pid);
    }
    let initial: Vec<(u32, String)> = tids
        .iter()
        .map(|&t| (t, target.thread_name(t).unwrap_or_else(|| format!("tid {t}"))))
        .collect();
    let btf = aya::Btf::from_sys_fs().context("reading the kernel's BTF")?;
    probes.attach_switch(&btf)?;
    probes.attach_btf("sched_waking", &btf)?;
    if settings.frequency > 0 && settings.stacks.stack_bytes > 0 {
        probes.attach_sampling(settings.frequency)?;
    }
    // Before a launched program is let go: its first polls and switches
    // are read with the id too.
    let known = known_task_id_field(settings);
    if let Some(field) = known {
        probes.set_task_id_field(field)?;
    }
    if let Some(p) = settings.polls.as_ref().ok().filter(|_| settings.tier != PollTier::Off) {
        // `--polls starts`: returns only while the task id's place is learned.
        let starts = settings.tier == PollTier::Starts;
        probes.with_wakes = !starts;
        probes.with_returns = !(starts && known.is_some());
        if starts && known.is_some() {
            probes.read_poll_nesting()?;
        }
        probes.attach_task_probes(p, target.pid, ProbeSet::Polls)?;
        probes.attach_task_probes(p, target.pid, ProbeSet::Wakes)?;
    }
    Ok((probes, initial))
}

/// An event of the recorder's own (not from the kernel): to the live view
/// and the capture at once.
fn tell(view: &mut LiveView, sink: &mut dyn Sink, event: &Event) -> Result<()> {
    view.feed(event);
    sink.events(std::slice::from_ref(event)).context("writing the capture")
}

/// Where Tokio keeps the current task id in CONTEXT, when known before
/// recording (given, or from DWARF).
fn known_task_id_field(settings: &Settings) -> Option<u32> {
    settings.task_id_field.or_else(|| settings.polls.as_ref().ok().and_then(|p| p.context).and_then(|c| c.task_id_field))
}

/// The target's CPU time so far, over its live threads (schedstat).
fn target_cpu_ns(target: &Target) -> u64 {
    target.threads().into_iter().filter_map(|t| target.thread_cpu_ns(t)).sum()
}

/// Tells the kernel side what calibration decided about the task id.
fn apply(probes: &mut Probes, decision: Decision) -> Result<()> {
    match decision {
        Decision::Field(offset) => {
            say!("runtime-scope: task identity: Tokio's current task id is at CONTEXT+{offset}; switch-outs and samples now say which task ran");
            probes.set_task_id_field(offset)
        }
        Decision::GiveUp => {
            say!("runtime-scope: task identity: could not find Tokio's task id in its CONTEXT thread-local; switch-outs and samples carry no task");
            probes.disable_task_ids()
        }
    }
}

pub fn record(target: &mut Target, mut settings: Settings, stop: &StopFlag, sink: &mut dyn Sink) -> Result<StopReason> {
    let (mut probes, initial) = attach(target, &settings)?;
    let mut ring = probes.take_ring()?;
    let start_ns = monotonic_ns();
    if let Some(fd) = settings.release.take() {
        crate::launch::release_child(fd, target)?;
    }
    // After a launch the names changed with the exec: read them now.
    let initial: Vec<(u32, String)> =
        initial.into_iter().map(|(t, name)| (t, target.thread_name(t).unwrap_or(name))).collect();
    let threads: Vec<ThreadInfo> = initial
        .iter()
        .map(|(tid, name)| ThreadInfo {
            tid: *tid,
            name: name.clone(),
            cpu_ns_at_start: target.thread_cpu_ns(*tid),
            cpu_ns_at_stop: None,
        })
        .collect();
    // Said as soon as the window has begun, before the slower set-up below
    // (the unwinder parses every module's .eh_frame): whoever reads the
    // threads' CPU time at this line reads it at the window's start.
    let for_how_long = settings.duration_ns.map_or("until Ctrl-C or exit".to_string(), |d| format!("for {} s", d / 1_000_000_000));
    say!(
        "runtime-scope: recording {} (pid {}, {} threads) {for_how_long}; Ctrl-C stops early",
        target.command,
        target.pid,
        threads.len(),
    );
    let mut module_warnings = Vec::new();
    let modules = modules::read(target.pid, &mut module_warnings);
    let mut collector = StackCollector::new(target.pid, &modules);
    collector.masks = Some(probes.wait_masks()?);
    // A check of the repeats (`RUNTIME_SCOPE_CHECK_REPEATS`) checks the
    // parks' too, the most common repeats: no park goes unchecked then.
    let check_repeats = std::env::var_os("RUNTIME_SCOPE_CHECK_REPEATS").is_some();
    if let Some(p) = settings.polls.as_ref().ok().filter(|p| !p.parks.is_empty() && !check_repeats) {
        let code = crate::stacks::ParkCode {
            path: target.executable.display().to_string(),
            build_id: crate::modules::build_id(&p.binary),
            ranges: p.parks.clone(),
        };
        collector.parks = Some((code, probes.worker_loops()?));
    }
    let known_field = known_task_id_field(&settings);
    let mut identity = Identity::with_field(known_field);
    match (known_field, &settings.polls) {
        (Some(field), _) if !settings.quiet => {
            say!("runtime-scope: task identity: Tokio's current task id is at CONTEXT+{field} (from DWARF)");
        }
        (None, Ok(p)) if p.context.is_some() && settings.tier == PollTier::Off && !settings.quiet => say!(
            "runtime-scope: task identity: --polls off and no DWARF: where Tokio keeps the task id is learned during exact polls, so switch-outs and samples carry no task"
        ),
        _ => {}
    }
    collector.warnings.extend(module_warnings);
    let tasks_wanted = settings.tier != PollTier::Off && settings.polls.as_ref().err().is_none_or(|why| why != "--no-tasks");
    let mut follower = crate::exec_follow::ExecFollower::new(target.pid, settings.program.as_deref());
    // A launched wrapper (`env`) may have exec'd the program already.
    if follower.program_changed() {
        crate::exec_follow::move_probes(target.pid, tasks_wanted, &mut probes);
    }
    // Set by the drain on an exec: the probes move once it is done.
    let exec_seen = std::cell::Cell::new(false);
    sink.begin(&Start {
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        clock: CLOCK_MONOTONIC.to_string(),
        pid: target.pid,
        command: target.command.clone(),
        executable: target.executable.display().to_string(),
        start_ns,
        threads: threads.clone(),
        modules,
        probes: probes_used(&settings),
        launch: settings.launch.clone(),
    })
    .context("writing the capture")?;
    let mut names = ThreadNames::new(target.pid, &initial);
    let mut view = LiveView::new(settings.live, settings.rule.clone(), names.current(), start_ns, settings.duration_ns)
        .with_long_polls(settings.long_poll_ns);
    let deadline = settings.duration_ns.map(|d| start_ns + d);
    let mut undecodable = 0u64;
    let mut batch = Vec::new();
    // Header address → the Tokio id last recorded for it: one TaskId event
    // per task, not per poll.
    let mut task_ids: crate::fast_map::Map<u64, u64> = Default::default();
    let mut trust_task_ids = true;
    let ring_fd = ring.as_raw_fd();
    let mut held = probes.held_slots(initial.iter().map(|(tid, _)| *tid))?;
    let probed_polls = settings.polls.is_ok() && settings.tier != PollTier::Off;
    let mut auto = Auto::new(if probed_polls { settings.tier } else { PollTier::Off }, settings.budget_pct, start_ns, target_cpu_ns(target));
    // Set when the poll probes come off: polls open then never return.
    let polls_detached = std::cell::Cell::new(false);
    let returns = PollReturns::new(settings.tier == PollTier::Starts && settings.polls.is_ok());
    if returns.starts_only() && !probes.with_returns {
        tell(&mut view, sink, &returns.never_on(start_ns))?;
    }
    // When auto took poll and wake probes off (u64::MAX: on). Their links
    // close on threads of their own, and the probes fire on meanwhile (an
    // entry can outlive its return probe): records from then on are left
    // out, as the timeline leaves them out of captures made before this.
    let (polls_off_at, wakes_off_at) = (std::cell::Cell::new(u64::MAX), std::cell::Cell::new(u64::MAX));
    let mut drain = |view: &mut LiveView,
                     sink: &mut dyn Sink,
                     names: &mut ThreadNames,
                     auto: &mut Auto,
                     due_after_ns: u64|
     -> Result<Option<Decision>> {
        let mut decided = None;
        if polls_detached.replace(false) || returns.take_just_off() {
            collector.forget_polls();
            identity.forget_polls();
        }
        let mut handle = |item: &[u8], held: &mut HeldSlots| {
            if let Some(raw) = decode::decode_poll_start(item) {
                if raw.ts >= polls_off_at.get() {
                    return;
                }
                // Without a return probe no return address is replaced.
                let unreturned = returns.off_by(raw.ts);
                if !unreturned {
                    collector.poll_started(raw.tid, raw.ret_addr);
                }
                let poll_fn = collector.frame_of(raw.fn_avma);
                batch.extend(collector.take_pending());
                if raw.task_id >= IMPLAUSIBLE_TASK_ID && trust_task_ids {
                    // Tokio counts ids up from 1: this is not an id, so the
                    // offset is wrong for this binary. Keep none of them.
                    trust_task_ids = false;
                    say!("runtime-scope: read task id {:#x}, not a Tokio task id: task ids are left out of this recording", raw.task_id);
                }
                if trust_task_ids && raw.task_id != 0 && task_ids.insert(raw.task, raw.task_id) != Some(raw.task_id) {
                    batch.push(Event::TaskId { ts: raw.ts, tid: raw.tid, task: raw.task, id: raw.task_id });
                }
                identity.poll_started(raw.tid, if trust_task_ids { raw.task_id } else { 0 });
                if unreturned {
                    identity.poll_entered(raw.tid);
                    batch.extend(returns.inside(raw.ts, raw.tid, raw.outer_id));
                }
                auto.count(1, 0);
                let event = Event::PollStart { ts: raw.ts, tid: raw.tid, task: raw.task, poll_fn };
                view.feed(&event);
                batch.push(event);
                return;
            }
            if let Some(ts) = decode::decode_exec(item) {
                if follower.program_changed() {
                    batch.extend(collector.exec(ts));
                    exec_seen.set(true);
                }
                return;
            }
            if decode::is_stack(item) {
                match decode::decode_stack(item) {
                    Ok(raw) => {
                        // A blocked stack's switch record already carried its id.
                        if raw.reason == scope_model::StackReason::Sample {
                            batch.extend(identity.mark(raw.ts, raw.tid, raw.task_id));
                        }
                        collector.process(&raw, &mut batch);
                    }
                    Err(_) => undecodable += 1,
                }
                return;
            }
            if let Some((ts, tid, bytes)) = decode::context_copy(item) {
                if let Some(d) = identity.context_copy(ts, tid, bytes) {
                    decided = Some(d);
                    batch.extend(identity.marks_from_copies());
                    if d == Decision::GiveUp {
                        batch.extend(identity.end_marks(ts));
                    }
                }
                return;
            }
            if let Some((ts, tid, name)) = decode::exit_name(item) {
                batch.extend(names.exited(ts, tid, name));
            }
            if let Some((ts, tid, id)) = decode::switch_task(item) {
                batch.extend(identity.mark(ts, tid, id));
            }
            match decode::decode(item) {
                Ok(event) => {
                    match event {
                        Event::PollEnd { ts, .. } if ts >= polls_off_at.get() || returns.off_by(ts) => return,
                        Event::TaskWake { ts, .. } if ts >= wakes_off_at.get() => return,
                        _ => {}
                    }
                    if let Event::PollEnd { tid, .. } = event {
                        collector.poll_ended(tid);
                        identity.poll_ended(tid);
                    }
                    if let Event::TaskWake { .. } = event {
                        auto.count(0, 1);
                    }
                    names.saw(&event);
                    held.saw(&event);
                    view.feed(&event);
                    batch.push(event);
                    // After its switch, as the stack record it replaces came.
                    if let Some(raw) = decode::switch_same_stack(item) {
                        collector.process(&raw, &mut batch);
                    }
                }
                Err(_) => undecodable += 1,
            }
        };
        while let Some(item) = ring.next() {
            for part in decode::parts(&item) {
                if !held.is_repeat(part) {
                    handle(part, &mut held);
                }
            }
        }
        // After the buffer: a thread's own records before its switch-out
        // were in it. The record that will carry a half still held is not
        // in it yet (its slot is emptied before it is sent): it comes as a
        // repeat and is dropped.
        for record in held.take_due(monotonic_ns(), due_after_ns) {
            handle(&record, &mut held);
        }
        let renamed = names.refresh_fresh(monotonic_ns());
        for event in &renamed {
            view.feed(event);
        }
        batch.extend(renamed);
        sink.events(&batch).context("writing the capture")?;
        batch.clear();
        Ok(decided)
    };
    let mut calibrated = false;
    let reason = loop {
        let now = monotonic_ns();
        let left_ms = deadline.map_or(POLL_MS, |d| (d.saturating_sub(now) / 1_000_000) as i32);
        // Until auto's first decision: every probed poll is paid by the target.
        let every_ms = if auto.first_look() { FIRST_LOOK_POLL_MS } else { POLL_MS };
        let exited = wait(ring_fd, target.exit_fd.as_raw_fd(), left_ms.clamp(0, every_ms));
        if let Some(d) = drain(&mut view, sink, &mut names, &mut auto, settings.held_due_ns)? {
            calibrated = matches!(d, Decision::Field(_));
            apply(&mut probes, d)?;
            if d == Decision::GiveUp && settings.tier == PollTier::Starts && !settings.quiet {
                say!("runtime-scope: --polls starts: without Tokio's task id a poll's end cannot be told from its next sign of life; poll returns stay probed");
            }
        }
        if returns.starts_only()
            && (calibrated || known_field.is_some())
            && let Some(event) = returns.take_off(&mut probes, monotonic_ns())?
        {
            if !settings.quiet {
                say!("runtime-scope: --polls starts: poll returns are not probed from now; a poll ends at most where its worker is next seen outside it");
            }
            tell(&mut view, sink, &event)?;
        }
        if exec_seen.replace(false) {
            crate::exec_follow::move_probes(target.pid, tasks_wanted, &mut probes);
        }
        // The target's CPU is read (every thread's schedstat) only while
        // auto still has probes to judge.
        let judged = auto.judging().then(|| auto.decide(monotonic_ns(), target_cpu_ns(target), calibrated || known_field.is_some()));
        if let Some(choice) = judged.flatten() {
            if !settings.quiet {
                say!("runtime-scope: {}", choice.line);
            }
            if !choice.wakes {
                probes.detach_task_probes(ProbeSet::Wakes)?;
            }
            if !choice.polls {
                probes.detach_task_probes(ProbeSet::Polls)?;
                polls_detached.set(true);
            } else if !choice.returns
                && let Some(event) = returns.take_off(&mut probes, monotonic_ns())?
            {
                tell(&mut view, sink, &event)?;
            }
            let event = Event::Probes { ts: monotonic_ns(), polls: choice.polls, wakes: choice.wakes };
            if !choice.polls {
                polls_off_at.set(polls_off_at.get().min(event.ts()));
            }
            if !choice.wakes {
                wakes_off_at.set(wakes_off_at.get().min(event.ts()));
            }
            sink.events(std::slice::from_ref(&event)).context("writing the capture")?;
        }
        let now = monotonic_ns();
        if exited {
            break StopReason::TargetExited;
        }
        if let Some(reason) = stop.requested() {
            break reason;
        }
        // `| head` closed the pipe our messages go to: stop, keep the trace.
        if crate::say::broken() {
            break StopReason::OutputClosed;
        }
        if deadline.is_some_and(|d| now >= d) {
            break StopReason::Duration;
        }
        // No map syscalls while recording: they would blind our programs on
        // this CPU for as long as we are preempted inside them.
        if !settings.quiet {
            view.tick(now);
        }
    };
    let end_ns = monotonic_ns();
    let cpu_ns_at_stop = threads.iter().filter_map(|t| Some((t.tid, target.thread_cpu_ns(t.tid)?))).collect();
    say!("runtime-scope: stopped after {:.2} s: {}", (end_ns - start_ns) as f64 / 1e9, reason.describe());
    // Records already in the buffer still belong to the window, and so do
    // the switch-outs and wakings still held for a switch-in.
    drain(&mut view, sink, &mut names, &mut auto, 0)?;
    if identity.checked.1 > 0 {
        let (agreed, total) = identity.checked;
        say!(
            "runtime-scope: task identity: {agreed} of {total} task ids read at switch-outs and samples inside probed polls named the polled task ({:.1}%)",
            agreed as f64 * 100.0 / total as f64
        );
    }
    sink.events(&names.refresh_all(end_ns)).context("writing the capture")?;
    // Counters are read only now, after the window closed (see view.tick).
    let lost_events = probes.lost_events()?;
    let untracked_threads = probes.untracked_threads()?;
    let children = probes.child_processes()?;
    if children > 0 {
        say!(
            "runtime-scope: the target started {children} child process{}, not recorded: a recording follows one process \
             (through exec); record a child with -p PID",
            if children == 1 { "" } else { "es" }
        );
    }
    let (over_budget, unreadable) = probes.stack_misses()?;
    let parks = probes.parks()?;
    // Skipped interrupt-depth updates heal at the next switch on that CPU.
    let skipped: Vec<(String, u64)> = probes.skipped_runs().into_iter().filter(|(p, _)| !p.starts_with("irq_")).collect();
    if !skipped.is_empty() {
        let list: Vec<String> = skipped.iter().map(|(p, n)| format!("{p} {n}")).collect();
        say!(
            "runtime-scope: the kernel skipped runs of our programs ({}): another BPF program or a bpf() map syscall \
             was active on that CPU; switches missed this way are inferred from the thread's own probes",
            list.join(", ")
        );
    }
    let bench_stats = std::env::var_os("RUNTIME_SCOPE_BPF_STATS").is_some().then(|| probes.run_stats());
    let held_count = probes.held_count().ok();
    // The target pays for each uprobe hit: take them off next, in the
    // background (see `Probes::release_in_background`); `finish_detaching`
    // waits for it before we exit. (Counters first: records dropped while
    // detaching are after the window and must not be reported as lost;
    // seen: 380 "lost" on a quiet 60 s run.)
    // A program we started is stopped first: then nobody pays for the
    // probes while they come off, and the user need not wait for that.
    let exit_status = settings.child.as_mut().and_then(|child| child.finish(reason));
    let gone = target.has_exited();
    if (gone || settings.detach_after_exit) && crate::handoff::hold_until_we_exit() {
        if !gone {
            say!("runtime-scope: the probes come off in the background (a few seconds; the target runs on)");
        }
        drop(probes);
    } else {
        *DETACHING.lock().unwrap_or_else(|e| e.into_inner()) = Some(probes.release_in_background());
    }
    if collector.stacks > 0 || over_budget + unreadable > 0 {
        let need = collector.p95_bytes().map_or(String::new(), |b| format!("; 95% needed ≤ {b} stack bytes"));
        let seconds = (end_ns - start_ns).max(1) as f64 / 1e9;
        say!(
            "runtime-scope: {} stacks ({:.0}% unwound to the thread's start{need}), {} waits at the same place as the last (not copied again; {} of them with only the frames the 512 bytes compared vouch for), {over_budget} skipped over the budget, {unreadable} unreadable; {:.0} KiB of stack copied ({:.1} KiB/s)",
            collector.stacks,
            collector.complete as f64 * 100.0 / collector.stacks.max(1) as f64,
            collector.repeats,
            collector.repeats_cut,
            collector.bytes_copied as f64 / 1024.0,
            collector.bytes_copied as f64 / 1024.0 / seconds,
        );
    }
    if collector.loops_learned() > 0 {
        say!(
            "runtime-scope: {parks} parks of {} not stack-checked (each worker's own loop id, set while it parks, was learned from one park's stack)",
            scope_export::labels::count(collector.loops_learned() as u64, "worker")
        );
    }
    if let Some(check) = collector.check_summary() {
        say!("runtime-scope: {check}");
    }
    for warning in &collector.warnings {
        say!("runtime-scope: warning: {warning}");
    }
    if let Some(stats) = bench_stats {
        // For `cargo xtask bench`: kernel-side cost of each program.
        let cpu = std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| {
            let f: Vec<&str> = s.rsplit(')').next()?.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        });
        say!("runtime-scope: bench self-cpu-ticks={}", cpu.unwrap_or(0));
        say!("runtime-scope: bench held={}", held_count.unwrap_or(0));
        for (name, runs, ns) in stats {
            say!("runtime-scope: bench bpf program={name} runs={runs} run_ns={ns}");
        }
    }
    if undecodable > 0 {
        say!("runtime-scope: warning: {undecodable} records could not be decoded (version mismatch?)");
    }
    sink.end(&Stop {
        end_ns,
        stop_reason: reason,
        lost_events,
        untracked_threads,
        cpu_ns_at_stop,
        exit_status,
    })
    .context("writing the capture")?;
    Ok(reason)
}
