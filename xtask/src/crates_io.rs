//! Programs from crates.io that nobody here wrote, for tests and benches:
//! mini-redis as `cargo install` ships it (release, symbols, no DWARF) and
//! the same code built with DWARF (`CARGO_PROFILE_RELEASE_DEBUG=true`),
//! whose names are the truth to check ours against; bore-cli with DWARF
//! for the naming harness. Installed once under
//! target/crates-io/{stock,debuginfo}; both resolve their dependencies as
//! `cargo install` does for a user, in the same run, so they are one code.

use crate::{run, workspace_root};
use std::path::PathBuf;
use std::process::Command;

pub const MINI_REDIS: &str = "0.4.1";
/// A TCP tunnel (tracing-instrumented tasks, both runtimes' schedulers).
const BORE: &str = "0.6.0";

/// `target/crates-io/<build>/bin/mini-redis-server`, installed if missing.
pub fn mini_redis(build: &str) -> Result<PathBuf, String> {
    install("mini-redis", MINI_REDIS, "mini-redis-server", build)
}

/// bore-cli's `bore`, for naming_accuracy (its DWARF build only).
pub fn bore() -> Result<PathBuf, String> {
    install("bore-cli", BORE, "bore", "debuginfo")
}

fn install(krate: &str, version: &str, binary: &str, build: &str) -> Result<PathBuf, String> {
    let root = workspace_root().join("target/crates-io").join(build);
    let path = root.join("bin").join(binary);
    if path.exists() {
        return Ok(path);
    }
    println!("xtask: building {krate} {version} from crates.io ({build} build; about a minute)");
    let mut install = Command::new("cargo");
    install.args(["install", "--quiet", "--force", krate, "--version", version, "--root"]).arg(&root);
    if build == "debuginfo" {
        install.env("CARGO_PROFILE_RELEASE_DEBUG", "true");
    }
    run(&mut install)?;
    Ok(path)
}
