//! The "Cost per poll" section of BENCHMARKS.md: what a poll of
//! `demo-app --yield-loop` costs alone, under the kernel's cheapest probes on
//! the same functions (the uprobe floor), and under runtime-scope's task
//! probes, in interleaved rounds.
//!
//! The floor probes are plain uprobe_events in tracefs counted by
//! `perf stat -e` (a handler that only bumps a perf counter): the cost of
//! the trap, the uprobe lookup and, for a uretprobe, the return hijack and
//! second trap. The hit counts perf prints prove each probe fired per poll.

use crate::bench::median;
use std::path::{Path, PathBuf};
use std::process::Command;

const POLLS: u64 = 500_000;
const ROUNDS: usize = 3;
const GROUP: &str = "rsbench";
const RAW_POLL: &str = "tokio::runtime::task::raw::poll";
const WAKES: [&str; 2] = ["tokio::runtime::task::waker::wake_by_val", "tokio::runtime::task::waker::wake_by_ref"];

/// ELF64 little-endian: the file offset of a virtual address (what a uprobe is placed at).
fn file_offset(elf: &[u8], vaddr: u64) -> Option<u64> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(elf.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(elf.get(o..o + 8)?.try_into().ok()?));
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let (phoff, phentsize, phnum) = (u64_at(0x20)? as usize, u16_at(0x36)? as usize, u16_at(0x38)? as usize);
    (0..phnum).find_map(|i| {
        let ph = phoff + i * phentsize;
        let (vaddr0, filesz) = (u64_at(ph + 16)?, u64_at(ph + 32)?);
        (u32_at(ph)? == 1 && (vaddr0..vaddr0 + filesz).contains(&vaddr)).then(|| Some(vaddr - vaddr0 + u64_at(ph + 8)?))?
    })
}

/// `nm -C` addresses of functions named `path` (or `path::<…>`), as file offsets.
fn offsets(binary: &Path, elf: &[u8], nm: &str, path: &str) -> Result<Vec<u64>, String> {
    let mut found: Vec<u64> = nm
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ' ');
            let (addr, kind, name) = (parts.next()?, parts.next()?, parts.next()?);
            let same = name == path || name.strip_prefix(path).is_some_and(|r| r.starts_with("::<"));
            (same && matches!(kind, "t" | "T")).then(|| u64::from_str_radix(addr, 16).ok())?
        })
        .map(|a| file_offset(elf, a).ok_or_else(|| format!("{a:#x} is in no loadable segment of {}", binary.display())))
        .collect::<Result<_, _>>()?;
    found.sort_unstable();
    found.dedup();
    if found.is_empty() {
        return Err(format!("no {path} in {} (nm -C)", binary.display()));
    }
    Ok(found)
}

fn uprobe_events() -> Result<PathBuf, String> {
    ["/sys/kernel/tracing/uprobe_events", "/sys/kernel/debug/tracing/uprobe_events"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| "no uprobe_events in tracefs: mount it (mount -t tracefs nodev /sys/kernel/tracing) or use a kernel with CONFIG_UPROBE_EVENTS".into())
}

fn append(file: &Path, line: &str) -> Result<(), String> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    f.write_all(format!("{line}\n").as_bytes()).map_err(|e| format!("{line:?} >> {}: {e}", file.display()))
}

/// Our uprobe_events; removed on drop, whatever happened.
struct Probes {
    file: PathBuf,
}

impl Probes {
    fn remove_all(&self) {
        let listed = std::fs::read_to_string(&self.file).unwrap_or_default();
        for line in listed.lines() {
            let ours = line.get(2..).and_then(|r| r.split(' ').next()).filter(|e| e.starts_with(&format!("{GROUP}/")));
            if let Some(Err(e)) = ours.map(|event| append(&self.file, &format!("-:{event}"))) {
                eprintln!("xtask bench: cannot remove uprobe {line}: {e}");
            }
        }
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        self.remove_all();
    }
}

fn ns_per_poll(cmd: &mut Command) -> Result<(f64, String), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let ns = stdout.lines().find_map(|l| l.strip_prefix("yield-loop ns-per-poll ")?.trim().parse().ok());
    match ns {
        Some(ns) => Ok((ns, stderr)),
        None => Err(format!("{cmd:?} printed no ns-per-poll: {stdout}{stderr}")),
    }
}

/// Sum of `perf stat -x,` counts for events whose name starts with `prefix`.
fn hits(perf_csv: &str, prefix: &str) -> u64 {
    perf_csv
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (format!("{},", f.get(2)?).starts_with(&format!("{GROUP}:{prefix}"))).then(|| f[0].parse::<u64>().ok())?
        })
        .sum()
}

