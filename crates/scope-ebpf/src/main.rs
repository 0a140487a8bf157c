//! Kernel side: follows the target's threads and reports their context
//! switches through one ring buffer. Everything is filtered here, so an idle
//! target costs a hash lookup per context switch and nothing else.
#![no_std]
#![no_main]

mod irq;
mod polls;
mod stacks;

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::{map, perf_event, tracepoint},
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::{PerfEventContext, TracePointContext},
};
use scope_common::{
    COMM_LEN, Comm, Exit, FieldOffsets, Header, MAX_THREADS, NewThread, Switch, Waking, counter, kind, waking_flags,
    side, stack_reason,
};

const CLONE_THREAD: u64 = 0x0001_0000;

/// Filled by userspace before load (`EbpfLoader::set_global`).
#[unsafe(no_mangle)]
static TARGET_TGID: u32 = 0;
#[unsafe(no_mangle)]
static OFFSETS: FieldOffsets = FieldOffsets {
    switch_prev_comm: 0,
    switch_prev_pid: 0,
    switch_prev_state: 0,
    switch_next_pid: 0,
    newtask_pid: 0,
    newtask_comm: 0,
    newtask_clone_flags: 0,
    waking_pid: 0,
    _pad: 0,
};

/// Per target thread: the name we last reported, to emit `Comm` on change only.
#[repr(C)]
pub(crate) struct ThreadState {
    comm: [u64; 2],
}

#[map]
pub(crate) static THREADS: HashMap<u32, ThreadState> = HashMap::with_max_entries(MAX_THREADS, 0);

#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

#[map]
pub(crate) static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[inline(always)]
fn offsets() -> FieldOffsets {
    // Volatile: the loader patches .rodata, the compiler must not fold the zeros.
    unsafe { core::ptr::read_volatile(&OFFSETS) }
}

#[inline(always)]
fn target_tgid() -> u32 {
    unsafe { core::ptr::read_volatile(&TARGET_TGID) }
}

#[inline(always)]
pub(crate) fn bump(index: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(index) {
        unsafe { *p += 1 };
    }
}

#[inline(always)]
pub(crate) fn header(kind: u32) -> Header {
    Header {
        kind,
        cpu: unsafe { bpf_get_smp_processor_id() },
        ts: unsafe { bpf_ktime_get_ns() },
    }
}

/// Wake the reader only when this much is waiting. Waking it on every record
/// makes it preempt the target on every record, which makes more records: a
/// feedback loop (seen: 70k spurious preemptions/s on 2 CPUs). The reader
/// also polls on a short timeout, so small amounts are never stranded.
const WAKEUP_BYTES: u64 = 1024 * 1024;
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

#[inline(always)]
pub(crate) fn wakeup_flags() -> u64 {
    if EVENTS.query(BPF_RB_AVAIL_DATA) >= WAKEUP_BYTES { BPF_RB_FORCE_WAKEUP } else { BPF_RB_NO_WAKEUP }
}

#[inline(always)]
pub(crate) fn emit<T: 'static>(record: T) {
    if EVENTS.output::<T>(&record, wakeup_flags()).is_err() {
        bump(counter::RINGBUF_DROPS);
    }
}

#[tracepoint]
pub fn sched_switch(ctx: TracePointContext) -> u32 {
    irq::in_task_context();
    let _ = on_switch(&ctx);
    0
}

fn on_switch(ctx: &TracePointContext) -> Result<(), i32> {
    let off = offsets();
    let prev_tid: u32 = unsafe { ctx.read_at(off.switch_prev_pid as usize)? };
    let next_tid: u32 = unsafe { ctx.read_at(off.switch_next_pid as usize)? };
    let prev = THREADS.get_ptr_mut(prev_tid);
    let mut ours = 0;
    if prev.is_some() {
        ours |= side::PREV;
    }
    if THREADS.get_ptr(next_tid).is_some() {
        ours |= side::NEXT;
    }
    if ours == 0 {
        return Ok(());
    }
    if let Some(state) = prev {
        // Thread names are set after creation (pthread_setname_np); the
        // switch-out is where we see them change without polling /proc.
        let comm: [u64; 2] = unsafe { ctx.read_at(off.switch_prev_comm as usize)? };
        let state = unsafe { &mut *state };
        if state.comm != comm {
            state.comm = comm;
            emit(Comm {
                header: header(kind::COMM),
                tid: prev_tid,
                _pad: 0,
                comm: unsafe { core::mem::transmute::<[u64; 2], [u8; COMM_LEN]>(comm) },
            });
        }
    }
    let prev_state: u64 = unsafe { ctx.read_at(off.switch_prev_state as usize)? };
    let head = header(kind::SWITCH);
    emit(Switch {
        header: head,
        prev_tid,
        next_tid,
        prev_state,
        ours,
        cpu_lost: COUNTERS.get(counter::RINGBUF_DROPS).map_or(0, |n| *n as u32),
    });
    // Sleeping (S) or in uninterruptible wait (D): where it waits is the
    // question a blocked worker raises, so copy its stack (within budget).
    if ours & side::PREV != 0 && prev_state & 0x3 != 0 {
        stacks::copy_blocked(head, prev_tid);
    }
    Ok(())
}

/// cpu-clock samples on every CPU; only the target's threads are kept.
#[perf_event]
pub fn sample_stack(ctx: PerfEventContext) -> u32 {
    let tid = ctx.pid();
    if THREADS.get_ptr(tid).is_some() {
        stacks::copy(header(kind::STACK), tid, stack_reason::SAMPLE);
    }
    0
}

/// `task:task_newtask` runs in the parent before the child can be scheduled,
/// so a new thread's first switch-in is never missed (unlike
/// `sched_process_fork`, it also tells threads from processes: clone_flags).
#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    let _ = on_newtask(&ctx);
    0
}

fn on_newtask(ctx: &TracePointContext) -> Result<(), i32> {
    if ctx.tgid() != target_tgid() {
        return Ok(());
    }
    let off = offsets();
    let flags: u64 = unsafe { ctx.read_at(off.newtask_clone_flags as usize)? };
    if flags & CLONE_THREAD == 0 {
        return Ok(());
    }
    let tid: u32 = unsafe { ctx.read_at(off.newtask_pid as usize)? };
    let comm: [u64; 2] = unsafe { ctx.read_at(off.newtask_comm as usize)? };
    if THREADS.insert(tid, ThreadState { comm }, 0).is_err() {
        bump(counter::FILTER_FULL);
        return Ok(());
    }
    emit(NewThread {
        header: header(kind::NEW_THREAD),
        tid,
        parent_tid: ctx.pid(),
        comm: unsafe { core::mem::transmute::<[u64; 2], [u8; COMM_LEN]>(comm) },
    });
    Ok(())
}

/// Who wakes a target thread: the wakee's tid is a field, the waker is the
/// current task (`sched_waking` runs in the waker's context).
#[tracepoint]
pub fn sched_waking(ctx: TracePointContext) -> u32 {
    let Ok(tid) = (unsafe { ctx.read_at::<u32>(offsets().waking_pid as usize) }) else { return 0 };
    if THREADS.get_ptr(tid).is_none() {
        return 0;
    }
    let flags = if irq::in_interrupt() { waking_flags::IN_INTERRUPT } else { 0 };
    emit(Waking { header: header(kind::WAKING), tid, waker_tid: ctx.pid(), waker_pid: ctx.tgid(), flags });
    0
}

/// Runs in the exiting thread itself.
#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let tid = ctx.pid();
    if THREADS.remove(tid).is_ok() {
        emit(Exit {
            header: header(kind::EXIT),
            tid,
            _pad: 0,
        });
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
