//! Bootstrap: installs exactly what is missing to build the eBPF side, and
//! puts it on PATH for every command xtask runs afterwards.
//!
//! - Debian: llvm-22-dev + libpolly-22-dev (bpf-linker links LLVM 22;
//!   llvm-22-dev pulls in llvm-22, whose llvm-addr2line-22 the bench compares with);
//!   tmux, and qemu-system-x86, busybox-static, cpio for the kernel matrix
//! - the installed nightly's rust-src (the eBPF crate builds core itself)
//! - bpf-linker, built against LLVM 22

use crate::run;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

// tmux: the `top` dashboard test drives it in a real terminal.
// The kernel matrix (cargo xtask test-kernels): qemu boots Debian's kernels,
// busybox-static and cpio make the guests' initramfs, the archive keyring
// verifies the kernels' packages.
const PACKAGES: [&str; 7] =
    ["llvm-22-dev", "libpolly-22-dev", "tmux", "qemu-system-x86", "busybox-static", "cpio", "debian-archive-keyring"];
const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";
const BPF_LINKER_VERSION: &str = "0.13.0";

fn cargo_bin() -> PathBuf {
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cargo"));
    home.join("bin")
}

fn package_installed(name: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", name])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn ensure_packages() -> Result<(), String> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !package_installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("xtask setup: installing {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn ensure_rust_src() -> Result<(), String> {
    let out = Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output()
        .map_err(|e| format!("rustup not found: {e}"))?;
    if !out.status.success() {
        return Err("no nightly toolchain: the eBPF crate needs one (rustup toolchain install nightly)".into());
    }
    if String::from_utf8_lossy(&out.stdout).lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    println!("xtask setup: adding rust-src to nightly");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn bpf_linker_works() -> bool {
    Command::new(cargo_bin().join("bpf-linker")).arg("--version").output().is_ok_and(|o| o.status.success())
}

fn ensure_bpf_linker() -> Result<(), String> {
    if bpf_linker_works() {
        return Ok(());
    }
    println!("xtask setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)");
    run(Command::new("cargo")
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args(["--no-default-features", "--features", "llvm-22"])
        .env("PATH", path_with_tools()))
}

/// PATH with LLVM 22 first and cargo's bin dir present.
fn path_with_tools() -> String {
    let current = std::env::var("PATH").unwrap_or_default();
    format!("{LLVM_BIN}:{}:{current}", cargo_bin().display())
}

pub fn ensure() -> Result<(), String> {
    let started = Instant::now();
    ensure_packages()?;
    ensure_rust_src()?;
    ensure_bpf_linker()?;
    // Every later command (and aya-build inside cargo) finds bpf-linker and LLVM.
    // SAFETY: single-threaded at this point; nothing reads env concurrently.
    unsafe { std::env::set_var("PATH", path_with_tools()) };
    let took = started.elapsed();
    if took.as_secs() >= 2 {
        println!("xtask setup: ready in {:.0} s", took.as_secs_f64());
    }
    Ok(())
}
