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
    /// [`ContextCopy`]: a thread's CONTEXT bytes, to find the task id in it.
    pub const CONTEXT_COPY: u32 = 13;
    /// [`Resumed`]: a target thread's switch-in, carrying its switch-out and
    /// waking that were held back in [`Pending`] instead of sent.
    pub const RESUMED: u32 = 14;
    /// [`Exec`]: the target process executed a new program.
    pub const EXEC: u32 = 32;
}

/// The target process executed a new program (`sched_process_exec`): same
/// pid, a new image, so the task probes must move to it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exec {
    pub header: Header,
    pub pid: u32,
    /// The thread that ran exec (the process's only thread after it).
    pub tid: u32,
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
    /// Tokio's current task id as the poll is entered (before its own id
    /// is set): the task whose poll this one runs inside, or the worker's
    /// own loop id. Read only once poll returns are no longer probed
    /// (`--polls starts`, see `POLL_NESTING`), else 0: then it is the one
    /// sign of a poll nested in another.
    pub outer_id: u64,
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
    // 3 was a blocked stack equal to the thread's last one; that is now
    // `side::SAME_STACK` in the switch record.
    /// A blocked switch-out the switch record says repeats remembered wait
    /// `remembered - 1`, copied anyway to check that (only by the
    /// `sched_switch_check` program, loaded for `RUNTIME_SCOPE_CHECK_REPEATS`).
    pub const BLOCKED_CHECK: u32 = 4;
}

/// Bits of [`Switch::ours`]: which side of the switch belongs to the target.
pub mod side {
    pub const PREV: u32 = 1;
    pub const NEXT: u32 = 2;
    /// The previous thread blocked where it blocked before (same ip, sp
    /// and return addresses atop its stack): its stack is the one the
    /// reader got for that remembered wait (which one: [`same_way`];
    /// [`StackHeader::remembered`]), and no stack record follows. Was a
    /// record of its own.
    pub const SAME_STACK: u32 = 4;
    /// With [`SAME_STACK`]: which of the thread's remembered waits, in
    /// these two bits ([`super::WAIT_WAYS`] of them).
    pub const SAME_WAY_SHIFT: u32 = 3;
    pub const SAME_WAY_BITS: u32 = 3 << SAME_WAY_SHIFT;

    pub const fn same_way(ours: u32) -> u32 {
        (ours & SAME_WAY_BITS) >> SAME_WAY_SHIFT
    }
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
    /// Child processes the target started (fork without CLONE_THREAD): not
    /// followed, said at the end.
    pub const FORKS: u32 = 4;
    /// Switch-outs and wakings held for their thread's switch-in ([`super::Pending`]).
    pub const HELD: u32 = 5;
    /// Blocked switch-outs of a worker with its own loop's id set: parks,
    /// whose stacks were not looked at ([`super::WorkerLoop`]).
    pub const PARKS: u32 = 6;
    pub const COUNT: u32 = 7;
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
    /// A blocked stack the kernel remembers, as way 1 + N of its thread's
    /// waits: a later switch record may say "the same as" it
    /// ([`side::SAME_STACK`]); its [`WaitMask`] names it by `header.ts`.
    /// 0: not remembered (samples; an unreadable top).
    pub remembered: u32,
    /// Tokio's current task id on that thread (as in [`Switch::task_id`]).
    pub task_id: u64,
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
    /// Bytes copied at a blocked switch-out (≤ stack_bytes).
    pub blocked_stack_bytes: u32,
    pub _pad2: u32,
}

/// Which words atop a remembered wait's stack its unwinding read (bit i:
/// the 8 bytes at `sp + 8 i`): the return addresses (and saved frame
/// pointers) the frames were found by. A later wait at the same ip and sp
/// whose words there are equal unwinds to the same frames that far, so it
/// repeats the stack; other words (locals, stale return addresses of
/// calls long returned) may differ. Written by the recorder once it has
/// unwound the copy made at `copied_ts` (a seqcount: odd while written),
/// in a `BPF_F_MMAPABLE` array indexed by [`wait_mask_slot`]; until then
/// the kernel compares every word.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WaitMask {
    pub seq: u32,
    pub tid: u32,
    pub copied_ts: u64,
    pub words: u64,
}

/// Stack words a wait is compared on (512 bytes): two waits at the same
/// place in libc with the same stack pointer differ first in a return
/// address above the callees they share (`thread::sleep` and
/// `clock_nanosleep` take 120 bytes).
pub const WAIT_WORDS: usize = 64;
/// Remembered waits per thread: an idle Tokio worker parks on its condvar
/// and in epoll, and its tasks wait in a place or two more (on mini-redis
/// under load, two ways thrashed between four waits).
pub const WAIT_WAYS: u32 = 4;
pub const WAIT_MASK_SLOTS: u32 = PENDING_SLOTS * WAIT_WAYS;

pub const fn wait_mask_slot(tid: u32, way: u32) -> u32 {
    ((tid & PENDING_MASK) << 2) | (way & (WAIT_WAYS - 1))
}

/// A multi-thread worker's own loop id (Tokio runs each worker as a
/// blocking task, so outside its tasks' polls, parked or not, its current
/// task id is that one). Written by the recorder when a copied blocked
/// stack of `tid` with `id` set shows Tokio's park code, in a
/// `BPF_F_MMAPABLE` array indexed by `tid & PENDING_MASK` (a seqcount: odd
/// while written). A later blocked switch-out of `tid` with `id` set is a
/// park: its stack is neither checked nor copied.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerLoop {
    pub seq: u32,
    pub tid: u32,
    pub id: u64,
}

