//! One guest: boot a kernel under qemu with the initramfs, keep its serial
//! console, and read the report the guest's /init printed there.
//!
//! Software emulation only (KVM is not available where this runs), and
//! single-threaded: with multi-threaded TCG a 6.12 guest once died with
//! `Oops: int3` in `__schedule` while our uprobes were being removed (the
//! kernel patches its text while the other vCPU runs it). Nothing measured
//! in a guest is a timing: emulation is many times slower, and unevenly so.
//!
//! `tsc=reliable`: the emulated TSC runs off the host clock on every vCPU,
//! but the kernel's boot check finds the vCPUs "unsynchronized" and stops
//! trusting it; the scheduler's clock then drifts from the clock our
//! probes stamp events with by up to a tick per span (schedstat disagreed
//! with the traced on-CPU time by 10-70%), which is the guest's artefact,
//! not the tool's.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const PREFIX: &str = "rscope-guest: ";

/// Kernel messages that mean the guest kernel itself went wrong (printed
/// at loglevel 5: warnings and worse).
const KERNEL_TROUBLE: [&str; 6] = ["Kernel panic", "BUG: ", "Oops", "cut here ]", "general protection fault", "RIP: 0010:"];

/// Boots `vmlinuz` with `initramfs`; returns the whole console, also
/// written to `log`. Killed at `limit` (the report then lacks `done`).
pub fn boot(vmlinuz: &Path, initramfs: &Path, log: &Path, limit: Duration, label: &str) -> Result<String, String> {
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg,thread=single", "-cpu", "max", "-smp", "2", "-m", "1536"])
        .args(["-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 loglevel=5 panic=-1 tsc=reliable"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start qemu-system-x86_64 (cargo xtask setup installs it): {e}"))?;
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped");
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let text = String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_string();
            if tx.send(text).is_err() {
                break;
            }
            line.clear();
        }
    });
    let mut file = std::fs::File::create(log).map_err(|e| format!("creating {}: {e}", log.display()))?;
    let deadline = Instant::now() + limit;
    let mut console = String::new();
    let mut timed_out = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(rest) = line.strip_prefix(PREFIX)
                    && (rest.starts_with("kernel ") || rest.starts_with("result "))
                {
                    println!("xtask: [{label}] {rest}");
                }
                let _ = writeln!(file, "{line}");
                console.push_str(&line);
                console.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
        }
    }
    if timed_out {
        let _ = child.kill();
        console.push_str(&format!("(xtask: the guest was stopped after {} s)\n", limit.as_secs()));
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    if !timed_out && !status.success() {
        return Err(format!("qemu failed ({status}): {}", stderr.trim()));
    }
    Ok(console)
}

/// One test's run in the guest.
#[derive(Debug, PartialEq)]
pub struct TestRun {
    pub name: String,
    pub exit: Option<i32>,
    /// What the guest printed while it ran (the harness's output).
    pub output: Vec<String>,
}

impl TestRun {
    /// Passed: exit 0 and the harness ran exactly the one test (a filter
    /// that matched nothing also exits 0).
    pub fn passed(&self) -> bool {
        self.exit == Some(0) && self.output.iter().any(|l| l.starts_with("test result: ok. 1 passed"))
    }
}

/// What the guest reported on its console.
#[derive(Debug, Default, PartialEq)]
pub struct Report {
    pub kernel: Option<String>,
    pub check_exit: Option<i32>,
    /// `runtime-scope check`'s output, line by line.
    pub check: Vec<String>,
    pub tests: Vec<TestRun>,
    pub done: bool,
    /// Kernel messages saying the guest kernel went wrong.
    pub kernel_trouble: Vec<String>,
}

impl Report {
    pub fn parse(console: &str) -> Report {
        let mut report = Report::default();
        let mut current: Option<TestRun> = None;
        for line in console.lines() {
            if KERNEL_TROUBLE.iter().any(|t| line.contains(t)) {
                report.kernel_trouble.push(line.to_string());
            }
            let Some(rest) = line.strip_prefix(PREFIX) else {
                if let Some(run) = current.as_mut() {
                    run.output.push(line.to_string());
                }
                continue;
            };
            if let Some(kernel) = rest.strip_prefix("kernel ") {
                report.kernel = Some(kernel.to_string());
            } else if let Some(code) = rest.strip_prefix("check-exit ") {
                report.check_exit = code.trim().parse().ok();
            } else if let Some(text) = rest.strip_prefix("check ") {
                report.check.push(text.to_string());
            } else if let Some(name) = rest.strip_prefix("run ") {
                report.tests.extend(current.take());
                current = Some(TestRun { name: name.to_string(), exit: None, output: Vec::new() });
            } else if let Some(result) = rest.strip_prefix("result ") {
                let (name, code) = result.rsplit_once(' ').unwrap_or((result, ""));
                let mut run = current.take().filter(|r| r.name == name).unwrap_or_else(|| TestRun {
                    name: name.to_string(),
                    exit: None,
                    output: Vec::new(),
                });
                run.exit = code.parse().ok();
                report.tests.push(run);
            } else if rest == "done" {
                report.done = true;
            }
        }
        report.tests.extend(current);
        report
    }

