//! Output files: checked before recording starts (so a bad path fails fast),
//! written to a temporary name next to the target and renamed into place, so
//! a reader never sees half a trace. Mode 0600: we run as root, the trace
//! names the target's functions and threads; under sudo the files are given
//! to the user who ran sudo (so "convert later without root" works).
//!
//! What is not a regular file is never renamed over: a character device or
//! a FIFO (`-o /dev/null`, `-o pipe`) is opened and written in place, and
//! `/dev/stdout`, `/dev/stderr`, `/dev/fd/N` write to that descriptor of
//! ours (`-o /dev/stdout | gzip`). Other symbolic links are refused rather
//! than followed or replaced.

use crate::failure::usage;
use anyhow::{Context, Result};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// How an output path is written.
#[derive(Debug, PartialEq, Eq)]
pub enum Destination {
    /// A regular file (or none yet): a temporary file renamed into place.
    File,
    /// A character device, FIFO or socket: opened and written in place.
    Direct,
    /// One of our own descriptors (`/dev/stdout`, `/dev/fd/3`).
    Descriptor(i32),
}

/// `/dev/stdout` and its kin: the descriptor they name in this process.
fn own_descriptor(path: &Path) -> Option<i32> {
    let text = path.to_str()?;
    match text {
        "/dev/stdout" => Some(1),
        "/dev/stderr" => Some(2),
        _ => ["/dev/fd/", "/proc/self/fd/"].iter().find_map(|p| text.strip_prefix(p)?.parse().ok()),
    }
}

/// What `path` is, and so how it must be written; a usage error for what
/// cannot be an output.
pub fn destination(path: &Path) -> Result<Destination> {
    if let Some(fd) = own_descriptor(path) {
        return Ok(Destination::Descriptor(fd));
    }
    let meta = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Destination::File),
        Err(e) => return usage(format!("cannot write {}: {e}", path.display())),
        Ok(meta) => meta,
    };
    let kind = meta.file_type();
    let special = |t: std::fs::FileType| t.is_char_device() || t.is_fifo() || t.is_socket();
    if kind.is_file() {
        Ok(Destination::File)
    } else if special(kind) {
        Ok(Destination::Direct)
    } else if kind.is_dir() {
        usage(format!("{} is a directory; give a file name", path.display()))
    } else if kind.is_symlink() {
        match std::fs::metadata(path) {
            Ok(target) if special(target.file_type()) => Ok(Destination::Direct),
            _ => {
                let to = std::fs::read_link(path).map_or("?".into(), |t| t.display().to_string());
                usage(format!(
                    "{} is a symbolic link (to {to}): give the file itself; a link is neither followed nor replaced",
                    path.display()
                ))
            }
        }
    } else {
        usage(format!("{} is not a regular file, a character device or a FIFO", path.display()))
    }
}

pub fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Where a capture bound for `path` is streamed while recording: beside it
/// for a regular file, else (a device, a pipe) in the temporary directory.
pub fn capture_temp(path: &Path) -> PathBuf {
    match destination(path) {
        Ok(Destination::File) => temp_path(path).with_extension("rscope"),
        _ => std::env::temp_dir().join(format!(".runtime-scope-{}.rscope", std::process::id())),
    }
}

/// The user who ran `sudo runtime-scope …`, if that is how we run.
fn sudo_owner() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let id = |var: &str| std::env::var(var).ok()?.parse::<u32>().ok();
    Some((id("SUDO_UID")?, id("SUDO_GID")?))
}

pub fn create_private(path: &Path) -> std::io::Result<File> {
    // O_EXCL + O_NOFOLLOW: never write through a symlink someone planted.
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    if let Some((uid, gid)) = sudo_owner() {
        // SAFETY: fchown on a descriptor we own.
        if unsafe { libc::fchown(file.as_raw_fd(), uid, gid) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(file)
}

/// Fails with a usage error if `path` cannot be written.
pub fn check_writable(path: &Path) -> Result<()> {
    match destination(path)? {
        Destination::File => {
            let probe = temp_path(path);
            match create_private(&probe) {
                Ok(_) => {
                    let _ = std::fs::remove_file(&probe);
                    Ok(())
                }
                Err(e) => usage(format!("cannot write {}: {e}", path.display())),
            }
        }
        // Opening a FIFO would wait for its reader: ask for permission only.
        Destination::Direct => {
            let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).context("path with a NUL byte")?;
            // SAFETY: a valid C string.
            if unsafe { libc::access(c.as_ptr(), libc::W_OK) } != 0 {
                return usage(format!("cannot write {}: {}", path.display(), std::io::Error::last_os_error()));
            }
            Ok(())
        }
        Destination::Descriptor(fd) => {
            // SAFETY: F_GETFL on any number is harmless.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
            if flags < 0 || flags & libc::O_ACCMODE == libc::O_RDONLY {
                return usage(format!("cannot write {}: descriptor {fd} is not open for writing", path.display()));
            }
            Ok(())
        }
    }
}

/// The same file, by device and inode when both exist, else by absolute
/// path (what would be created).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => {
            let absolute = |p: &Path| {
                let parent = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
                parent.canonicalize().ok().map(|d| d.join(p.file_name().unwrap_or_default()))
            };
            a == b || absolute(a).is_some_and(|x| Some(x) == absolute(b))
        }
    }
}

