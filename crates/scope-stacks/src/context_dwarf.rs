//! Where `current_task_id` sits in Tokio's CONTEXT, from DWARF when the
//! binary (or its separate debug file) has it: the member's offset in
//! `tokio::runtime::context::Context`, plus where that struct sits in the
//! thread-local's storage (`std`'s `EagerStorage<Context>` or the bare
//! struct, depending on the Rust version). Without DWARF the offset is
//! learned while recording (see `task_context::Calibration`).

use gimli::{AttributeValue, EndianSlice, RunTimeEndian, UnitOffset};
use object::{Object, ObjectSection};
use std::borrow::Cow;

type Reader<'a> = EndianSlice<'a, RunTimeEndian>;
type Unit<'a> = gimli::Unit<Reader<'a>>;

const CONTEXT_PATH: [&str; 3] = ["tokio", "runtime", "context"];

fn name(dwarf: &gimli::Dwarf<Reader<'_>>, unit: &Unit<'_>, entry: &gimli::DebuggingInformationEntry<Reader<'_>>, at: gimli::DwAt) -> Option<String> {
    let value = entry.attr_value(at)?;
    Some(dwarf.attr_string(unit, value).ok()?.to_string_lossy().into_owned())
}

fn member_offset(entry: &gimli::DebuggingInformationEntry<Reader<'_>>) -> Option<u64> {
    match entry.attr_value(gimli::DW_AT_data_member_location)? {
        AttributeValue::Udata(v) => Some(v),
        AttributeValue::Data1(v) => Some(u64::from(v)),
        AttributeValue::Data2(v) => Some(u64::from(v)),
        AttributeValue::Data4(v) => Some(u64::from(v)),
        AttributeValue::Data8(v) => Some(v),
        AttributeValue::Sdata(v) => u64::try_from(v).ok(),
        _ => None,
    }
}

fn type_of(entry: &gimli::DebuggingInformationEntry<Reader<'_>>) -> Option<UnitOffset> {
    match entry.attr_value(gimli::DW_AT_type)? {
        AttributeValue::UnitRef(o) => Some(o),
        _ => None,
    }
}

/// Offset of `target` (a struct) inside type `ty`, through members, at
/// most `depth` levels down (`EagerStorage { val: UnsafeCell<Context> }`).
fn offset_within(unit: &Unit<'_>, ty: UnitOffset, target: UnitOffset, depth: u32) -> Option<u64> {
    if ty == target {
        return Some(0);
    }
    if depth == 0 {
        return None;
    }
    let mut tree = unit.entries_tree(Some(ty)).ok()?;
    let root = tree.root().ok()?;
    let mut children = root.children();
    while let Ok(Some(child)) = children.next() {
        let e = child.entry();
        if e.tag() != gimli::DW_TAG_member {
            continue;
        }
        if let (Some(at), Some(member_ty)) = (member_offset(e), type_of(e))
            && let Some(inner) = offset_within(unit, member_ty, target, depth - 1)
        {
            return Some(at + inner);
        }
    }
    None
}

/// The byte offset of the current task id inside the thread-local whose
/// symbol is `context_symbol` (its raw, mangled name).
pub fn task_id_field(debug: &object::File<'_>, context_symbol: &str) -> Option<u32> {
    let endian = if debug.is_little_endian() { RunTimeEndian::Little } else { RunTimeEndian::Big };
    let load = |id: gimli::SectionId| -> Result<Cow<'_, [u8]>, gimli::Error> {
        Ok(debug.section_by_name(id.name()).and_then(|s| s.uncompressed_data().ok()).unwrap_or(Cow::Borrowed(&[])))
    };
    let sections = gimli::DwarfSections::load(load).ok()?;
    let dwarf = sections.borrow(|s| EndianSlice::new(s, endian));
    let mut headers = dwarf.units();
    while let Ok(Some(header)) = headers.next() {
        let Ok(unit) = dwarf.unit(header) else { continue };
        if let Some(found) = in_unit(&dwarf, &unit, context_symbol) {
            return Some(found);
        }
    }
    None
}

/// In one unit: the Context struct's member, and the storage variable.
fn in_unit(dwarf: &gimli::Dwarf<Reader<'_>>, unit: &Unit<'_>, context_symbol: &str) -> Option<u32> {
    let mut context: Option<(UnitOffset, u64)> = None;
    let mut variable: Option<UnitOffset> = None;
    let mut path: Vec<String> = Vec::new();
    let mut entries = unit.entries();
    while let Ok(Some(entry)) = entries.next_dfs() {
        path.truncate(entry.depth().max(0) as usize);
        let tag = entry.tag();
        let entry = entry.clone();
        let entry = &entry;
        let here = name(dwarf, unit, entry, gimli::DW_AT_name).unwrap_or_default();
        if tag == gimli::DW_TAG_structure_type && here == "Context" && path.len() >= 3 && path[path.len() - 3..] == CONTEXT_PATH {
            let offset = entry.offset();
            let mut tree = unit.entries_tree(Some(offset)).ok()?;
            let root = tree.root().ok()?;
            let mut children = root.children();
            while let Ok(Some(child)) = children.next() {
                let e = child.entry();
                if e.tag() == gimli::DW_TAG_member && name(dwarf, unit, e, gimli::DW_AT_name).as_deref() == Some("current_task_id") {
                    context = member_offset(e).map(|m| (offset, m));
                }
            }
        }
        if tag == gimli::DW_TAG_variable && name(dwarf, unit, entry, gimli::DW_AT_linkage_name).as_deref() == Some(context_symbol) {
            variable = type_of(entry);
        }
        path.push(here);
    }
    let (struct_at, member) = context?;
    let within = offset_within(unit, variable?, struct_at, 4)?;
    u32::try_from(within + member).ok()
}
