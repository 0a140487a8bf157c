//! The kernel matrix, `cargo xtask test-kernels [5.10|6.1|6.12 …]`: boots
//! Debian's cloud kernels (the kernels of Debian 11, 12 and 13, packaged
//! as users get them) under qemu and runs the host's end-to-end tests in
//! each guest, against the freshly built binaries. A guest reports on its
//! serial console; any test that fails, never runs or hangs fails the
//! matrix with what the guest printed. After a run over every kernel, the
//! kernel table in README.md is rewritten from what the guests reported.

mod fetch;
mod guest;
mod initramfs;
mod table;

use crate::{cargo, run, workspace_root};
use initramfs::GuestTest;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Kernel {
    /// What `test-kernels` takes on its command line.
    pub label: &'static str,
    pub suite: &'static str,
    pub distro: &'static str,
}

pub const KERNELS: [Kernel; 3] = [
    Kernel { label: "5.10", suite: "bullseye", distro: "Debian 11" },
    Kernel { label: "6.1", suite: "bookworm", distro: "Debian 12" },
    Kernel { label: "6.12", suite: "trixie", distro: "Debian 13" },
];

/// The checks every guest runs: the host's own end-to-end tests, chosen to
/// cover attach and launch mode, on-CPU time against schedstat, named
/// polls, long polls with their cause, unwound stacks, the Perfetto trace
/// read back, no probe left behind, and what the kernel lacks said truly.
pub const TESTS: [GuestTest; 10] = [
    GuestTest { binary: "record_cli", test: "launch_mode_sees_the_program_from_its_first_instruction" },
    GuestTest { binary: "kernel_e2e", test: "trace_of_demo_matches_kernel_accounting" },
    GuestTest { binary: "kernel_e2e", test: "switches_held_for_the_switch_in_still_account_exactly" },
    GuestTest { binary: "tasks_e2e", test: "demo_polls_are_counted_timed_and_named" },
    GuestTest { binary: "insights_e2e", test: "demo_long_polls_are_cpu_and_blocked_with_their_sites" },
    GuestTest { binary: "stacks_e2e", test: "stock_release_binary_gets_full_named_stacks" },
    GuestTest { binary: "stacks_e2e", test: "a_thread_alternating_between_two_waits_gets_each_its_own_stack" },
    GuestTest { binary: "perfetto_e2e", test: "perfetto_trace_of_demo_matches_kernel_accounting" },
    GuestTest { binary: "tasks_e2e", test: "probes_are_gone_after_exit" },
    GuestTest { binary: "kernel_features_e2e", test: "a_recording_says_what_this_kernel_lacks_and_loses_only_that" },
];

/// A guest that has not powered off by then is stopped (its report then
/// lacks the checks it did not reach).
const GUEST_LIMIT: Duration = Duration::from_secs(480);

/// (name, path) of runtime-scope's test binaries, as cargo built them
/// (`<name>-<hash>` in target/release/deps).
fn test_binaries() -> Result<Vec<(String, PathBuf)>, String> {
    let out = cargo()
        .args(["test", "--release", "-p", "runtime-scope", "--no-run", "--message-format=json"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err("building the test binaries failed".into());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let path = l.split("\"executable\":\"").nth(1)?.split('"').next()?;
            let path = PathBuf::from(path);
            let file = path.file_name()?.to_str()?;
            let (name, hash) = file.rsplit_once('-')?;
            (path.parent()?.ends_with("deps") && hash.len() == 16).then(|| (name.to_string(), path.clone()))
        })
        .collect())
}

/// `runtime-scope check` on this machine, for the table's host row.
fn host_check(profiler: &std::path::Path) -> Result<guest::Report, String> {
    let out = Command::new(profiler).arg("check").output().map_err(|e| format!("cannot run runtime-scope check: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("runtime-scope check failed on this machine: {text}{}", String::from_utf8_lossy(&out.stderr)));
    }
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").map_err(|e| e.to_string())?;
    Ok(guest::Report { kernel: Some(kernel.trim().to_string()), check: text.lines().map(str::to_string).collect(), ..Default::default() })
}

pub fn test_kernels(only: &[String]) -> Result<(), String> {
    let started = Instant::now();
    let selected: Vec<&Kernel> = KERNELS.iter().filter(|k| only.is_empty() || only.iter().any(|o| o == k.label)).collect();
    if selected.is_empty() {
        let labels: Vec<&str> = KERNELS.iter().map(|k| k.label).collect();
        return Err(format!("no kernel matches {only:?}; choose from {}", labels.join(", ")));
    }
    let root = workspace_root();
    let cache = root.join("target/kernels");
    std::fs::create_dir_all(&cache).map_err(|e| e.to_string())?;
    run(cargo().args(["build", "--release", "-p", "demo-app", "-p", "runtime-scope"]))?;
    let binaries = test_binaries()?;
    let initramfs = cache.join("initramfs.cpio");
    initramfs::build(&initramfs, &root, &TESTS, &binaries)?;
    let size = std::fs::metadata(&initramfs).map(|m| m.len()).unwrap_or(0);
    println!("xtask: initramfs {:.1} MiB; booting {} kernel(s) under qemu (TCG)", size as f64 / (1 << 20) as f64, selected.len());
    let expected: Vec<String> = TESTS.iter().map(|t| format!("{}::{}", t.binary, t.test)).collect();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for kernel in &selected {
        let fetched = fetch::kernel(&cache, kernel.suite)?;
        let log = cache.join(kernel.suite).join("console.log");
        let booted = Instant::now();
        let console = guest::boot(&fetched.vmlinuz, &initramfs, &log, GUEST_LIMIT, kernel.label)?;
        let report = guest::Report::parse(&console);
        let problems = report.problems(&expected);
        let passed = expected.len() - problems.iter().filter(|p| expected.iter().any(|e| p.starts_with(&format!("{e}:")))).count();
        println!(
            "xtask: [{}] {} of {} checks passed in {:.0} s (console: {})",
            kernel.label,
            passed,
            expected.len(),
            booted.elapsed().as_secs_f64(),
            log.display()
        );
        if !problems.is_empty() {
            let name = report.kernel.clone().unwrap_or_else(|| fetched.package.clone());
            failures.push(format!("Linux {name} ({} {}):\n- {}\n(whole console: {})", kernel.distro, kernel.suite, problems.join("\n- "), log.display()));
        }
        rows.push(table::Row { kernel: kernel.distro, package: Some(fetched.package), report, passed, total: expected.len() });
    }
    if selected.len() == KERNELS.len() {
        let host = host_check(&root.join("target/release/runtime-scope"))?;
        rows.push(table::Row { kernel: "this machine", package: None, report: host, passed: 0, total: 0 });
        table::update_readme(&root.join("README.md"), &rows)?;
        println!("xtask: README.md's kernel table written from this run");
    }
    println!("xtask: kernel matrix took {:.0} s", started.elapsed().as_secs_f64());
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("the kernel matrix failed on {} kernel(s):\n\n{}", failures.len(), failures.join("\n\n")))
    }
}
