//! User-stack copies: the thread's user registers plus the top of its stack,
//! unwound later in userspace from .eh_frame (release binaries have no frame
//! pointers, so bpf_get_stack sees one frame).

use crate::{EVENTS, bump, layout, wakeup_flags};
use aya_ebpf::{
    bindings::pt_regs,
    helpers::{
        bpf_get_current_task, bpf_get_current_task_btf, bpf_get_smp_processor_id, bpf_probe_read_kernel, bpf_task_pt_regs,
        generated::{bpf_probe_read_user, bpf_ringbuf_output},
    },
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray},
};
use scope_common::{Header, STACK_MAX, StackConfig, StackHeader, counter, kind, stack_reason};

#[unsafe(no_mangle)]
static STACK_CONFIG: StackConfig =
    StackConfig { stack_bytes: 0, _pad: 0, blocked_bytes_per_sec: 0, blocked_stack_bytes: 0, _pad2: 0 };

#[repr(C)]
pub struct Scratch {
    head: StackHeader,
    data: [u8; STACK_MAX],
}

/// Token bucket for blocked-switch copies, per CPU.
#[repr(C)]
pub struct Bucket {
    tokens: u64,
    last_ns: u64,
}

/// One slot per CPU (a per-CPU map cannot hold values over 32 KiB); sized
/// to the machine's CPU count by the loader.
#[map]
static SCRATCH: Array<Scratch> = Array::with_max_entries(1, 0);

#[map]
static BUDGET: PerCpuArray<Bucket> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub(crate) fn config() -> StackConfig {
    unsafe { core::ptr::read_volatile(&STACK_CONFIG) }
}

/// 1 when the kernel has `bpf_task_pt_regs` (5.15+) and
/// `bpf_get_current_task_btf` (5.11+); set by the loader from a probe of
/// the kernel. Frozen `.rodata`: the verifier knows the value and never
/// walks the branch this kernel cannot run (5.10 rejects a program that
/// names a helper it lacks, even on a path a runtime test would skip).
#[unsafe(no_mangle)]
static TASK_PT_REGS: u32 = 0;

/// Whether `bpf_get_current_task_btf` and `bpf_task_pt_regs` exist here.
#[inline(always)]
pub(crate) fn task_btf() -> bool {
    unsafe { core::ptr::read_volatile(&TASK_PT_REGS) != 0 }
}

/// x86-64 `__USER_CS`.
const USER_CS: u64 = 0x33;

/// The user-mode registers a stack copy and the waker test need.
#[derive(Clone, Copy)]
pub(crate) struct UserRegs {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    pub orig_ax: u64,
    pub ax: u64,
}

/// The user-mode registers saved when the thread entered the kernel (by
/// syscall or interrupt): valid whether the sample hit user or kernel code.
#[inline(always)]
pub(crate) fn user_regs() -> Option<UserRegs> {
    unsafe {
        if task_btf() {
            // A BTF pointer: five plain loads instead of copying all 168
            // bytes through a helper, on every blocked switch and waking.
            let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const pt_regs;
            return Some(UserRegs { ip: (*regs).rip, sp: (*regs).rsp, bp: (*regs).rbp, orig_ax: (*regs).orig_rax, ax: (*regs).rax });
        }
        // What the helper does on x86-64 (`task_pt_regs`, no FRED before
        // 5.15): the registers sit at the top of the thread's kernel stack.
        // Kept only if the saved code segment is the user one.
        let l = layout();
        if l.thread_size == 0 {
            return None;
        }
        let task = bpf_get_current_task() as *const u8;
        let stack: u64 = bpf_probe_read_kernel(task.wrapping_add(l.task_stack as usize) as *const u64).ok()?;
        let top = stack.wrapping_add(u64::from(l.thread_size) - size_of::<pt_regs>() as u64);
        let regs: pt_regs = bpf_probe_read_kernel(top as *const pt_regs).ok()?;
        (regs.cs == USER_CS).then_some(UserRegs { ip: regs.rip, sp: regs.rsp, bp: regs.rbp, orig_ax: regs.orig_rax, ax: regs.rax })
    }
}

/// Charges `bytes` to this CPU's budget; refills at the configured rate,
/// holding at most one second's worth.
#[inline(always)]
fn within_budget(now: u64, bytes: u64, rate: u64) -> bool {
    let Some(bucket) = BUDGET.get_ptr_mut(0) else { return false };
    let bucket = unsafe { &mut *bucket };
    let mut elapsed = now.wrapping_sub(bucket.last_ns);
    if elapsed > 1_000_000_000 {
        elapsed = 1_000_000_000;
    }
    bucket.last_ns = now;
    let mut tokens = bucket.tokens + elapsed * rate / 1_000_000_000;
    if tokens > rate {
        tokens = rate;
    }
    if tokens < bytes {
        bucket.tokens = tokens;
        return false;
    }
    bucket.tokens = tokens - bytes;
    true
}

/// What a thread's last blocked stack looked like: where it waited (ip,
/// sp), in which task, and the top of its stack (the caller's return
/// addresses are in it).
#[repr(C)]
pub struct LastBlocked {
    ip: u64,
    sp: u64,
    task_id: u64,
    top: [u64; TOP_WORDS],
}

const TOP_WORDS: usize = 8;

/// Per thread of the target (an LRU: threads come and go).
#[map]
static LAST_BLOCKED: LruHashMap<u32, LastBlocked> = LruHashMap::with_max_entries(4096, 0);

