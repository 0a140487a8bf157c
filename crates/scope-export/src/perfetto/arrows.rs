//! Flow ids on slices, chained: an arrow that leaves the slice where another
//! arrived reuses its id. Perfetto links the slices carrying one id in time
//! order (each later one a step of the flow), so a chain draws exactly the
//! arrows its pieces would, with one id per slice instead of two: a task
//! that yields a million times is one id on a million polls, not two
//! million ids. Ids are numbered 1, 2, … in order of first use; the exporter
//! writes them as varints (`flow_ids_old`), 3–4 bytes instead of the 10 of
//! a `fixed64` `flow_ids` entry.

use super::slices::Slice;
use crate::flows::Flow;
use scope_model::Timeline;
use std::collections::HashMap;

/// Index of the innermost slice holding each instant, for instants sorted
/// by time. One sweep with the stack of open slices: searching back from
/// each instant was quadratic when one on-CPU span held 500k polls.
fn innermost(slices: &[Slice], instants: &[u64]) -> Vec<Option<usize>> {
    let (mut open, mut next): (Vec<usize>, usize) = (Vec::new(), 0);
    let mut out = Vec::with_capacity(instants.len());
    for &ts in instants {
        while next < slices.len() && slices[next].start <= ts {
            while open.last().is_some_and(|&o| slices[o].end <= slices[next].start) {
                open.pop();
            }
            open.push(next);
            next += 1;
        }
        while open.last().is_some_and(|&o| slices[o].end <= ts) {
            open.pop();
        }
        out.push(open.last().copied());
    }
    out
}

/// Per thread (same order as `tl.threads`), `(slice index, flow id)` sorted
/// by slice. An arrow leaves from the innermost slice around its source
/// instant and ends on the poll piece that starts at its destination; one
/// missing either end draws nothing, so it gets no id.
pub(super) fn flow_ids(tl: &Timeline, slices: &[Vec<Slice>], flows: &[Flow]) -> Vec<Vec<(usize, u64)>> {
    let thread: HashMap<u32, usize> = tl.threads.iter().enumerate().map(|(i, t)| (t.tid, i)).collect();
    let mut source: Vec<Option<(usize, usize)>> = vec![None; flows.len()];
    for (ti, t) in tl.threads.iter().enumerate() {
        let mut froms: Vec<(u64, usize)> =
            flows.iter().enumerate().filter(|(_, f)| f.from.0 == t.tid).map(|(i, f)| (f.from.1, i)).collect();
        froms.sort_unstable();
        let instants: Vec<u64> = froms.iter().map(|f| f.0).collect();
        for ((_, i), at) in froms.iter().zip(innermost(&slices[ti], &instants)) {
            source[*i] = at.map(|s| (ti, s));
        }
    }
    let destination = |f: &Flow| {
        let ti = *thread.get(&f.to.0)?;
        let s = &slices[ti];
        let at = s.partition_point(|x| x.start < f.to.1);
        (at..s.len()).take_while(|&i| s[i].start == f.to.1).find(|&i| s[i].depth >= 1).map(|i| (ti, i))
    };
    // `flows()` returns them sorted by source time, so a chain has reached
    // a slice before any arrow leaves it.
    let mut out: Vec<Vec<(usize, u64)>> = vec![Vec::new(); tl.threads.len()];
    let mut chain_end: HashMap<(usize, usize), u64> = HashMap::new();
    let mut next = 1;
    for (i, flow) in flows.iter().enumerate() {
        let (Some(from), Some(to)) = (source[i], destination(flow)) else { continue };
        let id = match chain_end.remove(&from) {
            Some(id) => id,
            None => {
                next += 1;
                out[from.0].push((from.1, next - 1));
                next - 1
            }
        };
        out[to.0].push((to.1, id));
        chain_end.insert(to, id);
    }
    for ids in &mut out {
        ids.sort_unstable();
        ids.dedup();
    }
    out
}
