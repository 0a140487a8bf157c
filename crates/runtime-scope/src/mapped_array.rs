//! A kernel array map (`BPF_F_MMAPABLE`) mapped for writing: how the
//! recorder tells the kernel side something while it records without a map
//! syscall (see docs/design-notes.md, "No map syscalls while recording").
//! Each value carries its own seqcount, kept here for every writer.

use anyhow::{Context, Result};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::{read_volatile, write_volatile};
use std::sync::atomic::{Ordering, fence};

/// A value the kernel takes only while its seqcount is even and unchanged.
pub trait Seqcounted {
    /// Its seqcount field.
    fn seq(value: *mut Self) -> *mut u32;
}

pub struct MappedArray<T> {
    base: *mut T,
    slots: usize,
}

// SAFETY: the mapping is written only through this value.
unsafe impl<T> Send for MappedArray<T> {}

impl<T> MappedArray<T> {
    /// Maps the `slots` values of the array behind `fd` (`what` for errors).
    pub fn map(fd: BorrowedFd<'_>, slots: u32, what: &str) -> Result<MappedArray<T>> {
        let len = slots as usize * size_of::<T>();
        // SAFETY: a fresh shared mapping of the map's values.
        let base = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd.as_raw_fd(), 0) };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("mapping the kernel's {what}"));
        }
        Ok(MappedArray { base: base.cast(), slots: slots as usize })
    }

}

impl<T: Seqcounted> MappedArray<T> {
    /// Writes the value at `index` (`write` makes volatile writes to it)
    /// with its seqcount odd meanwhile: the kernel, which reads it
    /// concurrently, never takes a value half written.
    pub fn publish(&mut self, index: usize, write: impl FnOnce(*mut T)) {
        assert!(index < self.slots);
        // SAFETY: in bounds of our mapping; the kernel only reads it.
        unsafe {
            let value = self.base.add(index);
            let seq = T::seq(value);
            let was = read_volatile(seq);
            write_volatile(seq, was.wrapping_add(1) | 1);
            fence(Ordering::Release);
            write(value);
            fence(Ordering::Release);
            write_volatile(seq, (was | 1).wrapping_add(1));
        }
    }
}

impl<T> Drop for MappedArray<T> {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once.
        unsafe { libc::munmap(self.base.cast(), self.slots * size_of::<T>()) };
    }
}
