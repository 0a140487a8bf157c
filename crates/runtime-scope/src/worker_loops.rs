//! Tells the kernel each multi-thread worker's own loop id
//! ([`scope_common::WorkerLoop`]), learned from a copied blocked stack that
//! shows Tokio's park code with that id set: the worker's later parks are
//! then not stack-checked (on a busy server a quarter of the recorder's
//! events were repeated park stacks, ~130 ns of `sched_switch` each).

use crate::mapped_array::{MappedArray, Seqcounted};
use anyhow::Result;
use scope_common::{PENDING_MASK, WORKER_LOOP_SLOTS, WorkerLoop};
use std::os::fd::BorrowedFd;
use std::ptr::{addr_of_mut, write_volatile};

pub struct WorkerLoops {
    array: MappedArray<WorkerLoop>,
}

impl WorkerLoops {
    /// Maps the kernel's `WORKER_LOOPS` array (`BPF_F_MMAPABLE`) for writing.
    pub fn map(fd: BorrowedFd<'_>) -> Result<WorkerLoops> {
        Ok(WorkerLoops { array: MappedArray::map(fd, WORKER_LOOP_SLOTS, "worker loop ids")? })
    }

    /// `tid`'s own loop runs with Tokio task id `id`. Two workers whose tids
    /// share a slot: the later one wins, the other's parks are checked.
    pub fn publish(&mut self, tid: u32, id: u64) {
        // SAFETY: volatile writes to the slot `publish` hands over.
        self.array.publish((tid & PENDING_MASK) as usize, |w| unsafe {
            write_volatile(addr_of_mut!((*w).tid), tid);
            write_volatile(addr_of_mut!((*w).id), id);
        });
    }
}

impl Seqcounted for WorkerLoop {
    fn seq(value: *mut Self) -> *mut u32 {
        // SAFETY: a field of the value behind the pointer, not read.
        unsafe { addr_of_mut!((*value).seq) }
    }
}