pub const WORKER_LOOP_SLOTS: u32 = PENDING_SLOTS;

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
    /// Tokio's current task id on the thread switching out (read from its
    /// `CONTEXT` thread-local), when it is ours and the field is known; 0
    /// otherwise (no task, not read).
    pub task_id: u64,
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
    /// The thread's name as it exits (names change after creation; the
    /// switch path does not watch for that, to stay cheap).
    pub comm: [u8; COMM_LEN],
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
    pub newtask_pid: u32,
    pub newtask_comm: u32,
    pub newtask_clone_flags: u32,
    pub _pad: u32,
}

/// Where the running kernel keeps what the BTF programs read, from its BTF
/// (`/sys/kernel/btf/vmlinux`): offsets into `task_struct`, and how to find
/// the per-CPU preempt count. A `.rodata` global: the verifier sees these as
/// constants, so the programs read `task_struct` fields directly.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelLayout {
    pub task_pid: u32,
    pub task_tgid: u32,
    /// `__state` (5.14+) or `state`: the low 32 bits are read either way.
    pub task_state: u32,
    /// `thread.fsbase`: the thread pointer, base of the thread-locals.
    pub task_fsbase: u32,
    /// 1 when `sched_switch` passes `prev_state` as an argument (5.18+):
    /// the state the scheduler acted on, which `__state` may no longer hold.
    pub switch_state_arg: u32,
    /// `task_struct.stack`: the base of the task's kernel stack.
    pub task_stack: u32,
    /// `THREAD_SIZE` (the size of `struct irq_stack`, the same on x86-64);
    /// 0 if unknown: then no waking names a waker.
    pub thread_size: u32,
    /// `task_struct.flags` (`PF_KTHREAD`).
    pub task_flags: u32,
}

/// Where Tokio's current task id lives in the target's thread-locals
/// (`tokio::runtime::context::CONTEXT`), a `.rodata` global.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskIdLayout {
    /// CONTEXT's address minus the thread pointer (negative: x86-64 puts
    /// the executable's TLS block just below it).
    pub context_from_fs: i64,
    /// Bytes of CONTEXT copied into [`ContextCopy`] records while the
    /// field's offset is still unknown (≤ [`CONTEXT_COPY_MAX`]); 0: no
    /// CONTEXT (not a Tokio binary with symbols): task ids stay 0.
    pub context_len: u32,
    pub _pad: u32,
}

/// `TASK_ID_FIELD` value that turns task ids off (the offset could not
/// be learned): neither read nor copy CONTEXT.
pub const TASK_IDS_OFF: u32 = u32::MAX;

/// Largest CONTEXT copy (tokio 1.54's CONTEXT is 80 bytes).
pub const CONTEXT_COPY_MAX: usize = 128;

/// While the task id's offset in CONTEXT is unknown, each switch-out and
/// sample of a target thread also sends the thread's CONTEXT bytes;
/// userspace finds the word that holds the polled task's id.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContextCopy {
    pub header: Header,
    pub tid: u32,
    pub len: u32,
    pub bytes: [u8; CONTEXT_COPY_MAX],
}

impl Default for ContextCopy {
    fn default() -> Self {
        ContextCopy { header: Header::default(), tid: 0, len: 0, bytes: [0; CONTEXT_COPY_MAX] }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all-integer #[repr(C)] structs with explicit padding fields.
    unsafe impl aya::Pod for super::FieldOffsets {}
    unsafe impl aya::Pod for super::KernelLayout {}
    unsafe impl aya::Pod for super::TaskIdLayout {}
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

/// Where a target thread's switch-out and waking wait to ride in its next
/// switch-in record ([`Resumed`]): one ring-buffer record per sleep instead
/// of three. Indexed by `tid & PENDING_MASK`; a half is held when its tag
/// is the thread's tid (0: empty). Userspace maps the array (no syscall)
/// to deliver halves held too long, and the rest at the end.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pending {
    /// Set after `out` is written, cleared before the switch-in record that
    /// carries it is submitted.
    pub out_tid: u32,
    /// Odd while `out` is being written (a seqcount for the mapped reader).
    pub out_seq: u32,
    pub waking_tid: u32,
    pub waking_seq: u32,
    pub out: Switch,
    pub waking: Waking,
}

/// 16384 slots (1.5 MB): a process's thread ids rarely differ by a
/// multiple of this; when two do, the second is sent at once.
pub const PENDING_MASK: u32 = (1 << 14) - 1;
pub const PENDING_SLOTS: u32 = PENDING_MASK + 1;

/// Which held halves a [`Resumed`] record carries.
pub mod resumed {
    pub const OUT: u32 = 1;
    pub const WAKING: u32 = 2;
}

/// A switch-in of a target thread with what was held for it: `out` (its
/// last switch-out) and `waking`, each present when its [`resumed`] bit is
/// set; then `switch`, this switch. Each part is a complete record of its
/// own kind, in time order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resumed {
    pub header: Header,
    pub present: u32,
    pub _pad: u32,
    pub out: Switch,
    pub waking: Waking,
    pub switch: Switch,
}

pub mod waking_flags {
    /// Woken from an interrupt handler, softirq or timer callback: then
    /// `current` is just whoever was interrupted, not the waker.
    pub const IN_INTERRUPT: u32 = 1;
}