/// Refuses two outputs that are one file, or an output that is an input:
/// one of them would be lost (the capture, usually).
pub fn check_distinct(output: &Path, other: &Path, what: &str) -> Result<()> {
    if same_file(output, other) {
        return usage(format!("{} is also {what}: writing it would destroy that; give another file name", output.display()));
    }
    Ok(())
}

/// Moves a capture we kept under a temporary name (`.trace.pftrace.tmp-N.rscope`)
/// to a visible one beside it (`trace.pftrace.rscope`, or `…-2.rscope` if
/// taken; nothing is replaced) and returns where it is now.
pub fn keep_visible(temp: &Path) -> PathBuf {
    let name = temp.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let stem = name.trim_start_matches('.');
    let stem = match stem.rfind(".tmp-") {
        Some(i) => &stem[..i],
        None => stem.trim_end_matches(".rscope"),
    };
    for n in 1..100 {
        let candidate = temp.with_file_name(if n == 1 { format!("{stem}.rscope") } else { format!("{stem}-{n}.rscope") });
        // A hard link never replaces what is there; then drop the old name.
        if std::fs::hard_link(temp, &candidate).is_ok() {
            let _ = std::fs::remove_file(temp);
            return candidate;
        }
    }
    temp.to_path_buf()
}

/// Counts what goes through, for "written (N MB)" on pipes and devices.
struct Counted<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes through `write` into `file` buffered; returns its value and the bytes.
fn write_into<T>(file: File, write: impl FnOnce(&mut dyn Write) -> std::io::Result<T>) -> std::io::Result<(T, u64, File)> {
    let mut out = Counted { inner: BufWriter::new(file), bytes: 0 };
    let value = write(&mut out)?;
    let bytes = out.bytes;
    let file = out.inner.into_inner().map_err(|e| e.into_error())?;
    Ok((value, bytes, file))
}

/// Writes `path` through `write` as [`destination`] says: a regular file
/// via a temporary file renamed into place, anything else in place.
/// Returns `write`'s value and the bytes written.
pub fn write_atomically<T>(path: &Path, write: impl FnOnce(&mut dyn Write) -> std::io::Result<T>) -> Result<(T, u64)> {
    let result = match destination(path)? {
        Destination::Descriptor(fd) => {
            // SAFETY: dup of our own descriptor; the copy is ours to close.
            let copy = unsafe { libc::dup(fd) };
            if copy < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                // SAFETY: a fresh descriptor we own.
                write_into(unsafe { File::from_raw_fd(copy) }, write).map(|(v, n, _)| (v, n))
            }
        }
        Destination::Direct => OpenOptions::new().write(true).open(path).and_then(|f| write_into(f, write)).map(|(v, n, _)| (v, n)),
        Destination::File => {
            let tmp = temp_path(path);
            let result = create_private(&tmp).and_then(|file| write_into(file, write)).and_then(|(v, n, file)| {
                file.sync_all()?;
                std::fs::rename(&tmp, path)?;
                Ok((v, n))
            });
            if result.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            result
        }
    };
    result.with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_fifos_and_our_streams_are_written_in_place() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(destination(Path::new("/dev/null")).unwrap(), Destination::Direct);
        assert_eq!(destination(Path::new("/dev/stdout")).unwrap(), Destination::Descriptor(1));
        assert_eq!(destination(Path::new("/proc/self/fd/7")).unwrap(), Destination::Descriptor(7));
        assert_eq!(destination(&dir.path().join("new.json")).unwrap(), Destination::File);
        let fifo = dir.path().join("pipe");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(destination(&fifo).unwrap(), Destination::Direct);
        // A symlink to a regular file is refused, never renamed over.
        std::fs::write(dir.path().join("real"), b"keep").unwrap();
        std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("link")).unwrap();
        let err = destination(&dir.path().join("link")).unwrap_err().to_string();
        assert!(err.contains("is a symbolic link"), "{err}");
        // Writing /dev/null leaves it a character device.
        let (_, bytes) = write_atomically(Path::new("/dev/null"), |out| out.write_all(b"trace")).unwrap();
        assert_eq!(bytes, 5);
        assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device());
        assert_eq!(std::fs::read(dir.path().join("real")).unwrap(), b"keep");
    }

    #[test]
    fn one_file_under_two_names_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.rscope");
        std::fs::write(&a, b"x").unwrap();
        std::fs::hard_link(&a, dir.path().join("b.rscope")).unwrap();
        assert!(same_file(&a, &dir.path().join("b.rscope")), "same inode");
        assert!(same_file(&dir.path().join("new.json"), &dir.path().join(".").join("new.json")), "same path, not yet created");
        assert!(!same_file(&a, &dir.path().join("new.json")));
        assert!(check_distinct(&a, &a, "the capture being read").is_err());
    }

    #[test]
    fn kept_captures_get_a_visible_name_that_replaces_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let temp = dir.path().join(".trace.pftrace.tmp-42.rscope");
        std::fs::write(&temp, b"capture").unwrap();
        std::fs::write(dir.path().join("trace.pftrace.rscope"), b"older").unwrap();
        let kept = keep_visible(&temp);
        assert_eq!(kept, dir.path().join("trace.pftrace-2.rscope"));
        assert_eq!(std::fs::read(&kept).unwrap(), b"capture");
        assert_eq!(std::fs::read(dir.path().join("trace.pftrace.rscope")).unwrap(), b"older");
        assert!(!temp.exists());
    }
}
