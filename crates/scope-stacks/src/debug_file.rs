//! Where a binary's DWARF is: in the binary, in a file given by the user
//! (`--debug-file`), under a debug root by build-id
//! (`/usr/lib/debug/.build-id/ab/cdef….debug`, as distributions ship it),
//! or next to it by `.gnu_debuglink`. A separate file is used only when its
//! build-id is the binary's: a stale debug file would name kinds wrongly.

use object::{Object, ObjectSection};
use std::path::{Path, PathBuf};

pub const DEFAULT_DEBUG_ROOT: &str = "/usr/lib/debug";

/// The file holding `binary`'s DWARF: the binary itself, one of the given
/// files (`--debug-file`) whose build-id is the binary's, a matching file
/// under a root by build-id or by debug link; None if there is none.
pub fn locate(binary: &Path, given: &[PathBuf], roots: &[PathBuf]) -> Option<PathBuf> {
    let data = map(binary).ok()?;
    let file = object::File::parse(&*data).ok()?;
    let build_id = file.build_id().ok().flatten().map(<[u8]>::to_vec);
    if has_dwarf(&file) {
        return Some(binary.to_path_buf());
    }
    // A given file must carry the binary's build-id: it is the only tie.
    let mut candidates: Vec<PathBuf> = if build_id.is_some() { given.to_vec() } else { Vec::new() };
    if let Some(id) = build_id.as_deref().filter(|id| id.len() > 1) {
        let hex = crate::elf::hex(id);
        for root in roots {
            candidates.push(root.join(".build-id").join(&hex[..2]).join(format!("{}.debug", &hex[2..])));
        }
    }
    if let Ok(Some((name, _crc))) = file.gnu_debuglink() {
        let name = String::from_utf8_lossy(name).into_owned();
        let dir = binary.parent().unwrap_or(Path::new("/"));
        candidates.push(dir.join(&name));
        candidates.push(dir.join(".debug").join(&name));
        for root in roots {
            candidates.push(root.join(dir.strip_prefix("/").unwrap_or(dir)).join(&name));
        }
    }
    candidates.into_iter().find(|c| c.as_path() != binary && matches(c, build_id.as_deref()).is_ok())
}

/// Why `debug` cannot serve `binary` (a `--debug-file` given for it), or
/// Ok: for telling the user up front.
pub fn check(binary: &Path, debug: &Path) -> Result<(), String> {
    let data = map(binary).map_err(|e| format!("{}: {e}", binary.display()))?;
    let file = object::File::parse(&*data).map_err(|e| format!("{}: {e}", binary.display()))?;
    match file.build_id().ok().flatten() {
        Some(id) => matches(debug, Some(id)),
        None => Err(format!("{} has no build-id to match a debug file with", binary.display())),
    }
}

fn has_dwarf(file: &object::File<'_>) -> bool {
    file.section_by_name(".debug_info").is_some_and(|s| s.size() > 0 && s.kind() != object::SectionKind::UninitializedData)
}

/// Ok when `candidate` holds DWARF and its build-id is `build_id`.
fn matches(candidate: &Path, build_id: Option<&[u8]>) -> Result<(), String> {
    let data = map(candidate).map_err(|e| e.to_string())?;
    let file = object::File::parse(&*data).map_err(|e| e.to_string())?;
    if !has_dwarf(&file) {
        return Err("it has no DWARF (.debug_info)".into());
    }
    let theirs = file.build_id().ok().flatten();
    match (build_id, theirs) {
        (Some(ours), Some(theirs)) if ours != theirs => {
            Err(format!("its build-id {} is not the binary's {}", crate::elf::hex(theirs), crate::elf::hex(ours)))
        }
        _ => Ok(()),
    }
}

/// The file mapped read-only: debug files run to hundreds of MB, of which
/// naming reads a few sections.
pub(crate) fn map(path: &Path) -> std::io::Result<memmap2::Mmap> {
    let file = std::fs::File::open(path)?;
    // SAFETY: read-only mapping of a file we do not write; a file changed
    // under us yields wrong bytes at worst, which the build-id check guards.
    unsafe { memmap2::Mmap::map(&file) }
}
