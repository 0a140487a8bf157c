//! Task kinds from legacy symbols: the drop glue a task vtable's functions
//! call spells the future out
//! (`drop_in_place<tokio::runtime::task::core::CoreStage<my::fut::{{closure}}>>`,
//! or `Cell<F, S>`, `Stage<F>`, `Box<Cell<F, S>>`). Glue of futures that
//! drop alike is one function carrying every one of their names (aliases),
//! so the evidence is a set of candidates: narrowed by every glue reached,
//! by the vtable's scheduler and by which candidate's poll function the
//! instance calls, and handed on as a set when more than one remains — never
//! one picked (docs/design-notes.md, "Task kinds of stock release binaries").

use crate::image::{Image, direct_targets};
use crate::task_kinds::first_argument;
use crate::task_vtables::TaskVtable;
use object::{Object, ObjectSymbol, SymbolKind};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

const DROP_GLUE: &str = "core::ptr::drop_in_place<tokio::runtime::task::core::";
const DROP_BOXED_CELL: &str = "core::ptr::drop_in_place<alloc::boxed::Box<tokio::runtime::task::core::Cell<";
/// Bytes of a vtable function searched for calls; drop glue calls come early.
const BODY_MAX: u64 = 1024;
/// Vtable slots searched: dealloc, try_read_output, drop_join_handle_slow,
/// drop_abort_handle, shutdown.
const SLOTS: std::ops::Range<usize> = 2..7;

/// The future type in task drop glue, and the scheduler type when the glue
/// names it too (`Cell<F, S>`: merged with another future's glue less often).
/// `…core::CoreStage<my::fut::{{closure}}>>` → (`my::fut::{{closure}}`, None).
pub(crate) fn future_of_drop_glue(name: &str) -> Option<(String, Option<String>)> {
    let (args, cell) = if let Some(rest) = name.strip_prefix(DROP_BOXED_CELL) {
        (rest, true)
    } else {
        let rest = name.strip_prefix(DROP_GLUE)?;
        (&rest[rest.find('<')? + 1..], rest.starts_with("Cell<"))
    };
    let future = first_argument(args)?;
    // Legacy demangling writes `Cell<F,S>`, v0 `Cell<F, S>`.
    let scheduler = if cell { first_argument(args[future.len()..].strip_prefix(',')?.trim_start()) } else { None };
    if cell && scheduler.is_none() {
        return None;
    }
    Some((future, scheduler))
}

/// What the drop glue at one address says: every future its symbols
/// (aliases) name, and (future, scheduler) for those that are `Cell<F, S>`.
#[derive(Default)]
struct Glue {
    futures: BTreeSet<String>,
    cells: BTreeSet<(String, String)>,
}

/// What the symbol table says about task types.
pub(crate) struct GlueIndex {
    glue: BTreeMap<u64, Glue>,
    /// `raw::schedule` instances: a vtable whose schedule slot holds none
    /// of them has another layout and is not read.
    schedule: HashSet<u64>,
    /// Scheduler-specific `schedule` functions, by their scheduler.
    families: HashMap<u64, &'static str>,
    pub(crate) sizes: HashMap<u64, u64>,
    /// Closures and async blocks by name: a future's own poll function is
    /// named like the future (`my::handler::{{closure}}`).
    closures: HashMap<String, Vec<u64>>,
}

/// What the glue one vtable reaches says. Glue names are evidence, not
/// proof: LLVM merges identical functions and may keep only one of their
/// names (seen: three futures' `Cell` glue under one future's name, no
/// aliases), so a name must also be unique among the vtables of its
/// scheduler (checked by the caller) before it is trusted.
pub(crate) struct GlueVerdict {
    /// The futures every glue reached names (narrowed by the scheduler).
    pub narrowed: BTreeSet<String>,
    /// Every future any glue reached names: what the task drops like.
    pub all: BTreeSet<String>,
    /// `S` of `Cell<F, S>` when the glue shows it for every candidate alike.
    pub scheduler: Option<String>,
    /// The vtable's scheduler (`multi_thread`, `current_thread`, …).
    pub family: Option<&'static str>,
    /// A `Cell<F, S>` glue of this scheduler named the narrowed future.
    pub confirmed: bool,
}

