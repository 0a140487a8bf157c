//! The guest's whole filesystem: an uncompressed initramfs (the kernel
//! unpacks it faster than it would inflate a compressed one under
//! emulation) with busybox, the freshly built runtime-scope and demo-app
//! at the very paths the test binaries were compiled to find them, those
//! test binaries, the shared libraries all of them link, and an /init that
//! runs the checks and reports on the serial console.

use crate::run;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const BUSYBOX: &str = "/bin/busybox";

/// One end-to-end test the guest runs: the test binary's name (its file
/// in target/release/deps is `<binary>-<hash>`) and the test in it.
pub struct GuestTest {
    pub binary: &'static str,
    pub test: &'static str,
}

/// The shared objects `binary` loads, as absolute paths (from ldd).
fn libraries(binary: &Path) -> Result<Vec<PathBuf>, String> {
    let out = Command::new("ldd").arg(binary).output().map_err(|e| format!("cannot run ldd: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("ldd {} failed: {text}", binary.display()));
    }
    Ok(text
        .lines()
        .filter_map(|l| {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
            let path = l.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// The detached debug info the host has for `lib` (Debian's `-dbg`
/// packages, by build id), which the symbolizer reads there as on the host:
/// without it libc's internal frames (`start_thread`) have no names.
fn debug_file(lib: &Path) -> Option<PathBuf> {
    let out = Command::new("readelf").arg("-n").arg(lib).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let id = text.lines().find_map(|l| l.trim().strip_prefix("Build ID: "))?.trim();
    let (dir, rest) = (id.get(..2)?, id.get(2..)?);
    let path = PathBuf::from(format!("/usr/lib/debug/.build-id/{dir}/{rest}.debug"));
    path.exists().then_some(path)
}

/// Copies `from` to `root` + `at` (an absolute path), following symlinks.
fn place(root: &Path, from: &Path, at: &Path) -> Result<(), String> {
    let to = root.join(at.strip_prefix("/").unwrap_or(at));
    std::fs::create_dir_all(to.parent().expect("an absolute path has a parent")).map_err(|e| e.to_string())?;
    std::fs::copy(from, &to).map_err(|e| format!("copying {} into the initramfs: {e}", from.display()))?;
    Ok(())
}

/// The guest's /init: mounts what the tools need (not a tmpfs on /tmp: the
/// initramfs is already writable, and a workspace under /tmp, copied in at
/// its own path, would be hidden), reports the kernel and
/// `runtime-scope check`, runs each test (killed after a time limit), and
/// powers off. Every line for the host starts with `rscope-guest:`.
fn init_script(profiler: &Path, tests: &[(String, PathBuf)]) -> String {
    let mut s = String::from(
        "#!/bin/busybox sh\n\
         /bin/busybox --install -s /bin\n\
         export PATH=/bin HOME=/tmp RUST_BACKTRACE=1 RUNTIME_SCOPE_TEST_EMULATED=1\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sys /sys\n\
         mount -t devtmpfs dev /dev\n\
         cd /tmp\n\
         echo \"rscope-guest: kernel $(uname -r)\"\n",
    );
    s += &format!("{} check > /tmp/check.txt 2>&1\necho \"rscope-guest: check-exit $?\"\n", profiler.display());
    s += "sed 's/^/rscope-guest: check /' /tmp/check.txt\n";
    for (name, binary) in tests {
        let (_, test) = name.split_once("::").expect("binary::test");
        s += &format!(
            "echo \"rscope-guest: run {name}\"\n\
             timeout -s KILL 180 {} --exact {test} --test-threads=1\n\
             echo \"rscope-guest: result {name} $?\"\n",
            binary.display()
        );
    }
    s += "echo \"rscope-guest: done\"\npoweroff -f\n";
    s
}

/// Builds `out` (a newc cpio archive). `test_binaries` maps a test
/// binary's name to its path; `root` is the workspace, whose layout the
/// binaries expect.
pub fn build(out: &Path, root: &Path, tests: &[GuestTest], test_binaries: &[(String, PathBuf)]) -> Result<(), String> {
    let staging = out.with_extension("d");
    let _ = std::fs::remove_dir_all(&staging);
    for dir in ["bin", "proc", "sys", "dev", "tmp", "tests"] {
        std::fs::create_dir_all(staging.join(dir)).map_err(|e| e.to_string())?;
    }
    place(&staging, Path::new(BUSYBOX), Path::new("/bin/busybox"))?;
    let release = root.join("target/release");
    let profiler = release.join("runtime-scope");
    let mut elves = vec![profiler.clone(), release.join("demo-app")];
    for binary in &elves {
        place(&staging, binary, binary)?;
    }
    // Tests find demo-app through CARGO_MANIFEST_DIR/../../target: that
    // directory must exist for the path to resolve.
    std::fs::create_dir_all(staging.join(root.strip_prefix("/").unwrap_or(root)).join("crates/runtime-scope")).map_err(|e| e.to_string())?;
    let mut script_tests = Vec::new();
    for t in tests {
        let (_, path) = test_binaries
            .iter()
            .find(|(name, _)| name == t.binary)
            .ok_or_else(|| format!("test binary {} was not built", t.binary))?;
        let inside = PathBuf::from("/tests").join(t.binary);
        if !script_tests.iter().any(|(_, p): &(String, PathBuf)| *p == inside) {
            place(&staging, path, &inside)?;
            elves.push(path.clone());
        }
        script_tests.push((format!("{}::{}", t.binary, t.test), inside));
    }
    let mut libs: Vec<PathBuf> = Vec::new();
    for binary in &elves {
        for lib in libraries(binary)? {
            if !libs.contains(&lib) {
                libs.push(lib);
            }
        }
    }
    for lib in &libs {
        place(&staging, lib, lib)?;
        if let Some(debug) = debug_file(lib) {
            place(&staging, &debug, &debug)?;
        }
    }
    let init = staging.join("init");
    std::fs::write(&init, init_script(&profiler, &script_tests)).map_err(|e| e.to_string())?;
    run(Command::new("chmod").arg("+x").arg(&init))?;
    let list = Command::new("find")
        .arg(".")
        .current_dir(&staging)
        .output()
        .map_err(|e| format!("cannot run find: {e}"))?;
    let archive = std::fs::File::create(out).map_err(|e| format!("creating {}: {e}", out.display()))?;
    let mut cpio = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet"])
        .current_dir(&staging)
        .stdin(Stdio::piped())
        .stdout(archive)
        .spawn()
        .map_err(|e| format!("cannot run cpio (apt-get install cpio): {e}"))?;
    use std::io::Write;
    cpio.stdin.take().expect("piped").write_all(&list.stdout).map_err(|e| e.to_string())?;
    let status = cpio.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("cpio failed: {status}"));
    }
    let _ = std::fs::remove_dir_all(&staging);
    Ok(())
}
