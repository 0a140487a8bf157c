//! Everything kernel-facing: load the eBPF object, fill the thread filter,
//! attach the tracepoints, hand out the ring buffer. Dropping [`Probes`]
//! detaches every program (aya owns the links).

use anyhow::{Context, Result};
use aya::maps::{Map, MapData, PerCpuArray, RingBuf};
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use aya::programs::perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent};
use aya::programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope};
use aya::programs::{BtfTracePoint, PerfEvent, ProgramError, TracePoint, UProbe};
use aya::{Ebpf, EbpfLoader};
use crate::kernel_features::{KernelFeatures, explain_rejection};
use scope_common::{FieldOffsets, StackConfig, TaskIdLayout, counter};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/scope-ebpf"));

pub struct Probes {
    ebpf: Ebpf,
    /// Per-probe uprobe links by program, detached together in [`Probes::detach_uprobes`].
    uprobes: Vec<(ProbeSet, &'static str, UProbeLinkId)>,
    /// uprobe_multi links (one per program); closing one detaches it.
    multi_links: Vec<(ProbeSet, &'static str, OwnedFd)>,
    /// False once the kernel refused a uprobe_multi link (before 6.6), or
    /// when RUNTIME_SCOPE_NO_UPROBE_MULTI is set (to test the fallback).
    multi_usable: bool,
    /// Maps taken out of aya (the ring buffer), kept for uprobe_multi copies.
    map_fds: Vec<(String, OwnedFd)>,
    /// `uname -r`, for the message when the kernel rejects a program.
    release: String,
    /// The poll probes carry cookies (5.15+).
    cookies: bool,
    /// The uprobe_multi copies of programs (aya does not list them), for
    /// their run counters.
    multi_progs: Vec<(String, OwnedFd)>,
    /// Which task probes attaching a set puts on: poll returns (off with
    /// `--polls starts` once the task id's place is known) and wakes.
    pub with_returns: bool,
    pub with_wakes: bool,
}

/// Which task probes: polls (with spawns and worker loops, and their
/// returns), or wakes. `Returns` names the poll returns alone, to take
/// them off (`--polls starts`); taking `Polls` off takes them too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeSet {
    Polls,
    Returns,
    Wakes,
}

impl ProbeSet {
    /// The set a program's links belong to, attached as part of `set`.
    fn of(set: ProbeSet, program: &str) -> ProbeSet {
        if program == "poll_exit" { ProbeSet::Returns } else { set }
    }

