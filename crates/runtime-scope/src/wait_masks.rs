//! Tells the kernel which words of a remembered wait's stack matter
//! ([`scope_common::WaitMask`]): the words the unwinding of its copy read.
//! A later wait at the same place is then a repeat when those words are
//! equal, whatever the rest of its stack holds (locals, stale return
//! addresses): exact as far as the 512 bytes compared reach, where
//! comparing every word copies the same wait again and again, and
//! comparing fewer words named the wrong one of two alike waits
//! (`a_thread_alternating_between_two_waits_…` in stacks_e2e).

use anyhow::{Context, Result};
use scope_common::{WAIT_MASK_SLOTS, WaitMask, wait_mask_slot};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::{addr_of_mut, read_volatile, write_volatile};
use std::sync::atomic::{Ordering, fence};

pub struct WaitMasks {
    base: *mut WaitMask,
    len: usize,
}

// SAFETY: the mapping is written only through this value.
unsafe impl Send for WaitMasks {}

impl WaitMasks {
    /// Maps the kernel's `MASKS` array (`BPF_F_MMAPABLE`) for writing.
    pub fn map(fd: BorrowedFd<'_>) -> Result<WaitMasks> {
        let len = WAIT_MASK_SLOTS as usize * size_of::<WaitMask>();
        // SAFETY: a fresh shared mapping of the map's values.
        let base = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd.as_raw_fd(), 0) };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("mapping the kernel's wait masks");
        }
        Ok(WaitMasks { base: base.cast(), len })
    }

    /// The copy of `tid`'s wait `way` made at `copied_ts` was unwound
    /// reading `words` (0: nothing to compare on; the kernel keeps
    /// comparing every word).
    pub fn publish(&mut self, tid: u32, way: u8, copied_ts: u64, words: u64) {
        let slot = wait_mask_slot(tid, u32::from(way)) as usize;
        assert!(slot < WAIT_MASK_SLOTS as usize);
        // SAFETY: in bounds of our mapping; the kernel only reads it, and
        // takes a value only when the seqcount is even and unchanged.
        unsafe {
            let m = self.base.add(slot);
            let seq = read_volatile(addr_of_mut!((*m).seq));
            write_volatile(addr_of_mut!((*m).seq), seq.wrapping_add(1) | 1);
            fence(Ordering::Release);
            write_volatile(addr_of_mut!((*m).tid), tid);
            write_volatile(addr_of_mut!((*m).copied_ts), copied_ts);
            write_volatile(addr_of_mut!((*m).words), words);
            fence(Ordering::Release);
            write_volatile(addr_of_mut!((*m).seq), (seq | 1).wrapping_add(1));
        }
    }
}

impl Drop for WaitMasks {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}
