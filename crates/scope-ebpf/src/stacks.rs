//! User-stack copies: the thread's user registers plus the top of its stack,
//! unwound later in userspace from .eh_frame (release binaries have no frame
//! pointers, so bpf_get_stack sees one frame).

use crate::{EVENTS, MMAPABLE, bump, layout, wakeup_flags};
use aya_ebpf::{
    bindings::pt_regs,
    helpers::{
        bpf_get_current_task, bpf_get_current_task_btf, bpf_get_smp_processor_id, bpf_probe_read_kernel, bpf_task_pt_regs,
        generated::{bpf_probe_read_user, bpf_ringbuf_output},
    },
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray},
};
use scope_common::{Header, STACK_MAX, WAIT_MASK_SLOTS, WAIT_WAYS, WAIT_WORDS, WaitMask, wait_mask_slot, StackConfig, StackHeader, counter, kind, stack_reason};

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

/// The running thread's fs base (its thread pointer): where its
/// thread-locals are found.
#[inline(always)]
pub(crate) fn current_fsbase() -> Option<u64> {
    let offset = layout().task_fsbase as usize;
    if task_btf() {
        let task = unsafe { bpf_get_current_task_btf() } as *const u8;
        Some(unsafe { *(task.wrapping_add(offset) as *const u64) })
    } else {
        // Before 5.11 there is no typed pointer: through the untyped one.
        let task = unsafe { bpf_get_current_task() } as *const u8;
        unsafe { bpf_probe_read_kernel(task.wrapping_add(offset) as *const u64) }.ok()
    }
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

/// One of a thread's remembered waits: where it waited (ip, sp) and the
/// top of its stack (the callers' return addresses are in it). Not the
/// task: its switch record carries that, and tasks of one kind waiting at
/// one place have the same stack.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LastBlocked {
    ip: u64,
    sp: u64,
    /// When it was copied: which [`WaitMask`] describes it.
    copied_ts: u64,
    /// When it was copied or last repeated: the least recent is replaced.
    used_ts: u64,
    top: [u64; TOP_WORDS],
}

const TOP_WORDS: usize = WAIT_WORDS;

/// The wait being looked at (too large for sched_switch's stack).
#[map]
static NOW: PerCpuArray<LastBlocked> = PerCpuArray::with_max_entries(1, 0);

/// A thread's last waits at distinct places ([`WAIT_WAYS`]): an idle
/// Tokio worker alternates between parking on its condvar and waiting in
/// epoll (on mini-redis a single remembered wait matched only ~55% of
/// them). The reader keeps the stack of each way
/// ([`scope_common::side::same_way`]).
#[repr(C)]
pub struct Waits {
    way: [LastBlocked; WAYS],
}

const WAYS: usize = WAIT_WAYS as usize;

/// [`WaitMask`]s, by [`wait_mask_slot`].
#[map]
static MASKS: Array<WaitMask> = Array::with_max_entries(WAIT_MASK_SLOTS, MMAPABLE);

/// What a thread that never waited before starts from (a map value may be
/// inserted from global data, not from sched_switch's full stack).
static NO_WAITS: Waits = Waits {
    way: [LastBlocked { ip: 0, sp: 0, copied_ts: 0, used_ts: 0, top: [0; TOP_WORDS] }; WAYS],
};

/// Per thread of the target (an LRU: threads come and go). 2.1 KiB a
/// thread, 4.4 MiB in all: a target with more threads than this waiting
/// at once has some of their waits copied again (within the budget).
#[map]
static LAST_BLOCKED: LruHashMap<u32, Waits> = LruHashMap::with_max_entries(2048, 0);

/// What to do with a blocked switch-out's stack, decided before its switch
/// record is written: a repeat of one of the thread's remembered waits
/// rides in that record as bits ([`scope_common::side::SAME_STACK`], and
/// which way) instead of a record of its own.
pub enum Blocked {
    Nothing,
    Same { way: u32 },
    /// Copy it; `way`: where `now` is remembered (None: its top could not
    /// be read, so it cannot be compared later). `check`: it repeats `way`
    /// (said in the switch record) and is copied only to check that
    /// (`sched_switch_check` only): the ways are left as they are.
    Copy { regs: UserRegs, way: Option<u32>, check: bool },
}

