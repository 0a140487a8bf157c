//! The future type of each `raw::poll` instance, from the symbol table
//! alone. Without debuginfo the instances all have the same legacy name
//! (the type is only in the hash), but each sits in its task vtable next to
//! that task's `raw::dealloc`, whose body calls the drop glue
//! `drop_in_place<tokio::runtime::task::core::CoreStage<F>>` (or `Cell<F, S>`,
//! `Stage<F>`), and drop glue names spell `F` out.
//!
//! Vtable (tokio 1.2x–1.54): `poll, schedule, dealloc, …`. The schedule
//! slot is checked to hold a `raw::schedule` before the dealloc slot is
//! trusted, so another layout yields no names rather than wrong ones.

use object::read::ReadCache;
use object::{Object, ObjectSection, ObjectSymbol, RelocationFlags, RelocationTarget, SymbolKind};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

const DROP_GLUE: &str = "core::ptr::drop_in_place<tokio::runtime::task::core::";
const DROP_BOXED_CELL: &str = "core::ptr::drop_in_place<alloc::boxed::Box<tokio::runtime::task::core::Cell<";
/// Bytes of a vtable function searched for calls; drop glue calls come early.
const BODY_MAX: u64 = 1024;
/// Vtable slots searched: dealloc, try_read_output, drop_join_handle_slow,
/// drop_abort_handle, shutdown.
const SLOTS: std::ops::Range<u64> = 2..7;

/// The generic argument at depth 0 that starts `inner`, up to `,` or `>`.
fn first_argument(inner: &str) -> Option<String> {
    let mut depth = 0;
    for (i, c) in inner.char_indices() {
        match c {
            '<' | '(' | '[' => depth += 1,
            '>' | ')' | ']' if depth == 0 => return Some(inner[..i].to_string()),
            '>' | ')' | ']' => depth -= 1,
            ',' if depth == 0 => return Some(inner[..i].to_string()),
            _ => {}
        }
    }
    None
}

/// The future type in task drop glue, and the scheduler type when the glue
/// names it too (`Cell<F, S>`: merged with another future's glue less often).
/// `…core::CoreStage<my::fut::{{closure}}>>` → (`my::fut::{{closure}}`, None).
fn future_of_drop_glue(name: &str) -> Option<(String, Option<String>)> {
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

/// A task type as its drop glue spells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskType {
    pub future: String,
    /// `S` in `Cell<F, S>` when the glue showed it unambiguously
    /// (`alloc::sync::Arc<tokio::task::local::Shared>` for `spawn_local`).
    pub scheduler: Option<String>,
}

pub(crate) struct Image<'a> {
    pub(crate) file: object::File<'a, &'a ReadCache<std::fs::File>>,
    /// Pointer-sized words the dynamic linker fills in: place → value.
    pub(crate) relocated: HashMap<u64, u64>,
}

impl Image<'_> {
    /// The pointer stored at `svma` (after relocation, for PIE binaries).
    /// Every relocated pointer value → the places holding it: a function's
    /// address leads to the vtables that list it.
    pub(crate) fn places_holding(&self) -> HashMap<u64, Vec<u64>> {
        let mut by_value: HashMap<u64, Vec<u64>> = HashMap::new();
        for (place, value) in &self.relocated {
            by_value.entry(*value).or_default().push(*place);
        }
        by_value
    }

    pub(crate) fn word(&self, svma: u64) -> Option<u64> {
        if let Some(v) = self.relocated.get(&svma) {
            return Some(*v);
        }
        let section = self.file.sections().find(|s| s.address() <= svma && svma + 8 <= s.address() + s.size())?;
        let data = section.data_range(svma, 8).ok()??;
        Some(u64::from_le_bytes(data.try_into().ok()?))
    }

    fn bytes(&self, svma: u64, len: u64) -> Option<&[u8]> {
        let section = self.file.sections().find(|s| s.address() <= svma && svma < s.address() + s.size())?;
        let len = len.min(section.address() + section.size() - svma);
        section.data_range(svma, len).ok()?
    }
}

