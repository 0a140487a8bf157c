//! While the dashboard owns the terminal, our own stderr lines (progress,
//! warnings) go to a memory file; they are printed once the screen is back.

use anyhow::{Context, Result};
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub struct Held {
    saved: OwnedFd,
    log: std::fs::File,
}

impl Held {
    pub fn start() -> Result<Held> {
        // SAFETY: plain fd syscalls; every returned fd is checked and owned.
        unsafe {
            let saved = libc::dup(2);
            if saved < 0 {
                return Err(std::io::Error::last_os_error()).context("dup(stderr)");
            }
            let saved = OwnedFd::from_raw_fd(saved);
            let log = libc::memfd_create(c"runtime-scope-log".as_ptr(), libc::MFD_CLOEXEC);
            if log < 0 {
                return Err(std::io::Error::last_os_error()).context("memfd_create");
            }
            let log = std::fs::File::from_raw_fd(log);
            if libc::dup2(log.as_raw_fd(), 2) < 0 {
                return Err(std::io::Error::last_os_error()).context("dup2 onto stderr");
            }
            Ok(Held { saved, log })
        }
    }

    /// Puts stderr back and replays what was written meanwhile.
    pub fn release(mut self) {
        // SAFETY: restores the descriptor saved in `start`.
        unsafe { libc::dup2(self.saved.as_raw_fd(), 2) };
        let mut text = String::new();
        if self.log.rewind().is_ok() && self.log.read_to_string(&mut text).is_ok() {
            let _ = std::io::stderr().write_all(text.as_bytes());
        }
    }
}
