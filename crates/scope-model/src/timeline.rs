//! Events → per-thread timeline of on-CPU spans and off-CPU gaps.
//!
//! Each thread's spans are contiguous and cover its life inside the recording
//! window: from the window start (or its creation) to the window end (or its
//! exit). What a thread was doing before its first observed switch is
//! inferred from that switch: a switch-out means it was running.

use crate::{Event, Frame, Recording, Role, StackReason, StopReason, ThreadState, WorkerRule};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use spans::{SpansOf, ThreadSpans};
use open_polls::OpenPolls;
use poll_ends::PollEnds;
use stack_table::StackTable;
use tasks::TaskTracker;
pub use tasks::{Spawn, Wake, WorkerStart};

mod open_polls;
mod poll_ends;
pub mod spans;
mod stack_table;
mod tasks;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum OffReason {
    /// Switched out while runnable: waiting for a CPU.
    Preempted,
    /// Woken after blocking, waiting for a CPU until its switch-in (the
    /// run-queue delay): not part of the blocked stretch before it, which
    /// ends at the waking (a 40 ms sleep on a loaded machine was shown as
    /// 69 ms blocked when it included this).
    Woken,
    /// Switched out waiting for something (sleep, I/O, lock, park).
    Blocked { state: ThreadState },
    /// Not observed: before the thread's first switch-in.
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SpanState {
    /// `cpu` is None only when the thread never switched during the window.
    OnCpu { cpu: Option<u32> },
    OffCpu(OffReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    pub start_ns: u64,
    pub end_ns: u64,
    pub state: SpanState,
}

impl SpanState {
    /// Off-CPU but runnable: waiting for a CPU (preempted, or woken and
    /// not yet switched in).
    pub fn is_runnable(&self) -> bool {
        matches!(self, SpanState::OffCpu(OffReason::Preempted | OffReason::Woken))
    }
}

impl Span {
    pub fn duration_ns(&self) -> u64 {
        self.end_ns - self.start_ns
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadTimeline {
    pub tid: u32,
    pub name: String,
    pub role: Role,
    pub spans: Vec<Span>,
    pub created_ns: Option<u64>,
    pub exited_ns: Option<u64>,
    /// Exact on-CPU time the kernel accounted over the window (schedstat).
    pub kernel_cpu_ns: Option<u64>,
    /// (ts, index into `Timeline::stacks`) of cpu-clock samples.
    pub samples: Vec<(u64, u32)>,
    /// (ts, stack index) taken as the thread switched out blocked; the ts is
    /// that of the switch, so it equals the blocked span's start.
    pub blocked_stacks: Vec<(u64, u32)>,
    /// Task polls on this thread, by start time; nested polls have depth > 0.
    pub polls: Vec<Poll>,
    /// Who woke this thread, by time.
    #[serde(default)]
    pub wakings: Vec<Waker>,
    /// (ts, Tokio's current task id) at switch-outs and samples, by time,
    /// read from its thread-local (no poll probes needed); see `identity`.
    #[serde(default)]
    pub task_marks: Vec<(u64, u64)>,
}

/// Thread `tid` of process `pid` woke a thread at `ts` (tid 0: an interrupt
/// or the idle task).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waker {
    pub ts: u64,
    pub tid: u32,
    pub pid: u32,
}

/// One poll of one task on one thread. 32 bytes: a busy capture's
/// timeline is mostly these (1.5 M of them from a 72 MB capture).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Poll {
    pub start_ns: u64,
    pub end_ns: u64,
    /// Distinct per task in this recording (a freed address gets a new
    /// one); its header address is [`Timeline::task_addr`] (kept per task,
    /// not per poll).
    pub serial: u32,
    /// The `raw::poll` instance, one per future type, so it names the kind:
    /// an index into [`Timeline::poll_fns`] ([`Timeline::poll_fn`]; a
    /// `Frame` in every poll made a poll 48 bytes).
    pub instance: u32,
    /// 1 for the task's first poll seen, 2 for the next, …
    pub number: u32,
    /// Polls open around it on the same thread (saturates: a Tokio thread
    /// nests a few).
    pub depth: u16,
    /// False if the recording ended (or the thread exited) inside it.
    pub finished: bool,
    /// Its return was not probed (`--polls starts`): it ended at or before
    /// `end_ns`, where its thread was first seen outside it (its next
    /// poll, a switch-out or sample under another task id, its exit).
    #[serde(default)]
    pub bounded: bool,
}

impl Poll {
    pub fn duration_ns(&self) -> u64 {
        self.end_ns - self.start_ns
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Stack {
    pub cpu: u32,
    pub frames: Vec<Frame>,
    pub complete: bool,
    pub reason: StackReason,
}

impl ThreadTimeline {
    fn total(&self, keep: impl Fn(&SpanState) -> bool) -> u64 {
        self.spans.iter().filter(|s| keep(&s.state)).map(Span::duration_ns).sum()
    }

    pub fn on_cpu_ns(&self) -> u64 {
        self.total(|s| matches!(s, SpanState::OnCpu { .. }))
    }

    pub fn blocked_ns(&self) -> u64 {
        self.total(|s| matches!(s, SpanState::OffCpu(OffReason::Blocked { .. })))
    }

    pub fn preempted_ns(&self) -> u64 {
        self.total(|s| matches!(s, SpanState::OffCpu(OffReason::Preempted)))
    }

    /// Runnable, waiting for a CPU: preempted, or woken and not yet running.
    pub fn runnable_ns(&self) -> u64 {
        self.total(|s| s.is_runnable())
    }

    /// Time in no known state (before the first switch, with nothing to
    /// tell what the thread was doing): shares leave it out, and say so.
    pub fn unseen_ns(&self) -> u64 {
        self.total(|s| matches!(s, SpanState::OffCpu(OffReason::Unknown)))
    }

    /// Wall time the thread existed inside the window.
    pub fn lifetime_ns(&self) -> u64 {
        self.total(|_| true)
    }

    pub fn longest_blocked(&self) -> Option<&Span> {
        self.spans
            .iter()
            .filter(|s| matches!(s.state, SpanState::OffCpu(OffReason::Blocked { .. })))
            .max_by_key(|s| s.duration_ns())
    }

    pub fn switch_outs(&self) -> usize {
        // Every on-CPU span that ends before the thread's own end was ended by a switch-out.
        let end = self.spans.last().map_or(0, |s| s.end_ns);
        self.spans
            .iter()
            .filter(|s| matches!(s.state, SpanState::OnCpu { .. }) && s.end_ns < end)
            .count()
    }

    pub fn is_worker(&self) -> bool {
        matches!(self.role, Role::Worker { .. })
    }

    /// The stack taken when this blocked span began, if one was copied.
    pub fn blocked_stack(&self, span: &Span) -> Option<u32> {
        let i = self.blocked_stacks.partition_point(|&(ts, _)| ts < span.start_ns);
        self.blocked_stacks.get(i).filter(|&&(ts, _)| ts == span.start_ns).map(|&(_, s)| s)
    }

    /// The wait for a CPU that followed `spans[i]` (a blocked span ended by
    /// its waking), if any: it ends at the switch-in.
    pub fn wait_after(&self, i: usize) -> Option<&Span> {
        self.spans.get(i + 1).filter(|s| matches!(s.state, SpanState::OffCpu(OffReason::Woken)))
    }

    /// What ended a blocked span: the last waking inside it.
    pub fn woken_by(&self, span: &Span) -> Option<&Waker> {
        let upto = self.wakings.partition_point(|w| w.ts <= span.end_ns);
        self.wakings[..upto].last().filter(|w| w.ts >= span.start_ns)
    }

    /// Spans overlapping [start, end), found by binary search (spans are
    /// sorted and contiguous).
    pub fn spans_between(&self, start: u64, end: u64) -> &[Span] {
        let from = self.spans.partition_point(|s| s.end_ns <= start);
        let to = self.spans.partition_point(|s| s.start_ns < end);
        &self.spans[from..to.max(from)]
    }

    /// On-CPU time of this thread between two instants.
    pub fn on_cpu_between(&self, start: u64, end: u64) -> u64 {
        spans::on_cpu_between(&self.spans, start, end)
    }

    /// Samples taken inside a span.
    pub fn samples_in(&self, span: &Span) -> &[(u64, u32)] {
        let from = self.samples.partition_point(|&(ts, _)| ts < span.start_ns);
        let to = self.samples.partition_point(|&(ts, _)| ts < span.end_ns);
        &self.samples[from..to]
    }

    /// The row label every output uses.
    pub fn display_name(&self) -> String {
        match self.role {
            Role::Worker { index, runtime: 0, runtimes: 0 | 1 } => format!("worker {index} (tid {})", self.tid),
            Role::Worker { index, runtime, .. } => format!("runtime {runtime} worker {index} (tid {})", self.tid),
            Role::Other => format!("{} (tid {}) · not a worker", self.name, self.tid),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    pub pid: u32,
    pub command: String,
    pub start_ns: u64,
    pub end_ns: u64,
    /// Workers first (by index), then the other threads by tid.
    pub threads: Vec<ThreadTimeline>,
    /// Every stack recorded; threads refer to them by index.
    pub stacks: Vec<Stack>,
    /// Path of each module frames refer to (by index).
    pub module_paths: Vec<String>,
    /// The `raw::poll` instances polls ran, by [`Poll::instance`].
    #[serde(default)]
    pub poll_fns: Vec<Frame>,
    /// Tasks spawned while recording, in time order.
    pub spawns: Vec<Spawn>,
    /// Task wakes, in time order.
    pub wakes: Vec<Wake>,
    /// Task serial → Tokio's task id (`tokio::task::Id`), where known.
    #[serde(default)]
    pub tokio_ids: BTreeMap<u32, u64>,
    /// Task serial − 1 → the task's header address (reused by the
    /// allocator after the task ends: serials tell tasks apart).
    #[serde(default)]
    pub task_addrs: Vec<u64>,
    /// Event sequences that contradict each other (a sign of lost events).
    pub inconsistencies: u64,
    /// (task serial, start) of the polls left out because their return was
    /// never seen (the task was polled again while they were open: probe
    /// events were lost). Their starts still end a wait for a poll.
    #[serde(default)]
    pub polls_without_return: Vec<(u32, u64)>,
    pub lost_events: u64,
    /// Threads the kernel filter had no room for (not on the timeline).
    pub untracked_threads: u64,
    pub stop_reason: StopReason,
    /// (ts, exact polls, wakes): what `--polls auto` kept from then on.
    #[serde(default)]
    pub probe_changes: Vec<(u64, bool, bool)>,
    /// What was probed and what was left off, and why (`Recording::probes`).
    #[serde(default)]
    pub probes: Vec<String>,
    /// (thread, Tokio task id) of each worker's own loop, as the recorder
    /// learned it (`Event::WorkerLoop`): its parks carry no stack.
    #[serde(default)]
    pub worker_loops: Vec<(u32, u64)>,
    /// From when poll returns were not probed (`--polls starts`): polls
    /// after it end at most where they end ([`Poll::bounded`]).
    #[serde(default)]
    pub poll_returns_off_ns: Option<u64>,
}

impl Timeline {
    pub fn duration_ns(&self) -> u64 {
        self.end_ns - self.start_ns
    }

    /// When `--polls auto` took the poll probes off (u64::MAX: never).
    pub fn polls_off_ns(&self) -> u64 {
        self.probe_changes.iter().find(|&&(_, polls, _)| !polls).map_or(u64::MAX, |&(ts, _, _)| ts)
    }

    /// The `raw::poll` instance `poll` ran: it names the task's kind.
    pub fn poll_fn(&self, poll: &Poll) -> Frame {
        self.poll_fns[poll.instance as usize]
    }

    /// The header address of task `serial`.
    pub fn task_addr(&self, serial: u32) -> Option<u64> {
        self.task_addrs.get(serial.checked_sub(1)? as usize).copied()
    }

    /// Tells threads without a worker-loop entry by the kinds of tasks they
    /// polled (see [`crate::workers::Polled`]); kinds need symbols, which
    /// the model does not have, so the caller classifies each instance.
    pub fn classify_by_polls(&mut self, polled: impl Fn(&Frame) -> crate::workers::Polled) {
        let poll_fns = &self.poll_fns;
        crate::workers::refine_by_polls(&mut self.threads, |p| polled(&poll_fns[p.instance as usize]));
        sort_rows(&mut self.threads);
    }

    /// Every distinct frame shown: in the stacks, and the polls' instances.
    pub fn frames(&self) -> std::collections::BTreeSet<Frame> {
        // Inserted one by one: collecting first listed every frame of every
        // stack (35 MB on an 11 MB capture) before the set dropped repeats.
        let mut all = std::collections::BTreeSet::new();
        for frame in self.stacks.iter().flat_map(|s| &s.frames) {
            all.insert(*frame);
        }
        all.extend(self.poll_fns.iter().copied());
        all
    }

    pub fn workers(&self) -> impl Iterator<Item = &ThreadTimeline> {
        self.threads.iter().filter(|t| t.is_worker())
    }

    pub fn build(rec: &Recording, rule: &WorkerRule) -> Timeline {
        let mut events: Vec<&Event> = rec.events.iter().collect();
        // Records from different CPUs reach the ring buffer slightly out of order.
        events.sort_by_key(|e| e.ts());
        Self::build_from(rec, events.into_iter().cloned(), rule)
    }

    /// As [`Timeline::build`], from `events` in time order (ties in the
    /// order recorded) instead of `rec.events`: a capture's events can be
    /// streamed in (`capture::replay`) rather than held whole.
    pub fn build_from(rec: &Recording, events: impl IntoIterator<Item = Event>, rule: &WorkerRule) -> Timeline {
        let window = (rec.start_ns, rec.end_ns.max(rec.start_ns));
        let mut threads = Threads {
            window,
            map: rec
                .threads
                .iter()
                .map(|t| {
                    let cpu = t.cpu_ns_at_start.zip(t.cpu_ns_at_stop).map(|(a, b)| b.saturating_sub(a));
                    (t.tid, Builder::new(t.name.clone(), window, cpu))
                })
                .collect(),
        };
        let mut inconsistencies = 0;
        let mut polls_without_return = Vec::new();
        let mut stacks = StackTable::default();
        let mut tasks = TaskTracker::default();
        let mut probe_changes = Vec::new();
        let mut worker_loops = Vec::new();
        let mut poll_fns = PollFns::default();
        // Once `--polls auto` took the probes off, the ones still firing
        // while their links close (entries can outlive returns: each link
        // closes on its own thread) are ignored: a poll begun then never
        // shows its return, and would pass for one as long as the rest of
        // the recording (seen on mini-redis: 2.1 s "long polls").
        let (mut polls_off, mut wakes_off) = (false, false);
        let mut ends = PollEnds::default();
        for event in events {
            inconsistencies += spans::apply(&mut threads, &event);
            match event {
                Event::Switch { ts, prev_tid, prev_state, prev_ours, .. } => {
                    let preempted = ThreadState(prev_state).is_runnable();
                    if prev_ours && !preempted {
                        tasks.blocked(prev_tid);
                    }
                    if prev_ours && ends.unprobed() {
                        ends.switched_out(threads.entry(prev_tid), &mut tasks, prev_tid, ts, preempted);
                    }
                }
                Event::NewThread { ts, tid, name, .. } => {
                    let b = threads.entry(tid);
                    b.name = name;
                    b.created_ns = Some(ts);
                }
                Event::Exit { ts, tid } => {
                    let b = threads.entry(tid);
                    if ends.unprobed() {
                        ends.exits(b, &mut tasks, tid, ts);
                    }
                    b.close_polls(ts);
                }
                Event::Rename { tid, name, .. } => threads.entry(tid).name = name,
                Event::Stack { ts, cpu, tid, reason, frames, complete } => {
                    let index = stacks.index_of(cpu, &frames, complete, reason);
                    let b = threads.entry(tid);
                    match reason {
                        StackReason::Sample => b.samples.push((ts, index)),
                        StackReason::Blocked => b.blocked_stacks.push((ts, index)),
                    }
                }
                Event::NewModule { .. } => {}
                Event::PollStart { .. } | Event::PollEnd { .. } if polls_off => {}
                // Returns still firing while their probes come off.
                Event::PollEnd { .. } if ends.unprobed() => {}
                Event::TaskWake { .. } if wakes_off => {}
                Event::PollStart { ts, tid, task, poll_fn } => {
                    if ends.unprobed() {
                        let loop_id = worker_loops.iter().rev().find(|(t, _)| *t == tid).map(|&(_, id)| id);
                        ends.poll_starts(threads.entry(tid), &mut tasks, tid, ts, loop_id);
                    }
                    let (serial, number) = tasks.poll_start(tid, task);
                    let b = threads.entry(tid);
                    // A task is never polled inside its own poll: the
                    // return of its last one was lost (and of any opened
                    // since). Their lengths are unknown: left out, not
                    // stretched to here, where they would pass for long
                    // polls (and nest every later poll ever deeper).
                    b.open_polls.drop_from(serial, &mut polls_without_return);
                    b.open_polls.push(Poll {
                        start_ns: ts,
                        end_ns: ts,
                        serial,
                        instance: poll_fns.index_of(poll_fn),
                        number,
                        depth: u16::try_from(b.open_polls.len()).unwrap_or(u16::MAX),
                        finished: false,
                        bounded: false,
                    });
                }
                Event::TaskSpawn { ts, tid, task } => tasks.spawn(ts, tid, task),
                Event::Probes { ts, polls, wakes } => {
                    probe_changes.push((ts, polls, wakes));
                    (polls_off, wakes_off) = (polls_off || !polls, wakes_off || !wakes);
                    if !polls {
                        // Their returns will not be seen, so their length is
                        // unknown: left out rather than cut at a guess.
                        for b in threads.map.values_mut() {
                            b.open_polls.clear();
                        }
                    }
                }
                Event::TaskId { task, id, .. } => tasks.tokio_id(task, id),
                Event::WorkerLoop { tid, id, .. } => {
                    if !worker_loops.contains(&(tid, id)) {
                        worker_loops.push((tid, id));
                    }
                }
                Event::TaskAt { ts, tid, id } => {
                    let b = threads.entry(tid);
                    if ends.unprobed() {
                        ends.task_at(b, &mut tasks, tid, ts, id);
                    }
                    b.task_marks.push((ts, id));
                }
                Event::PollReturnsOff { ts } => {
                    ends.off_ns.get_or_insert(ts);
                }
                Event::PollInside { tid, id, .. } => ends.entered_under(tid, id),
                Event::TaskWake { ts, tid, task } => {
                    let innermost = threads.map.get(&tid).and_then(|b| b.open_polls.last()).map(|p| p.serial);
                    tasks.wake(ts, tid, task, innermost);
                }
                Event::WorkerRun { ts, tid, index, runtime } => tasks.worker_run(ts, tid, index, runtime),
                Event::CurrentThreadRun { ts, tid, runtime } => tasks.current_thread_run(ts, tid, runtime),
                Event::Waking { ts, tid, waker_tid, waker_pid } => {
                    threads.entry(tid).wakings.push(Waker { ts, tid: waker_tid, pid: waker_pid });
                }
                Event::PollEnd { ts, tid } => {
                    let b = threads.entry(tid);
                    // A return with nothing open: the poll began before we attached.
                    if let Some(mut poll) = b.open_polls.pop() {
                        tasks.poll_end(tid, poll.serial);
                        poll.end_ns = ts;
                        poll.finished = true;
                        b.polls.push(poll);
                    }
                }
            }
        }

        for (&tid, b) in threads.map.iter_mut() {
            ends.flush(b, &mut tasks, tid);
        }
        let mut built: Vec<ThreadTimeline> = threads.map.into_iter().map(|(tid, b)| b.finish(tid)).collect();
        crate::workers::assign_roles(&mut built, rule, &tasks.worker_starts);
        sort_rows(&mut built);
        Timeline {
            pid: rec.pid,
            command: rec.command.clone(),
            start_ns: window.0,
            end_ns: window.1,
            threads: built,
            stacks: stacks.into_vec(),
            spawns: tasks.spawns,
            wakes: tasks.wakes,
            tokio_ids: tasks.tokio_ids,
            task_addrs: tasks.addrs,
            module_paths: rec.all_modules().into_iter().map(|m| m.path).collect(),
            poll_fns: poll_fns.list,
            inconsistencies,
            polls_without_return,
            lost_events: rec.lost_events,
            untracked_threads: rec.untracked_threads,
            stop_reason: rec.stop_reason,
            probe_changes,
            worker_loops,
            probes: rec.probes.clone(),
            poll_returns_off_ns: ends.off_ns,
        }
    }
}

/// The rows the timeline would give the threads known so far, with no
/// symbols yet: (tid, role, label), workers first. The live view labels
/// its lines with these, so they name the threads as the report will.
/// `threads`: tid, name, and whether it was created while recording.
pub fn rows_so_far(threads: &[(u32, String, bool)], rule: &WorkerRule, starts: &[WorkerStart]) -> Vec<(u32, Role, String)> {
    let mut rows: Vec<ThreadTimeline> = threads
        .iter()
        .map(|(tid, name, created)| ThreadTimeline {
            tid: *tid,
            name: name.clone(),
            role: Role::Other,
            spans: Vec::new(),
            created_ns: created.then_some(0),
            exited_ns: None,
            kernel_cpu_ns: None,
            samples: Vec::new(),
            blocked_stacks: Vec::new(),
            polls: Vec::new(),
            wakings: Vec::new(),
            task_marks: Vec::new(),
        })
        .collect();
    crate::workers::assign_roles(&mut rows, rule, starts);
    sort_rows(&mut rows);
    rows.iter().map(|t| (t.tid, t.role, t.display_name())).collect()
}

/// Workers first (by runtime, then index), then the other threads by tid.
fn sort_rows(threads: &mut [ThreadTimeline]) {
    threads.sort_by_key(|t| {
        let worker = match t.role {
            Role::Worker { index, runtime, .. } => (runtime, index),
            Role::Other => (u32::MAX, u32::MAX),
        };
        (worker, t.tid)
    });
}

/// The `raw::poll` instances met, each given an index once.
#[derive(Default)]
struct PollFns {
    list: Vec<Frame>,
    index: std::collections::HashMap<Frame, u32>,
}

impl PollFns {
    fn index_of(&mut self, poll_fn: Frame) -> u32 {
        *self.index.entry(poll_fn).or_insert_with(|| {
            self.list.push(poll_fn);
            self.list.len() as u32 - 1
        })
    }
}

/// Every thread's builder, created on first sight.
struct Threads {
    window: (u64, u64),
    map: BTreeMap<u32, Builder>,
}

impl Threads {
    fn entry(&mut self, tid: u32) -> &mut Builder {
        // A thread we were not told about (created before the filter saw it).
        self.map.entry(tid).or_insert_with(|| Builder::new(format!("tid {tid}"), self.window, None))
    }
}

impl SpansOf for Threads {
    fn spans_of(&mut self, tid: u32) -> &mut ThreadSpans {
        &mut self.entry(tid).sched
    }
}

struct Builder {
    name: String,
    window: (u64, u64),
    created_ns: Option<u64>,
    kernel_cpu_ns: Option<u64>,
    sched: ThreadSpans,
    samples: Vec<(u64, u32)>,
    blocked_stacks: Vec<(u64, u32)>,
    open_polls: OpenPolls,
    polls: Vec<Poll>,
    wakings: Vec<Waker>,
    task_marks: Vec<(u64, u64)>,
}

impl Builder {
    fn new(name: String, window: (u64, u64), kernel_cpu_ns: Option<u64>) -> Self {
        Builder {
            name,
            window,
            created_ns: None,
            kernel_cpu_ns,
            sched: ThreadSpans::new(window),
            samples: Vec::new(),
            blocked_stacks: Vec::new(),
            open_polls: OpenPolls::default(),
            polls: Vec::new(),
            wakings: Vec::new(),
            task_marks: Vec::new(),
        }
    }

    /// Polls still open when the thread exits or recording stops end there.
    fn close_polls(&mut self, end: u64) {
        while let Some(mut poll) = self.open_polls.pop() {
            poll.end_ns = end;
            self.polls.push(poll);
        }
    }

    fn finish(mut self, tid: u32) -> ThreadTimeline {
        self.close_polls(self.window.1);
        // A thread created after the window's end (a damaged capture) has none.
        let hi = self.window.1;
        let lo = self.sched.begin_ns.max(self.window.0).min(hi);
        let mut polls: Vec<Poll> = std::mem::take(&mut self.polls)
            .into_iter()
            .filter(|p| p.end_ns > lo && p.start_ns < hi)
            .map(|p| Poll { start_ns: p.start_ns.max(lo), end_ns: p.end_ns.min(hi), ..p })
            .collect();
        if !polls.is_sorted_by_key(|p| (p.start_ns, p.depth)) {
            // In place (a stable sort's buffer is half of a busy thread's
            // polls). Ties of start and depth (polls of zero length) go by end, then task.
            polls.sort_unstable_by_key(|p| (p.start_ns, p.depth, p.end_ns, p.serial, p.number));
        }
        self.sched.finish(self.kernel_cpu_ns);
        ThreadTimeline {
            tid,
            name: self.name,
            role: Role::Other,
            spans: self.sched.spans,
            created_ns: self.created_ns,
            exited_ns: self.sched.exited_ns,
            kernel_cpu_ns: self.kernel_cpu_ns,
            samples: self.samples,
            blocked_stacks: self.blocked_stacks,
            polls,
            wakings: self.wakings,
            task_marks: self.task_marks,
        }
    }
}

#[cfg(test)]
mod tests;
