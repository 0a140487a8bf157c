//! Task vtables, with or without symbols. Tokio (1.2x–1.54) gives every
//! task type `raw::vtable::<T, S>()`:
//!
//! ```text
//! Vtable { poll, schedule, dealloc, try_read_output, drop_join_handle_slow,
//!          drop_abort_handle, shutdown,                  // 7 fn pointers
//!          trailer_offset, scheduler_offset, id_offset } // 3 constants
//! ```
//!
//! (`tokio_unstable` appends one more constant.) In a PIE binary the seven
//! pointers are `R_X86_64_RELATIVE` relocations, which stripping keeps, and
//! the constants follow the layout of `Cell<T, S>`, so a stripped binary's
//! task vtables can be found by this shape alone; the tests check that the
//! shape finds exactly the vtables the symbols find.

use crate::image::Image;

pub(crate) const FN_SLOTS: u64 = 7;
const TRAILER: u64 = 7;
const SCHEDULER: u64 = 8;
const ID: u64 = 9;
/// `Core` is `#[repr(C)] { scheduler: S, task_id: Id, stage }`, so the id
/// follows the scheduler handle: an `Arc`, or a small struct of them.
const MAX_SCHEDULER_SIZE: u64 = 64;
/// A task cell larger than this is not a cell.
const MAX_CELL: u64 = 1 << 24;
/// The scheduler handle of async tasks (`Arc<Handle>`, `Arc<Shared>` for a
/// `LocalSet`): one pointer. `spawn_blocking`'s `BlockingSchedule` is larger.
pub(crate) const ASYNC_SCHEDULER_SIZE: u64 = 8;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TaskVtable {
    /// Where the vtable is.
    pub at: u64,
    /// poll, schedule, dealloc, try_read_output, drop_join_handle_slow,
    /// drop_abort_handle, shutdown.
    pub fns: [u64; FN_SLOTS as usize],
    pub scheduler_offset: u64,
    pub id_offset: u64,
}

impl TaskVtable {
    pub fn poll(&self) -> u64 {
        self.fns[0]
    }

    /// Bytes of the scheduler handle `S` in `Core<T, S>`.
    pub fn scheduler_size(&self) -> u64 {
        self.id_offset - self.scheduler_offset
    }
}

/// The task vtable at `at` if the words there have the shape: 7 relocated
/// pointers into code, then 3 plain constants in the order `Cell` implies.
pub(crate) fn vtable_at(image: &Image, at: u64) -> Option<TaskVtable> {
    let pointer = |slot: u64| image.relocated.get(&(at + 8 * slot)).copied();
    let mut fns = [0u64; FN_SLOTS as usize];
    for (slot, f) in fns.iter_mut().enumerate() {
        *f = pointer(slot as u64).filter(|&p| image.is_code(p))?;
    }
    if [TRAILER, SCHEDULER, ID].into_iter().any(|slot| pointer(slot).is_some()) {
        return None;
    }
    let [trailer, scheduler, id] = [TRAILER, SCHEDULER, ID].map(|slot| image.word(at + 8 * slot));
    let (trailer, scheduler, id) = (trailer?, scheduler?, id?);
    let plausible = id % 8 == 0 && scheduler >= 8 && scheduler < id && id - scheduler <= MAX_SCHEDULER_SIZE && id < trailer && trailer < MAX_CELL;
    plausible.then_some(TaskVtable { at, fns, scheduler_offset: scheduler, id_offset: id })
}

/// Every task vtable in the binary, found by shape alone (no symbols).
pub(crate) fn by_shape(image: &Image) -> Vec<TaskVtable> {
    let mut places: Vec<u64> = image.relocated.keys().copied().collect();
    places.sort_unstable();
    // Slot 7 must not be relocated: only the start of a run of exactly
    // seven relocated words can pass.
    places.iter().filter_map(|&p| vtable_at(image, p)).collect()
}

/// The vtables listing the function at `poll` in their poll slot.
pub(crate) fn of_poll(image: &Image, holders: &std::collections::HashMap<u64, Vec<u64>>, poll: u64) -> Vec<TaskVtable> {
    holders.get(&poll).into_iter().flatten().filter_map(|&at| vtable_at(image, at)).collect()
}