    /// Whether taking `self` off takes links of set `s`.
    fn takes(self, s: ProbeSet) -> bool {
        s == self || (self == ProbeSet::Polls && s == ProbeSet::Returns)
    }
}

fn explain_load_error(err: aya::EbpfError) -> anyhow::Error {
    let text = format!("{:#}", anyhow::Error::from(err));
    let hint = if text.contains("Operation not permitted") || text.contains("EPERM") {
        "; run as root (or with CAP_BPF and CAP_PERFMON)"
    } else {
        "; runtime-scope needs Linux ≥ 5.10 with BPF ring buffers and BTF"
    };
    anyhow::anyhow!("loading the eBPF programs failed: {text}{hint}")
}

impl Probes {
    pub fn load(
        tgid: u32,
        offsets: &FieldOffsets,
        stacks: &StackConfig,
        task_ids: &TaskIdLayout,
        features: &KernelFeatures,
        hold: bool,
    ) -> Result<Probes> {
        let scratch_slots = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))? as u32;
        let btf = crate::btf::Btf::from_sys_fs()?;
        let kernel = crate::kernel_layout::read(&btf)?;
        // Frozen .rodata: the verifier prunes the paths this kernel lacks
        // the helpers for (see kernel_features).
        let cookies = u32::from(features.uprobe_cookies);
        let task_pt_regs = u32::from(features.task_pt_regs);
        let hold = u32::from(hold);
        let ebpf = EbpfLoader::new()
            .override_global("UPROBE_COOKIES", &cookies, true)
            .override_global("TASK_PT_REGS", &task_pt_regs, true)
            .override_global("TARGET_TGID", &tgid, true)
            .override_global("OFFSETS", offsets, true)
            .override_global("LAYOUT", &kernel, true)
            .override_global("TASK_IDS", task_ids, true)
            .override_global("STACK_CONFIG", stacks, true)
            .override_global("HOLD", &hold, true)
            .map_max_entries("SCRATCH", scratch_slots)
            .load(OBJECT)
            .map_err(explain_load_error)?;
        let multi_usable = std::env::var_os("RUNTIME_SCOPE_NO_UPROBE_MULTI").is_none();
        Ok(Probes {
            ebpf,
            uprobes: Vec::new(),
            multi_links: Vec::new(),
            multi_usable,
            map_fds: Vec::new(),
            release: features.release.clone(),
            cookies: features.uprobe_cookies,
            multi_progs: Vec::new(),
            with_returns: true,
            with_wakes: true,
        })
    }

    /// A program's load, failing in one line that names what the kernel
    /// lacks (the verifier's log goes to a file, never to the terminal).
    fn checked(release: &str, program: &str, loaded: Result<(), ProgramError>) -> Result<()> {
        loaded.map_err(|e| anyhow::anyhow!(explain_rejection(program, release, &e)))
    }

    /// A BTF tracepoint program (`sched_switch`, `sched_waking`).
    pub fn attach_btf(&mut self, program: &str, btf: &aya::Btf) -> Result<()> {
        self.attach_btf_as(program, program, btf)
    }

    /// `sched_switch`, or with `RUNTIME_SCOPE_CHECK_REPEATS` set the
    /// variant that checks remembered waits, for tests (docs/design-notes.md,
    /// Repeats carry what the compare vouches for).
    pub fn attach_switch(&mut self, btf: &aya::Btf) -> Result<()> {
        let program = if std::env::var_os("RUNTIME_SCOPE_CHECK_REPEATS").is_some() { "sched_switch_check" } else { "sched_switch" };
        self.attach_btf_as(program, "sched_switch", btf)
    }

    /// `program` on the BTF tracepoint `tracepoint`.
    fn attach_btf_as(&mut self, program: &str, tracepoint: &str, btf: &aya::Btf) -> Result<()> {
        let tp: &mut BtfTracePoint = self
            .ebpf
            .program_mut(program)
            .with_context(|| format!("program {program} missing from the eBPF object"))?
            .try_into()?;
        Self::checked(&self.release, program, tp.load(tracepoint, btf))?;
        tp.attach().with_context(|| format!("attaching to BTF tracepoint {tracepoint} failed"))?;
        Ok(())
    }

    /// Where Tokio keeps the task id in CONTEXT (its offset), once known:
    /// the programs then read that word instead of copying CONTEXT.
    pub fn set_task_id_field(&mut self, offset: u32) -> Result<()> {
        self.task_id_field(offset + 1)
    }

    /// Poll entries read the task id they are entered under (their
    /// nesting, once returns are not probed).
    pub fn read_poll_nesting(&mut self) -> Result<()> {
        self.set_word("POLL_NESTING", 1, "setting poll nesting")
    }

    /// Neither read the task id nor copy CONTEXT any more.
    pub fn disable_task_ids(&mut self) -> Result<()> {
        self.task_id_field(scope_common::TASK_IDS_OFF)
    }

    fn task_id_field(&mut self, value: u32) -> Result<()> {
        self.set_word("TASK_ID_FIELD", value, "setting the task id's offset")
    }

    /// Sets the one `u32` of a one-entry array map the programs read.
    fn set_word(&mut self, name: &str, value: u32, what: &'static str) -> Result<()> {
        let map = self.ebpf.map_mut(name).with_context(|| format!("{name} map missing"))?;
        let mut map: aya::maps::Array<&mut MapData, u32> = aya::maps::Array::try_from(map)?;
        map.set(0, value, 0).context(what)
    }

    pub fn attach(&mut self, program: &str, category: &str) -> Result<()> {
        let tp: &mut TracePoint = self
            .ebpf
            .program_mut(program)
            .with_context(|| format!("program {program} missing from the eBPF object"))?
            .try_into()?;
        Self::checked(&self.release, program, tp.load())?;
        tp.attach(category, program)
            .with_context(|| format!("attaching to tracepoint {category}:{program} failed"))?;
        Ok(())
    }

    /// cpu-clock sampling at `hz` on every CPU; the program keeps only the
    /// target's threads (per-thread events would miss threads created later).
    pub fn attach_sampling(&mut self, hz: u32) -> Result<()> {
        let program: &mut PerfEvent = self
            .ebpf
            .program_mut("sample_stack")
            .context("program sample_stack missing from the eBPF object")?
            .try_into()?;
        Self::checked(&self.release, "sample_stack", program.load())?;
        let cpus = aya::util::online_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
        for cpu in cpus {
            program
                .attach(
                    PerfEventConfig::Software(SoftwareEvent::CpuClock),
                    PerfEventScope::AllProcessesOneCpu { cpu },
                    SamplePolicy::Frequency(u64::from(hz)),
                    false,
                )
                .with_context(|| format!("starting cpu-clock sampling on CPU {cpu}"))?;
        }
        Ok(())
    }

    /// Fds of the maps aya created, by name: a second copy of a program
    /// (uprobe_multi) must write to the same maps.
    fn map_fds(&self) -> HashMap<String, RawFd> {
        let mut fds: HashMap<String, RawFd> = self.map_fds.iter().map(|(n, fd)| (n.clone(), fd.as_raw_fd())).collect();
        for (name, map) in self.ebpf.maps() {
            let data = match map {
                Map::Array(d)
                | Map::PerCpuArray(d)
                | Map::HashMap(d)
                | Map::PerCpuHashMap(d)
                | Map::LruHashMap(d)
                | Map::PerCpuLruHashMap(d)
                | Map::RingBuf(d) => d,
                _ => continue,
            };
            fds.insert(name.to_string(), data.fd().as_fd().as_raw_fd());
        }
        fds
    }

    /// The task probes of `set` (polls, spawns and worker loops; or wakes),
    /// for `pid` only: one uprobe_multi link per program where the kernel
    /// has them (6.6+), else one aya link per probe.
    pub fn attach_task_probes(&mut self, points: &crate::recorder::PollProbes, pid: u32, set: ProbeSet) -> Result<()> {
        let programs: Vec<(&'static str, &Vec<u64>, bool)> = match set {
            // Returns first: a poll entered between the two would otherwise be
            // recorded as entered and never left (attached mid-run to a busy
            // worker, every later poll then nested in it for the whole window).
            // The other way round, a return with no entry is simply ignored.
            ProbeSet::Polls => vec![
                ("poll_exit", &points.polls, true),
                ("poll_enter", &points.polls, false),
                ("task_spawn", &points.spawns, false),
                ("worker_run", &points.worker_runs, false),
                ("current_thread", &points.take_cores, false),
            ],
            ProbeSet::Wakes => vec![("task_wake", &points.wakes, false)],
            ProbeSet::Returns => vec![("poll_exit", &points.polls, true)],
        };
        let programs: Vec<_> = programs
            .into_iter()
            .filter(|(program, _, _)| (self.with_returns || *program != "poll_exit") && (self.with_wakes || *program != "task_wake"))
            .collect();
        if programs.is_empty() {
            return Ok(());
        }
        let with_cookies = self.cookies;
        let cookies = |program: &str, offsets: &[u64]| -> Vec<u64> {
            // poll_enter's cookie: where to read the task id (0: don't, and
            // none at all before 5.15, which has no cookies).
            let id_offset = |o: &u64| if program == "poll_enter" && with_cookies { points.id_offsets.get(o).copied().unwrap_or(0) } else { 0 };
            offsets.iter().map(id_offset).collect()
        };
        if self.multi_usable {
            match self.attach_multi(points, pid, &programs, &cookies) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    say!("runtime-scope: no uprobe_multi links ({e:#}; Linux 6.6+ has them): one uprobe per probe instead, which takes seconds to remove");
                    self.multi_usable = false;
                }
            }
        }
        let scope = UProbeScope::OneProcess(std::num::NonZeroU32::new(pid).context("pid 0")?);
        let binary = points.binary.as_path();
        for (program, offsets, _) in programs {
            let probe: &mut UProbe = self
                .ebpf
                .program_mut(program)
                .with_context(|| format!("program {program} missing from the eBPF object"))?
                .try_into()?;
            if probe.fd().is_err() {
                Self::checked(&self.release, program, probe.load())?;
            }
            for (&offset, cookie) in offsets.iter().zip(cookies(program, offsets)) {
                let cookie = (cookie != 0).then_some(cookie);
                let link = probe
                    .attach(UProbeAttachPoint { location: UProbeAttachLocation::AbsoluteOffset(offset), cookie }, binary, scope)
                    .with_context(|| format!("uprobe at {}+{offset:#x}", binary.display()))?;
                self.uprobes.push((ProbeSet::of(set, program), program, link));
            }
        }
        Ok(())
    }

    fn attach_multi(
        &mut self,
        points: &crate::recorder::PollProbes,
        pid: u32,
        programs: &[(&'static str, &Vec<u64>, bool)],
        cookies: &dyn Fn(&str, &[u64]) -> Vec<u64>,
    ) -> Result<()> {
        let names: Vec<&str> = programs.iter().filter(|(_, offsets, _)| !offsets.is_empty()).map(|(n, _, _)| *n).collect();
        let loaded = crate::uprobe_multi::load(OBJECT, &names, &self.map_fds())?;
        let mut links = Vec::new();
        for &(program, offsets, returns) in programs.iter().filter(|(_, o, _)| !o.is_empty()) {
            let link = crate::uprobe_multi::attach(&loaded[program], &points.binary, offsets, &cookies(program, offsets), pid, returns)?;
            links.push((program, link));
        }
        self.multi_progs.extend(loaded);
        // Only once every link is made: a half-attached set is undone whole.
        let set = if programs.iter().any(|(n, _, _)| *n == "task_wake") { ProbeSet::Wakes } else { ProbeSet::Polls };
        self.multi_links.extend(links.into_iter().map(|(program, l)| (ProbeSet::of(set, program), program, l)));
        Ok(())
    }

    /// Takes the probes of `set` off. uprobe_multi links go at once (one
    /// grace period); per-probe links go on a thread of their own, as each
    /// waits for its own grace period (seconds for dozens).
    pub fn detach_task_probes(&mut self, set: ProbeSet) -> Result<()> {
        let (going, staying): (Vec<_>, Vec<_>) = std::mem::take(&mut self.multi_links).into_iter().partition(|(s, _, _)| set.takes(*s));
        self.multi_links = staying;
        // Each link on a thread of its own, never on the recorder's: closing
        // one takes its breakpoints out at once, then waits until no probed
        // poll is still to return (measured: a launched program's worker
        // loop, entered under the probes, held that wait for its whole
        // life). One thread each, so no link's wait keeps another's
        // breakpoints in; entries are started first, but the threads race,
        // so a poll may still be entered after its return probe went: the
        // recorder leaves out what the probes send after they were taken off.
        let (returns, entries): (Vec<_>, Vec<_>) = going.into_iter().partition(|(_, program, _)| *program == "poll_exit");
        for (_, _, link) in entries.into_iter().chain(returns) {
            std::thread::spawn(move || drop(link));
        }
        let (mut entries, mut returns) = (Vec::new(), Vec::new());
        for (s, program, id) in std::mem::take(&mut self.uprobes) {
            if !set.takes(s) {
                self.uprobes.push((s, program, id));
                continue;
            }
            let probe: &mut UProbe = self.ebpf.program_mut(program).context("uprobe program missing")?.try_into()?;
            let link = probe.take_link(id)?;
            if program == "poll_exit" { returns.push(link) } else { entries.push(link) }
        }
        if !entries.is_empty() || !returns.is_empty() {
            std::thread::spawn(move || {
                for links in [entries, returns] {
                    std::thread::scope(|s| {
                        for link in links {
                            s.spawn(move || drop(link));
                        }
                    });
                }
            });
        }
        Ok(())
    }

    /// Removes every uprobe at once. One at a time, each removal waits for
    /// the kernel's grace periods: 30 links took 5 s (measured), during which
    /// the target still paid for probes; from many threads the waits overlap.
    fn detach_uprobes(&mut self) -> Result<()> {
        let multi = std::mem::take(&mut self.multi_links);
        std::thread::scope(|s| {
            for (_, _, link) in multi {
                s.spawn(move || drop(link));
            }
        });
        let mut links = Vec::new();
        for (_, program, id) in std::mem::take(&mut self.uprobes) {
            let probe: &mut UProbe = self.ebpf.program_mut(program).context("uprobe program missing")?.try_into()?;
            links.push(probe.take_link(id)?);
        }
        std::thread::scope(|s| {
            for link in links {
                s.spawn(move || drop(link));
            }
        });
        Ok(())
    }

    /// Removes every probe on a thread of its own and returns at once; the
    /// thread answers how long the uprobes took. Even overlapped, removing
    /// them is slow (55 links took 4.7 s, measured), and nothing after the
    /// window needs the probes: the capture, summary and trace are made
    /// meanwhile.
    pub fn release_in_background(mut self) -> std::thread::JoinHandle<std::time::Duration> {
        std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let _ = self.detach_uprobes();
            let took = started.elapsed();
            drop(self);
            took
        })
    }

    pub fn take_ring(&mut self) -> Result<RingBuf<MapData>> {
        let map = self.ebpf.take_map("EVENTS").context("EVENTS map missing")?;
        let ring = RingBuf::try_from(map)?;
        // SAFETY: the ring's own map fd, duplicated to keep for uprobe_multi copies.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(ring.as_raw_fd()) }.try_clone_to_owned()?;
        self.map_fds.push(("EVENTS".into(), fd));
        Ok(ring)
    }

    /// The slots where switch-outs and wakings wait for their switch-in.
    pub fn held_slots(&self, tids: impl IntoIterator<Item = u32>) -> Result<crate::held::HeldSlots> {
        let Some(Map::Array(data)) = self.ebpf.map("PENDING") else { anyhow::bail!("PENDING map missing") };
        crate::held::HeldSlots::map(data.fd().as_fd(), tids)
    }

    /// Where the recorder says which words of a remembered wait matter.
    pub fn wait_masks(&self) -> Result<crate::wait_masks::WaitMasks> {
        let Some(Map::Array(data)) = self.ebpf.map("MASKS") else { anyhow::bail!("MASKS map missing") };
        crate::wait_masks::WaitMasks::map(data.fd().as_fd())
    }

    /// Where the recorder says which id is each worker's own loop.
    pub fn worker_loops(&self) -> Result<crate::worker_loops::WorkerLoops> {
        let Some(Map::Array(data)) = self.ebpf.map("WORKER_LOOPS") else { anyhow::bail!("WORKER_LOOPS map missing") };
        crate::worker_loops::WorkerLoops::map(data.fd().as_fd())
    }

    /// Switch-outs and wakings the kernel held for a switch-in.
    pub fn held_count(&self) -> Result<u64> {
        self.counter(counter::HELD)
    }

    /// Sum over CPUs of one kernel-side counter. An unreadable counter is an
    /// error, never a zero: "no events lost" must mean what it says.
    fn counter(&self, index: u32) -> Result<u64> {
        let map = self.ebpf.map("COUNTERS").context("COUNTERS map missing")?;
        let array = PerCpuArray::<&MapData, u64>::try_from(map)?;
        let values = array.get(&index, 0).context("reading the kernel-side counters")?;
        Ok(values.iter().sum())
    }

    pub fn lost_events(&self) -> Result<u64> {
        self.counter(counter::RINGBUF_DROPS)
    }

    pub fn untracked_threads(&self) -> Result<u64> {
        self.counter(counter::FILTER_FULL)
    }

    /// Child processes the target started while recorded (not followed).
    pub fn child_processes(&self) -> Result<u64> {
        self.counter(counter::FORKS)
    }

    /// (program name, run count, total run ns) of our programs, from the
    /// kernel's own accounting (only counted while the sysctl
    /// kernel.bpf_stats_enabled is 1).
    pub fn run_stats(&self) -> Vec<(String, u64, u64)> {
        self.fdinfo().into_iter().map(|(n, f)| (n, f.run_cnt, f.run_time_ns)).collect()
    }

    /// Runs of our programs the kernel skipped, by program: a tracepoint
    /// program does not run on a CPU where another BPF program of that
    /// family, or a `bpf()` map syscall (even another tool's, preempted
    /// mid-way), is active. Each skip is an event never recorded.
    pub fn skipped_runs(&self) -> Vec<(String, u64)> {
        self.fdinfo().into_iter().filter(|(_, f)| f.recursion_misses > 0).map(|(n, f)| (n, f.recursion_misses)).collect()
    }

    /// The kernel's counters of each of our programs, from
    /// /proc/self/fdinfo (one program can have several fds: count it once).
    fn fdinfo(&self) -> std::collections::BTreeMap<String, ProgCounters> {
        let ids: Vec<(u32, String)> = self
            .ebpf
            .programs()
            .filter_map(|(name, p)| Some((p.info().ok()?.id(), name.to_string())))
            .collect();
        let mut out: std::collections::BTreeMap<String, ProgCounters> = Default::default();
        let Ok(dir) = std::fs::read_dir("/proc/self/fdinfo") else { return out };
        for entry in dir.flatten() {
            let Ok(text) = std::fs::read_to_string(entry.path()) else { continue };
            let field = |key: &str| text.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.trim().parse::<u64>().ok());
            let Some(id) = field("prog_id:") else { continue };
            if let Some((_, name)) = ids.iter().find(|(i, _)| u64::from(*i) == id) {
                let e = out.entry(name.clone()).or_default();
                e.run_cnt = e.run_cnt.max(field("run_cnt:").unwrap_or(0));
                e.run_time_ns = e.run_time_ns.max(field("run_time_ns:").unwrap_or(0));
                e.recursion_misses = e.recursion_misses.max(field("recursion_misses:").unwrap_or(0));
            }
        }
        for (name, fd) in &self.multi_progs {
            let Ok(text) = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())) else { continue };
            let field = |key: &str| text.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.trim().parse::<u64>().ok());
            let e = out.entry(name.clone()).or_default();
            e.run_cnt += field("run_cnt:").unwrap_or(0);
            e.run_time_ns += field("run_time_ns:").unwrap_or(0);
            e.recursion_misses += field("recursion_misses:").unwrap_or(0);
        }
        out
    }

    /// (skipped over budget, unreadable) stack copies.
    /// Parks of workers whose own loop id the kernel was told (no stack check).
    pub fn parks(&self) -> Result<u64> {
        self.counter(counter::PARKS)
    }

    pub fn stack_misses(&self) -> Result<(u64, u64)> {
        Ok((self.counter(counter::STACKS_OVER_BUDGET)?, self.counter(counter::STACKS_UNREADABLE)?))
    }
}

#[derive(Default)]
struct ProgCounters {
    run_cnt: u64,
    run_time_ns: u64,
    recursion_misses: u64,
}
