//! Which task kind a stack frame is in, for stacks that show a poll
//! without a probe saying which: the code only one `raw::poll` instance
//! reaches. In tokio 1.54 release builds `raw::poll` is a 5-byte
//! `jmp Harness::poll<T, S>`, so it never appears on a stack; its
//! harness does. Each instance's own function and the functions it reaches
//! by direct calls and jumps (two levels: the harness, then `poll_inner`,
//! `Core::poll` or the future itself) belong to it when no other instance
//! reaches them; shared or merged code belongs to none. Function extents
//! come from `.eh_frame`, so this works on stripped binaries too.

use crate::image::{direct_targets, with_image};
use std::collections::{HashMap, HashSet};
use std::path::Path;

const DEPTH: usize = 2;

/// A file-offset range of code that only one instance runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceCode {
    pub start: u64,
    pub end: u64,
    /// The `raw::poll` instance (its file offset, as probes and
    /// [`crate::task_kinds::name_kinds`] key it).
    pub instance: u64,
}

/// The code of each of `instances` (file offsets), sorted by start.
pub fn instance_code(path: &Path, instances: &[u64]) -> Vec<InstanceCode> {
    with_image(path, |image| {
        let functions = crate::locations::function_ranges(image);
        let extent: HashMap<u64, u64> = functions.iter().copied().collect();
        let mut reached: HashMap<u64, HashSet<u64>> = HashMap::new();
        for &instance in instances {
            let Some(poll) = image.svma_of_file_offset(instance) else { continue };
            let (mut frontier, mut seen) = (vec![poll], HashSet::from([poll]));
            for _ in 0..=DEPTH {
                let mut next = Vec::new();
                for f in frontier {
                    reached.entry(f).or_default().insert(instance);
                    let Some(&end) = extent.get(&f) else { continue };
                    let Some(body) = image.bytes(f, end - f) else { continue };
                    next.extend(direct_targets(f, body).filter(|t| extent.contains_key(t) && seen.insert(*t)));
                }
                frontier = next;
            }
        }
        let mut code: Vec<InstanceCode> = reached
            .into_iter()
            .filter(|(_, by)| by.len() == 1)
            .filter_map(|(f, by)| {
                let start = image.file_offset_of_svma(f)?;
                Some(InstanceCode { start, end: start + (extent.get(&f)? - f), instance: *by.iter().next()? })
            })
            .collect();
        code.sort_by_key(|c| c.start);
        code
    })
    .unwrap_or_default()
}

/// The instance whose own code holds `offset` (a frame's file offset).
pub fn instance_at(code: &[InstanceCode], offset: u64) -> Option<u64> {
    let i = code.partition_point(|c| c.start <= offset).checked_sub(1)?;
    (offset < code[i].end).then_some(code[i].instance)
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::{Object, ObjectSymbol};

    /// On the stock demo: every instance owns its own code and (but the
    /// worker loops) its own `Harness::poll`; no code is given to two.
    #[test]
    fn each_instance_owns_its_harness() {
        let (path, offsets) = crate::task_kinds::tests::stock_demo_polls();
        let code = instance_code(path, &offsets);
        let data = std::fs::read(path).unwrap();
        let file = object::File::parse(&*data).unwrap();
        let harness: Vec<u64> = file
            .symbols()
            .filter(|s| s.name().is_ok_and(|n| format!("{:#}", rustc_demangle::demangle(n)).starts_with("tokio::runtime::task::harness::Harness<T,S>::poll")))
            .filter_map(|s| crate::elf::svma_of_file_offset(&file, 0).map(|_| s.address()))
            .collect();
        let image_offset = |svma: u64| {
            use object::ObjectSection;
            file.sections().find(|s| s.address() <= svma && svma < s.address() + s.size()).and_then(|s| Some(svma - s.address() + s.file_range()?.0))
        };
        let owners: HashSet<u64> = harness.iter().filter_map(|&a| instance_at(&code, image_offset(a)?)).collect();
        // Some instances have their harness inlined (their raw::poll is the
        // whole poll: the two worker loops, and in this build one more, the
        // PING server's connection task); every other one jumps to its own.
        let missing: Vec<String> = offsets.iter().filter(|o| !owners.contains(o)).map(|o| format!("{o:#x}")).collect();
        assert!(missing.len() <= 3 && missing.len() * 5 <= offsets.len(), "each instance's harness is its own; not: {missing:?}");
        for &o in &offsets {
            assert_eq!(instance_at(&code, o), Some(o), "{o:#x} owns its own entry");
        }
        for pair in code.windows(2) {
            assert!(pair[0].end <= pair[1].start, "overlapping code: {pair:?}");
        }
    }
}
