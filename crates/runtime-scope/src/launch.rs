//! Launch mode: start a program held before its first instruction, attach,
//! then let it run. The held process is ourselves re-executed as
//! `runtime-scope __launch CMD…`: it waits for a byte on an inherited pipe,
//! then execs CMD in place — same pid, so the probes are already on it.

use crate::failure::usage;
use anyhow::{Context, Result};
use scope_model::StopReason;
use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub(crate) const STUB_ARG: &str = "__launch";
const GATE_ENV: &str = "RUNTIME_SCOPE_LAUNCH_FD";
const GRACE: Duration = Duration::from_secs(5);

/// If this process is the held stub, waits for the go and execs; never
/// returns in that case.
pub fn run_stub_if_requested() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some(STUB_ARG) {
        return;
    }
    let Some(fd) = std::env::var(GATE_ENV).ok().and_then(|v| v.parse::<i32>().ok()) else {
        say!("runtime-scope: {STUB_ARG} is internal");
        std::process::exit(2);
    };
    // SAFETY: the parent passed us this descriptor, nobody else owns it.
    let gate = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut byte = [0u8; 1];
    // SAFETY: valid fd and buffer.
    let n = unsafe { libc::read(gate.as_raw_fd(), byte.as_mut_ptr().cast(), 1) };
    if n != 1 {
        // The profiler went away before attaching: do not run unobserved.
        std::process::exit(125);
    }
    drop(gate);
    // SAFETY: single-threaded stub, changing our own environment.
    unsafe { std::env::remove_var(GATE_ENV) };
    // Rust ignores SIGPIPE and exec keeps ignored signals: give the program
    // the default it would have had without us (`… | head` ends it).
    // SAFETY: resetting a signal disposition before exec.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let argv: Vec<CString> = args[2..].iter().map(|a| CString::new(a.as_str()).expect("no NUL in argv")).collect();
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: NUL-terminated argv array of valid C strings.
    unsafe { libc::execvp(ptrs[0], ptrs.as_ptr()) };
    let err = std::io::Error::last_os_error();
    say!("runtime-scope: cannot run {}: {err}", args[2]);
    std::process::exit(127);
}

/// Finds the program as execvp will, to fail early with a usage error.
pub fn resolve(program: &str) -> Result<PathBuf> {
    let is_executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let path = PathBuf::from(program);
        return if is_executable(&path) { Ok(path) } else { usage(format!("cannot run {program}: no such executable file")) };
    }
    let path_var = std::env::var("PATH").unwrap_or_default();
    for dir in path_var.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(program);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    usage(format!("cannot run {program}: not found in PATH"))
}

pub struct Held {
    pub child: Launched,
    /// Write a byte here to let the program start.
    pub release: OwnedFd,
}

/// The program we started. It is never left behind: whatever ends the
/// recording (an error, a panic), dropping this stops it.
pub struct Launched {
    child: Option<Child>,
}

impl Launched {
    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Reaps the program when recording ends: see [`finish`].
    pub fn finish(&mut self, reason: StopReason) -> Option<i32> {
        self.child.take().map(|child| finish(child, reason))
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take()
            && child.try_wait().ok().flatten().is_none()
        {
            say!("runtime-scope: the recording failed: stopping the program it started (pid {})", child.id());
            finish(child, StopReason::Incomplete);
        }
    }
}

/// Starts `argv` held before exec. Stdin, stdout and stderr are shared.
pub fn spawn_held(argv: &[String]) -> Result<Held> {
    resolve(&argv[0])?;
    let mut fds = [0i32; 2];
    // SAFETY: valid out-array; O_CLOEXEC on both ends, the read end is
    // re-enabled for the child by passing it explicitly below.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("creating the launch pipe");
    }
    // SAFETY: fresh descriptors we own.
    let (read_end, release) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let raw = read_end.as_raw_fd();
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg(STUB_ARG).args(argv).env(GATE_ENV, raw.to_string());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            let flags = libc::fcntl(raw, libc::F_GETFD);
            if flags < 0 || libc::fcntl(raw, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().with_context(|| format!("starting {}", argv[0]))?;
    drop(read_end);
    Ok(Held { child: Launched { child: Some(child) }, release })
}

/// Exit code, or 128 + signal, as a shell reports it.
fn status_code(status: std::process::ExitStatus) -> i32 {
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Reaps the launched program when recording ends. If it is still running
/// (duration reached or Ctrl-C), it gets SIGTERM, then SIGKILL after 5 s.
fn finish(mut child: Child, reason: StopReason) -> i32 {
    if let Ok(Some(status)) = child.try_wait() {
        return status_code(status);
    }
    let deadline = Instant::now() + GRACE;
    if reason != StopReason::Incomplete {
        say!("runtime-scope: the launched program is still running ({}): sending SIGTERM", reason.describe());
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status_code(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            return child.wait().map(status_code).unwrap_or(-1);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Lets a held child exec its program and waits until it has (or exited),
/// so the maps read next are the program's. The sign is its command line:
/// the stub's (`… __launch CMD…`) is replaced only once the new program's
/// arguments are in place, after the kernel mapped the program and set its
/// name (the executable's link changes earlier, before the name: seen on
/// 5.10 under emulation, where the recording was then named after our
/// stub, `exe`), together with `/proc/PID/exe` no longer being ours (the
/// program, or its interpreter for a script). The stub's own exec may
/// still be under way when we get here (its command line is empty until
/// then): it is waited for first, or the stub's line appearing would pass
/// for the program's. Usually a few ms; a cold start can take over a
/// second; each wait gives up after 10 s. The program's file must also be
/// in its maps: once (6.1 under emulation, the first launch after boot)
/// the maps read next held none of it.
pub fn release_child(fd: OwnedFd, target: &mut crate::process::Target) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let cmdline = || std::fs::read(format!("/proc/{}/cmdline", target.pid)).ok().filter(|c| !c.is_empty());
    let gone = || {
        std::fs::read_to_string(format!("/proc/{}/stat", target.pid))
            .map_or(true, |s| s.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
    };
    let file_id = |p: &std::path::Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let stub = file_id(std::path::Path::new("/proc/self/exe"));
    let runs_program = || file_id(std::path::Path::new(&format!("/proc/{}/exe", target.pid))).is_some_and(|exe| Some(exe) != stub);
    let is_stub = |line: &[u8]| line.split(|&b| b == 0).any(|arg| arg == STUB_ARG.as_bytes());
    let wait_until = |done: &dyn Fn() -> bool| {
        for _ in 0..2000 {
            if done() || gone() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    };
    wait_until(&|| cmdline().is_some_and(|c| is_stub(&c)));
    let before = cmdline();
    std::fs::File::from(fd).write_all(b"go").context("releasing the launched program")?;
    let image = std::path::PathBuf::from(format!("/proc/{}/exe", target.pid));
    wait_until(&|| cmdline().is_some_and(|now| Some(&now) != before.as_ref()) && runs_program() && crate::modules::maps_file(target.pid, &image));
    target.refresh_identity();
    Ok(())
}
