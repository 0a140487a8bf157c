//! Can this process load BPF programs and open perf events?

use anyhow::{Result, bail};

const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(0)
}

pub fn check() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(());
    }
    let caps = effective_caps();
    let has = |cap: u32| caps & (1 << cap) != 0;
    if has(CAP_BPF) && has(CAP_PERFMON) {
        return Ok(());
    }
    bail!(
        "runtime-scope needs root to load eBPF programs: run it with sudo (without root it needs CAP_BPF and \
         CAP_PERFMON and read access to tracefs; see README, \"Running without root\")"
    )
}