/// Future type names keyed by the file offset of each `raw::poll` instance
/// in `file_offsets` that could be named.
pub fn future_types(path: &Path, file_offsets: &[u64]) -> HashMap<u64, TaskType> {
    with_image(path, |image| name_instances(image, file_offsets)).unwrap_or_default()
}

/// Opens `path` for on-demand reads (a binary with 300 MB of DWARF must not
/// land in memory) and hands it to `f`; None if it is not a readable object.
pub(crate) fn with_image<R>(path: &Path, f: impl FnOnce(&Image) -> R) -> Option<R> {
    let cache = ReadCache::new(std::fs::File::open(path).ok()?);
    let file = object::File::parse(&cache).ok()?;
    let relocated = file
        .dynamic_relocations()
        .into_iter()
        .flatten()
        // R_X86_64_RELATIVE (8): the word at `place` becomes load base + addend.
        .filter(|(_, r)| matches!(r.target(), RelocationTarget::Absolute) && r.flags() == RelocationFlags::Elf { r_type: object::elf::R_X86_64_RELATIVE })
        .map(|(place, r)| (place, r.addend() as u64))
        .collect();
    Some(f(&Image { file, relocated }))
}

fn name_instances(image: &Image, file_offsets: &[u64]) -> HashMap<u64, TaskType> {
    let mut glue: BTreeMap<u64, Glue> = BTreeMap::new();
    let mut schedule: Vec<u64> = Vec::new();
    // Scheduler-specific `schedule` functions, by the scheduler they belong to.
    let mut families: HashMap<u64, &'static str> = HashMap::new();
    let mut sizes: HashMap<u64, u64> = HashMap::new();
    // Closures and async blocks by name: a future's own poll function is
    // named like the future (`my::handler::{{closure}}`).
    let mut closures: HashMap<String, Vec<u64>> = HashMap::new();
    for sym in image.file.symbols().filter(|s| s.kind() == SymbolKind::Text && s.address() != 0) {
        sizes.insert(sym.address(), sym.size());
        let Ok(raw) = sym.name() else { continue };
        if raw.contains("closure") && !raw.contains("drop_in_place") {
            closures.entry(format!("{:#}", rustc_demangle::demangle(raw))).or_default().push(sym.address());
        }
        if !raw.contains("drop_in_place") && !raw.contains("schedule") {
            continue;
        }
        let name = format!("{:#}", rustc_demangle::demangle(raw));
        if let Some((future, scheduler)) = future_of_drop_glue(&name) {
            let e = glue.entry(sym.address()).or_default();
            if let Some(scheduler) = scheduler {
                e.cells.insert((future.clone(), scheduler));
            }
            e.futures.insert(future);
        } else if name.starts_with("tokio::runtime::task::raw::schedule") {
            schedule.push(sym.address());
        } else if let Some(f) = family(&name).filter(|_| name.rsplit("::").next().is_some_and(|n| n.starts_with("schedule"))) {
            families.insert(sym.address(), f);
        }
    }
    let by_value = image.places_holding();
    let mut out = HashMap::new();
    for &offset in file_offsets {
        let Some(poll) = crate::elf::svma_of_file_offset_in(&image.file, offset) else { continue };
        for vtable in by_value.get(&poll).into_iter().flatten() {
            if !image.word(vtable + 8).is_some_and(|s| schedule.contains(&s)) {
                continue;
            }
            let mut hits = Vec::new();
            for slot in SLOTS {
                let Some(f) = image.word(vtable + 8 * slot) else { continue };
                let len = sizes.get(&f).copied().filter(|&s| s > 0).unwrap_or(BODY_MAX).min(BODY_MAX);
                if let Some(body) = image.bytes(f, len) {
                    hits.extend(called_glue(f, body, &glue));
                }
            }
            let fam = image.word(vtable + 8).and_then(|s| scheduler_family(image, s, &families));
            let named = agree(&hits)
                .or_else(|| agree_in_family(&hits, fam?))
                .or_else(|| polled_future(image, poll, &hits, &closures, &sizes));
            if let Some(future) = named {
                let kind = same_kind(&future);
                let schedulers: BTreeSet<&String> = hits
                    .iter()
                    .flat_map(|h| &h.cells)
                    .filter(|(f, s)| same_kind(f) == kind && (fam.is_none() || family(s) == fam))
                    .map(|(_, s)| s)
                    .collect();
                let scheduler = (schedulers.len() == 1).then(|| schedulers.into_iter().next().cloned()).flatten();
                out.insert(offset, TaskType { future, scheduler });
                break;
            }
        }
    }
    out
}

