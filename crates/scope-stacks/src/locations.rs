//! Evidence that survives stripping: `#[track_caller]` functions
//! (`tokio::spawn`, `spawn_blocking`, `sleep`, `timeout`, …) are passed a
//! `core::panic::Location { file: &str, line: u32, col: u32 }` constant,
//! which the calling code loads with `lea reg, [rip+LOCATION]`. In a PIE
//! binary each constant's file pointer is an `R_X86_64_RELATIVE`
//! relocation, which stripping keeps, and functions have `.eh_frame`
//! entries, so without any symbol we can tell:
//! - the **spawn sites** of a task kind: the code that builds a task loads
//!   its vtable; walking up the direct calls from there through runtime
//!   code (no user `Location`s), the first function that loads a user
//!   `Location` right before the call is the spawning code, and that
//!   `Location` is where it calls `spawn`; user code without such a load
//!   stops the walk with no site (the load was moved, out of a loop say);
//! - the **body lines** of a kind: the user `Location`s loaded by the code
//!   its `raw::poll` reaches through direct calls (its awaits on `sleep`
//!   and friends, and any panic sites).
//!
//! "User" means outside the runtime's own crates (std, tokio, futures,
//! tracing): their locations say nothing about which task this is.

use crate::image::{Image, direct_targets};
use crate::task_vtables::TaskVtable;
use object::{Object, ObjectSection, SectionKind};
use std::collections::{BTreeSet, HashMap, HashSet};

/// A `Location` constant: file, line, column.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Site {
    pub file: String,
    pub line: u32,
    pub col: u32,
}

impl Site {
    /// `src/server.rs:123:9`; registry paths keep the crate and version
    /// (`mini-redis-0.4.1/src/server.rs`), the rest is the same everywhere.
    pub fn describe(&self) -> String {
        format!("{}:{}:{}", self.short_file(), self.line, self.col)
    }

    fn short_file(&self) -> &str {
        match self.file.find("/registry/src/") {
            Some(i) => self.file[i + "/registry/src/".len()..].split_once('/').map_or(&self.file[..], |(_, rest)| rest),
            None => &self.file[..],
        }
    }

    /// Locations in the runtime's own code say nothing about a task.
    pub fn is_runtime(&self) -> bool {
        const RUNTIME_CRATES: [&str; 5] = ["tokio-", "futures-", "tracing-", "tracing-core-", "mio-"];
        if self.file.starts_with("/rustc/") || self.file.contains("/library/std/") || self.file.contains("/library/core/") || self.file.contains("/library/alloc/")
        {
            return true;
        }
        let Some(i) = self.file.find("/registry/src/") else { return false };
        let krate = self.file[i..].split('/').nth(4).unwrap_or("");
        RUNTIME_CRATES.iter().any(|c| krate.starts_with(c) && krate[c.len()..].starts_with(|d: char| d.is_ascii_digit()))
    }
}

/// How far a body is followed through direct calls from `raw::poll`.
const BODY_DEPTH: usize = 5;
const BODY_FUNCTIONS: usize = 200;
/// How far up the callers of the task-building code a spawn site is sought.
const SPAWN_DEPTH: usize = 6;
/// A `Location` loaded this many bytes before a call is its argument.
const ARGUMENT_WINDOW: u64 = 96;

pub(crate) struct Evidence {
    /// Location constant address → what it says.
    sites: HashMap<u64, Site>,
    /// Function start → end, from `.eh_frame` (every Rust function has one).
    functions: Vec<(u64, u64)>,
    /// Per function start: (instruction address, Location) loads, in order.
    loads: HashMap<u64, Vec<(u64, u64)>>,
    /// Per function start: the address of each `lea` of a task vtable.
    vtable_loads: HashMap<u64, Vec<(u64, u64)>>,
    /// Callee start → (caller start, call instruction address).
    callers: HashMap<u64, Vec<(u64, u64)>>,
}

