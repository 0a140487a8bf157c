//! Where to probe Tokio in a binary: every instance of
//! `tokio::runtime::task::raw::poll` (one per spawned future type; it is in
//! the task vtable, so it survives inlining and LTO). Matched by demangled
//! path, legacy and v0 mangling alike; attached by file offset.

use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

pub const RAW_POLL: &str = "tokio::runtime::task::raw::poll";
/// Every spawned task passes here once (any tokio ≥ 1.x multi-thread or
/// current-thread runtime; generic over the scheduler, so a few instances).
pub const BIND_INNER: &str = "::bind_inner";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbePoint {
    /// Demangled name, without hash.
    pub name: String,
    pub svma: u64,
    /// Offset in the file: what a uprobe is attached at.
    pub file_offset: u64,
    /// The function's size in bytes (from the symbol table; 0 if unknown).
    pub size: u64,
}

/// `tokio::runtime::task::raw::poll::<F, S>` / `…::poll::h1234` → true.
fn is_instance_of(demangled: &str, path: &str) -> bool {
    demangled == path || demangled.strip_prefix(path).is_some_and(|rest| rest.starts_with("::<") || rest.starts_with('<'))
}

fn is_raw_poll(demangled: &str) -> bool {
    is_instance_of(demangled, RAW_POLL)
}

pub const WAKE_BY_VAL: &str = "tokio::runtime::task::waker::wake_by_val";
pub const WAKE_BY_REF: &str = "tokio::runtime::task::waker::wake_by_ref";
pub const WORKER_RUN: &str = "tokio::runtime::scheduler::multi_thread::worker::run";
/// Non-generic; inlined away by fat LTO (then current_thread runtimes' threads
/// are told by name only).
pub const TAKE_CORE: &str = "tokio::runtime::scheduler::current_thread::CurrentThread::take_core";

/// A multi-thread worker's park (the parker's condvar wait, or the I/O and
/// time drivers it turns while parked), only ever called from the worker's
/// own loop, outside every task's poll. A blocked stack through one of
/// these was taken with the worker's own loop id set. Not
/// `worker::Context::park`, which can poll tasks (a task dump's tracing).
pub const PARK_CODE: [&str; 4] = [
    "tokio::runtime::scheduler::multi_thread::park::Inner::park_condvar",
    "tokio::runtime::scheduler::multi_thread::park::Inner::park_driver",
    "tokio::runtime::scheduler::multi_thread::park::Parker::park",
    "tokio::runtime::scheduler::multi_thread::park::Parker::park_timeout",
];

/// Where each Tokio probe goes in one binary (file offsets and names).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokioProbePoints {
    /// Every instance of `raw::poll` (entered per poll).
    pub polls: Vec<ProbePoint>,
    /// Every instance of `OwnedTasks::bind_inner` (entered once per spawn).
    pub spawns: Vec<ProbePoint>,
    /// `waker::wake_by_val` and `wake_by_ref` (entered per wake).
    pub wakes: Vec<ProbePoint>,
    /// `multi_thread::worker::run` (entered once per worker thread).
    pub worker_runs: Vec<ProbePoint>,
    /// `current_thread::CurrentThread::take_core` (entered by each `block_on`).
    pub take_cores: Vec<ProbePoint>,
    /// [`PARK_CODE`] (not probed: known in stacks by their address ranges).
    pub parks: Vec<ProbePoint>,
}

pub fn tokio_probe_points(data: &[u8]) -> Result<TokioProbePoints, String> {
    let all = find(data, |name| {
        is_raw_poll(name)
            || (name.contains("task::list::OwnedTasks<") && name.ends_with(BIND_INNER))
            || name == WAKE_BY_VAL
            || name == WAKE_BY_REF
            || name == WORKER_RUN
            || name == TAKE_CORE
            || PARK_CODE.contains(&name)
    })?;
    let pick = |wanted: &dyn Fn(&str) -> bool| all.iter().filter(|p| wanted(&p.name)).cloned().collect::<Vec<_>>();
    Ok(TokioProbePoints {
        polls: pick(&is_raw_poll),
        spawns: pick(&|n| n.ends_with(BIND_INNER)),
        wakes: pick(&|n| n == WAKE_BY_VAL || n == WAKE_BY_REF),
        worker_runs: pick(&|n| n == WORKER_RUN),
        take_cores: pick(&|n| n == TAKE_CORE),
        parks: pick(&|n| PARK_CODE.contains(&n)),
    })
}

fn find(data: &[u8], wanted: impl Fn(&str) -> bool) -> Result<Vec<ProbePoint>, String> {
    let file = object::File::parse(data).map_err(|e| e.to_string())?;
    let mut points = Vec::new();
    for sym in file.symbols().filter(|s| s.kind() == SymbolKind::Text && s.address() != 0) {
        let Ok(raw) = sym.name() else { continue };
        let name = format!("{:#}", rustc_demangle::demangle(raw));
        if !wanted(&name) {
            continue;
        }
        let Some(section) = sym.section_index().and_then(|i| file.section_by_index(i).ok()) else { continue };
        let Some((section_offset, _)) = section.file_range() else { continue };
        let file_offset = sym.address() - section.address() + section_offset;
        if !points.iter().any(|p: &ProbePoint| p.svma == sym.address()) {
            points.push(ProbePoint { name, svma: sym.address(), file_offset, size: sym.size() });
        }
    }
    points.sort_by_key(|p| p.svma);
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::is_raw_poll;

    #[test]
    fn matches_legacy_and_v0_names_only() {
        assert!(is_raw_poll("tokio::runtime::task::raw::poll"));
        assert!(is_raw_poll("tokio::runtime::task::raw::poll::<my_app::handler::{closure#0}, alloc::sync::Arc<x>>"));
        assert!(!is_raw_poll("tokio::runtime::task::raw::poll_future"));
        assert!(!is_raw_poll("tokio::runtime::task::raw::RawTask::poll"));
    }

    #[test]
    fn finds_tokio_probe_points_in_a_tokio_binary() {
        // The demo app, if built (it is whenever the kernel tests run).
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/release/demo-app");
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e} (build it: cargo build --release -p demo-app)"));
        let points = super::tokio_probe_points(&data).unwrap();
        assert!(points.polls.len() >= 4, "{:?}", points.polls);
        assert!(!points.spawns.is_empty());
        let names: Vec<&str> = points.wakes.iter().map(|p| p.name.as_str()).collect();
        assert!(names.contains(&super::WAKE_BY_VAL) && names.contains(&super::WAKE_BY_REF) && names.len() == 2, "{names:?}");
        assert_eq!(points.worker_runs.len(), 1);
        assert_eq!(points.take_cores.len(), 1);
        let parks: Vec<&str> = points.parks.iter().map(|p| p.name.as_str()).collect();
        assert!(parks.contains(&super::PARK_CODE[0]) && parks.contains(&super::PARK_CODE[1]), "{parks:?}");
        assert!(points.parks.iter().all(|p| p.size > 0), "{:?}", points.parks);
    }
}
