//! The target's executable mappings from /proc/PID/maps, with build-ids, so
//! a capture can later be matched with the right binaries (and a binary
//! replaced on disk since can be detected).
//!
//! Every image is read as the target maps it, through
//! `/proc/PID/map_files/<range>`, never by the path /proc shows: after a
//! `cargo build` while the target runs, that path holds the *new* binary
//! (or shows ` (deleted)`), and unwinding, names and probes from it would
//! be wrong without a word. The files opened that way are held (see
//! [`crate::images`]) so the end of the recording names frames from them.

use crate::images;
use object::{Object, ObjectSection};
use scope_model::Module;
use std::collections::HashMap;

/// One line of /proc/PID/maps: `start-end perms offset dev inode path`.
#[derive(Debug, PartialEq, Eq)]
pub struct Mapping<'a> {
    pub start: u64,
    pub end: u64,
    pub perms: &'a str,
    pub offset: u64,
    pub dev: u64,
    pub inode: u64,
    /// The path as it was when mapped, without the ` (deleted)` mark.
    pub path: &'a str,
    /// The file at `path` is no longer the one mapped.
    pub deleted: bool,
}

const DELETED: &str = " (deleted)";

/// Parses one maps line. The path is everything after the fifth field:
/// it may hold spaces (`/home/me/my dir/app`).
pub fn parse_line(line: &str) -> Option<Mapping<'_>> {
    let mut rest = line;
    let mut fields = [""; 5];
    for field in &mut fields {
        rest = rest.trim_start_matches(' ');
        let end = rest.find(' ').unwrap_or(rest.len());
        *field = &rest[..end];
        rest = &rest[end..];
    }
    let [range, perms, offset, dev, inode] = fields;
    let (start, end) = range.split_once('-')?;
    let (major, minor) = dev.split_once(':')?;
    let path = rest.trim_start_matches(' ');
    let (path, deleted) = match path.strip_suffix(DELETED) {
        Some(p) => (p, true),
        None => (path, false),
    };
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        perms,
        offset: u64::from_str_radix(offset, 16).ok()?,
        dev: libc::makedev(u32::from_str_radix(major, 16).ok()?, u32::from_str_radix(minor, 16).ok()?),
        inode: inode.parse().ok()?,
        path,
        deleted,
    })
}

/// The GNU build-id of an ELF file, read on demand (a binary with 300 MB
/// of DWARF is not loaded for its 20-byte note).
pub fn build_id(path: &std::path::Path) -> Option<String> {
    let file = std::fs::File::open(path).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let cache = object::read::ReadCache::new(file);
    let elf = object::File::parse(&cache).ok()?;
    let hex = |id: &[u8]| id.iter().map(|b| format!("{b:02x}")).collect::<String>();
    if let Ok(Some(id)) = elf.build_id() {
        return Some(hex(id));
    }
    // Some linkers emit the note in a section the generic lookup misses.
    let section = elf.section_by_name(".note.gnu.build-id")?;
    section.data().ok()?.get(16..).map(hex)
}

/// The `[uprobes]` mapping: uretprobes replace return addresses on the
/// stack with its trampoline.
pub fn uprobes_area(pid: u32) -> Option<std::ops::Range<u64>> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    maps.lines().filter_map(parse_line).find(|m| m.path == "[uprobes]").map(|m| m.start..m.end)
}

/// Executable, file-backed mappings of `pid` (empty if it is gone). Each
/// image is opened as mapped and held; its build-id is the running one's.
/// Images that cannot be opened as mapped are listed with no build-id and
/// a warning in `warnings` (their frames are not named from another file).
pub fn read(pid: u32, warnings: &mut Vec<String>) -> Vec<Module> {
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else { return Vec::new() };
    let mut ids: HashMap<(String, u64), Option<String>> = HashMap::new();
    maps.lines()
        .filter_map(parse_line)
        .filter(|m| m.perms.contains('x') && m.path.starts_with('/'))
        .map(|m| {
            let build_id = ids
                .entry((m.path.to_string(), m.inode))
                .or_insert_with(|| match images::hold(pid, &m) {
                    Ok(live) => build_id(&live),
                    Err(why) => {
                        warnings.push(why);
                        None
                    }
                })
                .clone();
            Module { path: m.path.to_string(), start_avma: m.start, end_avma: m.end, file_offset: m.offset, build_id }
        })
        .collect()
}

/// Is `path` (the same file: device and inode) mapped by `pid`?
pub fn maps_file(pid: u32, path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else { return false };
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else { return false };
    maps.lines().filter_map(parse_line).any(|m| m.inode == meta.ino() && m.dev == meta.dev())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_lines() {
        let line = "55d0c0a00000-55d0c0b00000 r-xp 0001a000 fd:00 123                        /usr/bin/demo";
        let m = parse_line(line).unwrap();
        assert_eq!((m.start, m.end, m.perms, m.offset, m.inode), (0x55d0c0a00000, 0x55d0c0b00000, "r-xp", 0x1a000, 123));
        assert_eq!(m.dev, libc::makedev(0xfd, 0));
        assert_eq!((m.path, m.deleted), ("/usr/bin/demo", false));
        let anon = parse_line("7ffd0000-7ffd1000 rw-p 00000000 00:00 0").unwrap();
        assert_eq!(anon.path, "");
    }

    #[test]
    fn paths_keep_their_spaces_and_lose_the_deleted_mark() {
        let line = "55d0c0a00000-55d0c0b00000 r-xp 00000000 fd:00 77   /home/me/my dir/demo app";
        assert_eq!(parse_line(line).unwrap().path, "/home/me/my dir/demo app");
        let line = "55d0c0a00000-55d0c0b00000 r-xp 00000000 fd:00 77   /home/me/my dir/app (deleted)";
        let m = parse_line(line).unwrap();
        assert_eq!((m.path, m.deleted), ("/home/me/my dir/app", true));
    }

    #[test]
    fn reads_our_own_modules_with_build_ids() {
        let modules = read(std::process::id(), &mut Vec::new());
        let me = std::fs::read_link("/proc/self/exe").unwrap();
        let main = modules.iter().find(|m| m.path == me.to_str().unwrap()).expect("own binary mapped");
        assert!(main.start_avma < main.end_avma);
        let id = main.build_id.as_deref().expect("rustc emits a GNU build-id");
        assert!(id.len() >= 16 && id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
        assert!(maps_file(std::process::id(), &me));
        assert!(!maps_file(std::process::id(), std::path::Path::new("/etc/hostname")));
    }
}
