//! Tells the kernel each multi-thread worker's own loop id
//! ([`scope_common::WorkerLoop`]), learned from a copied blocked stack that
//! shows Tokio's park code with that id set: the worker's later parks are
//! then not stack-checked (on a busy server a quarter of the recorder's
//! events were repeated park stacks, ~130 ns of `sched_switch` each).

use crate::mapped_array::MappedArray;
use anyhow::Result;
use scope_common::{PENDING_MASK, WORKER_LOOP_SLOTS, WorkerLoop};
use std::os::fd::BorrowedFd;
use std::ptr::{addr_of_mut, read_volatile, write_volatile};
use std::sync::atomic::{Ordering, fence};

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
        let w = self.array.slot((tid & PENDING_MASK) as usize);
        // SAFETY: a slot of our mapping; the kernel only reads it, and
        // takes a value only when the seqcount is even and unchanged.
        unsafe {
            let seq = read_volatile(addr_of_mut!((*w).seq));
            write_volatile(addr_of_mut!((*w).seq), seq.wrapping_add(1) | 1);
            fence(Ordering::Release);
            write_volatile(addr_of_mut!((*w).tid), tid);
            write_volatile(addr_of_mut!((*w).id), id);
            fence(Ordering::Release);
            write_volatile(addr_of_mut!((*w).seq), (seq | 1).wrapping_add(1));
        }
    }
}
