//! Programs from crates.io that nobody here wrote, for tests and benches:
//! mini-redis as `cargo install` ships it (release, symbols, no DWARF) and
//! the same code built with DWARF (`CARGO_PROFILE_RELEASE_DEBUG=true`),
//! whose names are the truth to check ours against. Installed once under
//! target/crates-io/{stock,debuginfo}; both resolve their dependencies as
//! `cargo install` does for a user, in the same run, so they are one code.

use crate::{run, workspace_root};
use std::path::PathBuf;
use std::process::Command;

pub const MINI_REDIS: &str = "0.4.1";

/// `target/crates-io/<build>/bin/mini-redis-server`, installed if missing.
pub fn mini_redis(build: &str) -> Result<PathBuf, String> {
    let root = workspace_root().join("target/crates-io").join(build);
    let server = root.join("bin/mini-redis-server");
    if server.exists() {
        return Ok(server);
    }
    println!("xtask: building mini-redis {MINI_REDIS} from crates.io ({build} build; about a minute)");
    let mut install = Command::new("cargo");
    install.args(["install", "--quiet", "--force", "mini-redis", "--version", MINI_REDIS, "--root"]).arg(&root);
    if build == "debuginfo" {
        install.env("CARGO_PROFILE_RELEASE_DEBUG", "true");
    }
    run(&mut install)?;
    Ok(server)
}