/// Glue of futures that drop alike is merged into one function under one
/// of their names (seen: a yield loop's block called after the demo's short
/// task block in `CoreStage` glue, while its `Cell<F, S>` glue was its own).
/// So: the one future every glue reached names; else the one the
/// scheduler-specific glue names; else nothing rather than a wrong name.
fn agree(hits: &[&Glue]) -> Option<String> {
    let single = |sets: Vec<&BTreeSet<String>>| -> Option<String> {
        let mut common = sets.first()?.iter().map(|f| same_kind(f)).collect::<BTreeSet<String>>();
        for s in &sets[1..] {
            let these: BTreeSet<String> = s.iter().map(|f| same_kind(f)).collect();
            common.retain(|f| these.contains(f));
        }
        (common.len() == 1).then(|| common.into_iter().next().unwrap_or_default())
    };
    single(hits.iter().map(|h| &h.futures).collect()).or_else(|| single(hits.iter().filter(|h| !h.cells.is_empty()).map(|h| &h.futures).collect()))
}

/// Which scheduler a type or function belongs to, from its path.
fn family(name: &str) -> Option<&'static str> {
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

/// When no single future is common to all glue reached (futures that drop
/// alike, merged even across their `Cell<F, S>` glue), the scheduler
/// decides: the one future whose `Cell` glue has this vtable's scheduler.
/// (Seen: a current_thread yield loop whose Cell glue was merged with a
/// multi-thread task's of the same shape.)
fn agree_in_family(hits: &[&Glue], fam: &str) -> Option<String> {
    let mut common: Option<BTreeSet<String>> = None;
    for h in hits.iter().filter(|h| !h.cells.is_empty()) {
        let these: BTreeSet<String> = h.cells.iter().filter(|(_, s)| family(s) == Some(fam)).map(|(f, _)| same_kind(f)).collect();
        common = Some(match common {
            None => these,
            Some(c) => c.intersection(&these).cloned().collect(),
        });
    }
    let common = common?;
    (common.len() == 1).then(|| common.into_iter().next()).flatten()
}

/// Last resort for glue merged beyond telling apart: which of the futures
/// the glue names does the `raw::poll` instance itself end up calling?
/// `raw::poll` → `Harness::poll` → `Core::poll` → the future's poll
/// function, direct calls or jumps; at most 4 deep and 64 functions.
fn polled_future(image: &Image, poll: u64, hits: &[&Glue], closures: &HashMap<String, Vec<u64>>, sizes: &HashMap<u64, u64>) -> Option<String> {
    let wanted: HashMap<u64, &String> =
        hits.iter().flat_map(|h| &h.futures).flat_map(|f| closures.get(f).into_iter().flatten().map(move |&a| (a, f))).collect();
    let mut found: BTreeSet<&String> = BTreeSet::new();
    let (mut frontier, mut seen) = (vec![poll], std::collections::HashSet::from([poll]));
    for _ in 0..4 {
        let mut next = Vec::new();
        for f in frontier {
            let len = sizes.get(&f).copied().filter(|&s| s > 0).unwrap_or(BODY_MAX).min(4 * BODY_MAX);
            let Some(body) = image.bytes(f, len) else { continue };
            for target in direct_targets(f, body) {
                if let Some(future) = wanted.get(&target) {
                    found.insert(future);
                } else if seen.len() < 64 && sizes.contains_key(&target) && seen.insert(target) {
                    next.push(target);
                }
            }
        }
        frontier = next;
    }
    (found.len() == 1).then(|| found.into_iter().next().cloned()).flatten()
}

