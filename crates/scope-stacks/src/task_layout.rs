//! Where each task keeps Tokio's task id, read from the binary without
//! debuginfo. Every task vtable ends with layout constants that Tokio
//! itself uses to find the fields of `Cell<F, S>` from a header pointer:
//!
//! ```text
//! Vtable { poll, schedule, dealloc, try_read_output, drop_join_handle_slow,
//!          drop_abort_handle, shutdown,                  // 7 fn pointers
//!          trailer_offset, scheduler_offset, id_offset } // 3 constants
//! ```
//!
//! (tokio 1.2x–1.54; `tokio_unstable` appends one more constant.) The poll
//! probe reads the id at `header + id_offset`, so what it reads is only as
//! good as this offset: a vtable that does not look exactly like this gives
//! no offset, and the probe reads nothing rather than garbage.

use crate::task_kinds::{Image, with_image};
use std::collections::HashMap;
use std::path::Path;

const FN_SLOTS: u64 = 7;
const TRAILER: u64 = 7;
const SCHEDULER: u64 = 8;
const ID: u64 = 9;
/// `Core` is `#[repr(C)] { scheduler: S, task_id: Id, stage }`, so the id
/// follows the scheduler handle: an `Arc`, or a small enum of them.
const MAX_SCHEDULER_SIZE: u64 = 64;
/// A task cell larger than this is not a cell.
const MAX_CELL: u64 = 1 << 24;

/// `id_offset` of each `raw::poll` instance (keyed by its file offset) whose
/// vtable passed every check.
pub fn id_offsets(path: &Path, file_offsets: &[u64]) -> HashMap<u64, u64> {
    with_image(path, |image| {
        let holders = image.places_holding();
        file_offsets
            .iter()
            .filter_map(|&offset| {
                let poll = crate::elf::svma_of_file_offset_in(&image.file, offset)?;
                let found: Vec<u64> = holders.get(&poll)?.iter().filter_map(|&v| id_offset(image, v)).collect();
                // Several vtables for one instance must agree.
                let first = *found.first()?;
                found.iter().all(|&o| o == first).then_some((offset, first))
            })
            .collect()
    })
    .unwrap_or_default()
}

/// The vtable at `vtable` (whose slot 0 is a poll instance): 7 relocated
/// function pointers, then 3 plain constants with the order `Cell` implies.
fn id_offset(image: &Image, vtable: u64) -> Option<u64> {
    let pointer = |slot: u64| image.relocated.contains_key(&(vtable + 8 * slot));
    if !(0..FN_SLOTS).all(pointer) || [TRAILER, SCHEDULER, ID].into_iter().any(pointer) {
        return None;
    }
    let [trailer, scheduler, id] = [TRAILER, SCHEDULER, ID].map(|slot| image.word(vtable + 8 * slot));
    let (trailer, scheduler, id) = (trailer?, scheduler?, id?);
    let plausible = id % 8 == 0
        && scheduler < id
        && id - scheduler <= MAX_SCHEDULER_SIZE
        && id < trailer
        && trailer < MAX_CELL;
    plausible.then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_id_offset_of_every_poll_instance_of_the_stock_release_demo() {
        let (path, offsets) = crate::task_kinds::tests::stock_demo_polls();
        let found = id_offsets(path, &offsets);
        assert_eq!(found.len(), offsets.len(), "every instance has a vtable: {found:?} of {offsets:x?}");
        // `Header` is 32 bytes (state, queue_next, vtable, owner_id), then
        // the scheduler handle: an `Arc` (8 bytes) for multi-thread and
        // current-thread tasks, a little more for blocking ones.
        let mut values: Vec<u64> = found.values().copied().collect();
        values.sort();
        assert!(values.iter().all(|v| (40..=72).contains(v)), "{values:?}");
        assert!(values.contains(&40), "{values:?}");
    }
}
