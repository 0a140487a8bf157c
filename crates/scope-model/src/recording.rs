use serde::{Deserialize, Serialize};

/// One decoded kernel record. Timestamps are CLOCK_MONOTONIC nanoseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A context switch on `cpu`; `prev_ours`/`next_ours` say which side is a
    /// thread of the target.
    Switch {
        ts: u64,
        cpu: u32,
        prev_tid: u32,
        next_tid: u32,
        prev_state: u64,
        prev_ours: bool,
        next_ours: bool,
        /// Records lost on this CPU so far.
        cpu_lost: u32,
    },
    NewThread { ts: u64, tid: u32, parent_tid: u32, name: String },
    Exit { ts: u64, tid: u32 },
    /// The thread's name changed (observed at a switch-out).
    Rename { ts: u64, tid: u32, name: String },
    /// A user stack, unwound while the target was alive; the raw stack bytes
    /// were dropped (they are the target's memory).
    Stack {
        ts: u64,
        cpu: u32,
        tid: u32,
        reason: StackReason,
        /// Innermost first: the sampled instruction, then each caller's
        /// return address minus one (ready for symbol lookup). Shared: a
        /// thread's repeated waits are the same frames (on a busy server
        /// most blocked switch-outs are), so a repeat costs no copy.
        frames: std::sync::Arc<[Frame]>,
        /// The unwinder reached the thread's first frame.
        complete: bool,
    },
    /// An executable mapping seen after the start (dlopen, late libraries).
    /// Boxed: rare, and the largest variant (every event was 88 bytes for it).
    NewModule { ts: u64, index: u32, module: Box<Module> },
    /// A thread entered `raw::poll` of a task: `task` is the task's header
    /// address, `poll_fn` the instance (one per future type).
    PollStart { ts: u64, tid: u32, task: u64, poll_fn: Frame },
    /// The innermost open poll on the thread returned.
    PollEnd { ts: u64, tid: u32 },
    /// A task was spawned by thread `tid`; its header address is `task`
    /// (a new task, even if an ended one had the same address).
    TaskSpawn { ts: u64, tid: u32, task: u64 },
    /// Thread `tid` woke the task whose header address is `task`.
    TaskWake { ts: u64, tid: u32, task: u64 },
    /// Thread `tid` entered a multi-thread runtime's worker loop as worker
    /// `index`; `runtime` is that runtime's handle address.
    WorkerRun { ts: u64, tid: u32, index: u64, runtime: u64 },
    /// Thread `tid` was woken by thread `waker_tid` of process `waker_pid`
    /// (0: an interrupt or the idle task).
    Waking { ts: u64, tid: u32, waker_tid: u32, waker_pid: u32 },
    /// Thread `tid` took the core of the current_thread runtime whose handle
    /// address is `runtime`: it polls that runtime's tasks (as its worker 0).
    /// Last, so captures written before it existed still decode.
    CurrentThreadRun { ts: u64, tid: u32, runtime: u64 },
    /// The task whose header address is `task` has Tokio's task id `id`
    /// (what `tokio::task::id()` returns inside it). Recorded just before
    /// its first poll seen, and again if the address later holds another
    /// task. Last, for the same reason as above.
    TaskId { ts: u64, tid: u32, task: u64, id: u64 },
    /// From `ts` on, Tokio's current task id read at thread `tid`'s
    /// switch-outs and samples was `id` (0: no task, or not read), until
    /// its next `TaskAt`: read from Tokio's `CONTEXT` thread-local at each
    /// switch-out and sample, recorded only when it changes (a parked
    /// worker reads its own loop's id thousands of times a second). Last,
    /// for the same reason as above.
    TaskAt { ts: u64, tid: u32, id: u64 },
    /// From `ts` on, exact poll probes (and wake probes) run or not:
    /// `--polls auto` decided, after measuring, what fits its budget.
    /// Last, for the same reason as above.
    Probes { ts: u64, polls: bool, wakes: bool },
    /// Thread `tid` is a multi-thread worker whose own loop runs with
    /// Tokio task id `id` (a blocked stack through Tokio's park code was
    /// taken with it set): from `ts` on, its blocked switch-outs with `id`
    /// set are parks, and their stacks were not taken. Last, for the same
    /// reason as above.
    WorkerLoop { ts: u64, tid: u32, id: u64 },
    /// From `ts` on, poll returns are not probed (`--polls starts`: poll
    /// entries only): a poll ends at most where its thread is next seen
    /// outside it (see `Poll::bounded`). Last, for the same reason as above.
    PollReturnsOff { ts: u64 },
    /// From the poll starting on thread `tid` at `ts` on, its polls are
    /// entered with Tokio's current task id `id`: inside the poll of the
    /// task with that id, if one is open there (else from the worker's own
    /// loop, or from no task). Recorded only without poll returns, when it
    /// changes. Last, for the same reason as above.
    PollInside { ts: u64, tid: u32, id: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StackReason {
    /// cpu-clock sample of a running thread.
    Sample,
    /// Taken as the thread switched out blocked: where it waits.
    Blocked,
}

/// A code address normalised while the target was alive: the module (index
/// into the recording's module list) and the file offset within it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Frame {
    pub module: u32,
    /// File offset in the module; for `NO_MODULE`, the raw virtual address.
    pub offset: u64,
}

impl Frame {
    /// The address was in no file-backed mapping (JIT, anonymous memory).
    pub const NO_MODULE: u32 = u32::MAX;
}

