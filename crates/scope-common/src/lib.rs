//! Records written by the kernel side into the ring buffer.
//!
//! Every record starts with the same [`Header`], so userspace can dispatch on
//! `kind` before it knows the record's length. All fields are plain integers:
//! the layout is the wire format between two compilers (bpf and x86_64).
#![no_std]

/// Record kinds (the `kind` field of [`Header`]).
pub mod kind {
    pub const SWITCH: u32 = 1;
    pub const NEW_THREAD: u32 = 2;
    pub const EXIT: u32 = 3;
    pub const COMM: u32 = 4;
    /// [`StackHeader`] followed by `len` bytes of user stack.
    pub const STACK: u32 = 5;
    pub const POLL_ENTER: u32 = 6;
    pub const POLL_EXIT: u32 = 7;
    pub const TASK_SPAWN: u32 = 8;
    /// [`TaskWake`]: a waker of a task was woken.
    pub const TASK_WAKE: u32 = 9;
    /// [`WorkerRun`]: a thread entered a multi-thread runtime's worker loop.
    pub const WORKER_RUN: u32 = 10;
    /// [`Waking`]: a target thread is being woken (`sched_waking`).
    pub const WAKING: u32 = 11;
    /// [`WorkerRun`] with index 0: a thread took a current_thread runtime's
    /// core (`CurrentThread::take_core`), so it polls that runtime's tasks.
    pub const CURRENT_THREAD: u32 = 12;
}

/// Entry of a `tokio::runtime::task::raw::poll` instance on a target thread.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PollEnter {
    pub header: Header,
    pub tid: u32,
    pub _pad: u32,
    /// The task's header pointer (first argument).
    pub task: u64,
    /// Address of the instance entered: which future type's poll.
    pub fn_avma: u64,
    /// The caller's return address, read before the uretprobe replaces it
    /// with its trampoline: stacks taken inside the poll need it back.
    pub ret_addr: u64,
    /// Tokio's task id (`tokio::task::Id`), read at the offset the task's
    /// vtable states (`Vtable::id_offset`, passed as the uprobe's cookie);
    /// 0 when userspace could not validate that offset for this instance.
    pub task_id: u64,
}

/// Return from the innermost `raw::poll` on that thread.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PollExit {
    pub header: Header,
    pub tid: u32,
    pub _pad: u32,
}

/// Why a stack was copied ([`StackHeader::reason`]).
pub mod stack_reason {
    /// A cpu-clock sample of a running target thread.
    pub const SAMPLE: u32 = 1;
    /// A target thread switching out blocked (S/D): where it waits.
    pub const BLOCKED: u32 = 2;
}

/// Bits of [`Switch::ours`]: which side of the switch belongs to the target.
pub mod side {
    pub const PREV: u32 = 1;
    pub const NEXT: u32 = 2;
}

/// Indexes into the per-CPU `COUNTERS` array.
pub mod counter {
    /// Records lost because the ring buffer was full.
    pub const RINGBUF_DROPS: u32 = 0;
    /// Threads that could not be added to the filter map (map full).
    pub const FILTER_FULL: u32 = 1;
    /// Blocked-switch stacks not copied because the byte budget was spent.
    pub const STACKS_OVER_BUDGET: u32 = 2;
    /// Stacks whose user memory could not be read at all.
    pub const STACKS_UNREADABLE: u32 = 3;
    pub const COUNT: u32 = 4;
}

/// Largest user-stack copy the kernel side can make (`--stack-size` ≤ this).
pub const STACK_MAX: usize = 32 * 1024;

/// Head of a [`kind::STACK`] record: the thread's user registers at the
/// sample or switch-out, and how many stack bytes (from `sp` up) follow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackHeader {
    pub header: Header,
    pub tid: u32,
    pub reason: u32,
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    pub len: u32,
    pub _pad: u32,
}

/// What userspace configures for stack capture (a `.rodata` global).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackConfig {
    /// Bytes of stack to copy (≤ STACK_MAX); 0 disables stack capture.
    pub stack_bytes: u32,
    pub _pad: u32,
    /// Budget for blocked-switch stack copies, bytes per second per CPU.
    pub blocked_bytes_per_sec: u64,
}

/// Capacity of the thread filter map.
pub const MAX_THREADS: u32 = 16384;

/// Length of a kernel task name (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub kind: u32,
    pub cpu: u32,
    /// CLOCK_MONOTONIC nanoseconds (`bpf_ktime_get_ns`).
    pub ts: u64,
}

/// `sched_switch` where the previous or the next task is a target thread.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Switch {
    pub header: Header,
    pub prev_tid: u32,
    pub next_tid: u32,
    /// `prev_state` as the tracepoint reports it (0 = runnable, i.e. preempted).
    pub prev_state: u64,
    /// [`side`] bits.
    pub ours: u32,
    /// Records this CPU has lost so far (ring buffer full). Reported in-band
    /// because reading the counter map with a syscall while recording makes
    /// the kernel skip our programs on that CPU (see docs/design-notes.md).
    pub cpu_lost: u32,
}

/// A thread created in the target process (`task_newtask` with CLONE_THREAD).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NewThread {
    pub header: Header,
    pub tid: u32,
    pub parent_tid: u32,
    pub comm: [u8; COMM_LEN],
}

/// A target thread exited (`sched_process_exit`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exit {
    pub header: Header,
    pub tid: u32,
    pub _pad: u32,
}

/// A target thread's name changed (seen at its switch-out).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Comm {
    pub header: Header,
    pub tid: u32,
    pub _pad: u32,
    pub comm: [u8; COMM_LEN],
}

/// Byte offsets of the tracepoint fields the programs read, taken from
/// tracefs `format` files at load time (they differ between kernels).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FieldOffsets {
    pub switch_prev_comm: u32,
    pub switch_prev_pid: u32,
    pub switch_prev_state: u32,
    pub switch_next_pid: u32,
    pub newtask_pid: u32,
    pub newtask_comm: u32,
    pub newtask_clone_flags: u32,
    pub waking_pid: u32,
    pub _pad: u32,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all-integer #[repr(C)] structs with explicit padding fields.
    unsafe impl aya::Pod for super::FieldOffsets {}
    unsafe impl aya::Pod for super::StackConfig {}
}

/// A task was spawned (`OwnedTasks::bind_inner`): from now on its header
/// address names this task, even if a finished task had it before.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskSpawn {
    pub header: Header,
    pub tid: u32,
    pub _pad: u32,
    pub task: u64,
}

/// `tokio::runtime::task::waker::wake_by_val` / `wake_by_ref` entered on a
/// target thread: `task` is the woken task's header address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskWake {
    pub header: Header,
    pub tid: u32,
    pub _pad: u32,
    pub task: u64,
}

/// `tokio::runtime::scheduler::multi_thread::worker::run` entered: this
/// thread is now that runtime's worker `index`. `runtime` tells runtimes
/// apart (the address of the runtime's shared handle).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerRun {
    pub header: Header,
    pub tid: u32,
    pub _pad: u32,
    pub index: u64,
    pub runtime: u64,
}

/// `sched_waking` of a target thread: it becomes runnable, woken by the
/// thread running now (`sched_waking` runs in the waker's context, unlike
/// `sched_wakeup`, which may run on the wakee's CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Waking {
    pub header: Header,
    pub tid: u32,
    pub waker_tid: u32,
    pub waker_pid: u32,
    /// [`waking_flags`].
    pub flags: u32,
}

pub mod waking_flags {
    /// Woken from an interrupt handler, softirq or timer callback: then
    /// `current` is just whoever was interrupted, not the waker.
    pub const IN_INTERRUPT: u32 = 1;
}
