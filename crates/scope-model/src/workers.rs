//! First-cut worker identification by thread name. Tokio names its workers
//! `tokio-rt-worker` (≥ 1.50) or `tokio-runtime-worker`, which the kernel
//! truncates to `tokio-runtime-w`; users with a custom `thread_name` pass
//! their prefix. Names are a hint, not proof: spawn_blocking threads share
//! the default name (exact identification needs the task probes).

use crate::{ThreadTimeline, WorkerStart};
use serde::{Deserialize, Serialize};

pub const DEFAULT_WORKER_PREFIXES: [&str; 2] = ["tokio-rt-worker", "tokio-runtime-w"];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRule {
    pub prefixes: Vec<String>,
}

impl Default for WorkerRule {
    fn default() -> Self {
        WorkerRule { prefixes: DEFAULT_WORKER_PREFIXES.iter().map(|s| s.to_string()).collect() }
    }
}

impl WorkerRule {
    /// The defaults plus the user's own prefixes.
    pub fn with_extra(extra: &[String]) -> Self {
        let mut rule = WorkerRule::default();
        rule.prefixes.extend(extra.iter().filter(|p| !p.is_empty()).cloned());
        rule
    }

    pub fn is_worker(&self, thread_name: &str) -> bool {
        self.prefixes.iter().any(|p| thread_name.starts_with(p.as_str()))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Role {
    /// The runtime's own worker index when the thread was seen entering
    /// `worker::run` (0 for the thread driving a current_thread runtime),
    /// else the index in tid order among name-matched threads. `runtime`
    /// numbers runtimes in order of appearance (0 when there is only one,
    /// or workers were matched by name); `runtimes` is how many were seen,
    /// so labels name the runtime whenever there are several.
    Worker {
        index: u32,
        #[serde(default)]
        runtime: u32,
        #[serde(default)]
        runtimes: u32,
    },
    Other,
}

/// Most indices a real runtime has; anything above is a misread layout.
const MAX_WORKER_INDEX: u64 = 4096;

/// Workers by what they run: threads seen entering `worker::run` (or
/// taking a current_thread runtime's core) are workers with that index;
/// threads created while recording that never did are not (blocking-pool
/// threads share the workers' name). Threads that were already running at
/// attach can only be told by name.
pub(crate) fn assign_roles(threads: &mut [ThreadTimeline], rule: &WorkerRule, starts: &[WorkerStart]) {
    let plausible = |s: &WorkerStart| s.index < MAX_WORKER_INDEX && s.runtime != 0 && s.runtime.is_multiple_of(8);
    // The two probes read different layouts: one misread discards only its
    // own kind of entries.
    let trusted = |current_thread: bool| {
        let mine = || starts.iter().filter(move |s| s.current_thread == current_thread);
        if mine().all(plausible) { mine().collect() } else { Vec::new() }
    };
    let mut starts: Vec<&WorkerStart> = trusted(false);
    starts.extend(trusted(true));
    starts.sort_by_key(|s| s.ts);
    let mut runtimes: Vec<u64> = Vec::new();
    for s in &starts {
        if !runtimes.contains(&s.runtime) {
            runtimes.push(s.runtime);
        }
    }
    let mut by_name = 0;
    for t in threads.iter_mut() {
        // The latest entry wins: block_in_place hands a worker to a new thread.
        if let Some(s) = starts.iter().rev().find(|s| s.tid == t.tid) {
            let runtime = runtimes.iter().position(|&r| r == s.runtime).unwrap_or(0) as u32;
            t.role = Role::Worker { index: s.index as u32, runtime, runtimes: runtimes.len() as u32 };
        } else if (starts.is_empty() || t.created_ns.is_none()) && rule.is_worker(&t.name) {
            t.role = Role::Worker { index: by_name, runtime: 0, runtimes: 0 };
            by_name += 1;
        }
    }
}

/// What a `raw::poll` instance runs, for telling threads by what they poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Polled {
    /// A `spawn_blocking` closure: blocking-pool work.
    Blocking,
    /// Tokio's worker loop, which Tokio starts as a blocking task.
    WorkerLoop,
    /// An async task: polled only by a runtime's workers, or by the thread
    /// driving a current_thread runtime (or a `LocalSet`).
    Task,
    /// Unnamed: says nothing.
    Unknown,
}

/// Threads never seen entering a worker loop are told by what they polled
/// when names cannot be trusted: fat LTO inlines `worker::run` and
/// `take_core`, and threads running before attach never show the entry.
/// Polling async tasks (or the worker loop itself) makes a worker; polling
/// only `spawn_blocking` work makes a blocking-pool thread, whatever the
/// name; polling nothing leaves the name to decide. Such workers are
/// numbered in tid order (Tokio's own index is not known for them).
pub(crate) fn refine_by_polls(threads: &mut [ThreadTimeline], polled: impl Fn(&crate::Poll) -> Polled) {
    let mut order: Vec<usize> = (0..threads.len()).collect();
    order.sort_by_key(|&i| threads[i].tid);
    let mut next = 0;
    for i in order {
        let t = &mut threads[i];
        // Entry-based workers name their runtime count; those keep Tokio's index.
        if matches!(t.role, Role::Worker { runtimes, .. } if runtimes > 0) {
            continue;
        }
        let seen: Vec<Polled> = t.polls.iter().map(&polled).collect();
        let worker = if seen.iter().any(|p| matches!(p, Polled::Task | Polled::WorkerLoop)) {
            true
        } else if seen.contains(&Polled::Blocking) {
            false
        } else {
            t.is_worker()
        };
        t.role = if worker {
            next += 1;
            Role::Worker { index: next - 1, runtime: 0, runtimes: 0 }
        } else {
            Role::Other
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_and_custom_prefixes() {
        let rule = WorkerRule::with_extra(&["api-".to_string(), String::new()]);
        assert!(rule.is_worker("tokio-rt-worker"));
        assert!(rule.is_worker("tokio-runtime-w"));
        assert!(rule.is_worker("api-7"));
        assert!(!rule.is_worker("demo-app"));
        assert!(!rule.is_worker(""), "empty prefix must not match everything");
    }
}
