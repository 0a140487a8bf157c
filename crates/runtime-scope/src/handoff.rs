//! Probes of a target that is gone, left to come off after we exit.
//!
//! Removing a probe waits for the kernel's grace periods (uprobes: 4.7 s
//! for the demo's 55 links, measured; the tracepoints and sampling events
//! about 1 s more), in whichever process drops the last reference. While
//! the target runs that wait is the target's gain (it stops paying for the
//! probes). Once it has exited nobody pays, and the user's terminal must
//! not wait: a child process holds every descriptor until we have exited,
//! so our own closes are not the last ones and cost nothing; the kernel
//! removes the probes when the child exits in turn, a moment later.

/// Starts the holder; false if it could not be (the caller then waits).
pub fn hold_until_we_exit() -> bool {
    let mut fds = [0i32; 2];
    // SAFETY: valid out-array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return false;
    }
    let (read_end, write_end) = (fds[0], fds[1]);
    // SAFETY: the child makes only async-signal-safe calls (sigaction via
    // signal, close, read, _exit) before it ends: no allocation, no locks.
    match unsafe { libc::fork() } {
        -1 => {
            // SAFETY: closing the pipe we made.
            unsafe {
                libc::close(read_end);
                libc::close(write_end);
            }
            false
        }
        0 => unsafe {
            for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
                libc::signal(signal, libc::SIG_IGN);
            }
            // Whoever reads our output must not wait for this process.
            for fd in [write_end, 0, 1, 2] {
                libc::close(fd);
            }
            // Returns 0 (end of file) once our last write end is closed: we exited.
            let mut byte = 0u8;
            while libc::read(read_end, (&raw mut byte).cast(), 1) < 0 {}
            libc::_exit(0)
        },
        // The write end stays open in this process until it exits.
        _ => {
            // SAFETY: the child's end, not ours to keep.
            unsafe { libc::close(read_end) };
            true
        }
    }
}
