//! The target's executable mappings from /proc/PID/maps, with build-ids, so
//! a capture can later be matched with the right binaries (and a binary
//! replaced on disk since can be detected).

use object::{Object, ObjectSection};
use scope_model::Module;
use std::collections::HashMap;

/// Parses one maps line: `start-end perms offset dev inode path`.
fn parse_line(line: &str) -> Option<(u64, u64, &str, u64, &str)> {
    let mut fields = line.split_whitespace();
    let range = fields.next()?;
    let perms = fields.next()?;
    let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
    let _dev = fields.next()?;
    let _inode = fields.next()?;
    let path = fields.next()?;
    let (start, end) = range.split_once('-')?;
    Some((u64::from_str_radix(start, 16).ok()?, u64::from_str_radix(end, 16).ok()?, perms, offset, path))
}

pub fn build_id(path: &str) -> Option<String> {
    let data = std::fs::read(path).ok()?;
    let file = object::File::parse(&*data).ok()?;
    if let Ok(Some(id)) = file.build_id() {
        return Some(id.iter().map(|b| format!("{b:02x}")).collect());
    }
    // Some linkers emit the note in a section the generic lookup misses.
    let section = file.section_by_name(".note.gnu.build-id")?;
    let bytes = section.data().ok()?;
    bytes.get(16..).map(|id| id.iter().map(|b| format!("{b:02x}")).collect())
}

/// The `[uprobes]` mapping: uretprobes replace return addresses on the
/// stack with its trampoline.
pub fn uprobes_area(pid: u32) -> Option<std::ops::Range<u64>> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    maps.lines().filter(|l| l.ends_with("[uprobes]")).find_map(|l| {
        let (a, b) = l.split_whitespace().next()?.split_once('-')?;
        Some(u64::from_str_radix(a, 16).ok()?..u64::from_str_radix(b, 16).ok()?)
    })
}

/// Executable, file-backed mappings of `pid` (empty if it is gone).
pub fn read(pid: u32) -> Vec<Module> {
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else { return Vec::new() };
    let mut ids: HashMap<String, Option<String>> = HashMap::new();
    maps.lines()
        .filter_map(parse_line)
        .filter(|(_, _, perms, _, path)| perms.contains('x') && path.starts_with('/'))
        .map(|(start, end, _, offset, path)| {
            let build_id = ids.entry(path.to_string()).or_insert_with(|| build_id(path)).clone();
            Module { path: path.to_string(), start_avma: start, end_avma: end, file_offset: offset, build_id }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_lines() {
        let line = "55d0c0a00000-55d0c0b00000 r-xp 0001a000 fd:00 123 /usr/bin/demo app";
        assert_eq!(
            parse_line(line),
            Some((0x55d0c0a00000, 0x55d0c0b00000, "r-xp", 0x1a000, "/usr/bin/demo"))
        );
        assert_eq!(parse_line("7ffd0000-7ffd1000 rw-p 00000000 00:00 0"), None);
    }

    #[test]
    fn reads_our_own_modules_with_build_ids() {
        let modules = read(std::process::id());
        let me = std::fs::read_link("/proc/self/exe").unwrap();
        let main = modules.iter().find(|m| m.path == me.to_str().unwrap()).expect("own binary mapped");
        assert!(main.start_avma < main.end_avma);
        let id = main.build_id.as_deref().expect("rustc emits a GNU build-id");
        assert!(id.len() >= 16 && id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    }
}
