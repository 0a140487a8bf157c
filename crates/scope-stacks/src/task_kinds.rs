//! What each task kind (`raw::poll<F, S>` instance) is called: a pure
//! function of the binary, `(binary, instance file offsets) → TaskKind`,
//! used alike by the poll probes and by stacks that show an instance.
//!
//! Evidence, in order (the first that names a kind exactly wins; weaker
//! evidence never overrides stronger, and an ambiguous result stays a set):
//! 1. DWARF (`DW_AT_name` = `poll<F, S>`), from the binary or its separate
//!    debug file ([`crate::debug_file`]);
//! 2. a v0-mangled symbol `raw::poll::<F, S>`;
//! 3. the drop glue the task vtable calls ([`crate::drop_glue`]): exact
//!    when one future remains, else the candidates;
//! 4. `#[track_caller]` locations ([`crate::locations`]): where tasks of the
//!    kind are spawned and the user lines their poll code passes, which are
//!    the name when nothing else is (stripped binaries).

use crate::drop_glue::{GlueIndex, GlueVerdict};
use crate::image::{Image, with_image};
use crate::task_vtables::{self, ASYNC_SCHEDULER_SIZE, TaskVtable};
use object::{Object, ObjectSymbol, SymbolKind};
use scope_model::kinds::role_of;
use scope_model::{Evidence, KindName, KindRole, TaskKind};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// Where to look for DWARF besides the binary.
#[derive(Clone, Debug)]
pub struct NamingOptions {
    /// `--debug-file`: DWARF in files of their own, each used for the
    /// binary whose build-id it carries.
    pub debug_files: Vec<PathBuf>,
    /// Roots holding `.build-id/ab/cdef….debug` files.
    pub debug_roots: Vec<PathBuf>,
}

impl Default for NamingOptions {
    fn default() -> Self {
        NamingOptions { debug_files: Vec::new(), debug_roots: vec![PathBuf::from(crate::debug_file::DEFAULT_DEBUG_ROOT)] }
    }
}

/// Kinds keyed by instance file offset, and what the user should know
/// (a `--debug-file` that does not match, say).
#[derive(Debug, Default)]
pub struct KindNaming {
    pub kinds: HashMap<u64, TaskKind>,
    pub warnings: Vec<String>,
}

/// The generic argument at depth 0 that starts `inner`, up to `,` or `>`.
pub(crate) fn first_argument(inner: &str) -> Option<String> {
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

/// Names the `raw::poll` instances at `file_offsets` in the binary at `path`.
pub fn name_kinds(path: &Path, file_offsets: &[u64], options: &NamingOptions) -> KindNaming {
    let mut naming = KindNaming::default();
    let dwarf_names = match crate::debug_file::locate(path, &options.debug_files, &options.debug_roots) {
        Some(debug) => dwarf_names(path, &debug, file_offsets),
        None => HashMap::new(),
    };
    with_image(path, |image| {
        let glue = GlueIndex::read(image);
        let symbols = instance_symbols(image);
        let holders = image.places_holding();
        let sites = crate::locations::Evidence::read(image, &task_vtables::by_shape(image));
        let mut by_glue: Vec<GlueGuess> = Vec::new();
        for &offset in file_offsets {
            let Some(poll) = image.svma_of_file_offset(offset) else { continue };
            let vtables = task_vtables::of_poll(image, &holders, poll);
            let mut kind = if let Some((future, scheduler)) = dwarf_names.get(&offset) {
                exact(future, Some(scheduler.clone()), Evidence::Dwarf)
            } else if let Some((future, scheduler)) = symbols.get(&poll).and_then(|n| v0_arguments(n)) {
                exact(&future, Some(scheduler), Evidence::V0Symbol)
            } else {
                let verdicts: Vec<GlueVerdict> = vtables.iter().filter_map(|v| glue.verdict(image, v)).collect();
                if !verdicts.is_empty() {
                    by_glue.push(GlueGuess { offset, poll, verdicts });
                }
                TaskKind::unnamed()
            };
            if let Some(sites) = &sites {
                kind.spawn_sites = sites.spawn_sites(&vtables);
                kind.body_lines = sites.body_lines(image, poll);
            }
            kind.role = role_by_shape(&vtables);
            naming.kinds.insert(offset, kind);
        }
        for (offset, name) in settle(image, &glue, &by_glue) {
            let kind = naming.kinds.entry(offset).or_insert_with(TaskKind::unnamed);
            kind.evidence = Evidence::DropGlue;
            kind.name = name;
        }
        for kind in naming.kinds.values_mut() {
            if let Some(role) = role_of_name(&kind.name) {
                kind.role = role;
            }
            if kind.name == KindName::Unnamed && (!kind.spawn_sites.is_empty() || !kind.body_lines.is_empty()) {
                kind.evidence = Evidence::Locations;
            }
        }
    });
    naming
}

fn exact(future: &str, scheduler: Option<String>, evidence: Evidence) -> TaskKind {
    TaskKind { name: KindName::Exact { future: future.to_string(), scheduler }, evidence, ..TaskKind::unnamed() }
}

/// What the glue says about one instance (one verdict per vtable listing it).
struct GlueGuess {
    offset: u64,
    poll: u64,
    verdicts: Vec<GlueVerdict>,
}

impl GlueGuess {
    /// The one future every vtable's glue narrows to and confirms.
    fn single(&self) -> Option<&String> {
        let first = self.verdicts.first()?;
        let name = first.narrowed.iter().next()?;
        self.verdicts.iter().all(|v| v.confirmed && v.narrowed.len() == 1 && v.narrowed.contains(name)).then_some(name)
    }

    fn family(&self) -> Option<&'static str> {
        self.verdicts.first().and_then(|v| v.family)
    }

    fn scheduler(&self) -> Option<String> {
        let all: BTreeSet<&Option<String>> = self.verdicts.iter().map(|v| &v.scheduler).collect();
        if all.len() == 1 { all.into_iter().next().cloned().flatten() } else { None }
    }

    fn candidates(&self) -> BTreeSet<String> {
        self.verdicts.iter().flat_map(|v| if v.narrowed.is_empty() { &v.all } else { &v.narrowed }).cloned().collect()
    }
}