impl GlueIndex {
    pub(crate) fn read(image: &Image) -> Self {
        let mut index =
            GlueIndex { glue: BTreeMap::new(), schedule: HashSet::new(), families: HashMap::new(), sizes: HashMap::new(), closures: HashMap::new() };
        for sym in image.file.symbols().filter(|s| s.kind() == SymbolKind::Text && s.address() != 0) {
            index.sizes.insert(sym.address(), sym.size());
            let Ok(raw) = sym.name() else { continue };
            if raw.contains("closure") && !raw.contains("drop_in_place") {
                index.closures.entry(format!("{:#}", rustc_demangle::demangle(raw))).or_default().push(sym.address());
            }
            if !raw.contains("drop_in_place") && !raw.contains("schedule") {
                continue;
            }
            let name = format!("{:#}", rustc_demangle::demangle(raw));
            if let Some((future, scheduler)) = future_of_drop_glue(&name) {
                let e = index.glue.entry(sym.address()).or_default();
                if let Some(scheduler) = scheduler {
                    e.cells.insert((future.clone(), scheduler));
                }
                e.futures.insert(future);
            } else if name.starts_with("tokio::runtime::task::raw::schedule") {
                index.schedule.insert(sym.address());
            } else if let Some(f) = family_of(&name).filter(|_| name.rsplit("::").next().is_some_and(|n| n.starts_with("schedule"))) {
                index.families.insert(sym.address(), f);
            }
        }
        index
    }

    /// The candidates for the task type of `vtable`, or None when its
    /// layout is not the one we know or it reaches no glue.
    pub(crate) fn verdict(&self, image: &Image, vtable: &TaskVtable) -> Option<GlueVerdict> {
        if !self.schedule.contains(&vtable.fns[1]) {
            return None;
        }
        let mut hits: Vec<&Glue> = Vec::new();
        for &f in &vtable.fns[SLOTS] {
            let len = self.sizes.get(&f).copied().filter(|&s| s > 0).unwrap_or(BODY_MAX).min(BODY_MAX);
            if let Some(body) = image.bytes(f, len) {
                hits.extend(direct_targets(f, body).filter_map(|t| self.glue.get(&t)));
            }
        }
        let all: BTreeSet<String> = hits.iter().flat_map(|h| h.futures.iter().map(|f| same_kind(f))).collect();
        let mut narrowed = common(hits.iter().map(|h| &h.futures))?;
        let cells: Vec<&Glue> = hits.iter().copied().filter(|h| !h.cells.is_empty()).collect();
        if let Some(c) = common(cells.iter().map(|h| &h.futures)) {
            narrowed.retain(|f| c.contains(f));
        }
        let family = scheduler_family(image, vtable.fns[1], &self.families);
        let mut confirmed = false;
        if let Some(fam) = family {
            for h in &cells {
                let these: BTreeSet<String> = h.cells.iter().filter(|(_, s)| family_of(s) == Some(fam)).map(|(f, _)| same_kind(f)).collect();
                if !these.is_empty() {
                    narrowed.retain(|f| these.contains(f));
                    confirmed = true;
                }
            }
        }
        let schedulers: BTreeSet<&String> = hits
            .iter()
            .flat_map(|h| &h.cells)
            .filter(|(f, s)| narrowed.contains(&same_kind(f)) && (family.is_none() || family_of(s) == family))
            .map(|(_, s)| s)
            .collect();
        let scheduler = (schedulers.len() == 1).then(|| schedulers.into_iter().next().cloned()).flatten();
        confirmed &= narrowed.len() == 1;
        Some(GlueVerdict { narrowed, all, scheduler, family, confirmed })
    }

    /// Every future whose glue is, somewhere in the binary, one function
    /// with the glue of one of `futures` (aliases, followed transitively):
    /// the futures that drop alike, any of which a glue name may stand for.
    pub(crate) fn drop_alike(&self, futures: &BTreeSet<String>) -> BTreeSet<String> {
        let mut all = futures.clone();
        loop {
            let before = all.len();
            for g in self.glue.values() {
                if g.futures.iter().any(|f| all.contains(&same_kind(f))) {
                    all.extend(g.futures.iter().map(|f| same_kind(f)));
                }
            }
            if all.len() == before {
                return all;
            }
        }
    }

