//! Project automation. `cargo xtask <command>`:
//!   setup  install what building needs (idempotent, seconds when all is there)
//!   demo   build, run the demo app, profile it 10 s, write trace.json
//!   test   every test, including the root-only kernel tests, then the
//!          kernel matrix
//!   test-kernels [5.10|6.1|6.12 …]  the kernel matrix alone: the end-to-end
//!          tests in qemu guests running Debian's kernels (see kernels/)
//!   bench  overhead, per-poll cost next to the uprobe floor, ingest capacity,
//!          memory on a 60 s run and in the end phase, `watch` soaked 10 minutes, output sizes,
//!          symbolization → BENCHMARKS.md (`bench overhead|floor|tax|memory|endphase|scale|soak [S]`:
//!          those parts alone, printed)
//!
//! No dependencies on purpose: this must compile before anything is installed.

mod bench;
mod capacity;
mod crates_io;
mod endphase;
mod floor;
mod overhead;
mod kernels;
mod setup;
mod soak;
mod switch_tax;
mod symbench;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// Runs a command, failing with its description if it does not succeed.
pub fn run(cmd: &mut Command) -> Result<(), String> {
    let status = cmd.status().map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{cmd:?} failed: {status}")) }
}

pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

fn is_root() -> bool {
    std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

fn demo() -> Result<(), String> {
    if !is_root() {
        return Err("the demo loads eBPF programs: run it as root (sudo -E cargo xtask demo)".into());
    }
    run(cargo().args(["build", "--release", "-p", "runtime-scope", "-p", "demo-app"]))?;
    let root = workspace_root();
    let mut app = Command::new(root.join("target/release/demo-app"))
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start demo-app: {e}"))?;
    // Let the runtime start its workers before we attach.
    std::thread::sleep(Duration::from_millis(500));
    println!("xtask: demo-app running as pid {}; profiling it for 10 s", app.id());
    let result = run(Command::new(root.join("target/release/runtime-scope"))
        .current_dir(&root)
        .args(["--pid", &app.id().to_string(), "--trace", "--duration", "10"])
        .args(["--trace-output", "trace.json"]));
    let _ = app.kill();
    let _ = app.wait();
    result?;
    println!("xtask: open {} in https://ui.perfetto.dev to see both workers over time", root.join("trace.json").display());
    Ok(())
}

fn test() -> Result<(), String> {
    // The kernel tests profile the release demo app, with and without DWARF.
    run(cargo().args(["build", "--release", "-p", "demo-app", "-p", "runtime-scope"]))?;
    // With DWARF: the truth of the naming-accuracy harness (scope-stacks'
    // naming_accuracy test strips copies of these for its other forms).
    run(cargo().args(["build", "--profile", "release-debuginfo", "-p", "demo-app", "-p", "kind-scenarios"]))?;
    // Fat LTO inlines across crates: the probe points must survive it (about
    // 15 s cold on 2 CPUs, mostly tokio; nothing when unchanged).
    run(cargo().args(["build", "--profile", "release-fat-lto", "-p", "demo-app"]))?;
    // Programs nobody here wrote: a server stock and with DWARF
    // (crates_io_e2e, naming_accuracy), a tunnel with DWARF (naming_accuracy).
    crates_io::mini_redis("stock")?;
    crates_io::mini_redis("debuginfo")?;
    crates_io::bore()?;
    // One test at a time: kernel tests measure CPU time and check that no
    // probe outlives the profiler, which concurrent runs would blur.
    run(cargo().args(["test", "--release", "--", "--test-threads=1"]))?;
    // The same end-to-end tests on the kernels users run (5.10 to 6.12).
    kernels::test_kernels(&[])
}

fn main() -> ExitCode {
    let command = std::env::args().nth(1).unwrap_or_default();
    let result = match command.as_str() {
        "setup" => setup::ensure(),
        "demo" => setup::ensure().and_then(|()| demo()),
        "test" => setup::ensure().and_then(|()| test()),
        "test-kernels" => {
            let only: Vec<String> = std::env::args().skip(2).collect();
            setup::ensure().and_then(|()| kernels::test_kernels(&only))
        }
        "bench" => match std::env::args().nth(2) {
            None => setup::ensure().and_then(|()| bench::bench()),
            Some(part) => setup::ensure().and_then(|()| bench::part(&part)),
        },
        _ => {
            eprintln!("usage: cargo xtask <setup|demo|test|test-kernels [5.10|6.1|6.12 …]|bench [overhead|floor|tax|memory|endphase|scale|soak [SECONDS]]>");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}
