//! The target process as /proc shows it: threads, names, exact CPU time, and
//! a pidfd that becomes readable when it exits.

use crate::failure::usage;
use anyhow::Result;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;

pub struct Target {
    pub pid: u32,
    pub command: String,
    pub executable: PathBuf,
    /// Readable once the process has exited.
    pub exit_fd: OwnedFd,
}

/// `PF_KTHREAD` in the flags of /proc/PID/stat.
const PF_KTHREAD: u64 = 0x0020_0000;

/// The state letter and the flags of a /proc/PID/stat line (the command,
/// in parentheses, may hold anything: fields are counted after its `)`).
fn state_and_flags(stat: &str) -> (char, u64) {
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first().and_then(|s| s.chars().next()).unwrap_or('?');
    (state, fields.get(6).and_then(|f| f.parse().ok()).unwrap_or(0))
}

fn proc_path(pid: u32, tail: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{tail}"))
}

fn read_trimmed(path: PathBuf) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim_end_matches('\n').to_string())
}

impl Target {
    pub fn open(pid: u32, executable: Option<PathBuf>) -> Result<Target> {
        if pid == 0 {
            return usage("pid 0 is not a process");
        }
        let Some(status) = read_trimmed(proc_path(pid, "status")) else {
            return usage(format!("no process with pid {pid} (it may have exited)"));
        };
        let tgid = status.lines().find_map(|l| l.strip_prefix("Tgid:")).map(str::trim);
        if tgid != Some(pid.to_string().as_str()) {
            return usage(format!(
                "{pid} is a thread of process {}, not a process: pass the process id",
                tgid.unwrap_or("?")
            ));
        }
        // Neither runs user code we could record: an empty "success" would mislead.
        let stat = read_trimmed(proc_path(pid, "stat")).unwrap_or_default();
        let (state, flags) = state_and_flags(&stat);
        if flags & PF_KTHREAD != 0 {
            return usage(format!("{pid} is a kernel thread, not a program: pass the pid of a Tokio program"));
        }
        if matches!(state, 'Z' | 'X') {
            return usage(format!("process {pid} has exited (a zombie waiting for its parent): nothing to record"));
        }
        // SAFETY: plain syscall with integer arguments.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
        if fd < 0 {
            return usage(format!("no process with pid {pid} (it may have exited)"));
        }
        // SAFETY: pidfd_open returned a fresh descriptor we now own.
        let exit_fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let command = read_trimmed(proc_path(pid, "comm")).unwrap_or_else(|| format!("pid {pid}"));
        let executable = match executable {
            Some(path) if !path.exists() => {
                return usage(format!("--target {}: no such file", path.display()));
            }
            Some(path) if !crate::modules::maps_file(pid, &path) => {
                return usage(format!(
                    "--target {}: process {pid} does not map this file; give the binary it runs (default: /proc/{pid}/exe)",
                    path.display()
                ));
            }
            Some(path) => path,
            None => std::fs::read_link(proc_path(pid, "exe"))
                .unwrap_or_else(|_| proc_path(pid, "exe")),
        };
        Ok(Target { pid, command, executable, exit_fd })
    }

    /// The program the target runs, as it runs it: the kernel follows this
    /// link to the inode even when the file was replaced or deleted since.
    pub fn image(&self) -> PathBuf {
        proc_path(self.pid, "exe")
    }

    /// Re-reads name and executable (after the target exec'd).
    pub fn refresh_identity(&mut self) {
        if let Some(command) = read_trimmed(proc_path(self.pid, "comm")) {
            self.command = command;
        }
        if let Ok(exe) = std::fs::read_link(proc_path(self.pid, "exe")) {
            self.executable = exe;
        }
    }

    /// Has the process exited (its pidfd is readable)?
    pub fn has_exited(&self) -> bool {
        use std::os::fd::AsRawFd;
        let mut fd = libc::pollfd { fd: self.exit_fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, no waiting.
        unsafe { libc::poll(&mut fd, 1, 0) > 0 && fd.revents & libc::POLLIN != 0 }
    }

    /// Thread ids alive right now.
    pub fn threads(&self) -> Vec<u32> {
        let mut tids: Vec<u32> = std::fs::read_dir(proc_path(self.pid, "task"))
            .map(|dir| {
                dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
            })
            .unwrap_or_default();
        tids.sort_unstable();
        tids
    }

    pub fn thread_name(&self, tid: u32) -> Option<String> {
        read_trimmed(proc_path(self.pid, &format!("task/{tid}/comm")))
    }

    /// Exact nanoseconds the thread has run (first field of schedstat).
    pub fn thread_cpu_ns(&self, tid: u32) -> Option<u64> {
        read_trimmed(proc_path(self.pid, &format!("task/{tid}/schedstat")))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }
}

/// CLOCK_MONOTONIC now, the clock `bpf_ktime_get_ns` uses.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_state_and_flags_survive_odd_names() {
        let stat = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0";
        assert_eq!(state_and_flags(stat), ('S', 2129984));
        assert_ne!(state_and_flags(stat).1 & PF_KTHREAD, 0);
        assert_eq!(state_and_flags("77 (a) Z (b) Z 1 77 77 0 -1 4194316 0").0, 'Z');
    }
}