/// Names from glue, trusted only when they account for every vtable and
/// stand for a future the binary can create:
/// - a future named for two instances of one scheduler is wrong for at
///   least one of them (merged glue keeps one name), so all of them become
///   ambiguous over what their glue names;
/// - a name also among the candidates of another instance of the scheduler
///   (one whose glue says "one of these") may be that one's;
/// - a name whose glue is known to be merged with another future's (an
///   alias somewhere) is evidence only if the binary has code of that
///   future ([`crate::future_code`]): else its task may be gone (the linker
///   dropped it, the merged glue kept its name) and the instance be any of
///   the futures that drop alike, or one whose name was lost.
///
/// Each instance left open is then resolved by the poll function it calls
/// if that tells the candidates apart, and a name still given twice stays
/// ambiguous.
fn settle(image: &Image, glue: &GlueIndex, guesses: &[GlueGuess]) -> HashMap<u64, KindName> {
    type Key = (Option<&'static str>, String);
    let singles: Vec<Option<&String>> = guesses.iter().map(GlueGuess::single).collect();
    // Instances whose glue alone cannot name them, and the futures they
    // may be (`true`: or one whose name no glue kept).
    let mut open: HashMap<usize, (BTreeSet<String>, bool)> = HashMap::new();
    let mut tentative: HashMap<Key, Vec<usize>> = HashMap::new();
    for (i, g) in guesses.iter().enumerate() {
        match singles[i] {
            Some(name) => tentative.entry((g.family(), name.clone())).or_default().push(i),
            None => {
                open.insert(i, (g.candidates(), true));
            }
        }
    }
    // Tokio's two worker-loop futures (launch, block_in_place) are one kind
    // by design (`same_kind`): two instances named so are both right.
    for members in tentative.iter().filter(|((_, name), m)| m.len() > 1 && !name.contains("multi_thread::worker::")).map(|(_, m)| m) {
        // Every name the group's glue carries (aliases included): the
        // futures that drop alike, one per member when none was lost.
        let union: BTreeSet<String> = members.iter().flat_map(|&i| guesses[i].verdicts.iter().flat_map(|v| v.all.iter().cloned())).collect();
        let short = union.len() < members.len();
        for &i in members {
            open.insert(i, (union.clone(), short));
        }
    }
    // The poll function each open instance calls, if one candidate's.
    let mut pinned: HashMap<usize, String> =
        open.iter().filter_map(|(&i, (c, _))| Some((i, glue.polled_future(image, guesses[i].poll, c)?))).collect();
    // Names an open instance the poll function does not resolve may have.
    let claimed: BTreeSet<Key> = open
        .iter()
        .filter(|(i, _)| !pinned.contains_key(i))
        .flat_map(|(&i, (c, _))| c.iter().map(move |f| (guesses[i].family(), f.clone())))
        .collect();
    // Names given once, and those of them whose glue is merged with
    // another future's somewhere (only these can have been kept for a
    // future whose task is gone; the check reads every symbol).
    let unique: Vec<usize> = (0..guesses.len()).filter(|i| singles[*i].is_some() && !open.contains_key(i)).collect();
    let merged: BTreeSet<String> =
        unique.iter().filter_map(|&i| singles[i]).filter(|n| glue.drop_alike(&BTreeSet::from([(*n).clone()])).len() > 1).cloned().collect();
    let with_code = crate::future_code::with_code(image, &merged);
    let mut names: HashMap<usize, KindName> = HashMap::new();
    for i in unique {
        let (g, name) = (&guesses[i], singles[i].expect("unique names are single"));
        let gone = merged.contains(name) && !with_code.contains(name);
        if gone || claimed.contains(&(g.family(), name.clone())) {
            // Any future that drops alike, unless the poll function says.
            let mut candidates = g.candidates();
            candidates.insert(name.clone());
            let candidates = glue.drop_alike(&candidates);
            if let Some(p) = glue.polled_future(image, g.poll, &candidates) {
                pinned.insert(i, p);
            }
            open.insert(i, (candidates, true));
        } else {
            names.insert(i, KindName::Exact { future: name.clone(), scheduler: g.scheduler() });
        }
    }
    let mut resolved: HashMap<Key, Vec<usize>> = HashMap::new();
    for (&i, name) in &pinned {
        resolved.entry((guesses[i].family(), name.clone())).or_default().push(i);
    }
    let taken: BTreeSet<Key> = names
        .iter()
        .filter_map(|(&i, n)| match n {
            KindName::Exact { future, .. } => Some((guesses[i].family(), future.clone())),
            _ => None,
        })
        .collect();
    for (key, members) in &resolved {
        if members.len() == 1 && !taken.contains(key) {
            names.insert(members[0], KindName::Exact { future: key.1.clone(), scheduler: guesses[members[0]].scheduler() });
        }
    }
    for (i, (candidates, short)) in open {
        names.entry(i).or_insert_with(|| {
            if candidates.is_empty() {
                KindName::Unnamed
            } else {
                KindName::Ambiguous { futures: candidates.into_iter().collect(), scheduler: guesses[i].scheduler(), open: short }
            }
        });
    }
    names.into_iter().map(|(i, n)| (guesses[i].offset, n)).collect()
}

/// The role a name implies, when every candidate implies the same.
fn role_of_name(name: &KindName) -> Option<KindRole> {
    let (futures, scheduler): (Vec<&String>, Option<&str>) = match name {
        KindName::Exact { future, scheduler } => (vec![future], scheduler.as_deref()),
        KindName::Ambiguous { futures, scheduler, open: false } => (futures.iter().collect(), scheduler.as_deref()),
        _ => return None,
    };
    let roles: BTreeSet<String> = futures.iter().map(|f| format!("{:?}", role_of(f, scheduler))).collect();
    (roles.len() == 1).then(|| role_of(futures[0], scheduler))
}

/// Without names, the scheduler handle's size tells async tasks (one `Arc`)
/// from `spawn_blocking` work (`BlockingSchedule`, larger).
fn role_by_shape(vtables: &[TaskVtable]) -> KindRole {
    let sizes: BTreeSet<u64> = vtables.iter().map(TaskVtable::scheduler_size).collect();
    match sizes.into_iter().collect::<Vec<_>>().as_slice() {
        [ASYNC_SCHEDULER_SIZE] => KindRole::Async,
        [size] if *size > ASYNC_SCHEDULER_SIZE => KindRole::Blocking,
        _ => KindRole::Unknown,
    }
}

/// Demangled names of the text symbols, by address (raw::poll only).
fn instance_symbols(image: &Image) -> HashMap<u64, String> {
    image
        .file
        .symbols()
        .filter(|s| s.kind() == SymbolKind::Text && s.address() != 0)
        .filter_map(|s| {
            let raw = s.name().ok()?;
            // Legacy `…3raw4poll17h…`, v0 `…3raw4poll…`: both hold `3raw4poll`.
            raw.contains("3raw4poll").then(|| (s.address(), format!("{:#}", rustc_demangle::demangle(raw))))
        })
        .collect()
}

/// `tokio::runtime::task::raw::poll::<F, S>` (v0) → (F, S).
fn v0_arguments(name: &str) -> Option<(String, String)> {
    let inner = name.strip_prefix(crate::probe_points::RAW_POLL)?.strip_prefix("::<")?.strip_suffix('>')?;
    let future = first_argument(inner)?;
    let scheduler = inner[future.len()..].strip_prefix(',')?.trim();
    Some((future, scheduler.to_string()))
}

/// (F, S) from the DWARF name of each instance, keyed by file offset.
fn dwarf_names(binary: &Path, debug: &Path, file_offsets: &[u64]) -> HashMap<u64, (String, String)> {
    let svmas: HashMap<u64, u64> =
        with_image(binary, |image| file_offsets.iter().filter_map(|&o| Some((image.svma_of_file_offset(o)?, o))).collect()).unwrap_or_default();
    let Ok(data) = crate::debug_file::map(debug) else { return HashMap::new() };
    let Ok(file) = object::File::parse(&*data) else { return HashMap::new() };
    let wanted: Vec<u64> = svmas.keys().copied().collect();
    crate::dwarf_kinds::subprogram_names(&file, &wanted)
        .into_iter()
        .filter_map(|(svma, name)| Some((*svmas.get(&svma)?, crate::dwarf_kinds::poll_arguments(&name)?)))
        .collect()
}

/// File offsets of every `raw::poll` instance, from the task vtables'
/// poll slots: for binaries without symbols (stripped), where probe points
/// cannot be found by name.
pub fn poll_instances_by_shape(path: &Path) -> Vec<u64> {
    with_image(path, |image| {
        let mut polls: Vec<u64> =
            task_vtables::by_shape(image).iter().filter_map(|v| image.file_offset_of_svma(v.poll())).collect();
        polls.sort_unstable();
        polls.dedup();
        polls
    })
    .unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

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
        let naming = name_kinds(path, &offsets, &NamingOptions { debug_roots: Vec::new(), ..Default::default() });
        let labels: Vec<String> = naming.kinds.values().filter_map(|k| k.label()).collect();
        // Tokio's own `to_socket_addrs` blocking task (the PING server binds
        // to `("127.0.0.1", port)`): its glue is merged with the `str`
        // impl's closure's and, in this build, named only after it, though
        // the `str` impl is not in the binary. Not that name: one of the
        // futures that drop alike, said so.
        let (socket, rest): (Vec<&TaskKind>, Vec<&TaskKind>) =
            naming.kinds.values().partition(|k| k.label().is_some_and(|l| l.contains("ToSocketAddrsPriv for")));
        assert_eq!(socket.len(), 1, "{labels:?}");
        match &socket[0].name {
            KindName::Ambiguous { futures, open: true, .. } => {
                assert!(futures.iter().any(|f| f.contains("ToSocketAddrsPriv for (&str,u16)>::to_socket_addrs::{{closure}}")), "{futures:?}")
            }
            other => panic!("to_socket_addrs task named {other:?}"),
        }
        assert!(rest.iter().all(|k| matches!(k.name, KindName::Exact { .. })), "{:#?}", naming.kinds);
        let count = |label: &str| labels.iter().filter(|n| n.as_str() == label).count();
        for label in ["demo_app::cpu_heavy_loop", "demo_app::blocking_loop", "demo_app::short_task_loop::{closure}"] {
            assert!(count(label) >= 1, "{label} in {labels:?}");
        }
        // The yield loop's block drops like the short task block (their
        // CoreStage glue is one function under both names): each still gets
        // its own name, from its Cell<F, S> glue or what its poll calls.
        assert!(count("demo_app::shapes::yield_loop::{closure}") >= 1, "{labels:?}");
        assert!(count("demo_app::shapes::yield_task::{closure}") >= 1, "{labels:?}");
        assert!(count("spawn_local(demo_app::shapes::local_set::{closure})") >= 1, "{labels:?}");
        // One instance per scheduler type (multi-thread, current-thread) at most.
        for n in &labels {
            assert!(count(n) <= 2, "{n} named {} times: {labels:?}", count(n));
        }
    }

    #[test]
    fn v0_names_spell_both_arguments() {
        let name = "tokio::runtime::task::raw::poll::<my::f::{closure#0}, alloc::sync::Arc<h::Handle>>";
        assert_eq!(v0_arguments(name), Some(("my::f::{closure#0}".into(), "alloc::sync::Arc<h::Handle>".into())));
        assert_eq!(v0_arguments("tokio::runtime::task::raw::poll"), None);
    }
}
