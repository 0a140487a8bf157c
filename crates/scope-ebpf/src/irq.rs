//! Interrupt context per CPU. A waking that happens inside an interrupt
//! handler, a softirq or a timer callback has no waker: `current` is only
//! whoever was interrupted. Tracepoint programs cannot read preempt_count
//! (the record's common fields are overwritten for BPF), so the entry and
//! exit tracepoints of those contexts keep a per-CPU depth instead. They
//! fire system-wide on every interrupt, so they are raw tracepoints: no
//! trace record is built for them (measured cheaper, see design notes).

use aya_ebpf::{macros::{map, raw_tracepoint}, maps::PerCpuArray, programs::RawTracePointContext};

#[map]
static IRQ_DEPTH: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Attached to irq_handler_entry, softirq_entry and hrtimer_expire_entry.
#[raw_tracepoint]
pub fn irq_enter(_ctx: RawTracePointContext) -> i32 {
    if let Some(depth) = IRQ_DEPTH.get_ptr_mut(0) {
        unsafe { *depth += 1 };
    }
    0
}

/// Attached to the matching exits (attached first, so no exit is missed
/// after its entry was counted).
#[raw_tracepoint]
pub fn irq_leave(_ctx: RawTracePointContext) -> i32 {
    if let Some(depth) = IRQ_DEPTH.get_ptr_mut(0) {
        unsafe { *depth = (*depth).saturating_sub(1) };
    }
    0
}

#[inline(always)]
pub(crate) fn in_interrupt() -> bool {
    IRQ_DEPTH.get(0).is_some_and(|d| *d > 0)
}

/// The scheduler never runs in interrupt context, so at a context switch the
/// depth is 0. Resetting it there heals a count left over by an exit the
/// kernel skipped (a program is not re-entered on a CPU: an interrupt
/// arriving while irq_leave runs goes uncounted; seen about once a second).
#[inline(always)]
pub(crate) fn in_task_context() {
    if let Some(depth) = IRQ_DEPTH.get_ptr_mut(0) {
        unsafe { *depth = 0 };
    }
}