/// Targets of the direct calls and jumps (`e8`/`e9` rel32) in `body`.
fn direct_targets(at: u64, body: &[u8]) -> impl Iterator<Item = u64> + '_ {
    (0..body.len().saturating_sub(4)).filter(|&i| body[i] == 0xe8 || body[i] == 0xe9).map(move |i| {
        let rel = i32::from_le_bytes([body[i + 1], body[i + 2], body[i + 3], body[i + 4]]);
        (at + i as u64 + 5).wrapping_add(rel as i64 as u64)
    })
}

/// Tokio runs a worker loop in a blocking task started from two places
/// (`Launch::launch`, and `block_in_place` handing the core to a new
/// thread); their drop glue is one function under both names. Either way
/// the task is the worker loop.
fn same_kind(future: &str) -> String {
    const WORKER_LOOP: &str = "tokio::runtime::blocking::task::BlockingTask<tokio::runtime::scheduler::multi_thread::worker::";
    if future.starts_with(WORKER_LOOP) {
        format!("{WORKER_LOOP}run>")
    } else {
        future.to_string()
    }
}

/// Every direct call or jump (`e8`/`e9` rel32) in `body` to task drop
/// glue. A stray e8 inside another instruction would have to land exactly
/// on a drop-glue symbol to count.
fn called_glue<'g>(at: u64, body: &[u8], glue: &'g BTreeMap<u64, Glue>) -> Vec<&'g Glue> {
    direct_targets(at, body).filter_map(|t| glue.get(&t)).collect()
}

#[cfg(test)]
pub(crate) mod tests {
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

    /// The stock release demo and the file offsets of its `raw::poll` instances.
    pub(crate) fn stock_demo_polls() -> (&'static Path, Vec<u64>) {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/release/demo-app");
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e} (build it: cargo build --release -p demo-app)"));
        let points = crate::probe_points::tokio_probe_points(&data).unwrap();
        (Path::new(path), points.polls.iter().map(|p| p.file_offset).collect())
    }

    #[test]
    fn names_every_poll_instance_of_the_stock_release_demo() {
        let (path, offsets) = stock_demo_polls();
        let names = future_types(path, &offsets);
        let all: Vec<&String> = names.values().map(|t| &t.future).collect();
        assert!(all.iter().any(|n| n.starts_with("demo_app::cpu_heavy_loop")), "{all:?}");
        assert!(all.iter().any(|n| n.starts_with("demo_app::blocking_loop")), "{all:?}");
        // The yield loop's block drops like the short task block (their
        // CoreStage glue is one function under the short task's name): each
        // still gets its own name, from its Cell<F, S> glue.
        let count = |prefix: &str| all.iter().filter(|n| n.as_str() == prefix).count();
        assert!(count("demo_app::shapes::yield_loop::{{closure}}::{{closure}}") >= 1, "{all:?}");
        assert!(count("demo_app::short_task_loop::{{closure}}::{{closure}}") >= 1, "{all:?}");
        // The current_thread yield task's glue, Cell<F, S> too, is merged
        // with other tasks': its vtable's scheduler picks its name.
        assert!(count("demo_app::shapes::yield_task::{{closure}}::{{closure}}") >= 1, "{all:?}");
        assert!(count("demo_app::shapes::local_set::{{closure}}::{{closure}}") >= 1, "{all:?}");
        // One instance per scheduler type (multi-thread, current-thread) at most.
        for n in &all {
            assert!(count(n) <= 2, "{n} named {} times: {all:?}", count(n));
        }
    }
}
