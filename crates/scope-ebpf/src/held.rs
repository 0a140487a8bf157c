//! One ring-buffer record per sleep instead of three. A target thread's
//! switch-out (when the next thread is not ours) and its waking are written
//! to the thread's [`Pending`] slot instead of the ring buffer, and ride in
//! its next switch-in record ([`Resumed`]). A record costs far more than
//! the slot write: the ring buffer's lock and positions are shared by every
//! CPU and read by the recorder (measured in BENCHMARKS.md). Userspace maps
//! the slots and delivers what waits too long (an idle worker's park), so
//! the live view and triggers still learn of a stall within a drain period.

use crate::{EVENTS, MMAPABLE, bump, emit, wakeup_flags};
use aya_ebpf::{macros::map, maps::Array};
use scope_common::{Header, PENDING_MASK, PENDING_SLOTS, Pending, Resumed, Switch, Waking, counter, kind, resumed};

#[map]
static PENDING: Array<Pending> = Array::with_max_entries(PENDING_SLOTS, MMAPABLE);

/// 1 when holding is on; set by the loader (frozen `.rodata`).
#[unsafe(no_mangle)]
static HOLD: u32 = 0;

#[inline(always)]
fn slot(tid: u32) -> Option<&'static mut Pending> {
    if unsafe { core::ptr::read_volatile(&HOLD) } == 0 {
        return None;
    }
    PENDING.get_ptr_mut(tid & PENDING_MASK).map(|p| unsafe { &mut *p })
}

/// Bumps a seqcount word: odd while its half is being written.
#[inline(always)]
fn bump_seq(seq: &mut u32) {
    unsafe { core::ptr::write_volatile(seq, core::ptr::read_volatile(seq).wrapping_add(1)) };
}

/// The switch-out of `tid` (only its side of the switch is ours): held
/// when `hold` (true returned), else sent by the caller. A switch-out
/// still held from before goes first, on its own: the thread's switch-in
/// was never seen (the kernel skipped a run).
#[inline(always)]
pub fn switch_out(tid: u32, record: &Switch, hold: bool) -> bool {
    let Some(slot) = slot(tid) else { return false };
    let held = unsafe { core::ptr::read_volatile(&slot.out_tid) };
    if held != 0 && held != tid {
        return false;
    }
    // The older one is sent only once its slot no longer shows it: a
    // mapped reader that took it from the slot first drops it as a repeat,
    // one that comes after does not see it there.
    let stale = (held == tid).then_some(slot.out);
    if hold {
        bump_seq(&mut slot.out_seq);
        slot.out = *record;
        bump_seq(&mut slot.out_seq);
        unsafe { core::ptr::write_volatile(&mut slot.out_tid, tid) };
        bump(counter::HELD);
    } else if stale.is_some() {
        unsafe { core::ptr::write_volatile(&mut slot.out_tid, 0) };
    }
    if let Some(stale) = stale {
        emit(stale);
    }
    hold
}

/// Holds the waking of `tid` until its switch-in. False: send it now.
#[inline(always)]
pub fn hold_waking(tid: u32, record: &Waking) -> bool {
    let Some(slot) = slot(tid) else { return false };
    let held = unsafe { core::ptr::read_volatile(&slot.waking_tid) };
    if held != 0 && held != tid {
        return false;
    }
    // Woken while still on its CPU (no switch followed): that one is sent
    // on its own, after the slot stops showing it (see `switch_out`).
    let stale = (held == tid).then_some(slot.waking);
    bump_seq(&mut slot.waking_seq);
    slot.waking = *record;
    bump_seq(&mut slot.waking_seq);
    unsafe { core::ptr::write_volatile(&mut slot.waking_tid, tid) };
    bump(counter::HELD);
    if let Some(stale) = stale {
        emit(stale);
    }
    true
}

/// Sends the switch-in of `tid` (`record`), with whatever was held for it.
#[inline(always)]
pub fn send_switch_in(tid: u32, record: &Switch) {
    let Some(slot) = slot(tid) else {
        emit(*record);
        return;
    };
    let mut present = 0;
    if unsafe { core::ptr::read_volatile(&slot.out_tid) } == tid {
        present |= resumed::OUT;
    }
    if unsafe { core::ptr::read_volatile(&slot.waking_tid) } == tid {
        present |= resumed::WAKING;
    }
    if present == 0 {
        emit(*record);
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<Resumed>(0) else {
        // Left held: the recorder delivers it from the slot.
        bump(counter::RINGBUF_DROPS);
        return;
    };
    let out = entry.as_mut_ptr();
    unsafe {
        (*out).header = Header { kind: kind::RESUMED, ..record.header };
        (*out).present = present;
        (*out)._pad = 0;
        (*out).out = slot.out;
        (*out).waking = slot.waking;
        (*out).switch = *record;
        // Cleared before the submit: a mapped reader that still sees a half
        // held knows the record carrying it is not in the buffer yet.
        if present & resumed::OUT != 0 {
            core::ptr::write_volatile(&mut slot.out_tid, 0);
        }
        if present & resumed::WAKING != 0 {
            core::ptr::write_volatile(&mut slot.waking_tid, 0);
        }
    }
    entry.submit(wakeup_flags());
}