    /// Which of the candidates does the `raw::poll` instance itself end up
    /// calling? `raw::poll` → `Harness::poll` → `Core::poll` → the future's
    /// poll function (named like the future, through pass-through wrappers
    /// such as `BlockingTask`), direct calls or jumps; at most 4 deep and 64
    /// functions. Exactly one found, or none.
    pub(crate) fn polled_future(&self, image: &Image, poll: u64, candidates: &BTreeSet<String>) -> Option<String> {
        // One function may be the code of two candidates (`F` and
        // `Instrumented<F>`): reaching it then tells neither.
        let mut wanted: HashMap<u64, Vec<&String>> = HashMap::new();
        for f in candidates {
            for &a in self.closures.get(crate::future_code::own_code_of(f)).into_iter().flatten() {
                wanted.entry(a).or_default().push(f);
            }
        }
        let mut found: BTreeSet<&String> = BTreeSet::new();
        let (mut frontier, mut seen) = (vec![poll], HashSet::from([poll]));
        for _ in 0..4 {
            let mut next = Vec::new();
            for f in frontier {
                let len = self.sizes.get(&f).copied().filter(|&s| s > 0).unwrap_or(BODY_MAX).min(4 * BODY_MAX);
                let Some(body) = image.bytes(f, len) else { continue };
                for target in direct_targets(f, body) {
                    if let Some(futures) = wanted.get(&target) {
                        found.extend(futures.iter().copied());
                    } else if seen.len() < 64 && self.sizes.contains_key(&target) && seen.insert(target) {
                        next.push(target);
                    }
                }
            }
            frontier = next;
        }
        (found.len() == 1).then(|| found.into_iter().next().cloned()).flatten()
    }
}

/// The futures named by every one of `sets` (worker-loop spellings merged).
fn common<'a>(mut sets: impl Iterator<Item = &'a BTreeSet<String>>) -> Option<BTreeSet<String>> {
    let mut all: BTreeSet<String> = sets.next()?.iter().map(|f| same_kind(f)).collect();
    for s in sets {
        let these: BTreeSet<String> = s.iter().map(|f| same_kind(f)).collect();
        all.retain(|f| these.contains(f));
    }
    Some(all)
}

/// Which scheduler a type or function belongs to, from its path.
fn family_of(name: &str) -> Option<&'static str> {
    [
        ("scheduler::current_thread", "current_thread"),
        ("scheduler::multi_thread", "multi_thread"),
        ("tokio::task::local", "local"),
        ("BlockingSchedule", "blocking"),
    ]
    .into_iter()
    .find(|(marker, _)| name.contains(marker))
    .map(|(_, f)| f)
}

/// The scheduler of a vtable, from what its `raw::schedule` calls or jumps
/// to (directly, or through the GOT: `ff 15` / `ff 25` with a
/// RIP-relative slot) among the scheduler-specific `schedule` functions.
fn scheduler_family(image: &Image, schedule: u64, families: &HashMap<u64, &'static str>) -> Option<&'static str> {
    let body = image.bytes(schedule, 256)?;
    let rel = |i: usize| i32::from_le_bytes(body[i..i + 4].try_into().unwrap_or_default()) as i64 as u64;
    (0..body.len().saturating_sub(6)).find_map(|i| {
        let target = match body[i] {
            0xe8 | 0xe9 => (schedule + i as u64 + 5).wrapping_add(rel(i + 1)),
            0xff if matches!(body[i + 1], 0x15 | 0x25) => image.word((schedule + i as u64 + 6).wrapping_add(rel(i + 2)))?,
            _ => return None,
        };
        families.get(&target).copied()
    })
}

/// Tokio runs a worker loop in a blocking task started from two places
/// (`Launch::launch`, and `block_in_place` handing the core to a new
/// thread); their drop glue is one function under both names. Either way
/// the task is the worker loop.
fn same_kind(future: &str) -> String {
    const WORKER_LOOP: &str = "tokio::runtime::blocking::task::BlockingTask<tokio::runtime::scheduler::multi_thread::worker::";
    if future.starts_with(WORKER_LOOP) { format!("{WORKER_LOOP}run>") } else { future.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_future_type_out_of_drop_glue() {
        let name = "core::ptr::drop_in_place<tokio::runtime::task::core::CoreStage<demo_app::short_task_loop::{{closure}}::{{closure}}>>";
        assert_eq!(future_of_drop_glue(name), Some(("demo_app::short_task_loop::{{closure}}::{{closure}}".to_string(), None)));
        let cell = "core::ptr::drop_in_place<tokio::runtime::task::core::Cell<my::Fut<A, B>, alloc::sync::Arc<H>>>";
        assert_eq!(future_of_drop_glue(cell), Some(("my::Fut<A, B>".to_string(), Some("alloc::sync::Arc<H>".to_string()))));
        let boxed = "core::ptr::drop_in_place<alloc::boxed::Box<tokio::runtime::task::core::Cell<my::Fut,alloc::sync::Arc<H>>>>";
        assert_eq!(future_of_drop_glue(boxed), Some(("my::Fut".to_string(), Some("alloc::sync::Arc<H>".to_string()))));
        assert_eq!(future_of_drop_glue("core::ptr::drop_in_place<my::Thing>"), None);
    }
}
