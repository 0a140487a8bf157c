//! Where each task keeps Tokio's task id, read from the binary without
//! debuginfo: the last constant of its task vtable ([`crate::task_vtables`]),
//! which Tokio itself uses to find the id from a header pointer. The poll
//! probe reads the id at `header + id_offset`, so what it reads is only as
//! good as this offset: a vtable that does not look exactly like one gives
//! no offset, and the probe reads nothing rather than garbage.

use crate::image::with_image;
use crate::task_vtables;
use std::collections::HashMap;
use std::path::Path;

/// `id_offset` of each `raw::poll` instance (keyed by its file offset) whose
/// vtable passed every check.
pub fn id_offsets(path: &Path, file_offsets: &[u64]) -> HashMap<u64, u64> {
    with_image(path, |image| {
        let holders = image.places_holding();
        file_offsets
            .iter()
            .filter_map(|&offset| {
                let poll = image.svma_of_file_offset(offset)?;
                let found: Vec<u64> = task_vtables::of_poll(image, &holders, poll).iter().map(|v| v.id_offset).collect();
                // Several vtables for one instance must agree.
                let first = *found.first()?;
                found.iter().all(|&o| o == first).then_some((offset, first))
            })
            .collect()
    })
    .unwrap_or_default()
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
