//! The "Symbolization" section of BENCHMARKS.md: scope-stacks' `symbench`
//! example on the demo app with DWARF, its `symbench KEY VALUE…` lines
//! turned into markdown. The example holds the code; xtask only runs it.

use crate::{cargo, run, workspace_root};
use std::process::Command;

const ADDRESSES: &str = "2000";
/// From the llvm-22 package, which setup's llvm-22-dev depends on.
const ADDR2LINE: &str = "llvm-addr2line-22";

/// The value after `key` on the line that starts with `symbench NAME`.
fn field(out: &str, name: &str, key: &str) -> Result<String, String> {
    let line = out
        .lines()
        .find(|l| l.strip_prefix("symbench ").is_some_and(|rest| rest.split_whitespace().next() == Some(name)))
        .ok_or_else(|| format!("symbench printed no {name:?} line:\n{out}"))?;
    let tokens: Vec<&str> = line.split_whitespace().collect();
    let at = tokens.iter().position(|t| *t == key).ok_or_else(|| format!("no {key:?} in {line:?}"))?;
    tokens.get(at + 1).map(|v| v.to_string()).ok_or_else(|| format!("nothing after {key:?} in {line:?}"))
}

fn num(out: &str, name: &str, key: &str) -> Result<f64, String> {
    let v = field(out, name, key)?;
    v.parse().map_err(|e| format!("symbench {name} {key} {v:?}: {e}"))
}

fn mb(bytes: f64) -> String {
    format!("{:.1} MB", bytes / 1e6)
}

pub fn section() -> Result<String, String> {
    if !Command::new(ADDR2LINE).arg("--version").output().is_ok_and(|o| o.status.success()) {
        return Err(format!("{ADDR2LINE} not found: it comes with the llvm-22 package (cargo xtask setup)"));
    }
    run(cargo().args(["build", "--profile", "release-debuginfo", "-p", "demo-app"]))?;
    let binary = workspace_root().join("target/release-debuginfo/demo-app");
    let output = cargo()
        .args(["run", "--quiet", "--release", "-p", "scope-stacks", "--example", "symbench", "--"])
        .arg(&binary)
        .arg(ADDRESSES)
        .output()
        .map_err(|e| format!("symbench: {e}"))?;
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(format!("symbench failed: {}\n{out}", String::from_utf8_lossy(&output.stderr)));
    }
    render(&out)
}

fn render(out: &str) -> Result<String, String> {
    let kib = |key: &str| num(out, "rss-kib", key).map(|v| v * 1024.0);
    let mut s = String::from("## Symbolization\n\n");
    s.push_str(&format!(
        "`target/release-debuginfo/demo-app` ({}, of which {} DWARF): {ADDRESSES} addresses from its symbol table (function starts and \
         offsets into them, spread over all functions), named with inlined frames and file:line by the export's path \
         (`scope_stacks::symbolize::Namer`: build-id check, blazesym) and by one `{ADDR2LINE} -f -i -C` process fed on stdin. \
         Cold is a fresh symbolizer (opens the binary, indexes its DWARF), warm the same one again; medians of 3. \
         Alone: `cargo run --release -p scope-stacks --example symbench -- target/release-debuginfo/demo-app`.\n\n",
        mb(num(out, "binary", "bytes")?),
        mb(num(out, "binary", "debuginfo-bytes")?),
    ));
    s.push_str("| symbolizer | addresses/s | seconds |\n|---|---|---|\n");
    for (label, name) in [
        ("runtime-scope, cold", "cold"),
        ("runtime-scope, warm", "warm"),
        (&*format!("{ADDR2LINE} (one process)"), "llvm-addr2line"),
    ] {
        s.push_str(&format!("| {label} | {:.0} | {} |\n", num(out, name, "addresses-per-s")?, field(out, name, "seconds")?));
    }
    s.push_str(&format!(
        "\nSame innermost function as {ADDR2LINE}: {:.1}% ({} of {ADDRESSES}; the example prints the first differences).\n\n",
        num(out, "agreement", "fraction")? * 100.0,
        field(out, "agreement", "same")?,
    ));
    s.push_str(&format!(
        "Memory, cold: peak RSS {} while symbolizing (from {} before); of that, {} are the binary's pages that blazesym maps \
         (page cache, reclaimable) and the heap peaked at {} (the parsed DWARF index; {} kept for warm passes).\n\n",
        mb(kib("peak-cold")?),
        mb(kib("before")?),
        mb(kib("file")?),
        mb(num(out, "heap-kib", "peak-cold")? * 1024.0),
        mb(num(out, "heap-kib", "kept")? * 1024.0),
    ));
    Ok(s)
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_the_example_output() {
        let out = "symbench binary /x/demo-app bytes 10530464 debuginfo-bytes 9551779
symbench addresses 2000 distinct 1981 named 2000
symbench cold addresses-per-s 26077 seconds 0.0767 first 0.0943
symbench warm addresses-per-s 87447 seconds 0.0229
symbench llvm-addr2line addresses-per-s 9530 seconds 0.2099
symbench agreement fraction 0.9915 same 1983 of 2000
symbench rss-kib before 2440 peak-cold 23264 peak 28420 file 11576 anon 11688
symbench heap-kib peak-cold 11103 kept 10846
symbench disagree 0x31c70 ours \"a\" llvm \"b\"
";
        let md = super::render(out).unwrap();
        assert!(md.contains("| runtime-scope, warm | 87447 | 0.0229 |"), "{md}");
        assert!(md.contains("99.2% (1983 of 2000"), "{md}");
        assert!(md.contains("peak RSS 23.8 MB"), "{md}");
        assert!(super::render("symbench binary x bytes 1").is_err());
    }
}
