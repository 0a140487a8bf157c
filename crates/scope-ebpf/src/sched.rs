//! Scheduler events of the target's threads. `sched_switch` and
//! `sched_waking` fire for every thread of the machine, so they are BTF
//! tracepoints that check the tgid in `task_struct` first: no map lookup,
//! no trace record assembled, and their own recursion guard (a classic
//! tracepoint program is skipped on a CPU where any other BPF program or a
//! `bpf()` map syscall is active; see docs/design-notes.md).

use crate::{bump, emit, header, held, layout, offsets, stacks, stacks::Blocked, target_tgid, task_id};
use aya_ebpf::{
    EbpfContext,
    helpers::bpf_get_current_comm,
    macros::{btf_tracepoint, perf_event, tracepoint},
    programs::{BtfTracePointContext, PerfEventContext, TracePointContext},
};
use scope_common::{COMM_LEN, Exit, NewThread, Switch, Waking, counter, kind, side, stack_reason, waking_flags};

const CLONE_THREAD: u64 = 0x0001_0000;
/// `TASK_REPORT_MAX`: what the tracepoint reports for a preempted task.
const PREEMPTED: u64 = 0x100;
const TASK_REPORT: u32 = 0x7f;
/// `TASK_IDLE` (uninterruptible + noload) is reported as `TASK_REPORT_IDLE`.
const TASK_IDLE: u32 = 0x402;
const TASK_REPORT_IDLE: u64 = 0x80;

/// A `u32` field of a `task_struct` the kernel handed us. The offset comes
/// from frozen `.rodata`, so the verifier checks it against BTF as a
/// constant: a plain load, no helper call.
#[inline(always)]
fn task_u32(task: *const u8, offset: u32) -> u32 {
    unsafe { *(task.wrapping_add(offset as usize) as *const u32) }
}

/// `prev_state` as the classic tracepoint reports it: the preemption bit,
/// or the one state bit that `__trace_sched_switch_state` keeps.
#[inline(always)]
fn reported_state(preempt: bool, state: u32) -> u64 {
    if preempt {
        return PREEMPTED;
    }
    if state == TASK_IDLE {
        return TASK_REPORT_IDLE;
    }
    let s = state & TASK_REPORT;
    if s == 0 {
        return 0;
    }
    // Highest set bit (fls - 1), unrolled for the verifier.
    let mut bit = 0x40u32;
    while bit > 1 && s & bit == 0 {
        bit >>= 1;
    }
    u64::from(bit)
}

/// `sched_switch(bool preempt, task_struct *prev, task_struct *next[, unsigned int prev_state])`.
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> i32 {
    switch::<false>(&ctx)
}

/// [`sched_switch`] that also copies each wait it finds repeated (within
/// the budget) for the recorder to check the repeat against
/// (`RUNTIME_SCOPE_CHECK_REPEATS`). A program of its own, loaded instead:
/// with that path in it, 5.10's verifier gave up on `sched_switch`.
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch_check(ctx: BtfTracePointContext) -> i32 {
    switch::<true>(&ctx)
}

