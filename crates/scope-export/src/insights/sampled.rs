//! Tasks by samples, from Tokio's task id read at each sample: where the
//! target's CPU went, by task kind, when no poll probes ran (the cheap
//! tier). A sample is an instant, so these are shares, not poll times.

use crate::task_ids::{TaskIdKinds, Unpolled};
use scope_model::identity::id_at;
use scope_model::{Frame, Symbols, Timeline};
use serde::Serialize;
use std::collections::{HashMap, HashSet};

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct SampledTask {
    pub kind: String,
    /// Samples taken while one of its tasks ran.
    pub samples: u64,
    /// Share of all the target's samples.
    pub share_pct: f64,
    /// Distinct Tokio task ids among them.
    pub tasks: u64,
}

pub fn by_kind(tl: &Timeline, symbols: &Symbols, kinds: &HashMap<Frame, String>) -> Vec<SampledTask> {
    let ids = TaskIdKinds::learn(tl, symbols, kinds);
    let all_samples: usize = tl.threads.iter().map(|t| t.samples.len()).sum();
    let mut by: HashMap<String, (u64, HashSet<u64>)> = HashMap::new();
    for t in &tl.threads {
        // Where the poll probes saw no poll open, the id read is no task's.
        let mut unpolled = Unpolled::new(tl, t);
        for &(ts, _) in &t.samples {
            let Some(id) = id_at(t, ts).filter(|&id| ids.is_task(id)) else { continue };
            if unpolled.at(ts) {
                continue;
            }
            let e = by.entry(ids.kind(id).unwrap_or("task").to_string()).or_default();
            e.0 += 1;
            e.1.insert(id);
        }
    }
    let mut out: Vec<SampledTask> = by
        .into_iter()
        .map(|(kind, (samples, ids))| SampledTask {
            kind,
            samples,
            share_pct: (samples as f64 * 1000.0 / all_samples.max(1) as f64).round() / 10.0,
            tasks: ids.len() as u64,
        })
        .collect();
    out.sort_by(|a, b| b.samples.cmp(&a.samples).then_with(|| a.kind.cmp(&b.kind)));
    out
}
