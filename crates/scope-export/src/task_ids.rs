//! Names for Tokio task ids read without poll probes: an id seen inside a
//! probed poll takes that poll's kind; otherwise the stacks taken while it
//! was set vote (the future inside the innermost task harness frame), and
//! only a clear majority names it. A multi-thread worker is itself a
//! blocking task, so a parked worker carries its own loop's id: that kind
//! is the worker loop, never a task.

use crate::tasks::{WORKER_LOOP, future_in_stack};
use scope_model::identity::stacks_with_ids;
use scope_model::{Frame, Symbols, Timeline};
use std::collections::HashMap;

/// Share of an id's stacks that must agree on its kind.
const AGREEMENT: f64 = 0.75;

pub struct TaskIdKinds {
    kind_of: HashMap<u64, String>,
}

impl TaskIdKinds {
    pub fn learn(tl: &Timeline, symbols: &Symbols, kinds: &HashMap<Frame, String>) -> TaskIdKinds {
        let mut kind_of: HashMap<u64, String> = HashMap::new();
        for t in &tl.threads {
            for poll in &t.polls {
                if let (Some(id), Some(kind)) = (tl.tokio_ids.get(&poll.serial), kinds.get(&poll.poll_fn)) {
                    kind_of.entry(*id).or_insert_with(|| kind.clone());
                }
            }
        }
        let mut votes: HashMap<u64, HashMap<String, u32>> = HashMap::new();
        for t in &tl.threads {
            for (_, stack, id) in stacks_with_ids(t) {
                if kind_of.contains_key(&id) {
                    continue;
                }
                let Some(s) = tl.stacks.get(stack as usize) else { continue };
                if let Some(name) = future_in_stack(&symbols.expand(&s.frames)) {
                    *votes.entry(id).or_default().entry(name).or_default() += 1;
                }
            }
        }
        for (id, counts) in votes {
            let total: u32 = counts.values().sum();
            if let Some((kind, n)) = counts.into_iter().max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
                && f64::from(n) >= AGREEMENT * f64::from(total)
            {
                kind_of.insert(id, kind);
            }
        }
        TaskIdKinds { kind_of }
    }

    pub fn kind(&self, id: u64) -> Option<&str> {
        self.kind_of.get(&id).map(String::as_str)
    }

    /// A user task's id (named, and not a worker's own loop). Unnamed ids
    /// are left out: a parked worker whose stacks could not be named must
    /// not pass for a task blocked in its poll.
    pub fn is_task(&self, id: u64) -> bool {
        self.kind(id).is_some_and(|k| k != WORKER_LOOP)
    }
}
