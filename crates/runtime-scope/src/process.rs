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
            Some(path) => path,
            None => std::fs::read_link(proc_path(pid, "exe"))
                .unwrap_or_else(|_| proc_path(pid, "exe")),
        };
        Ok(Target { pid, command, executable, exit_fd })
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