impl Event {
    pub fn ts(&self) -> u64 {
        match self {
            Event::Switch { ts, .. }
            | Event::NewThread { ts, .. }
            | Event::Exit { ts, .. }
            | Event::Rename { ts, .. }
            | Event::Stack { ts, .. }
            | Event::NewModule { ts, .. }
            | Event::PollStart { ts, .. }
            | Event::PollEnd { ts, .. }
            | Event::TaskSpawn { ts, .. }
            | Event::TaskWake { ts, .. }
            | Event::WorkerRun { ts, .. }
            | Event::Waking { ts, .. }
            | Event::CurrentThreadRun { ts, .. }
            | Event::TaskId { ts, .. }
            | Event::TaskAt { ts, .. }
            | Event::Probes { ts, .. }
            | Event::WorkerLoop { ts, .. }
            | Event::PollReturnsOff { ts }
            | Event::PollInside { ts, .. } => *ts,
        }
    }
}

/// A thread known at attach time (from /proc) or created while recording.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadInfo {
    pub tid: u32,
    /// Name when first seen; later renames are `Event::Rename`.
    pub name: String,
    /// Kernel's exact on-CPU nanoseconds (`/proc/.../schedstat`) at start and
    /// stop of the recording, where the thread was alive to be read.
    pub cpu_ns_at_start: Option<u64>,
    pub cpu_ns_at_stop: Option<u64>,
}

impl ThreadInfo {
    /// A thread whose CPU time was not read.
    pub fn named(tid: u32, name: &str) -> ThreadInfo {
        ThreadInfo { tid, name: name.into(), cpu_ns_at_start: None, cpu_ns_at_stop: None }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Duration,
    Signal,
    TargetExited,
    /// The capture ends without its stop record (the recorder was killed,
    /// or the disk filled up): the window ends at the last event read.
    Incomplete,
    /// The user quit the live dashboard (`q`). Last, with the next two, so
    /// captures written before them still decode.
    Quit,
    /// Whoever read our messages went away (a closed pipe or terminal).
    OutputClosed,
    /// A flight-recorder snapshot (`watch`): the last seconds before a
    /// trigger and a little after it, cut out of a longer recording.
    Snapshot,
}

impl Recording {
    /// A recording the recorder did not make (the pure stages' tests, made-up
    /// captures): process 1 running `app`, the window [start, end) ended by
    /// its duration, nothing lost, no modules, probes or launch.
    pub fn made_up(start_ns: u64, end_ns: u64, threads: Vec<ThreadInfo>, events: Vec<Event>) -> Recording {
        Recording {
            tool_version: "test".into(),
            pid: 1,
            command: "app".into(),
            executable: "/bin/app".into(),
            start_ns,
            end_ns,
            stop_reason: StopReason::Duration,
            lost_events: 0,
            untracked_threads: 0,
            threads,
            events,
            modules: vec![],
            probes: vec![],
            launch: None,
        }
    }

    /// The start's modules plus those found later, indexed as frames refer to them.
    /// The recorder numbers modules in order, so an index past the end of
    /// the list is not one it wrote (a damaged or crafted capture): ignored,
    /// never allocated for.
    pub fn all_modules(&self) -> Vec<Module> {
        let mut modules = self.modules.clone();
        for event in &self.events {
            if let Event::NewModule { index, module, .. } = event {
                match (*index as usize).cmp(&modules.len()) {
                    std::cmp::Ordering::Less => modules[*index as usize] = (**module).clone(),
                    std::cmp::Ordering::Equal => modules.push((**module).clone()),
                    std::cmp::Ordering::Greater => {}
                }
            }
        }
        modules
    }
}

impl StopReason {
    pub fn describe(self) -> &'static str {
        match self {
            StopReason::Duration => "duration reached",
            StopReason::Signal => "interrupted by signal",
            StopReason::TargetExited => "the target process exited",
            StopReason::Incomplete => "recording incomplete",
            StopReason::Quit => "quit from the dashboard",
            StopReason::OutputClosed => "our output (stderr) was closed",
            StopReason::Snapshot => "flight-recorder snapshot (watch)",
        }
    }
}

/// A file-backed executable mapping of the target, as /proc/PID/maps showed
/// it at attach. Addresses are the target's virtual addresses (AVMA).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Module {
    pub path: String,
    pub start_avma: u64,
    pub end_avma: u64,
    /// Offset in the file of the byte mapped at `start_avma`.
    pub file_offset: u64,
    /// GNU build-id (hex), to detect a binary replaced on disk later.
    pub build_id: Option<String>,
}

/// Set when the profiler started the target itself (`record -- CMD`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launch {
    pub argv: Vec<String>,
    /// Exit code, or 128 + signal number, if it exited while recorded.
    pub exit_status: Option<i32>,
}

/// Everything one recording session produced, enough to rebuild the timeline
/// later without the target or root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recording {
    pub tool_version: String,
    pub pid: u32,
    /// The target's command name.
    pub command: String,
    pub executable: String,
    /// Window of the recording, CLOCK_MONOTONIC ns.
    pub start_ns: u64,
    pub end_ns: u64,
    pub stop_reason: StopReason,
    /// Records the kernel could not deliver (ring buffer full).
    pub lost_events: u64,
    /// Threads the kernel filter had no room for.
    pub untracked_threads: u64,
    pub threads: Vec<ThreadInfo>,
    pub events: Vec<Event>,
    #[serde(default)]
    pub modules: Vec<Module>,
    /// Kernel attach points used, e.g. `tracepoint:sched/sched_switch`.
    #[serde(default)]
    pub probes: Vec<String>,
    #[serde(default)]
    pub launch: Option<Launch>,
}
