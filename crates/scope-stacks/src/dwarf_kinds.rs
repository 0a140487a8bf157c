//! Exact task kinds from DWARF: each `raw::poll<F, S>` instance is a
//! `DW_TAG_subprogram` whose `DW_AT_name` spells both arguments out
//! (`poll<my_app::handler::{async_fn_env#0}, alloc::sync::Arc<…Handle, …>>`,
//! rustc ≥ 1.5x), found by its `DW_AT_low_pc`. The DWARF is the binary's
//! own or a separate debug file ([`crate::debug_file`]): addresses are the
//! same in both.
//!
//! Only units whose address ranges hold a wanted instance are walked, so a
//! 300 MB debuginfo costs the few units that hold tokio's task code.

use gimli::{AttributeValue, EndianSlice, RunTimeEndian};
use object::{Object, ObjectSection};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

type Reader<'a> = EndianSlice<'a, RunTimeEndian>;

/// `DW_AT_name` of the subprogram starting at each of `svmas` that has one.
pub fn subprogram_names(debug: &object::File<'_>, svmas: &[u64]) -> HashMap<u64, String> {
    let endian = if debug.is_little_endian() { RunTimeEndian::Little } else { RunTimeEndian::Big };
    let load = |id: gimli::SectionId| -> Result<Cow<'_, [u8]>, gimli::Error> {
        Ok(match debug.section_by_name(id.name()) {
            Some(section) => section.uncompressed_data().unwrap_or(Cow::Borrowed(&[])),
            None => Cow::Borrowed(&[]),
        })
    };
    let Ok(sections) = gimli::DwarfSections::load(load) else { return HashMap::new() };
    let dwarf = sections.borrow(|s| EndianSlice::new(s, endian));
    let wanted: HashSet<u64> = svmas.iter().copied().collect();
    let mut names = HashMap::new();
    let mut headers = dwarf.units();
    while let Ok(Some(header)) = headers.next() {
        let Ok(unit) = dwarf.unit(header) else { continue };
        if !holds_any(&dwarf, &unit, svmas) {
            continue;
        }
        let mut entries = unit.entries();
        while let Ok(Some(entry)) = entries.next_dfs() {
            if entry.tag() != gimli::DW_TAG_subprogram {
                continue;
            }
            let Some(low) = entry.attr_value(gimli::DW_AT_low_pc).and_then(|v| dwarf.attr_address(&unit, v).ok().flatten()) else { continue };
            if !wanted.contains(&low) || names.contains_key(&low) {
                continue;
            }
            if let Some(name) = name_of(&dwarf, &unit, entry) {
                names.insert(low, name);
            }
        }
        if names.len() == wanted.len() {
            break;
        }
    }
    names
}

fn holds_any(dwarf: &gimli::Dwarf<Reader<'_>>, unit: &gimli::Unit<Reader<'_>>, svmas: &[u64]) -> bool {
    let Ok(mut ranges) = dwarf.unit_ranges(unit) else { return true };
    while let Ok(Some(r)) = ranges.next() {
        if svmas.iter().any(|&a| a >= r.begin && a < r.end) {
            return true;
        }
    }
    false
}

/// The entry's own name, or that of the declaration it completes
/// (`DW_AT_specification`) or the abstract instance it is a copy of.
fn name_of(dwarf: &gimli::Dwarf<Reader<'_>>, unit: &gimli::Unit<Reader<'_>>, entry: &gimli::DebuggingInformationEntry<Reader<'_>>) -> Option<String> {
    if let Some(value) = entry.attr_value(gimli::DW_AT_name) {
        return dwarf.attr_string(unit, value).ok().map(|s| s.to_string_lossy().into_owned());
    }
    for link in [gimli::DW_AT_specification, gimli::DW_AT_abstract_origin] {
        if let Some(AttributeValue::UnitRef(offset)) = entry.attr_value(link) {
            let origin = unit.entry(offset).ok()?;
            if let Some(value) = origin.attr_value(gimli::DW_AT_name) {
                return dwarf.attr_string(unit, value).ok().map(|s| s.to_string_lossy().into_owned());
            }
        }
    }
    None
}

/// `poll<F, S>` → (F, S), split at the top-level comma.
pub fn poll_arguments(name: &str) -> Option<(String, String)> {
    let inner = name.strip_prefix("poll<")?.strip_suffix('>')?;
    let future = crate::task_kinds::first_argument(inner)?;
    let scheduler = inner[future.len()..].strip_prefix(',')?.trim();
    Some((future, scheduler.to_string()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn splits_the_generic_arguments() {
        let name = "poll<a::relay::{async_fn_env#0}<a::Counter>, alloc::sync::Arc<tokio::runtime::scheduler::current_thread::Handle, alloc::alloc::Global>>";
        let (f, s) = super::poll_arguments(name).unwrap();
        assert_eq!(f, "a::relay::{async_fn_env#0}<a::Counter>");
        assert_eq!(s, "alloc::sync::Arc<tokio::runtime::scheduler::current_thread::Handle, alloc::alloc::Global>");
        assert_eq!(super::poll_arguments("poll_future<X>"), None);
    }
}
