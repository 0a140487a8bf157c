//! A binary opened for naming: read on demand (a binary with 300 MB of
//! DWARF must not land in memory), with the pointer-sized words the dynamic
//! linker fills in (`R_X86_64_RELATIVE`): function pointers in vtables and
//! the file pointers of `core::panic::Location` constants, which survive
//! stripping.

use object::read::ReadCache;
use object::{Object, ObjectSection, RelocationFlags, RelocationTarget};
use std::collections::HashMap;
use std::path::Path;

pub(crate) struct Image<'a> {
    pub(crate) file: object::File<'a, &'a ReadCache<std::fs::File>>,
    /// Pointer-sized words the dynamic linker fills in: place → value.
    pub(crate) relocated: HashMap<u64, u64>,
}

/// Opens `path` for on-demand reads and hands it to `f`; None if it is not
/// a readable object.
pub(crate) fn with_image<R>(path: &Path, f: impl FnOnce(&Image) -> R) -> Option<R> {
    let cache = ReadCache::new(std::fs::File::open(path).ok()?);
    let file = object::File::parse(&cache).ok()?;
    let relocated = file
        .dynamic_relocations()
        .into_iter()
        .flatten()
        // R_X86_64_RELATIVE (8): the word at `place` becomes load base + addend.
        .filter(|(_, r)| matches!(r.target(), RelocationTarget::Absolute) && r.flags() == RelocationFlags::Elf { r_type: object::elf::R_X86_64_RELATIVE })
        .map(|(place, r)| (place, r.addend() as u64))
        .collect();
    Some(f(&Image { file, relocated }))
}

impl Image<'_> {
    /// Every relocated pointer value → the places holding it: a function's
    /// address leads to the vtables that list it.
    pub(crate) fn places_holding(&self) -> HashMap<u64, Vec<u64>> {
        let mut by_value: HashMap<u64, Vec<u64>> = HashMap::new();
        for (place, value) in &self.relocated {
            by_value.entry(*value).or_default().push(*place);
        }
        by_value
    }

    /// The pointer stored at `svma` (after relocation, for PIE binaries).
    pub(crate) fn word(&self, svma: u64) -> Option<u64> {
        if let Some(v) = self.relocated.get(&svma) {
            return Some(*v);
        }
        let data = self.bytes(svma, 8)?;
        Some(u64::from_le_bytes(data.try_into().ok()?))
    }

    /// Up to `len` bytes at `svma`, within one section.
    pub(crate) fn bytes(&self, svma: u64, len: u64) -> Option<&[u8]> {
        let section = self.file.sections().find(|s| s.address() <= svma && svma < s.address() + s.size())?;
        let len = len.min(section.address() + section.size() - svma);
        section.data_range(svma, len).ok()?
    }

    /// Whether `svma` lies in an executable section.
    pub(crate) fn is_code(&self, svma: u64) -> bool {
        self.file.sections().any(|s| s.kind() == object::SectionKind::Text && s.address() <= svma && svma < s.address() + s.size())
    }

    pub(crate) fn svma_of_file_offset(&self, offset: u64) -> Option<u64> {
        crate::elf::svma_of_file_offset_in(&self.file, offset)
    }

    pub(crate) fn file_offset_of_svma(&self, svma: u64) -> Option<u64> {
        use object::ObjectSegment;
        self.file.segments().find_map(|seg| {
            let (start, size) = seg.file_range();
            (svma >= seg.address() && svma < seg.address() + size).then(|| start + (svma - seg.address()))
        })
    }
}

/// Targets of the direct calls and jumps (`e8`/`e9` rel32) in `body`, which
/// starts at `at`. A stray `e8` inside another instruction must land
/// exactly on a function we look for to count.
pub(crate) fn direct_targets(at: u64, body: &[u8]) -> impl Iterator<Item = u64> + '_ {
    (0..body.len().saturating_sub(4)).filter(|&i| body[i] == 0xe8 || body[i] == 0xe9).map(move |i| {
        let rel = i32::from_le_bytes([body[i + 1], body[i + 2], body[i + 3], body[i + 4]]);
        (at + i as u64 + 5).wrapping_add(rel as i64 as u64)
    })
}