#[inline(always)]
fn switch<const CHECK: bool>(ctx: &BtfTracePointContext) -> i32 {
    let l = layout();
    let tgid = target_tgid();
    let prev: *const u8 = ctx.arg(1);
    let next: *const u8 = ctx.arg(2);
    let mut ours = 0;
    if task_u32(prev, l.task_tgid) == tgid {
        ours |= side::PREV;
    }
    if task_u32(next, l.task_tgid) == tgid {
        ours |= side::NEXT;
    }
    if ours == 0 {
        return 0;
    }
    let preempt: u64 = ctx.arg(0);
    let state = if l.switch_state_arg != 0 { ctx.arg::<u64>(3) as u32 } else { task_u32(prev, l.task_state) };
    let prev_state = reported_state(preempt & 1 != 0, state);
    let prev_tid = task_u32(prev, l.task_pid);
    let head = header(kind::SWITCH);
    // `prev` is the running thread here: its own memory can be read.
    // `prev` is a BTF pointer: its thread pointer is a plain load.
    let task_id = if ours & side::PREV != 0 {
        let fsbase = unsafe { *(prev.wrapping_add(l.task_fsbase as usize) as *const u64) };
        task_id::current(fsbase, head, prev_tid)
    } else {
        0
    };
    // Sleeping (S) or in uninterruptible wait (D): where it waits is the
    // question a blocked worker raises, so its stack is copied (within
    // budget), or marked in this record as the same as its last wait's.
    // A worker parking with its own loop's id set: where it parks is
    // Tokio's park code (the recorder saw it there with this id), so its
    // stack is not looked at; its switch record carries the id.
    let blocked = if ours & side::PREV != 0 && prev_state & 0x3 != 0 {
        if task_id::is_worker_loop(prev_tid, task_id) {
            bump(counter::PARKS);
            Blocked::Nothing
        } else {
            stacks::plan_blocked::<CHECK>(prev_tid, head.ts)
        }
    } else {
        Blocked::Nothing
    };
    if let Blocked::Same { way } | Blocked::Copy { way: Some(way), check: true, .. } = blocked {
        ours |= side::SAME_STACK | ((way << side::SAME_WAY_SHIFT) & side::SAME_WAY_BITS);
    }
    let next_tid = task_u32(next, l.task_pid);
    let record = Switch {
        header: head,
        prev_tid,
        next_tid,
        prev_state,
        ours,
        cpu_lost: crate::COUNTERS.get(scope_common::counter::RINGBUF_DROPS).map_or(0, |n| *n as u32),
        task_id,
    };
    // A copied stack follows its switch record: that one is never held.
    let copy = matches!(blocked, Blocked::Copy { .. });
    if ours & side::NEXT != 0 {
        if ours & side::PREV != 0 {
            // One record carries both sides: a switch-out still held for
            // the previous thread goes first.
            held::switch_out(prev_tid, &record, false);
        }
        held::send_switch_in(next_tid, &record);
    } else if !held::switch_out(prev_tid, &record, !copy) {
        emit(record);
    }
    if let Blocked::Copy { regs, way, check } = &blocked {
        stacks::copy_blocked(head, prev_tid, task_id, regs, *way, CHECK && *check);
    }
    0
}

/// `sched_waking(task_struct *p)` runs in the waker's context: the wakee is
/// the argument, the waker is `current` (unless in an interrupt).
#[btf_tracepoint(function = "sched_waking")]
pub fn sched_waking(ctx: BtfTracePointContext) -> i32 {
    let l = layout();
    let wakee: *const u8 = ctx.arg(0);
    if task_u32(wakee, l.task_tgid) != target_tgid() {
        return 0;
    }
    let flags = if crate::waker::no_waker(ctx.as_ptr()) { waking_flags::IN_INTERRUPT } else { 0 };
    let tid = task_u32(wakee, l.task_pid);
    let record = Waking { header: header(kind::WAKING), tid, waker_tid: ctx.pid(), waker_pid: ctx.tgid(), flags };
    if !held::hold_waking(tid, &record) {
        emit(record);
    }
    0
}

/// cpu-clock samples on every CPU; only the target's threads are kept.
#[perf_event]
pub fn sample_stack(ctx: PerfEventContext) -> u32 {
    if ctx.tgid() == target_tgid() {
        let head = header(kind::STACK);
        let tid = ctx.pid();
        let task_id = stacks::current_fsbase().map_or(0, |fsbase| task_id::current(fsbase, head, tid));
        stacks::copy(head, tid, stack_reason::SAMPLE, task_id, stacks::config().stack_bytes);
    }
    0
}

/// `task:task_newtask` runs in the parent before the child can be scheduled,
/// so a new thread's first switch-in is never missed (unlike
/// `sched_process_fork`, it also tells threads from processes: clone_flags).
/// Rare, so a classic tracepoint (field offsets from tracefs).
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
        // A child process: not followed, but counted so the user is told.
        bump(counter::FORKS);
        return Ok(());
    }
    let tid: u32 = unsafe { ctx.read_at(off.newtask_pid as usize)? };
    let comm: [u8; COMM_LEN] = unsafe { ctx.read_at(off.newtask_comm as usize)? };
    emit(NewThread { header: header(kind::NEW_THREAD), tid, parent_tid: ctx.pid(), comm });
    Ok(())
}

/// Runs in the exiting thread itself; carries its final name (threads are
/// named after creation, and nothing on the switch path watches names).
#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    if ctx.tgid() == target_tgid() {
        let comm = bpf_get_current_comm().unwrap_or([0; COMM_LEN]);
        emit(Exit { header: header(kind::EXIT), tid: ctx.pid(), _pad: 0, comm });
    }
    0
}
