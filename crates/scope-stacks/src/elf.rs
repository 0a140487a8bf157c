//! What we need from a module's ELF file: its build-id and how its mapped
//! addresses (AVMA) relate to its own addresses (SVMA) and file offsets.

use object::{Object, ObjectSection, ObjectSegment};


pub fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn build_id(data: &[u8]) -> Option<String> {
    let file = object::File::parse(data).ok()?;
    if let Ok(Some(id)) = file.build_id() {
        return Some(hex(id));
    }
    let section = file.section_by_name(".note.gnu.build-id")?;
    section.data().ok()?.get(16..).map(hex)
}

const PAGE: u64 = 0x1000;

/// SVMA of the first byte of a mapping at page-aligned `file_offset`.
///
/// Segments share pages: the mapping of the executable segment often starts
/// at a file offset that also lies inside the previous (read-only) segment.
/// The mapping belongs to the segment whose page-aligned start is exactly
/// that offset; only when none matches, take the segment holding the byte.
pub fn svma_of_file_offset(file: &object::File<'_>, file_offset: u64) -> Option<u64> {
    let exact = file.segments().filter(|seg| seg.file_range().0 & !(PAGE - 1) == file_offset).last();
    if let Some(seg) = exact {
        return Some(seg.address() & !(PAGE - 1));
    }
    file.segments().find_map(|seg| {
        let (start, size) = seg.file_range();
        (file_offset >= start && file_offset < start + size.max(1)).then(|| seg.address() + (file_offset - start))
    })
}

/// SVMA of the byte at `file_offset` (a function's entry, say), in a file
/// read any way `object` can (whole or on demand).
pub fn svma_of_file_offset_in<'d, R: object::ReadRef<'d>>(file: &object::File<'d, R>, file_offset: u64) -> Option<u64> {
    file.segments().find_map(|seg| {
        let (start, size) = seg.file_range();
        (file_offset >= start && file_offset < start + size).then(|| seg.address() + (file_offset - start))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn executable_mapping_resolves_to_its_own_segment() {
        // Our own test binary: its r-x mapping's offset must map to the
        // SVMA of .text's segment, whose first page it shares with rodata.
        let me = std::fs::read_link("/proc/self/exe").unwrap();
        let data = std::fs::read(&me).unwrap();
        let file = object::File::parse(&*data).unwrap();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let line = maps
            .lines()
            .find(|l| l.contains(" r-xp ") && l.ends_with(me.to_str().unwrap()))
            .expect("own r-x mapping");
        let offset = u64::from_str_radix(line.split_whitespace().nth(2).unwrap(), 16).unwrap();
        let start = u64::from_str_radix(line.split('-').next().unwrap(), 16).unwrap();
        let svma = super::svma_of_file_offset(&file, offset).unwrap();
        // This very function's address must land on its own symbol's SVMA.
        let here = executable_mapping_resolves_to_its_own_segment as *const () as usize as u64;
        let bias = start - svma;
        use object::{Object, ObjectSymbol};
        let found = file.symbols().any(|s| s.address() == here - bias && s.name().is_ok_and(|n| n.contains("executable_mapping_resolves")));
        assert!(found, "bias {bias:#x} does not map this function back to its symbol");
    }
}
