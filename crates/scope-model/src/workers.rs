//! First-cut worker identification by thread name. Tokio names its workers
//! `tokio-rt-worker` (≥ 1.50) or `tokio-runtime-worker`, which the kernel
//! truncates to `tokio-runtime-w`; users with a custom `thread_name` pass
//! their prefix. Names are a hint, not proof: spawn_blocking threads share
//! the default name (exact identification needs the task probes).

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
    /// Index in tid order among the process's workers.
    Worker { index: u32 },
    Other,
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
