//! The kernel holds a target thread's switch-out and waking in a slot
//! until the thread's next switch-in, which carries them (one record per
//! sleep instead of three; see scope-ebpf's `held.rs`). A worker parked for
//! seconds would keep its switch-out there all that time, so the recorder
//! reads the slots (mapped: no syscall) after each drain of the ring buffer
//! and delivers what has waited long enough, and everything at the end. A half delivered from its
//! slot is remembered until its own record arrives, which is then dropped.

use anyhow::{Context, Result};
use scope_common::{Header, PENDING_MASK, PENDING_SLOTS, Pending, Switch, Waking, kind, side};
use scope_model::Event;
use crate::fast_map::{Map, Set};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::{addr_of, read_volatile};
use std::sync::atomic::{Ordering, compiler_fence};

/// A held half older than this is delivered from its slot by `record`:
/// its live view waits 300 ms for a second's events, and a drain comes at
/// least every 100 ms. (`top` and `watch` take every half at each drain:
/// a snapshot or a lane ends at the newest event.) Waiting spares the
/// recorder a lookup per record while a worker's parks are short.
pub const DUE_NS: u64 = 50_000_000;

enum Memory {
    Mapped(usize),
    #[cfg(test)]
    Owned(#[allow(dead_code)] Box<[Pending]>),
}

pub struct HeldSlots {
    base: *const Pending,
    memory: Memory,
    /// The target's threads (true: exited) whose slots are read.
    tids: Map<u32, bool>,
    /// Halves delivered from a slot before their record came: (tid, kind,
    /// ts). A set, not the last per thread: a half superseded in its slot
    /// is still sent on its own later.
    delivered: Set<(u32, u32, u64)>,
}

// SAFETY: the mapping is only read, and only through this value.
unsafe impl Send for HeldSlots {}

impl HeldSlots {
    /// Maps the kernel's `PENDING` array (`BPF_F_MMAPABLE`) read-only.
    pub fn map(fd: BorrowedFd<'_>, tids: impl IntoIterator<Item = u32>) -> Result<HeldSlots> {
        let len = PENDING_SLOTS as usize * size_of::<Pending>();
        // SAFETY: a fresh shared read-only mapping of the map's values.
        let base = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, fd.as_raw_fd(), 0) };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("mapping the kernel's held-records slots");
        }
        Ok(HeldSlots::over(base as *const Pending, Memory::Mapped(len), tids))
    }

    fn over(base: *const Pending, memory: Memory, tids: impl IntoIterator<Item = u32>) -> HeldSlots {
        HeldSlots { base, memory, tids: tids.into_iter().map(|t| (t, false)).collect(), delivered: Set::default() }
    }

    /// Follows the target's threads as they come and go.
    pub fn saw(&mut self, event: &Event) {
        match event {
            Event::NewThread { tid, .. } => {
                self.tids.insert(*tid, false);
            }
            Event::Exit { tid, .. } => {
                self.tids.insert(*tid, true);
            }
            _ => {}
        }
    }

    /// Records held since before `now - min_age` and not delivered yet,
    /// as ring-buffer records (switch-outs and wakings), for the caller to
    /// handle as if they came from the buffer.
    pub fn take_due(&mut self, now: u64, min_age: u64) -> Vec<Vec<u8>> {
        let mut due = Vec::new();
        let mut gone = Vec::new();
        for (&tid, &exited) in &self.tids {
            // SAFETY: the index is masked into the array's bounds.
            let slot = unsafe { self.base.add((tid & PENDING_MASK) as usize) };
            let out = unsafe { read_half(addr_of!((*slot).out_tid), addr_of!((*slot).out_seq), addr_of!((*slot).out), tid) };
            let waking =
                unsafe { read_half(addr_of!((*slot).waking_tid), addr_of!((*slot).waking_seq), addr_of!((*slot).waking), tid) };
            let mut take = |head: Header, bytes: Vec<u8>| {
                if head.ts.saturating_add(min_age) <= now && self.delivered.insert((tid, head.kind, head.ts)) {
                    due.push(bytes);
                }
            };
            if let Some(o) = out.filter(|o| o.prev_tid == tid) {
                take(o.header, bytes_of(&o));
            }
            if let Some(w) = waking.filter(|w| w.tid == tid) {
                take(w.header, bytes_of(&w));
            }
            if exited && out.is_none() && waking.is_none() {
                gone.push(tid);
            }
        }
        for tid in gone {
            self.tids.remove(&tid);
        }
        due.sort_by_key(|b| header_of(b).ts);
        due
    }

    /// Whether `part` (one record from the buffer) was delivered from its
    /// slot already.
    pub fn is_repeat(&mut self, part: &[u8]) -> bool {
        if self.delivered.is_empty() || part.len() < size_of::<Header>() {
            return false;
        }
        let head = header_of(part);
        let tid = match head.kind {
            kind::SWITCH if part.len() >= size_of::<Switch>() => {
                let r: Switch = unsafe { std::ptr::read_unaligned(part.as_ptr().cast()) };
                if r.ours & side::NEXT != 0 {
                    return false;
                }
                r.prev_tid
            }
            kind::WAKING if part.len() >= size_of::<Waking>() => {
                let r: Waking = unsafe { std::ptr::read_unaligned(part.as_ptr().cast()) };
                r.tid
            }
            _ => return false,
        };
        self.delivered.remove(&(tid, head.kind, head.ts))
    }
}

impl Drop for HeldSlots {
    #[allow(irrefutable_let_patterns)] // one variant outside tests
    fn drop(&mut self) {
        if let Memory::Mapped(len) = self.memory {
            // SAFETY: our own mapping, unmapped once.
            unsafe { libc::munmap(self.base as *mut libc::c_void, len) };
        }
    }
}

/// One half of a slot, if it is held for `tid` and was not being written
/// while read (its seqcount odd or changed).
///
/// # Safety
/// The pointers point into one live slot.
unsafe fn read_half<T: Copy>(tag: *const u32, seq: *const u32, value: *const T, tid: u32) -> Option<T> {
    unsafe {
        if read_volatile(tag) != tid {
            return None;
        }
        let before = read_volatile(seq);
        if !before.is_multiple_of(2) {
            return None;
        }
        compiler_fence(Ordering::Acquire);
        let copy = read_volatile(value);
        compiler_fence(Ordering::Acquire);
        (read_volatile(seq) == before).then_some(copy)
    }
}

fn header_of(bytes: &[u8]) -> Header {
    // SAFETY: callers pass at least a header's bytes.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) }
}

fn bytes_of<T: Copy>(value: &T) -> Vec<u8> {
    // SAFETY: the bytes of a plain #[repr(C)] all-integer value.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

#[cfg(test)]
mod tests;