const CONFIGS: [&str; 7] = [
    "alone",
    "uprobe on raw::poll (perf counter only)",
    "uprobe + uretprobe on raw::poll (perf counter only)",
    "uprobe + uretprobe on raw::poll, uprobe on wake_by_val/ref (our probe set, perf counter only)",
    "runtime-scope record --no-stacks (our eBPF programs on that set)",
    "alone, the same code built with DWARF",
    "runtime-scope record --no-stacks --polls starts, DWARF build (poll entries only: no returns, no wakes)",
];

/// `--polls starts` runs on the DWARF build: there Tokio's task id is found
/// at once, so the returns are never attached (on the stock build a loop of
/// one task never shows where the id is, and they would stay on).
const STARTS: usize = 6;
/// Its baseline: the same code, with DWARF.
const DWARF_ALONE: usize = 5;

/// The section, and runtime-scope's median ns per poll (to size the ingest runs).
pub fn section(scope: &Path, demo: &Path, dwarf_demo: &Path) -> Result<(String, f64), String> {
    for (tool, package) in [("nm", "binutils"), ("perf", "linux-perf")] {
        if !Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success()) {
            return Err(format!("{tool} not found: install {package}"));
        }
    }
    let demo = std::fs::canonicalize(demo).map_err(|e| format!("{}: {e}", demo.display()))?;
    let elf = std::fs::read(&demo).map_err(|e| format!("{}: {e}", demo.display()))?;
    let nm = Command::new("nm").args(["-C", "--defined-only"]).arg(&demo).output().map_err(|e| format!("nm: {e}"))?;
    let nm = String::from_utf8_lossy(&nm.stdout);
    let polls = offsets(&demo, &elf, &nm, RAW_POLL)?;
    let wakes = WAKES.iter().map(|w| offsets(&demo, &elf, &nm, w)).collect::<Result<Vec<_>, _>>()?.concat();
    let probes = Probes { file: uprobe_events()? };
    probes.remove_all(); // left over from an interrupted run
    let event = |kind: &str, i: usize| format!("{GROUP}:{kind}{i}");
    for (i, off) in polls.iter().enumerate() {
        append(&probes.file, &format!("p:{GROUP}/enter{i} {}:{off:#x}", demo.display()))?;
        append(&probes.file, &format!("r:{GROUP}/exit{i} {}:{off:#x}", demo.display()))?;
    }
    for (i, off) in wakes.iter().enumerate() {
        append(&probes.file, &format!("p:{GROUP}/wake{i} {}:{off:#x}", demo.display()))?;
    }
    // Which instances this loop runs (probes never hit cost nothing, but each
    // one perf opens costs ~0.1 s to register): one counted run with all.
    let all: Vec<String> = (0..polls.len()).map(|i| event("enter", i)).chain((0..wakes.len()).map(|i| event("wake", i))).collect();
    let mut cmd = Command::new("perf");
    cmd.args(["stat", "-x,"]).args(all.iter().flat_map(|e| ["-e", e.as_str()])).arg("--").arg(&demo).args(["--yield-loop", &POLLS.to_string()]);
    let (_, counts) = ns_per_poll(&mut cmd)?;
    let hit = |prefix: &str, n: usize| -> Result<Vec<usize>, String> {
        let used: Vec<usize> = (0..n).filter(|&i| hits(&counts, &format!("{prefix}{i},")) >= POLLS).collect();
        if used.is_empty() { Err(format!("no {prefix} probe fired once per poll:\n{counts}")) } else { Ok(used) }
    };
    let (used_polls, used_wakes) = (hit("enter", polls.len())?, hit("wake", wakes.len())?);
    let flags = |kind: &str, used: &[usize]| -> Vec<String> { used.iter().flat_map(|&i| ["-e".to_string(), event(kind, i)]).collect() };
    let (enter, exit, wake) = (flags("enter", &used_polls), flags("exit", &used_polls), flags("wake", &used_wakes));
    let n = POLLS.to_string();
    let capture = std::env::temp_dir().join("bench-yield.rscope");
    let mut ns: Vec<Vec<f64>> = vec![Vec::new(); CONFIGS.len()];
    for round in 0..ROUNDS {
        println!("xtask bench: cost per poll, round {}/{ROUNDS}", round + 1);
        for (c, samples) in ns.iter_mut().enumerate() {
            let events: Vec<&String> = match c {
                1 => enter.iter().collect(),
                2 => enter.iter().chain(&exit).collect(),
                3 => enter.iter().chain(&exit).chain(&wake).collect(),
                _ => Vec::new(),
            };
            let mut cmd = match c {
                0 => Command::new(&demo),
                DWARF_ALONE => Command::new(dwarf_demo),
                4 | STARTS => {
                    let (tier, target) = if c == STARTS { ("starts", dwarf_demo) } else { ("on", demo.as_path()) };
                    let mut cmd = Command::new(scope);
                    cmd.args(["record", "--no-live", "--no-stacks", "--polls", tier, "-o"]).arg(&capture).arg("--").arg(target);
                    cmd
                }
                _ => {
                    let mut cmd = Command::new("perf");
                    cmd.args(["stat", "-x,"]).args(events).arg("--").arg(&demo);
                    cmd
                }
            };
            let (v, stderr) = ns_per_poll(cmd.args(["--yield-loop", &n]))?;
            // Each kind of probe must have fired at least once per poll.
            for (present, prefix) in [(c >= 1, "enter"), (c >= 2, "exit"), (c >= 3, "wake")] {
                if present && c <= 3 && hits(&stderr, prefix) < POLLS {
                    return Err(format!("perf counted {} {prefix} hits for {POLLS} polls:\n{stderr}", hits(&stderr, prefix)));
                }
            }
            samples.push(v);
        }
    }
    drop(probes);
    let _ = std::fs::remove_file(&capture);
    let added = |c: usize| {
        let alone = if c == STARTS { DWARF_ALONE } else { 0 };
        median(ns[c].iter().zip(&ns[alone]).map(|(v, b)| v - b).collect())
    };
    let mut s = String::from("## Cost per poll\n\n");
    s.push_str(&format!(
        "One Tokio task yielding {POLLS} times on a 1-worker runtime (`demo-app --yield-loop {POLLS}`, which prints ns per poll), \
         {ROUNDS} interleaved rounds of every configuration; added is the median of per-round differences to the same round's run alone. \
         Each iteration is one poll of `raw::poll` and one wake (`wake_by_ref`). The floor rows put plain tracefs uprobes on every \
         `raw::poll` instance ({} here; the rounds open only those this loop runs, {}, found by a counted run with all of them) and on `wake_by_val`/`wake_by_ref`, counted by `perf stat -e` (the handler only bumps a perf counter; perf's counts \
         confirm one hit per poll): what this kernel charges for the trap, finding the probe and, for a \
         uretprobe, hijacking the return address and trapping again — the least any uprobe-based tracer pays for the same probes. \
         runtime-scope adds running its eBPF programs (reading the task's fields, writing three events to the ring buffer).\n\n",
        polls.len(),
        used_polls.len()
    ));
    s.push_str("| configuration | ns per poll (median) | added per poll |\n|---|---|---|\n");
    for (c, name) in CONFIGS.iter().enumerate() {
        let add = if c == 0 || c == DWARF_ALONE { "–".to_string() } else { format!("{:.0} ns", added(c)) };
        let add = if matches!(c, 3 | 4 | STARTS) { format!("**{add}**") } else { add };
        s.push_str(&format!("| {name} | {:.0} | {add} |\n", median(ns[c].clone())));
    }
    s.push_str(&format!(
        "\nThe floor for our probe set is {:.0} ns of the {:.0} ns runtime-scope adds per poll: our programs' own share is {:.0} ns ({:.0}%).\n\n",
        added(3),
        added(4),
        added(4) - added(3),
        (added(4) - added(3)) * 100.0 / added(4)
    ));
    s.push_str(&format!(
        "`--polls starts` (a probe on each poll's entry only; a poll's end is then an upper bound: where its worker is next seen outside it) adds {:.0} ns per poll against the {:.0} ns of `--polls on`, on the floor of one entry uprobe ({:.0} ns) and our entry program, which here also reads the task id the poll was entered under.\n\n",
        added(STARTS),
        added(4),
        added(1)
    ));
    Ok((s, median(ns[4].clone())))
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_file_offsets_in_this_binary() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        // The first loadable segment starts at offset 0.
        assert_eq!(super::file_offset(&exe, 0), Some(0));
        assert_eq!(super::file_offset(b"not elf", 0), None);
        let csv = "500001,,rsbench:enter0,1,100.00,,\n1,,rsbench:enter15,1,100.00,,\n7,,rsbench:exit0,1,,";
        assert_eq!(super::hits(csv, "enter"), 500002);
        assert_eq!(super::hits(csv, "enter1,"), 0);
        assert_eq!(super::hits(csv, "enter15,"), 1);
    }
}
