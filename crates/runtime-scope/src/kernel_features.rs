//! What the running kernel offers beyond the baseline runtime-scope needs
//! (Linux 5.10 on x86-64, with BTF and BPF ring buffers), probed once at
//! start-up. A missing baseline is a one-line error naming the feature; a
//! missing newer feature is a fallback or a loss, said in one line per
//! recording (`notes`) and listed in full by `runtime-scope check`.
//!
//! Probed, not inferred from the version string: distributions backport
//! BPF features (and a kernel can be built without them). Helpers are
//! probed the way libbpf does (a two-instruction program calling the
//! helper, through aya); kernel code we would only call is looked up by
//! name in /proc/kallsyms.

use anyhow::{Context, Result, bail};
use aya::maps::MapType;
use aya::programs::ProgramType;
use aya::sys::{BpfHelper, is_helper_supported, is_map_supported};
use std::io::{BufRead, Write};

/// One feature newer than the baseline: whether this kernel has it and
/// what runtime-scope does without it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Feature {
    /// Short stable name (the kernel matrix and README table key on it).
    pub key: &'static str,
    /// What it is.
    pub what: &'static str,
    /// The first mainline release that has it.
    pub since: (u32, u32),
    pub present: bool,
    /// What happens on a kernel without it.
    pub without: &'static str,
    /// Whether its absence changes what a recording holds or how it is
    /// taken (then every recording says so), or only its cost.
    pub affects_recording: bool,
}

#[derive(Clone, Debug)]
pub struct KernelFeatures {
    /// `uname -r`.
    pub release: String,
    /// `bpf_get_attach_cookie` from uprobes (5.15): poll probes read
    /// Tokio's task id at the offset their cookie carries.
    pub uprobe_cookies: bool,
    /// `bpf_get_current_task_btf` (5.11) and `bpf_task_pt_regs` (5.15):
    /// the user registers of a thread that is in the kernel.
    pub task_pt_regs: bool,
    /// uprobe_multi links (6.6), from kallsyms; `None` when not looked up.
    pub uprobe_multi: Option<bool>,
    /// The uretprobe syscall (6.11), from kallsyms; `None` when not looked up.
    pub uretprobe_syscall: Option<bool>,
}

const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

fn helper(program: ProgramType, helper: BpfHelper) -> Result<bool> {
    is_helper_supported(program, helper).with_context(|| format!("probing the kernel for {helper:?}"))
}

/// Which of `names` /proc/kallsyms lists (function symbols of the kernel).
fn kernel_symbols(names: &[&str]) -> Result<Vec<bool>> {
    let file = std::fs::File::open("/proc/kallsyms").context("cannot read /proc/kallsyms")?;
    let mut found = vec![false; names.len()];
    for line in std::io::BufReader::new(file).lines() {
        let line = line.context("reading /proc/kallsyms")?;
        // "ffffffff81335c00 T __x64_sys_uretprobe [module]"
        let Some(name) = line.split_whitespace().nth(2) else { continue };
        if let Some(i) = names.iter().position(|n| *n == name) {
            found[i] = true;
        }
    }
    Ok(found)
}

impl KernelFeatures {
    /// What recording needs to know; fails, in one line, when the kernel
    /// lacks something runtime-scope cannot do without.
    pub fn detect() -> Result<KernelFeatures> {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default();
        let ringbuf = is_map_supported(MapType::RingBuf).context("probing the kernel for BPF ring buffers")?;
        if !ringbuf {
            bail!("kernel {release} has no BPF ring buffer (Linux 5.8+): runtime-scope needs Linux 5.10 or newer");
        }
        if !std::path::Path::new(BTF_PATH).exists() {
            bail!("kernel {release} has no BTF ({BTF_PATH}): runtime-scope needs a kernel built with CONFIG_DEBUG_INFO_BTF=y");
        }
        let features = aya::features();
        let uprobe_cookies = features.bpf_cookie() && features.bpf_perf_link();
        let task_pt_regs = helper(ProgramType::PerfEvent, BpfHelper::BPF_FUNC_get_current_task_btf)?
            && helper(ProgramType::PerfEvent, BpfHelper::BPF_FUNC_task_pt_regs)?;
        Ok(KernelFeatures { release, uprobe_cookies, task_pt_regs, uprobe_multi: None, uretprobe_syscall: None })
    }

