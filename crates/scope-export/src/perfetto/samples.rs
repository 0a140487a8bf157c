//! cpu-clock samples as `PerfSample` packets whose callstacks, frames,
//! function names and mappings are interned once: what the UI's flamegraph
//! reads when a time range is selected.

use scope_model::{Frame, Symbols, Timeline};
use perfetto_protos::interned_data::InternedData;
use perfetto_protos::profile_common::{Callstack, Frame as PFrame, InternedString, Mapping};
use perfetto_protos::profile_packet::PerfSample;
use perfetto_protos::trace_packet::TracePacket;
use super::{Sequence, sequence_start};
use std::collections::BTreeMap;

#[derive(Default)]
struct Interner {
    functions: BTreeMap<String, u64>,
    frames: BTreeMap<(u64, u64, u64), u64>,
    callstacks: BTreeMap<Vec<u64>, u64>,
    mappings: BTreeMap<u32, u64>,
}

fn next_id<K: Ord>(map: &mut BTreeMap<K, u64>, key: K) -> u64 {
    let next = map.len() as u64 + 1;
    *map.entry(key).or_insert(next)
}

impl Interner {
    /// Interned callstack of a stack (innermost first in, outermost first
    /// out, after a `CUT_SHORT` root when it is not complete).
    fn callstack(&mut self, frames: &[Frame], complete: bool, symbols: &Symbols) -> u64 {
        let mut ids = Vec::new();
        if !complete {
            let function = next_id(&mut self.functions, scope_model::CUT_SHORT.to_string());
            let mapping = next_id(&mut self.mappings, Frame::NO_MODULE);
            ids.push(next_id(&mut self.frames, (function, mapping, 0)));
        }
        for frame in frames.iter().rev() {
            let mapping = next_id(&mut self.mappings, frame.module);
            // Inlined frames share the address; outermost function first.
            for resolved in symbols.resolve(frame).iter().rev() {
                let function = next_id(&mut self.functions, resolved.function.clone());
                ids.push(next_id(&mut self.frames, (function, mapping, frame.offset)));
            }
        }
        next_id(&mut self.callstacks, ids)
    }

    fn into_interned(self, module_paths: &[String]) -> InternedData {
        let mut data = InternedData::new();
        for (name, iid) in self.functions {
            let mut s = InternedString::new();
            s.iid = Some(iid);
            s.str = Some(name.into_bytes());
            data.function_names.push(s);
        }
        for (module, iid) in &self.mappings {
            let path = module_paths.get(*module as usize).cloned().unwrap_or_else(|| "[anonymous]".into());
            let mut p = InternedString::new();
            p.iid = Some(*iid);
            p.str = Some(path.into_bytes());
            data.mapping_paths.push(p);
            let mut m = Mapping::new();
            m.iid = Some(*iid);
            m.path_string_ids.push(*iid);
            data.mappings.push(m);
        }
        for ((function, mapping, rel_pc), iid) in self.frames {
            let mut f = PFrame::new();
            f.iid = Some(iid);
            f.function_name_id = Some(function);
            f.mapping_id = Some(mapping);
            f.rel_pc = Some(rel_pc);
            data.frames.push(f);
        }
        for (frame_ids, iid) in self.callstacks {
            let mut c = Callstack::new();
            c.iid = Some(iid);
            c.frame_ids = frame_ids;
            data.callstacks.push(c);
        }
        data
    }
}

/// The samples sequence: interning first, then one packet per sample,
/// delta-timed like the thread sequences.
pub(super) fn write(
    tl: &Timeline,
    symbols: &Symbols,
    seq: &mut Sequence,
    emit: &mut dyn FnMut(&TracePacket) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut interner = Interner::default();
    let mut samples = Vec::new();
    for t in &tl.threads {
        for &(ts, index) in &t.samples {
            let Some(stack) = tl.stacks.get(index as usize) else { continue };
            let callstack = interner.callstack(&stack.frames, stack.complete, symbols);
            samples.push((ts.saturating_sub(tl.start_ns), t.tid, stack.cpu, callstack));
        }
    }
    if samples.is_empty() {
        return Ok(());
    }
    samples.sort();
    emit(&sequence_start(seq.id, None, interner.into_interned(&tl.module_paths)))?;
    for (ts, tid, cpu, callstack) in samples {
        let mut sample = PerfSample::new();
        sample.cpu = Some(cpu);
        sample.pid = Some(tl.pid);
        sample.tid = Some(tid);
        sample.callstack_iid = Some(callstack);
        let mut packet = seq.stamp(ts);
        packet.set_perf_sample(sample);
        emit(&packet)?;
    }
    Ok(())
}
