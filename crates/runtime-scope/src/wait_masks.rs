//! Tells the kernel which words of a remembered wait's stack matter
//! ([`scope_common::WaitMask`]): the words the unwinding of its copy read.
//! A later wait at the same place is then a repeat when those words are
//! equal, whatever the rest of its stack holds (locals, stale return
//! addresses): exact as far as the 512 bytes compared reach, where
//! comparing every word copies the same wait again and again, and
//! comparing fewer words named the wrong one of two alike waits
//! (`a_thread_alternating_between_two_waits_…` in stacks_e2e).

use crate::mapped_array::{MappedArray, Seqcounted};
use anyhow::Result;
use scope_common::{WAIT_MASK_SLOTS, WaitMask, wait_mask_slot};
use std::os::fd::BorrowedFd;
use std::ptr::{addr_of_mut, write_volatile};

pub struct WaitMasks {
    array: MappedArray<WaitMask>,
}

impl WaitMasks {
    /// Maps the kernel's `MASKS` array (`BPF_F_MMAPABLE`) for writing.
    pub fn map(fd: BorrowedFd<'_>) -> Result<WaitMasks> {
        Ok(WaitMasks { array: MappedArray::map(fd, WAIT_MASK_SLOTS, "wait masks")? })
    }

    /// The copy of `tid`'s wait `way` made at `copied_ts` was unwound
    /// reading `words` (0: nothing to compare on; the kernel keeps
    /// comparing every word).
    pub fn publish(&mut self, tid: u32, way: u8, copied_ts: u64, words: u64) {
        // SAFETY: volatile writes to the slot `publish` hands over.
        self.array.publish(wait_mask_slot(tid, u32::from(way)) as usize, |m| unsafe {
            write_volatile(addr_of_mut!((*m).tid), tid);
            write_volatile(addr_of_mut!((*m).copied_ts), copied_ts);
            write_volatile(addr_of_mut!((*m).words), words);
        });
    }
}

impl Seqcounted for WaitMask {
    fn seq(value: *mut Self) -> *mut u32 {
        // SAFETY: a field of the value behind the pointer, not read.
        unsafe { addr_of_mut!((*value).seq) }
    }
}
