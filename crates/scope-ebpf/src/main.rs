//! Kernel side: follows the target's threads and reports their context
//! switches, wakings, samples and (optionally) task polls through one ring
//! buffer. Everything is filtered here by the target's tgid, read straight
//! from `task_struct` (BTF tracepoints): a context switch of another
//! process costs two loads and a compare, no map lookup.
#![no_std]
#![no_main]

mod exec;
mod held;
mod polls;
mod waker;
mod sched;
mod stacks;
mod task_id;

use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use scope_common::{FieldOffsets, Header, KernelLayout, counter};

/// Filled by userspace before load (`EbpfLoader::set_global`).
#[unsafe(no_mangle)]
static TARGET_TGID: u32 = 0;
#[unsafe(no_mangle)]
static OFFSETS: FieldOffsets = FieldOffsets { newtask_pid: 0, newtask_comm: 0, newtask_clone_flags: 0, _pad: 0 };
#[unsafe(no_mangle)]
static LAYOUT: KernelLayout = KernelLayout {
    task_pid: 0,
    task_tgid: 0,
    task_state: 0,
    task_fsbase: 0,
    switch_state_arg: 0,
    task_stack: 0,
    thread_size: 0,
    task_flags: 0,
};

#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

#[map]
pub(crate) static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[inline(always)]
pub(crate) fn offsets() -> FieldOffsets {
    // Volatile: the loader patches .rodata, the compiler must not fold the zeros.
    unsafe { core::ptr::read_volatile(&OFFSETS) }
}

#[inline(always)]
pub(crate) fn layout() -> KernelLayout {
    unsafe { core::ptr::read_volatile(&LAYOUT) }
}

#[inline(always)]
pub(crate) fn target_tgid() -> u32 {
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
/// `BPF_F_MMAPABLE`: maps the recorder maps into its memory, to read or
/// write them without a syscall (a map syscall while recording blinds our
/// programs on that CPU).
pub(crate) const MMAPABLE: u32 = 1 << 10;

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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