/// What to do with a blocked switch-out's stack, decided before its switch
/// record is written: a repeat of the thread's last blocked stack rides in
/// that record as a bit ([`scope_common::side::SAME_STACK`]) instead of a
/// record of its own.
pub enum Blocked {
    Nothing,
    Same,
    /// Copy it; `comparable`: its top was read, so `now` can be remembered.
    Copy { regs: UserRegs, now: LastBlocked, comparable: bool },
}

#[inline(always)]
pub fn plan_blocked(tid: u32, task_id: u64, ts: u64) -> Blocked {
    if config().blocked_stack_bytes == 0 {
        return Blocked::Nothing;
    }
    let Some(regs) = user_regs() else {
        bump(counter::STACKS_UNREADABLE);
        return Blocked::Nothing;
    };
    // A worker parks at the same place thousands of times a second: the
    // same ip, sp, task and top of stack as its last wait is the same
    // stack, so say so instead of copying it again.
    let mut now = LastBlocked { ip: regs.ip, sp: regs.sp, task_id, top: [0; TOP_WORDS] };
    let top_read = unsafe {
        bpf_probe_read_user(now.top.as_mut_ptr().cast(), (TOP_WORDS * 8) as u32, regs.sp as *const core::ffi::c_void)
    };
    if top_read == 0 {
        if let Some(last) = LAST_BLOCKED.get_ptr(tid) {
            let last = unsafe { &*last };
            if last.ip == now.ip && last.sp == now.sp && last.task_id == now.task_id && last.top == now.top {
                return Blocked::Same;
            }
        }
    }
    // Over budget, nothing is sent and the entry is left alone: it still
    // describes the last stack the reader got, which is what a later
    // "same as last" refers to. (Updating it and taking it back were two
    // hash-map writes per wait, on every wait once a busy server is over
    // budget: on mini-redis four waits in five were.) Decided here, before
    // the switch record: one without a stack after it can be held.
    let cfg = config();
    if !within_budget(ts, u64::from(cfg.blocked_stack_bytes), cfg.blocked_bytes_per_sec) {
        bump(counter::STACKS_OVER_BUDGET);
        return Blocked::Nothing;
    }
    Blocked::Copy { regs, now, comparable: top_read == 0 }
}

/// The copy [`plan_blocked`] asked for, after the switch record.
#[inline(always)]
pub fn copy_blocked(head: Header, tid: u32, task_id: u64, regs: &UserRegs, now: &LastBlocked, comparable: bool) {
    let cfg = config();
    if comparable {
        let _ = LAST_BLOCKED.insert(tid, now, 0);
    } else {
        // Not comparable: the next wait here must not pass for a repeat.
        let _ = LAST_BLOCKED.remove(tid);
    }
    if !copy_with(Header { kind: kind::STACK, ..head }, tid, stack_reason::BLOCKED, task_id, cfg.blocked_stack_bytes, regs) && comparable {
        // The reader did not get it (ring buffer full): a later repeat
        // would point at the stack before it.
        let _ = LAST_BLOCKED.remove(tid);
    }
}

/// Copies up to `want` bytes of the current thread's user stack.
pub fn copy(head: Header, tid: u32, reason: u32, task_id: u64, want: u32) {
    if want == 0 {
        return;
    }
    let Some(regs) = user_regs() else {
        bump(counter::STACKS_UNREADABLE);
        return;
    };
    copy_with(head, tid, reason, task_id, want, &regs);
}

/// False when nothing reached the ring buffer.
#[inline(always)]
fn copy_with(head: Header, tid: u32, reason: u32, task_id: u64, want: u32, regs: &UserRegs) -> bool {
    let Some(scratch) = SCRATCH.get_ptr_mut(unsafe { bpf_get_smp_processor_id() }) else { return false };
    let scratch = unsafe { &mut *scratch };
    let dst: *mut u8 = scratch.data.as_mut_ptr();
    let src = regs.sp as *const u8;
    // A read that crosses the end of the stack mapping fails whole. The
    // outermost frames (a main thread's `main`, `__libc_start_main`) sit
    // just below that end, so read greedily in halving blocks: the largest
    // that fits, then the rest of the way up in ever smaller ones, to
    // within 16 bytes of the end.
    let mut len: u32 = 0;
    macro_rules! attempt {
        ($size:expr) => {
            if len + $size <= want
                && (len as usize) + $size as usize <= STACK_MAX
                && unsafe { bpf_probe_read_user(dst.wrapping_add(len as usize).cast(), $size, src.wrapping_add(len as usize).cast()) } == 0
            {
                len += $size;
            }
        };
    }
    attempt!(32768);
    attempt!(16384);
    attempt!(8192);
    attempt!(4096);
    attempt!(2048);
    attempt!(1024);
    attempt!(512);
    attempt!(256);
    attempt!(128);
    attempt!(64);
    attempt!(32);
    attempt!(16);
    if len == 0 {
        bump(counter::STACKS_UNREADABLE);
        return false;
    }
    scratch.head = StackHeader {
        header: head,
        tid,
        reason,
        ip: regs.ip,
        sp: regs.sp,
        bp: regs.bp,
        len,
        _pad: 0,
        task_id,
    };
    let size = (size_of::<StackHeader>() as u64) + u64::from(len);
    let size = if size > size_of::<Scratch>() as u64 { size_of::<Scratch>() as u64 } else { size };
    let rc = unsafe {
        bpf_ringbuf_output(
            &EVENTS as *const _ as *mut core::ffi::c_void,
            (scratch as *mut Scratch).cast(),
            size,
            wakeup_flags(),
        )
    };
    if rc != 0 {
        bump(counter::RINGBUF_DROPS);
    }
    rc == 0
}
