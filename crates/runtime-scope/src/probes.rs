//! Everything kernel-facing: load the eBPF object, fill the thread filter,
//! attach the tracepoints, hand out the ring buffer. Dropping [`Probes`]
//! detaches every program (aya owns the links).

use anyhow::{Context, Result};
use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::programs::perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent};
use aya::programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope};
use aya::programs::{BtfTracePoint, PerfEvent, TracePoint, UProbe};
use aya::{Ebpf, EbpfLoader};
use scope_common::{FieldOffsets, StackConfig, TaskIdLayout, counter};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/scope-ebpf"));

pub struct Probes {
    ebpf: Ebpf,
    /// Uprobe links by program, detached together in [`Probes::detach_uprobes`].
    uprobes: Vec<(&'static str, UProbeLinkId)>,
}

fn explain_load_error(err: aya::EbpfError) -> anyhow::Error {
    let text = format!("{:#}", anyhow::Error::from(err));
    let hint = if text.contains("Operation not permitted") || text.contains("EPERM") {
        "; run as root (or with CAP_BPF and CAP_PERFMON)"
    } else {
        "; runtime-scope needs Linux ≥ 5.15 with BPF ring buffers and BTF"
    };
    anyhow::anyhow!("loading the eBPF programs failed: {text}{hint}")
}

impl Probes {
    pub fn load(tgid: u32, offsets: &FieldOffsets, stacks: &StackConfig, task_ids: &TaskIdLayout) -> Result<Probes> {
        let scratch_slots = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))? as u32;
        let btf = crate::btf::Btf::from_sys_fs()?;
        let kernel = crate::kernel_layout::read(&btf)?;
        let ebpf = EbpfLoader::new()
            .override_global("TARGET_TGID", &tgid, true)
            .override_global("OFFSETS", offsets, true)
            .override_global("LAYOUT", &kernel, true)
            .override_global("TASK_IDS", task_ids, true)
            .override_global("STACK_CONFIG", stacks, true)
            .map_max_entries("SCRATCH", scratch_slots)
            .load(OBJECT)
            .map_err(explain_load_error)?;
        Ok(Probes { ebpf, uprobes: Vec::new() })
    }

    /// A BTF tracepoint program (`sched_switch`, `sched_waking`).
    pub fn attach_btf(&mut self, program: &str, btf: &aya::Btf) -> Result<()> {
        let tp: &mut BtfTracePoint = self
            .ebpf
            .program_mut(program)
            .with_context(|| format!("program {program} missing from the eBPF object"))?
            .try_into()?;
        tp.load(program, btf).with_context(|| format!("the kernel rejected the {program} program"))?;
        tp.attach().with_context(|| format!("attaching to BTF tracepoint {program} failed"))?;
        Ok(())
    }

    /// Where Tokio keeps the task id in CONTEXT (its offset), once known:
    /// the programs then read that word instead of copying CONTEXT.
    pub fn set_task_id_field(&mut self, offset: u32) -> Result<()> {
        let mut map: aya::maps::Array<&mut MapData, u32> =
            aya::maps::Array::try_from(self.ebpf.map_mut("TASK_ID_FIELD").context("TASK_ID_FIELD map missing")?)?;
        map.set(0, offset + 1, 0).context("setting the task id's offset")?;
        Ok(())
    }

    pub fn attach(&mut self, program: &str, category: &str) -> Result<()> {
        let tp: &mut TracePoint = self
            .ebpf
            .program_mut(program)
            .with_context(|| format!("program {program} missing from the eBPF object"))?
            .try_into()?;
        tp.load().with_context(|| format!("the kernel rejected the {program} program"))?;
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
        program.load().context("the kernel rejected the sampling program")?;
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

    /// A uprobe and a uretprobe on each `raw::poll` instance, uprobes on the
    /// spawn, wake and worker-loop functions (file offsets in the binary),
    /// for `pid` only.
    pub fn attach_polls(&mut self, points: &crate::recorder::PollProbes, pid: u32) -> Result<()> {
        let scope = UProbeScope::OneProcess(std::num::NonZeroU32::new(pid).context("pid 0")?);
        let binary = points.binary.as_path();
        // Returns first: a poll entered between the two would otherwise be
        // recorded as entered and never left (attached mid-run to a busy
        // worker, every later poll then nested in it for the whole window).
        // The other way round, a return with no entry is simply ignored.
        for (program, offsets) in [
            ("poll_exit", &points.polls),
            ("poll_enter", &points.polls),
            ("task_spawn", &points.spawns),
            ("task_wake", &points.wakes),
            ("worker_run", &points.worker_runs),
            ("current_thread", &points.take_cores),
        ] {
            let probe: &mut UProbe = self
                .ebpf
                .program_mut(program)
                .with_context(|| format!("program {program} missing from the eBPF object"))?
                .try_into()?;
            probe.load().with_context(|| format!("the kernel rejected the {program} program"))?;
            for &offset in offsets.iter() {
                // poll_enter's cookie: where to read the task id (0: don't).
                let cookie = if program == "poll_enter" { points.id_offsets.get(&offset).copied() } else { None };
                let link = probe
                    .attach(UProbeAttachPoint { location: UProbeAttachLocation::AbsoluteOffset(offset), cookie }, binary, scope)
                    .with_context(|| format!("uprobe at {}+{offset:#x}", binary.display()))?;
                self.uprobes.push((program, link));
            }
        }
        Ok(())
    }

    /// Removes every uprobe at once. One at a time, each removal waits for
    /// the kernel's grace periods: 30 links took 5 s (measured), during which
    /// the target still paid for probes; from many threads the waits overlap.
    fn detach_uprobes(&mut self) -> Result<()> {
        let mut links = Vec::new();
        for (program, id) in std::mem::take(&mut self.uprobes) {
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
        Ok(RingBuf::try_from(map)?)
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
        out
    }

    /// (skipped over budget, unreadable) stack copies.
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
