//! Debian's cloud kernels, as packages from Debian's archive, cached under
//! target/kernels/<suite>/. The machine's apt configuration is left alone:
//! each suite gets a private sources list, index directory and cache,
//! passed to apt-get with -o, and only the kernel package is downloaded
//! (`apt-get download`), then unpacked with dpkg-deb.
//!
//! The kernel is the suite's current one: the dependency of its
//! `linux-image-cloud-amd64` metapackage, as a fresh install of that
//! release gets it. It is fetched again only when the cache is removed
//! (`rm -r target/kernels`), so a run never depends on the network once
//! the kernels are there.

use crate::run;
use std::path::{Path, PathBuf};
use std::process::Command;

const ARCHIVE: &str = "http://deb.debian.org/debian";
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
const METAPACKAGE: &str = "linux-image-cloud-amd64";

/// A kernel ready to boot.
pub struct Fetched {
    pub vmlinuz: PathBuf,
    /// The package it came from, e.g. `linux-image-5.10.0-32-cloud-amd64-unsigned 5.10.223-1`.
    pub package: String,
}

/// apt-get / apt-cache with the suite's private configuration.
fn apt(dir: &Path, tool: &str) -> Command {
    let mut cmd = Command::new(tool);
    for (key, value) in [
        ("Dir::Etc::SourceList", dir.join("sources.list")),
        ("Dir::Etc::SourceParts", dir.join("sources.list.d")),
        ("Dir::State::Lists", dir.join("lists")),
        ("Dir::Cache", dir.join("cache")),
    ] {
        cmd.arg("-o").arg(format!("{key}={}", value.display()));
    }
    // Only the Packages index: no translations, no AppStream metadata.
    cmd.args(["-o", "Acquire::Languages=none", "-o", "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"]);
    cmd.args(["-o", "APT::Architecture=amd64", "-q"]);
    cmd
}

fn output(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The image package `linux-image-cloud-amd64` depends on, from its
/// `apt-cache show` record.
pub fn image_dependency(record: &str) -> Option<String> {
    let depends = record.lines().find_map(|l| l.strip_prefix("Depends:"))?;
    let first = depends.split(',').next()?.split_whitespace().next()?;
    first.starts_with("linux-image-").then(|| first.to_string())
}

/// The suite's cloud kernel: from the cache, or downloaded and unpacked.
pub fn kernel(cache: &Path, suite: &str) -> Result<Fetched, String> {
    let dir = cache.join(suite);
    let vmlinuz = dir.join("vmlinuz");
    let package_file = dir.join("package");
    if let (true, Ok(package)) = (vmlinuz.exists(), std::fs::read_to_string(&package_file)) {
        return Ok(Fetched { vmlinuz, package: package.trim().to_string() });
    }
    let apt_dir = dir.join("apt");
    for sub in ["sources.list.d", "lists/partial", "cache/archives/partial"] {
        std::fs::create_dir_all(apt_dir.join(sub)).map_err(|e| format!("creating {}: {e}", apt_dir.display()))?;
    }
    let sources = format!("deb [signed-by={KEYRING}] {ARCHIVE} {suite} main\n");
    std::fs::write(apt_dir.join("sources.list"), sources).map_err(|e| e.to_string())?;
    println!("xtask: fetching {suite}'s cloud kernel from Debian's archive");
    run(apt(&apt_dir, "apt-get").arg("update"))?;
    let record = output(apt(&apt_dir, "apt-cache").args(["show", "--no-all-versions", METAPACKAGE]))?;
    let image = image_dependency(&record).ok_or_else(|| format!("{suite}: {METAPACKAGE} names no linux-image package:\n{record}"))?;
    let unsigned = format!("{image}-unsigned");
    let debs = dir.join("debs");
    let _ = std::fs::remove_dir_all(&debs);
    std::fs::create_dir_all(&debs).map_err(|e| e.to_string())?;
    run(apt(&apt_dir, "apt-get").arg("download").arg(&unsigned).current_dir(&debs))?;
    let deb = std::fs::read_dir(&debs)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| format!("apt-get download {unsigned} left no .deb in {}", debs.display()))?;
    let version = output(Command::new("dpkg-deb").args(["-f"]).arg(&deb).arg("Version"))?;
    let unpacked = dir.join("unpacked");
    let _ = std::fs::remove_dir_all(&unpacked);
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    let image_file = std::fs::read_dir(unpacked.join("boot"))
        .map_err(|e| format!("{}: no boot/ in {unsigned}: {e}", deb.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
        .ok_or_else(|| format!("no vmlinuz in {unsigned}"))?;
    std::fs::rename(&image_file, &vmlinuz).map_err(|e| e.to_string())?;
    let package = format!("{unsigned} {}", version.trim());
    std::fs::write(&package_file, format!("{package}\n")).map_err(|e| e.to_string())?;
    // The kernel is all that is kept (modules are not needed: everything
    // the guest uses is built in).
    let _ = std::fs::remove_dir_all(&unpacked);
    let _ = std::fs::remove_dir_all(&debs);
    let _ = std::fs::remove_dir_all(&apt_dir);
    Ok(Fetched { vmlinuz, package })
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_image_the_metapackage_depends_on() {
        let record = "Package: linux-image-cloud-amd64\nSource: linux-signed-amd64 (5.10.223+1)\nVersion: 5.10.223-1\n\
            Depends: linux-image-5.10.0-32-cloud-amd64 (= 5.10.223-1)\nDescription-en: Linux for x86-64 cloud (meta-package)\n";
        assert_eq!(super::image_dependency(record).as_deref(), Some("linux-image-5.10.0-32-cloud-amd64"));
        assert_eq!(super::image_dependency("Package: x\nDepends: libc6 (>= 2)\n"), None);
        assert_eq!(super::image_dependency("Package: x\n"), None);
    }
}