    /// [`detect`](Self::detect) plus two features recording needs no probe
    /// for, for `runtime-scope check`: uprobe_multi links (recording tries
    /// one and falls back, saying so) and the uretprobe syscall (a cost).
    pub fn detect_all() -> Result<KernelFeatures> {
        let mut features = KernelFeatures::detect()?;
        let found = kernel_symbols(&["bpf_uprobe_multi_link_attach", "__x64_sys_uretprobe"])?;
        features.uprobe_multi = Some(found[0]);
        features.uretprobe_syscall = Some(found[1]);
        Ok(features)
    }

    /// Every feature newer than the baseline that was looked up.
    pub fn list(&self) -> Vec<Feature> {
        let mut list = vec![
            Feature {
                key: "uprobe-cookies",
                what: "BPF cookies on uprobes",
                since: (5, 15),
                present: self.uprobe_cookies,
                without: "Tokio task ids are left out (polls, wakes and spawns are all recorded)",
                affects_recording: true,
            },
            Feature {
                key: "task-pt-regs",
                what: "bpf_task_pt_regs",
                since: (5, 15),
                present: self.task_pt_regs,
                without: "user registers for stacks are read from the top of the thread's kernel stack (x86-64 layout, checked per stack)",
                affects_recording: true,
            },
        ];
        if let Some(present) = self.uprobe_multi {
            list.push(Feature {
                key: "uprobe-multi",
                what: "uprobe_multi links",
                since: (6, 6),
                present,
                without: "task probes are attached one uprobe per function: dozens take seconds to remove (recording says so when it falls back)",
                affects_recording: false,
            });
        }
        if let Some(present) = self.uretprobe_syscall {
            list.push(Feature {
                key: "uretprobe-syscall",
                what: "the uretprobe syscall",
                since: (6, 11),
                present,
                without: "each return probe (one per poll) traps into the kernel: polls cost more to record",
                affects_recording: false,
            });
        }
        list
    }

    /// One line per missing feature that changes a recording, e.g.
    /// "kernel 5.10.0-32-cloud-amd64: no BPF cookies on uprobes (Linux 5.15): Tokio task ids are left out (…)".
    pub fn notes(&self) -> Vec<String> {
        self.list()
            .into_iter()
            .filter(|f| !f.present && f.affects_recording)
            .map(|f| format!("kernel {}: no {} (Linux {}.{}+): {}", self.release, f.what, f.since.0, f.since.1, f.without))
            .collect()
    }
}

/// `runtime-scope check`: this kernel's features, one line each (stdout).
pub fn check() -> Result<()> {
    crate::privileges::check()?;
    let kernel = KernelFeatures::detect_all()?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "kernel {}: meets runtime-scope's baseline (Linux 5.10+, x86-64, BTF, BPF ring buffer)", kernel.release);
    for f in kernel.list() {
        let answer = if f.present { "yes" } else { "no " };
        let lost = if f.present { String::new() } else { format!(": {}", f.without) };
        let _ = writeln!(out, "  {answer}  {:<18} {} (Linux {}.{}+){lost}", f.key, f.what, f.since.0, f.since.1);
    }
    Ok(())
}

/// The one line to show when the kernel rejected one of our programs: the
/// verifier's reason (its log's last real line, naming the kernel feature
/// when it is a helper this kernel lacks) and where the full log went. The
/// log's first lines are often harmless notes (5.10 opens with "arg#0 type
/// is not a struct" for every tracepoint program), so they are never the
/// message.
pub fn explain_rejection(program: &str, release: &str, error: &aya::programs::ProgramError) -> String {
    match error {
        aya::programs::ProgramError::LoadError { io_error, verifier_log } => {
            explain_log(program, release, &verifier_log.to_string(), io_error)
        }
        other => format!("loading the {program} program failed: {other}"),
    }
}

fn explain_log(program: &str, release: &str, log: &str, io_error: &std::io::Error) -> String {
    let reason = verifier_reason(log).unwrap_or_else(|| io_error.to_string());
    let missing = missing_helper(&reason).map_or(String::new(), |(name, since)| format!(": it calls {name}, which needs Linux {since}+"));
    let saved = save_log(program, log);
    format!("kernel {release} rejected the {program} program{missing} (verifier: \"{reason}\"); {saved}")
}

fn save_log(program: &str, log: &str) -> String {
    let path = std::env::temp_dir().join(format!("runtime-scope-verifier-{program}.log"));
    match std::fs::write(&path, log) {
        Ok(()) => format!("full verifier log in {}", path.display()),
        Err(e) => format!("the verifier log could not be saved to {} ({e})", path.display()),
    }
}

