//! The target's code, for the kernel's repeated-wait check
//! ([`scope_common::CodeRanges`]): a word at the top of a blocked stack
//! that points into it must match the last wait's for the stack to count
//! as the same; other words (saved registers) may differ.

use scope_common::{CODE_RANGES, CodeRanges};
use scope_model::Module;

/// The largest executable mappings first (the program, then libc and the
/// loader); mappings of one file that touch are one range. A library past
/// the eighth is left out: its return addresses are then not compared,
/// which only the mappings' count makes possible, not a Rust server's.
pub fn of(modules: &[Module]) -> CodeRanges {
    let mut spans: Vec<(u64, u64, &str)> = modules.iter().map(|m| (m.start_avma, m.end_avma, m.path.as_str())).collect();
    spans.sort_unstable();
    let mut merged: Vec<(u64, u64, &str)> = Vec::new();
    for (start, end, path) in spans {
        match merged.last_mut() {
            Some(last) if last.2 == path && last.1 == start => last.1 = end,
            _ => merged.push((start, end, path)),
        }
    }
    merged.sort_by_key(|&(start, end, _)| std::cmp::Reverse(end - start));
    let mut code = CodeRanges::default();
    for (slot, (start, end, _)) in code.ranges.iter_mut().zip(merged.into_iter().take(CODE_RANGES)) {
        *slot = [start, end - start];
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(path: &str, start: u64, end: u64) -> Module {
        Module { path: path.into(), start_avma: start, end_avma: end, file_offset: 0, build_id: None }
    }

    #[test]
    fn largest_first_and_touching_mappings_of_one_file_merged() {
        let mut modules = vec![module("/lib/libc.so.6", 0x7f00_0000, 0x7f10_0000), module("/bin/server", 0x5000, 0x9000), module("/bin/server", 0x9000, 0x20_0000)];
        for i in 0..10 {
            modules.push(module(&format!("/lib/small{i}.so"), 0x7e00_0000 + i * 0x10_000, 0x7e00_1000 + i * 0x10_000));
        }
        let code = of(&modules);
        assert_eq!(code.ranges[0], [0x5000, 0x20_0000 - 0x5000], "the program, merged");
        assert_eq!(code.ranges[1], [0x7f00_0000, 0x10_0000]);
        assert!(code.ranges[2..].iter().all(|r| r[1] == 0x1000), "{code:?}");
    }

    #[test]
    fn unused_slots_are_empty() {
        let code = of(&[module("/bin/server", 0x5000, 0x9000)]);
        assert_eq!(code.ranges[0], [0x5000, 0x4000]);
        assert!(code.ranges[1..].iter().all(|r| r[1] == 0), "an empty range holds no word");
    }
}
