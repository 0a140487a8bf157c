//! Output files: checked before recording starts (so a bad path fails fast),
//! written to a temporary name next to the target and renamed into place, so
//! a reader never sees half a trace. Mode 0600: we run as root, the trace
//! names the target's functions and threads.

use crate::failure::usage;
use anyhow::{Context, Result};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

pub fn create_private(path: &Path) -> std::io::Result<File> {
    // O_EXCL + O_NOFOLLOW: never write through a symlink someone planted.
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Fails with a usage error if `path` cannot be written.
pub fn check_writable(path: &Path) -> Result<()> {
    if path.is_dir() {
        return usage(format!("{} is a directory; give a file name", path.display()));
    }
    let probe = temp_path(path);
    match create_private(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => usage(format!("cannot write {}: {e}", path.display())),
    }
}

/// Writes via `write` to a temp file, then renames it to `path`.
pub fn write_atomically<T>(path: &Path, write: impl FnOnce(&mut dyn Write) -> std::io::Result<T>) -> Result<T> {
    let tmp = temp_path(path);
    let result = (|| {
        let file = create_private(&tmp)?;
        let mut out = BufWriter::new(file);
        let value = write(&mut out)?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok::<T, std::io::Error>(value)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}
