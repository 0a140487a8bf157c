//! Task polls: a uprobe on each `tokio::runtime::task::raw::poll` instance
//! (it sits in the task vtable, so it is never inlined) and a uretprobe for
//! its return. Only the target's threads are reported.

use crate::{emit, header};
use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_attach_cookie, bpf_probe_read_user},
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use scope_common::{PollEnter, PollExit, TaskSpawn, TaskWake, WorkerRun, kind};

/// The running thread's id. The uprobes are attached for the target
/// process only, so every thread that hits one is the target's.
#[inline(always)]
fn followed(ctx: &impl EbpfContext) -> Option<u32> {
    Some(ctx.pid())
}

/// 1 when the kernel passes uprobe cookies (5.15+); set by the loader in
/// frozen `.rodata`, so the verifier sees a constant.
#[unsafe(no_mangle)]
static UPROBE_COOKIES: u32 = 0;

#[uprobe]
pub fn poll_enter(ctx: ProbeContext) -> u32 {
    let Some(tid) = followed(&ctx) else { return 0 };
    let task: u64 = ctx.arg(0).unwrap_or(0);
    // At a uprobe, rip is the probed instruction: the instance's entry.
    let fn_avma = unsafe { (*ctx.regs).rip };
    // Uprobe handlers run before the return address is hijacked.
    let sp = unsafe { (*ctx.regs).rsp } as *const u64;
    let ret_addr = unsafe { bpf_probe_read_user(sp) }.unwrap_or(0);
    // The cookie is this instance's `id_offset` (validated from its vtable
    // in the binary), 0 when unknown: then no read, no guess. Kernels before
    // 5.15 have no cookies (and reject the helper's mere presence): there
    // the branch is dead code to the verifier and no id is read.
    let have_cookies = unsafe { core::ptr::read_volatile(&UPROBE_COOKIES) };
    let id_offset = if have_cookies != 0 { unsafe { bpf_get_attach_cookie(ctx.as_ptr()) } } else { 0 };
    let task_id = if id_offset == 0 {
        0
    } else {
        unsafe { bpf_probe_read_user((task + id_offset) as *const u64) }.unwrap_or(0)
    };
    emit(PollEnter { header: header(kind::POLL_ENTER), tid, _pad: 0, task, fn_avma, ret_addr, task_id, outer_id: crate::task_id::outer() });
    0
}

#[uretprobe]
pub fn poll_exit(ctx: RetProbeContext) -> u32 {
    let Some(tid) = followed(&ctx) else { return 0 };
    emit(PollExit { header: header(kind::POLL_EXIT), tid, _pad: 0 });
    0
}

/// `OwnedTasks::bind_inner(&self, task: Task<S>, notified)`: the new task's
/// header pointer is the second argument.
#[uprobe]
pub fn task_spawn(ctx: ProbeContext) -> u32 {
    let Some(tid) = followed(&ctx) else { return 0 };
    let task: u64 = ctx.arg(1).unwrap_or(0);
    emit(TaskSpawn { header: header(kind::TASK_SPAWN), tid, _pad: 0, task });
    0
}

/// `waker::wake_by_val(ptr)` / `wake_by_ref(ptr)`: the raw waker data is the
/// woken task's header pointer (non-generic since tokio 1.23, so one
/// instance each, reached through the waker vtable: never inlined).
#[uprobe]
pub fn task_wake(ctx: ProbeContext) -> u32 {
    let Some(tid) = followed(&ctx) else { return 0 };
    let task: u64 = ctx.arg(0).unwrap_or(0);
    emit(TaskWake { header: header(kind::TASK_WAKE), tid, _pad: 0, task });
    0
}

/// Offsets in `ArcInner<multi_thread::worker::Worker>` (tokio 1.2x–1.54):
/// `Worker { handle: Arc<Handle>, index: usize, .. }` after the two counts.
/// Userspace validates what this reads (small, distinct indices).
const WORKER_HANDLE: usize = 0x10;
const WORKER_INDEX: usize = 0x18;

/// `worker::run(worker: Arc<Worker>)`: this thread becomes worker `index`.
#[uprobe]
pub fn worker_run(ctx: ProbeContext) -> u32 {
    let Some(tid) = followed(&ctx) else { return 0 };
    let worker: u64 = ctx.arg(0).unwrap_or(0);
    let read = |offset: usize| unsafe { bpf_probe_read_user((worker as usize + offset) as *const u64) }.unwrap_or(u64::MAX);
    emit(WorkerRun { header: header(kind::WORKER_RUN), tid, _pad: 0, index: read(WORKER_INDEX), runtime: read(WORKER_HANDLE) });
    0
}

/// `CurrentThread::take_core(&self, handle: &Arc<Handle>) -> Option<CoreGuard>`:
/// the thread in `block_on` takes the runtime's core and polls its tasks
/// from now on. The large return value goes through a hidden first
/// argument, so `handle` is the third; `*handle` (the `Arc`'s pointer) names
/// the runtime as `Worker.handle` does for multi-thread ones. Userspace
/// checks the reads look like pointers.
#[uprobe]
pub fn current_thread(ctx: ProbeContext) -> u32 {
    let Some(tid) = followed(&ctx) else { return 0 };
    let handle: u64 = ctx.arg(2).unwrap_or(0);
    let runtime = unsafe { bpf_probe_read_user(handle as *const u64) }.unwrap_or(u64::MAX);
    emit(WorkerRun { header: header(kind::CURRENT_THREAD), tid, _pad: 0, index: 0, runtime });
    0
}