/// The verifier's last line that is not a statistic: where it stopped.
fn verifier_reason(log: &str) -> Option<String> {
    const STATS: [&str; 4] = ["verification time", "stack depth", "processed ", "max_states_per_insn"];
    log.lines().map(str::trim).rfind(|l| !l.is_empty() && !STATS.iter().any(|s| l.starts_with(s))).map(str::to_string)
}

/// Helpers our programs call that are newer than 5.10's, by the number the
/// verifier prints for one it does not know ("invalid func unknown#158").
const NEWER_HELPERS: [(u32, &str, &str); 3] = [
    (158, "bpf_get_current_task_btf", "5.11"),
    (174, "bpf_get_attach_cookie", "5.15"),
    (175, "bpf_task_pt_regs", "5.15"),
];

fn missing_helper(reason: &str) -> Option<(&'static str, &'static str)> {
    let id: u32 = reason.strip_prefix("invalid func unknown#")?.trim().parse().ok()?;
    NEWER_HELPERS.iter().find(|h| h.0 == id).map(|h| (h.1, h.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The end of 5.10's log for the sched_switch program that called
    /// bpf_get_current_task_btf (captured in the kernel matrix).
    const LOG_5_10: &str = "arg#0 type is not a struct\nUnrecognized arg#0 type PTR\n; fun()\n258: (85) call unknown#158\n\
        invalid func unknown#158\nverification time 17882 usec\nstack depth 88+176\n\
        processed 230 insns (limit 1000000) max_states_per_insn 0 total_states 18 peak_states 18 mark_read 8\n";

    #[test]
    fn the_reason_is_the_last_line_not_the_first() {
        assert_eq!(verifier_reason(LOG_5_10).as_deref(), Some("invalid func unknown#158"));
        assert_eq!(missing_helper("invalid func unknown#158"), Some(("bpf_get_current_task_btf", "5.11")));
        assert_eq!(missing_helper("R1 invalid mem access 'inv'"), None);
        assert_eq!(verifier_reason("\n\n"), None);
    }

    #[test]
    fn a_rejection_is_one_line_naming_the_feature_and_the_log_file() {
        let einval = std::io::Error::from_raw_os_error(libc::EINVAL);
        let line = explain_log("test_prog", "5.10.0-32-cloud-amd64", LOG_5_10, &einval);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.starts_with("kernel 5.10.0-32-cloud-amd64 rejected the test_prog program: it calls bpf_get_current_task_btf, which needs Linux 5.11+"), "{line}");
        let path = std::env::temp_dir().join("runtime-scope-verifier-test_prog.log");
        assert!(line.ends_with(&format!("full verifier log in {}", path.display())), "{line}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), LOG_5_10);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn notes_name_the_kernel_and_only_what_changes_a_recording() {
        let old = KernelFeatures {
            release: "5.10.0-32-cloud-amd64".into(),
            uprobe_cookies: false,
            task_pt_regs: false,
            uprobe_multi: Some(false),
            uretprobe_syscall: Some(false),
        };
        let notes = old.notes();
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].starts_with("kernel 5.10.0-32-cloud-amd64: no BPF cookies on uprobes (Linux 5.15+): Tokio task ids are left out"), "{notes:?}");
        assert_eq!(old.list().len(), 4);
        let new = KernelFeatures { uprobe_cookies: true, task_pt_regs: true, ..old };
        assert!(new.notes().is_empty());
    }

    /// On the running kernel, every feature whose mainline release is at or
    /// below its version is found (distributions add features by backports;
    /// they do not take them out).
    #[test]
    fn features_of_the_running_kernel_match_its_version() {
        // SAFETY: no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0, "probing BPF features needs root; run through `cargo xtask test`");
        let f = KernelFeatures::detect_all().expect("this kernel meets the baseline");
        let version = release_version(&f.release).expect("a numbered release");
        for feature in f.list() {
            if version >= feature.since {
                assert!(feature.present, "Linux {} should have {} ({:?})", f.release, feature.what, feature.since);
            }
        }
        assert_eq!(release_version("5.10.0-32-cloud-amd64"), Some((5, 10)));
        assert_eq!(release_version("6.12.118+deb13-cloud-amd64"), Some((6, 12)));
    }

    fn release_version(release: &str) -> Option<(u32, u32)> {
        let mut parts = release.split(|c: char| !c.is_ascii_digit());
        Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
    }
}
