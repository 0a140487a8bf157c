//! Whether a waking has a waker. Inside an interrupt handler, a softirq or
//! a timer callback `current` is only whoever was interrupted (the demo's
//! 40 ms sleeps were "woken" by threads of five unrelated processes before
//! this check), so such wakings must name no thread.
//!
//! The kernel's own test, its per-CPU preempt count, is out of reach: only
//! a `__ksym` can name a per-CPU variable, which needs the kernel to list
//! data symbols (this machine's lacks CONFIG_KALLSYMS_ALL) and aya to
//! resolve externs (0.14 cannot). The six tracepoint programs that kept an
//! interrupt depth per CPU cost every interrupt of the machine (about
//! 250 ns per request on a loaded server). Instead, at the waking itself:
//!
//! - an interrupt that arrives in kernel mode runs on a per-CPU interrupt
//!   stack: the program's frame (`ctx`, the tracepoint's argument array on
//!   the stack of the context that fired it) lies outside `current`'s
//!   kernel stack;
//! - one that arrives in user mode stays on the task's stack (x86-64 does
//!   not switch then), but the task is then not in a system call: the
//!   registers saved at kernel entry do not show one in progress
//!   (`orig_ax` ≥ 0 and the return slot `ax` still holding the `-ENOSYS`
//!   the syscall entry put there);
//! - a kernel thread has no user registers: on its own stack it is the waker.
//!
//! What is not provably a thread's own doing (an exception, a system call's
//! exit work) is left without a waker too: unnamed, never misnamed.

use crate::layout;
use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_get_current_task_btf, bpf_probe_read_kernel},
    macros::map,
    maps::PerCpuArray,
};

const PF_KTHREAD: u32 = 0x0020_0000;
const ENOSYS: i64 = 38;

/// A pointer stored to a map reads back as a plain number: the verifier
/// forbids arithmetic between a pointer and an unbounded number, and a
/// kernel stack address is one.
#[map]
static FRAME: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// True when the thread running now cannot be named as the waker.
#[inline(always)]
pub(crate) fn no_waker(frame: *const core::ffi::c_void) -> bool {
    let l = layout();
    let Some(slot) = FRAME.get_ptr_mut(0) else { return true };
    let here = unsafe {
        core::ptr::write_volatile(slot, frame as u64);
        core::ptr::read_volatile(slot)
    };
    let (stack, flags) = if crate::stacks::task_btf() {
        // A BTF pointer: plain loads, no helper calls.
        let task = unsafe { bpf_get_current_task_btf() } as *const u8;
        unsafe { (*(task.wrapping_add(l.task_stack as usize) as *const u64), *(task.wrapping_add(l.task_flags as usize) as *const u32)) }
    } else {
        let task = unsafe { bpf_get_current_task() } as *const u8;
        let read = |offset: u32| unsafe { bpf_probe_read_kernel(task.wrapping_add(offset as usize) as *const u64) };
        let Ok(stack) = read(l.task_stack) else { return true };
        let Ok(flags) = read(l.task_flags) else { return true };
        (stack, flags as u32)
    };
    if l.thread_size == 0 || here.wrapping_sub(stack) >= u64::from(l.thread_size) {
        return true;
    }
    if flags & PF_KTHREAD != 0 {
        return false;
    }
    let Some(regs) = crate::stacks::user_regs() else { return true };
    !(regs.orig_ax as i64 >= 0 && regs.ax as i64 == -ENOSYS)
}
