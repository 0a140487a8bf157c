//! The files the target actually runs, held open for the whole session.
//!
//! `/proc/PID/map_files/<range>` opens the inode a mapping was made from,
//! even when the path now holds another file or nothing. Held open, it
//! stays readable after the target exits (launch mode), so the end of the
//! recording unwinds and names frames from the very bytes that ran. Other
//! code reads a held image through `/proc/self/fd/N`, a path every API
//! (object, framehop, blazesym, the kernel's uprobe attach) accepts.

use crate::modules::Mapping;
use scope_model::Module;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Mutex;

struct Held {
    path: String,
    dev: u64,
    inode: u64,
    file: File,
}

static HELD: Mutex<Vec<Held>> = Mutex::new(Vec::new());

fn fd_path(file: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// Opens the image of one mapping as the target maps it, holds it, and
/// returns a path that reads it. Without access to map_files (it needs
/// CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE), the file at the path is used
/// only if it is still the mapped one (same device and inode).
pub fn hold(pid: u32, m: &Mapping<'_>) -> Result<PathBuf, String> {
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(h) = held.iter().find(|h| h.inode == m.inode && h.dev == m.dev && h.path == m.path) {
        return Ok(fd_path(&h.file));
    }
    let mapped = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
    let file = match File::open(&mapped) {
        Ok(file) => file,
        Err(map_err) => {
            let same = std::fs::metadata(m.path).is_ok_and(|d| d.is_file() && d.ino() == m.inode && d.dev() == m.dev);
            if !same {
                return Err(format!(
                    "{} was replaced or deleted since the target mapped it, and {mapped} cannot be read ({map_err}; \
                     run as root): its frames will not be named",
                    m.path
                ));
            }
            File::open(m.path).map_err(|e| format!("{}: {e}", m.path))?
        }
    };
    let path = fd_path(&file);
    held.push(Held { path: m.path.to_string(), dev: m.dev, inode: m.inode, file });
    Ok(path)
}

/// Where to read the image a recorded module came from, if it is held:
/// same path and, when recorded, same build-id.
pub fn live_path(module: &Module) -> Option<PathBuf> {
    let held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    held.iter()
        .filter(|h| h.path == module.path)
        .map(|h| fd_path(&h.file))
        .find(|p| module.build_id.is_none() || crate::modules::build_id(p) == module.build_id)
}
