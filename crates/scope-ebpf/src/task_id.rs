//! Which Tokio task a thread is running, without a probe per poll: Tokio
//! keeps the current task's id in its `CONTEXT` thread-local around every
//! poll (`TaskIdGuard`), at a fixed offset from the thread pointer
//! (`task_struct.thread.fsbase`). Read at switch-outs and samples, in the
//! thread's own context. The id's offset inside CONTEXT comes from DWARF or
//! is learned by userspace from [`ContextCopy`] records (sent while
//! `TASK_ID_FIELD` is still 0) during a short window of exact polls.

use crate::{EVENTS, MMAPABLE, bump, wakeup_flags};
use aya_ebpf::{
    helpers::{bpf_probe_read_user, generated},
    macros::map,
    maps::Array,
};
use scope_common::{CONTEXT_COPY_MAX, ContextCopy, Header, PENDING_MASK, TASK_IDS_OFF, TaskIdLayout, WORKER_LOOP_SLOTS, WorkerLoop, counter, kind};

#[unsafe(no_mangle)]
static TASK_IDS: TaskIdLayout = TaskIdLayout { context_from_fs: 0, context_len: 0, _pad: 0 };

/// The task id's offset in CONTEXT plus one; 0 while unknown. Set by
/// userspace (a map, not `.rodata`: it may be learned while recording).
#[map]
pub(crate) static TASK_ID_FIELD: Array<u32> = Array::with_max_entries(1, 0);

/// Each worker's own loop id, as the recorder learned it ([`WorkerLoop`]).
#[map]
static WORKER_LOOPS: Array<WorkerLoop> = Array::with_max_entries(WORKER_LOOP_SLOTS, MMAPABLE);

/// Whether `id`, read at a blocked switch-out of `tid`, is that worker's own
/// loop id: the worker parks (a stack-less read of a few words).
#[inline(always)]
pub(crate) fn is_worker_loop(tid: u32, id: u64) -> bool {
    if id == 0 {
        return false;
    }
    let Some(slot) = WORKER_LOOPS.get_ptr(tid & PENDING_MASK) else { return false };
    unsafe {
        let seq = core::ptr::read_volatile(&(*slot).seq);
        let (owner, own_id) = (core::ptr::read_volatile(&(*slot).tid), core::ptr::read_volatile(&(*slot).id));
        seq & 1 == 0 && core::ptr::read_volatile(&(*slot).seq) == seq && owner == tid && own_id == id
    }
}

/// 1: poll entries read the id they are entered under (set by userspace
/// once poll returns are no longer probed: `--polls starts`).
#[map]
pub(crate) static POLL_NESTING: Array<u32> = Array::with_max_entries(1, 0);

/// The word at `field` (offset + 1, from `TASK_ID_FIELD`) in the
/// thread's CONTEXT, which starts at `context`.
#[inline(always)]
fn read_id(context: u64, field: u32) -> u64 {
    unsafe { bpf_probe_read_user(context.wrapping_add(u64::from(field - 1)) as *const u64) }.unwrap_or(0)
}

/// Tokio's current task id on this thread, where the id's place is known
/// (0 otherwise, and before `POLL_NESTING` is set): read at a poll's
/// entry, it names the task whose poll this one is nested in, if any.
#[inline(always)]
pub(crate) fn outer() -> u64 {
    if POLL_NESTING.get(0).copied().unwrap_or(0) == 0 {
        return 0;
    }
    let field = TASK_ID_FIELD.get(0).copied().unwrap_or(0);
    if field == 0 || field == TASK_IDS_OFF {
        return 0;
    }
    let cfg = unsafe { core::ptr::read_volatile(&TASK_IDS) };
    let Some(fsbase) = crate::stacks::current_fsbase() else { return 0 };
    read_id(fsbase.wrapping_add(cfg.context_from_fs as u64), field)
}

/// The current thread's Tokio task id (0: none, unknown or unreadable).
/// While the offset is unknown, sends the thread's CONTEXT bytes instead.
/// `fsbase` is the current thread's thread pointer
/// (`task_struct.thread.fsbase`).
#[inline(always)]
pub(crate) fn current(fsbase: u64, head: Header, tid: u32) -> u64 {
    let cfg = unsafe { core::ptr::read_volatile(&TASK_IDS) };
    if cfg.context_len == 0 {
        return 0;
    }
    let field = TASK_ID_FIELD.get(0).copied().unwrap_or(0);
    if field == TASK_IDS_OFF {
        return 0;
    }
    let context = fsbase.wrapping_add(cfg.context_from_fs as u64);
    if field != 0 {
        return read_id(context, field);
    }
    let Some(mut entry) = EVENTS.reserve::<ContextCopy>(0) else {
        bump(counter::RINGBUF_DROPS);
        return 0;
    };
    let copy = entry.as_mut_ptr();
    let rc = unsafe {
        (*copy).header = Header { kind: kind::CONTEXT_COPY, ..head };
        (*copy).tid = tid;
        (*copy).len = cfg.context_len;
        generated::bpf_probe_read_user((*copy).bytes.as_mut_ptr().cast(), CONTEXT_COPY_MAX as u32, context as *const _)
    };
    if rc == 0 {
        entry.submit(wakeup_flags());
    } else {
        entry.discard(0);
    }
    0
}