/// `CHECK`: a repeat is copied too, within the budget (`sched_switch_check`).
#[inline(always)]
pub fn plan_blocked<const CHECK: bool>(tid: u32, ts: u64) -> Blocked {
    if config().blocked_stack_bytes == 0 {
        return Blocked::Nothing;
    }
    let Some(regs) = user_regs() else {
        bump(counter::STACKS_UNREADABLE);
        return Blocked::Nothing;
    };
    // A worker parks at the same places thousands of times a second: the
    // same ip, sp and return addresses atop the stack as a remembered wait
    // is the same stack, so say so instead of copying it.
    let Some(now) = NOW.get_ptr_mut(0) else { return Blocked::Nothing };
    let now = unsafe { &mut *now };
    (now.ip, now.sp) = (regs.ip, regs.sp);
    let top_read = unsafe {
        bpf_probe_read_user(now.top.as_mut_ptr().cast(), (TOP_WORDS * 8) as u32, regs.sp as *const core::ffi::c_void)
    };
    // Where the copy is remembered: the least recently used way, or none
    // (a top that could not be read cannot be compared later).
    let mut replace = (top_read == 0).then_some(0);
    if let (Some(waits), 0) = (LAST_BLOCKED.get_ptr_mut(tid), top_read) {
        let waits = unsafe { &mut *waits };
        let mut oldest = u64::MAX;
        let mut w = 0;
        while w < WAYS {
            match compare(tid, w as u32, &waits.way[w], now) {
                Compared::Same => {
                    waits.way[w].used_ts = ts;
                    let cfg = config();
                    if CHECK && within_budget(ts, u64::from(cfg.blocked_stack_bytes), cfg.blocked_bytes_per_sec) {
                        return Blocked::Copy { regs, way: Some(w as u32), check: true };
                    }
                    return Blocked::Same { way: w as u32 };
                }
                // Most likely the same wait, while the recorder has not
                // yet said which words matter: copied, but the way is
                // kept for the mask that is on its way (replacing it
                // would start the wait over, with a new copy, on every
                // wait).
                Compared::Unsure => {
                    oldest = 0;
                    replace = None;
                }
                Compared::Different if waits.way[w].used_ts < oldest => {
                    oldest = waits.way[w].used_ts;
                    replace = Some(w as u32);
                }
                Compared::Different => {}
            }
            w += 1;
        }
    }
    // Over budget, nothing is sent and the ways are left alone: they still
    // describe stacks the reader got, which is what a later "same as"
    // refers to. (Updating and taking back were two hash-map writes per
    // wait, on every wait once a busy server is over budget.) Decided
    // here, before the switch record: one without a stack after it can be
    // held.
    let cfg = config();
    if !within_budget(ts, u64::from(cfg.blocked_stack_bytes), cfg.blocked_bytes_per_sec) {
        bump(counter::STACKS_OVER_BUDGET);
        return Blocked::Nothing;
    }
    Blocked::Copy { regs, way: replace, check: false }
}

enum Compared {
    Same,
    /// Same place, but some word differs and the recorder has not said yet
    /// which words its frames came from (until then all 64 count).
    Unsure,
    Different,
}

/// Not inlined: four ways of 64 words inlined into sched_switch are more
/// paths than the verifier walks (5.10's gave up at a million).
#[inline(never)]
fn compare(tid: u32, way: u32, last: &LastBlocked, now: &LastBlocked) -> Compared {
    if last.ip != now.ip || last.sp != now.sp {
        return Compared::Different;
    }
    let mask = mask_of(tid, way, last.copied_ts);
    if same_masked_words(&last.top, &now.top, mask.unwrap_or(u64::MAX)) {
        Compared::Same
    } else if mask.is_some() {
        Compared::Different
    } else {
        Compared::Unsure
    }
}

/// The words the recorder's unwinding of that copy read, if it has said
/// so by now (and is not saying it this instant).
#[inline(always)]
fn mask_of(tid: u32, way: u32, copied_ts: u64) -> Option<u64> {
    let m = MASKS.get_ptr(wait_mask_slot(tid, way))?;
    unsafe {
        let seq = core::ptr::read_volatile(&(*m).seq);
        let (owner, ts, words) =
            (core::ptr::read_volatile(&(*m).tid), core::ptr::read_volatile(&(*m).copied_ts), core::ptr::read_volatile(&(*m).words));
        let valid = seq & 1 == 0 && core::ptr::read_volatile(&(*m).seq) == seq && owner == tid && ts == copied_ts && words != 0;
        valid.then_some(words)
    }
}

#[inline(always)]
fn same_masked_words(last: &[u64; TOP_WORDS], now: &[u64; TOP_WORDS], words: u64) -> bool {
    // Without a branch a word: one path for the verifier.
    let mut differ = 0u64;
    let mut i = 0;
    while i < TOP_WORDS {
        differ |= (last[i] ^ now[i]) & 0u64.wrapping_sub((words >> i) & 1);
        i += 1;
    }
    differ == 0
}

/// The copy [`plan_blocked`] asked for, after the switch record.
#[inline(always)]
pub fn copy_blocked(head: Header, tid: u32, task_id: u64, regs: &UserRegs, way: Option<u32>, check: bool) {
    let cfg = config();
    // The stack record says which way it fills (1 + way; 0: none), or
    // which one it repeats (a check).
    let mut remembered = 0;
    let mut reason = stack_reason::BLOCKED;
    if check {
        remembered = 1 + (way.unwrap_or(0) & (WAIT_WAYS - 1));
        reason = stack_reason::BLOCKED_CHECK;
    } else if let Some(w) = way {
        if LAST_BLOCKED.get_ptr(tid).is_none() {
            let _ = LAST_BLOCKED.insert(tid, &NO_WAITS, 0);
        }
        if let (Some(waits), Some(now)) = (LAST_BLOCKED.get_ptr_mut(tid), NOW.get_ptr(0)) {
            let waits = unsafe { &mut *waits };
            let i = (w & (WAIT_WAYS - 1)) as usize;
            waits.way[i] = unsafe { *now };
            (waits.way[i].copied_ts, waits.way[i].used_ts) = (head.ts, head.ts);
            remembered = 1 + i as u32;
        }
    }
    if !copy_with(Header { kind: kind::STACK, ..head }, tid, reason, task_id, cfg.blocked_stack_bytes, regs, remembered)
        && remembered != 0
        && !check
    {
        // The reader did not get it (ring buffer full): a later repeat
        // would point at the stack that way held before.
        if let Some(waits) = LAST_BLOCKED.get_ptr_mut(tid) {
            let waits = unsafe { &mut *waits };
            waits.way[((remembered - 1) & (WAIT_WAYS - 1)) as usize].ip = 0;
        }
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
    copy_with(head, tid, reason, task_id, want, &regs, 0);
}

/// False when nothing reached the ring buffer.
#[inline(always)]
fn copy_with(head: Header, tid: u32, reason: u32, task_id: u64, want: u32, regs: &UserRegs, remembered: u32) -> bool {
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
        remembered,
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
