//! Following the target through exec (`record -- env X=1 ./app`,
//! `sh -c "exec ./app"`): the kernel tells us when the process runs a new
//! program (scope-ebpf's `sched_process_exec`); its old mappings are gone,
//! so the stack collector starts over with the new image's modules, and
//! the task probes are resolved in the new program and attached to it.

use crate::probes::{ProbeSet, Probes};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

pub struct ExecFollower {
    pid: u32,
    /// Device and inode of the program the probes were resolved for.
    probed: Option<(u64, u64)>,
}

fn program_of(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/exe"))
}

fn identity(pid: u32) -> Option<(u64, u64)> {
    std::fs::metadata(program_of(pid)).ok().map(|m| (m.dev(), m.ino()))
}

impl ExecFollower {
    /// For `pid`, whose task probes were looked for in `program`.
    pub fn new(pid: u32, program: Option<&std::path::Path>) -> Self {
        let probed = program.and_then(|p| std::fs::metadata(p).ok()).map(|m| (m.dev(), m.ino()));
        ExecFollower { pid, probed }
    }

    /// Does the process now run another program than the one probed? (After
    /// an exec, or already at the start: a launched `env` that exec'd the
    /// app before we looked.) A launch's own exec into the program probed
    /// is not a change.
    pub fn program_changed(&mut self) -> bool {
        let now = identity(self.pid);
        if now.is_none() || now == self.probed {
            return false;
        }
        self.probed = now;
        true
    }
}

/// Resolves the task probes in the program `pid` runs now and attaches
/// them (`tasks`: wanted at all); one line says what happened.
pub fn move_probes(pid: u32, tasks: bool, probes: &mut Probes) {
    let shown = std::fs::read_link(program_of(pid)).unwrap_or_else(|_| program_of(pid));
    if !tasks {
        say!("runtime-scope: pid {pid} executed {}", shown.display());
        return;
    }
    // Says itself why there are none.
    if let Ok(points) = crate::commands::find_poll_points(&[], &program_of(pid), &shown) {
        let attached = probes
            .attach_task_probes(&points, pid, ProbeSet::Polls)
            .and_then(|()| probes.attach_task_probes(&points, pid, ProbeSet::Wakes));
        match attached {
            Ok(()) => say!("runtime-scope: pid {pid} executed {}: task probes moved to it", shown.display()),
            Err(e) => say!("runtime-scope: pid {pid} executed {}; its task probes failed ({e:#}): threads only", shown.display()),
        }
    }
}