impl Evidence {
    /// Reads what the binary holds; None when it has no `Location`s we can
    /// read (not PIE, or no `.eh_frame`).
    pub(crate) fn read(image: &Image, vtables: &[TaskVtable]) -> Option<Self> {
        let sites = location_constants(image);
        let functions = function_ranges(image);
        if sites.is_empty() || functions.is_empty() {
            return None;
        }
        let vtable_at: HashSet<u64> = vtables.iter().map(|v| v.at).collect();
        let mut ev = Evidence { sites, functions, loads: HashMap::new(), vtable_loads: HashMap::new(), callers: HashMap::new() };
        let starts: HashSet<u64> = ev.functions.iter().map(|f| f.0).collect();
        for section in image.file.sections().filter(|s| s.kind() == SectionKind::Text) {
            let Ok(code) = section.data() else { continue };
            let base = section.address();
            for (at, target) in rip_relative_leas(base, code) {
                let is_site = ev.sites.contains_key(&target);
                if !is_site && !vtable_at.contains(&target) {
                    continue;
                }
                let Some(f) = ev.function_of(at) else { continue };
                let list = if is_site { ev.loads.entry(f) } else { ev.vtable_loads.entry(f) };
                list.or_default().push((at, target));
            }
            // Calls: e8 rel32 landing on a function start.
            for i in 0..code.len().saturating_sub(4) {
                if code[i] != 0xe8 && code[i] != 0xe9 {
                    continue;
                }
                let at = base + i as u64;
                let rel = i32::from_le_bytes([code[i + 1], code[i + 2], code[i + 3], code[i + 4]]);
                let target = (at + 5).wrapping_add(rel as i64 as u64);
                if starts.contains(&target)
                    && let Some(f) = ev.function_of(at)
                {
                    ev.callers.entry(target).or_default().push((f, at));
                }
            }
        }
        Some(ev)
    }

    fn function_of(&self, at: u64) -> Option<u64> {
        let i = self.functions.partition_point(|f| f.0 <= at).checked_sub(1)?;
        let (start, end) = self.functions[i];
        (at < end).then_some(start)
    }

    /// Where tasks of these vtables are spawned: from each function that
    /// loads one of the vtables, up the callers, the user `Location` loaded
    /// right before the call that leads to it.
    pub(crate) fn spawn_sites(&self, vtables: &[TaskVtable]) -> Vec<String> {
        let wanted: HashSet<u64> = vtables.iter().map(|v| v.at).collect();
        let mut found: BTreeSet<&Site> = BTreeSet::new();
        let mut frontier: Vec<(u64, u64)> = self
            .vtable_loads
            .iter()
            .flat_map(|(f, loads)| loads.iter().filter(|(_, t)| wanted.contains(t)).map(move |(at, _)| (*f, *at)))
            .collect();
        let mut seen: HashSet<u64> = frontier.iter().map(|f| f.0).collect();
        for _ in 0..SPAWN_DEPTH {
            let mut next = Vec::new();
            for (function, at) in frontier {
                if let Some(site) = self.argument_before(function, at) {
                    found.insert(site);
                    continue;
                }
                // A function with user locations elsewhere is user code
                // whose argument load the compiler moved (out of a loop,
                // say): the site is in it but not known. Above it would be
                // another call's location (seen: `block_on`'s).
                if self.loads_user_location(function) {
                    continue;
                }
                for &(caller, call) in self.callers.get(&function).into_iter().flatten() {
                    if seen.insert(caller) || self.argument_before(caller, call).is_some() {
                        next.push((caller, call));
                    }
                }
            }
            frontier = next;
            if frontier.len() > 256 {
                break;
            }
        }
        found.into_iter().map(Site::describe).collect()
    }

    fn loads_user_location(&self, function: u64) -> bool {
        self.loads.get(&function).into_iter().flatten().any(|(_, s)| self.sites.get(s).is_some_and(|s| !s.is_runtime()))
    }

    /// The user `Location` loaded by `function` within a few instructions
    /// before `at`: the argument of the call there.
    fn argument_before(&self, function: u64, at: u64) -> Option<&Site> {
        self.loads
            .get(&function)?
            .iter()
            .rev()
            .filter(|(load, _)| *load < at && at - load <= ARGUMENT_WINDOW)
            .find_map(|(_, site)| self.sites.get(site).filter(|s| !s.is_runtime()))
    }