    /// (present, key, line) of each feature `runtime-scope check` listed.
    pub fn features(&self) -> Vec<(bool, String, String)> {
        self.check
            .iter()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                let present = match words.next()? {
                    "yes" => true,
                    "no" => false,
                    _ => return None,
                };
                let key = words.next()?.to_string();
                let text = words.collect::<Vec<_>>().join(" ");
                Some((present, key, text))
            })
            .collect()
    }

    /// Every way this run falls short of `expected` (test names), each
    /// with what the guest printed about it. Empty: all passed.
    pub fn problems(&self, expected: &[String]) -> Vec<String> {
        let mut problems = Vec::new();
        if self.kernel.is_none() {
            problems.push("the guest never reported its kernel (it did not boot to /init)".to_string());
        }
        if self.check_exit != Some(0) {
            problems.push(format!("`runtime-scope check` failed ({:?}):\n  {}", self.check_exit, self.check.join("\n  ")));
        }
        for name in expected {
            match self.tests.iter().find(|t| &t.name == name) {
                None => problems.push(format!("{name}: never ran")),
                Some(run) if !run.passed() => {
                    let how = run.exit.map_or("did not finish".to_string(), |c| format!("exit {c}"));
                    problems.push(format!("{name}: failed ({how}); the guest printed:\n  {}", run.output.join("\n  ")));
                }
                Some(_) => {}
            }
        }
        if !self.done {
            problems.push("the guest did not finish its checks (timed out or crashed)".to_string());
        }
        if !self.kernel_trouble.is_empty() {
            problems.push(format!("the guest kernel reported trouble:\n  {}", self.kernel_trouble.join("\n  ")));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSOLE: &str = "\
[    0.000000] Linux version 5.10.0-32-cloud-amd64\r
rscope-guest: kernel 5.10.0-32-cloud-amd64
rscope-guest: check-exit 0
rscope-guest: check kernel 5.10.0-32-cloud-amd64: meets runtime-scope's baseline (Linux 5.10+, x86-64, BTF, BPF ring buffer)
rscope-guest: check   no   uprobe-cookies     BPF cookies on uprobes (Linux 5.15+): Tokio task ids are left out
rscope-guest: check   yes  task-pt-regs       bpf_task_pt_regs (Linux 5.15+)
rscope-guest: run kernel_e2e::attach
running 1 test
test attach ... ok
test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 2 filtered out; finished in 9.10s
rscope-guest: result kernel_e2e::attach 0
rscope-guest: run tasks_e2e::polls
running 1 test
thread 'polls' panicked at crates/runtime-scope/tests/tasks_e2e.rs:40:5:
heavy polls: []
test result: FAILED. 0 passed; 1 failed
rscope-guest: result tasks_e2e::polls 101
rscope-guest: run tasks_e2e::typo
running 0 tests
test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 3 filtered out
rscope-guest: result tasks_e2e::typo 0
rscope-guest: done
";

    #[test]
    fn reads_the_guest_report() {
        let r = Report::parse(CONSOLE);
        assert_eq!(r.kernel.as_deref(), Some("5.10.0-32-cloud-amd64"));
        assert_eq!(r.check_exit, Some(0));
        assert!(r.done);
        assert_eq!(r.tests.len(), 3);
        assert!(r.tests[0].passed());
        assert!(!r.tests[1].passed());
        assert!(!r.tests[2].passed(), "a filter that ran no test is a miss");
        assert_eq!(
            r.features(),
            vec![
                (false, "uprobe-cookies".into(), "BPF cookies on uprobes (Linux 5.15+): Tokio task ids are left out".into()),
                (true, "task-pt-regs".into(), "bpf_task_pt_regs (Linux 5.15+)".into()),
            ]
        );
    }

    #[test]
    fn every_miss_is_a_problem_with_the_guest_output() {
        let r = Report::parse(CONSOLE);
        let expected: Vec<String> = ["kernel_e2e::attach", "tasks_e2e::polls", "tasks_e2e::typo", "stacks_e2e::gone"].map(String::from).to_vec();
        let problems = r.problems(&expected);
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(problems[0].starts_with("tasks_e2e::polls: failed (exit 101)") && problems[0].contains("heavy polls: []"), "{}", problems[0]);
        assert!(problems[1].starts_with("tasks_e2e::typo: failed (exit 0)"));
        assert_eq!(problems[2], "stacks_e2e::gone: never ran");
        assert!(r.problems(&expected[..1]).is_empty());
    }

    #[test]
    fn a_guest_that_died_is_a_problem() {
        let console = "rscope-guest: kernel 6.12.118+deb13-cloud-amd64\nrscope-guest: check-exit 0\nrscope-guest: run a::b\n\
            [   40.1] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\n[   40.2] Kernel panic - not syncing: Fatal exception\n";
        let r = Report::parse(console);
        let problems = r.problems(&["a::b".to_string()]);
        assert!(problems[0].starts_with("a::b: failed (did not finish)") && problems[0].contains("Oops: int3"), "{problems:#?}");
        assert!(problems.iter().any(|p| p.starts_with("the guest did not finish")));
        assert!(problems.iter().any(|p| p.starts_with("the guest kernel reported trouble") && p.contains("Kernel panic")));
    }
}
