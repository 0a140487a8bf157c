//! Everything kernel-facing: load the eBPF object, fill the thread filter,
//! attach the tracepoints, hand out the ring buffer. Dropping [`Probes`]
//! detaches every program (aya owns the links).

use anyhow::{Context, Result};
use aya::maps::{HashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::TracePoint;
use aya::{Ebpf, EbpfLoader};
use scope_common::{FieldOffsets, counter};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/scope-ebpf"));

pub struct Probes {
    ebpf: Ebpf,
}

/// Kernel comm bytes as the filter map stores them.
fn comm_words(name: &str) -> [u64; 2] {
    let mut bytes = [0u8; 16];
    let n = name.len().min(15);
    bytes[..n].copy_from_slice(&name.as_bytes()[..n]);
    [
        u64::from_ne_bytes(bytes[..8].try_into().expect("8 bytes")),
        u64::from_ne_bytes(bytes[8..].try_into().expect("8 bytes")),
    ]
}

fn explain_load_error(err: aya::EbpfError) -> anyhow::Error {
    let text = err.to_string();
    let hint = if text.contains("Operation not permitted") || text.contains("EPERM") {
        "; run as root (or with CAP_BPF and CAP_PERFMON)"
    } else {
        "; the kernel needs BPF ring buffers (Linux ≥ 5.8) with CONFIG_BPF_SYSCALL"
    };
    anyhow::anyhow!("loading the eBPF programs failed: {text}{hint}")
}

impl Probes {
    pub fn load(tgid: u32, offsets: &FieldOffsets) -> Result<Probes> {
        let ebpf = EbpfLoader::new()
            .override_global("TARGET_TGID", &tgid, true)
            .override_global("OFFSETS", offsets, true)
            .load(OBJECT)
            .map_err(explain_load_error)?;
        Ok(Probes { ebpf })
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

    /// Adds threads to the kernel-side filter.
    pub fn follow_threads(&mut self, threads: &[(u32, String)]) -> Result<()> {
        let mut map: HashMap<&mut MapData, u32, [u64; 2]> =
            HashMap::try_from(self.ebpf.map_mut("THREADS").context("THREADS map missing")?)?;
        for (tid, name) in threads {
            map.insert(tid, comm_words(name), 0)
                .with_context(|| format!("adding thread {tid} to the filter"))?;
        }
        Ok(())
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
}

#[cfg(test)]
mod tests {
    #[test]
    fn comm_words_match_kernel_layout() {
        let w = super::comm_words("tokio-rt-worker-extra");
        let bytes: Vec<u8> = w.iter().flat_map(|x| x.to_ne_bytes()).collect();
        assert_eq!(&bytes[..15], b"tokio-rt-worker");
        assert_eq!(bytes[15], 0, "kernel comm is NUL-terminated within 16 bytes");
    }
}