    /// The user lines the code reached from `poll` passes as `Location`s,
    /// `file:line` in order.
    pub(crate) fn body_lines(&self, image: &Image, poll: u64) -> Vec<String> {
        let mut lines: BTreeSet<&Site> = BTreeSet::new();
        let (mut frontier, mut seen) = (vec![poll], HashSet::from([poll]));
        for _ in 0..BODY_DEPTH {
            let mut next = Vec::new();
            for f in frontier {
                lines.extend(self.loads.get(&f).into_iter().flatten().filter_map(|(_, s)| self.sites.get(s)).filter(|s| !s.is_runtime()));
                let Some(end) = self.functions.get(self.functions.partition_point(|r| r.0 < f)).filter(|r| r.0 == f).map(|r| r.1) else { continue };
                let Some(body) = image.bytes(f, end - f) else { continue };
                for target in direct_targets(f, body) {
                    if seen.len() < BODY_FUNCTIONS && self.callers.contains_key(&target) && seen.insert(target) {
                        next.push(target);
                    }
                }
            }
            frontier = next;
        }
        let lines: BTreeSet<String> = lines.into_iter().map(|s| format!("{}:{}", s.short_file(), s.line)).collect();
        lines.into_iter().collect()
    }
}

/// Every `Location` constant: a relocated pointer to a path ending in
/// `.rs`, its length, then a plausible line and column.
fn location_constants(image: &Image) -> HashMap<u64, Site> {
    let mut sites = HashMap::new();
    for (&place, &target) in &image.relocated {
        let Some(len) = image.word(place + 8).filter(|&l| (4..4096).contains(&l)) else { continue };
        if image.relocated.contains_key(&(place + 8)) || image.relocated.contains_key(&(place + 16)) {
            continue;
        }
        let Some(tail) = image.word(place + 16) else { continue };
        let (line, col) = (tail as u32, (tail >> 32) as u32);
        if line == 0 || line > 1_000_000 || col > 10_000 {
            continue;
        }
        let Some(bytes) = image.bytes(target, len).filter(|b| b.len() as u64 == len) else { continue };
        let Ok(file) = std::str::from_utf8(bytes) else { continue };
        if !file.ends_with(".rs") || file.contains('\n') {
            continue;
        }
        sites.insert(place, Site { file: file.to_string(), line, col });
    }
    sites
}

/// `lea r64, [rip+disp32]` (REX.W 8d, mod 00 r/m 101) → (address, target).
fn rip_relative_leas(base: u64, code: &[u8]) -> impl Iterator<Item = (u64, u64)> + '_ {
    (0..code.len().saturating_sub(7)).filter_map(move |i| {
        let (rex, op, modrm) = (code[i], code[i + 1], code[i + 2]);
        if !(rex == 0x48 || rex == 0x4c) || op != 0x8d || modrm & 0xc7 != 0x05 {
            return None;
        }
        let disp = i32::from_le_bytes([code[i + 3], code[i + 4], code[i + 5], code[i + 6]]);
        let at = base + i as u64;
        Some((at, (at + 7).wrapping_add(disp as i64 as u64)))
    })
}

/// Function ranges from `.eh_frame` (kept by stripping: unwinding needs it).
pub(crate) fn function_ranges(image: &Image) -> Vec<(u64, u64)> {
    use gimli::UnwindSection;
    let Some(section) = image.file.section_by_name(".eh_frame") else { return Vec::new() };
    let Ok(data) = section.data() else { return Vec::new() };
    let eh = gimli::EhFrame::new(data, gimli::LittleEndian);
    let bases = gimli::BaseAddresses::default().set_eh_frame(section.address());
    let mut ranges = Vec::new();
    let mut entries = eh.entries(&bases);
    while let Ok(Some(entry)) = entries.next() {
        if let gimli::CieOrFde::Fde(partial) = entry
            && let Ok(fde) = partial.parse(|_, bases, o| eh.cie_from_offset(bases, o))
        {
            ranges.push((fde.initial_address(), fde.initial_address() + fde.len()));
        }
    }
    ranges.sort_unstable();
    ranges.dedup_by_key(|r| r.0);
    ranges
}
