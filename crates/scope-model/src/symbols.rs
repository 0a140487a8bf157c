//! Symbol names for recorded frames, produced by a symbolizer (scope-stacks)
//! and consumed by the exporters: plain data, so exports stay pure.

use crate::Frame;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One function at an address; an address inside inlined code yields several,
/// innermost first, all but the last marked `inlined`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedFrame {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub inlined: bool,
}

/// The outermost line of a stack not unwound to its thread's start (cut at
/// the bytes copied, an unwinding that stopped, or a repeated wait given
/// only the frames the kernel's compare vouches for): what is missing.
pub const CUT_SHORT: &str = "[cut short: the frames further out are not known]";

impl ResolvedFrame {
    pub fn unknown(label: String) -> Self {
        ResolvedFrame { function: label, file: None, line: None, inlined: false }
    }

    /// `function (file:line)`, the form every output shows.
    pub fn describe(&self) -> String {
        let inl = if self.inlined { " [inlined]" } else { "" };
        match (&self.file, self.line) {
            (Some(file), Some(line)) => format!("{} ({file}:{line}){inl}", self.function),
            (Some(file), None) => format!("{} ({file}){inl}", self.function),
            _ => format!("{}{inl}", self.function),
        }
    }
}

/// Async runtime, std and libc machinery: true frames, but rarely the
/// answer to "what was this thread doing".
pub fn is_plumbing(function: &str) -> bool {
    const PREFIXES: [&str; 16] = [
        "tokio::", "<tokio::", "std::", "<std::", "core::", "<core::", "alloc::", "<alloc::",
        "futures_", "<futures_", "__", "start_thread", "clone", "_start", "syscall", "[",
    ];
    const LIBC: [&str; 8] = ["read", "write", "epoll_wait", "nanosleep", "clock_nanosleep", "poll", "futex", "sched_yield"];
    PREFIXES.iter().any(|p| function.starts_with(p))
        || LIBC.contains(&function)
        || function.starts_with("pthread_")
}

/// A frame of Rust's own library (`core`, `alloc`, `std`), mostly inlined
/// into user code with debuginfo: `<u64>::wrapping_add` at
/// `/rustc/…/library/core/src/num/uint_macros.rs`. True, but not what the
/// user's code was doing; named by its source file, or by a primitive's
/// inherent method (`<u64>::…`, `<[T]>::…`, `<str>::…`).
pub fn is_library_frame(frame: &ResolvedFrame) -> bool {
    const PRIMITIVES: [&str; 17] =
        ["u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize", "f32", "f64", "bool", "char", "str"];
    let in_library = frame.file.as_deref().is_some_and(|f| {
        f.starts_with("/rustc/") || ["/library/core/", "/library/alloc/", "/library/std/"].iter().any(|l| f.contains(l))
    });
    let primitive = frame.function.strip_prefix('<').and_then(|r| r.split_once(">::")).is_some_and(|(ty, _)| {
        PRIMITIVES.contains(&ty) || ty.starts_with('[') || ty.starts_with("*const ") || ty.starts_with("*mut ") || ty.starts_with('&')
    });
    in_library || primitive
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Symbols {
    pub frames: HashMap<Frame, Vec<ResolvedFrame>>,
    /// What each `raw::poll` instance met among the frames is called
    /// (keyed like the poll's `poll_fn`).
    pub kinds: HashMap<Frame, crate::TaskKind>,
    /// For frames in code that only one `raw::poll` instance runs (its
    /// harness): that instance (keyed like `kinds`). Names the task a stack
    /// was taken in without a poll probe.
    pub instance_of: HashMap<Frame, Frame>,
    /// One line each: stripped binaries, build-id mismatches, missing files.
    pub warnings: Vec<String>,
}

/// The kernel's `[uprobes]` page on x86_64 (`TASK_SIZE - PAGE_SIZE` with
/// 4-level paging): our uretprobes return through it, so a sample can land
/// there; it is not the target's code.
const UPROBES_PAGE: std::ops::Range<u64> = 0x7fff_ffff_e000..0x7fff_ffff_f000;

impl Symbols {
    /// The functions at one frame, innermost first; never empty.
    pub fn resolve(&self, frame: &Frame) -> Vec<ResolvedFrame> {
        match self.frames.get(frame) {
            Some(list) if !list.is_empty() => list.clone(),
            _ if frame.module == Frame::NO_MODULE && UPROBES_PAGE.contains(&frame.offset) => {
                vec![ResolvedFrame::unknown(format!("[uprobes] return trampoline {:#x} (a probed poll returning)", frame.offset))]
            }
            _ if frame.module == Frame::NO_MODULE => {
                vec![ResolvedFrame::unknown(format!("[anonymous memory {:#x}]", frame.offset))]
            }
            _ => vec![ResolvedFrame::unknown(format!("[unknown] module {}+{:#x}", frame.module, frame.offset))],
        }
    }

    /// A whole stack, innermost first, inlined frames expanded.
    pub fn expand(&self, frames: &[Frame]) -> Vec<ResolvedFrame> {
        frames.iter().flat_map(|f| self.resolve(f)).collect()
    }

    /// The frame that best says what the thread was doing: the innermost
    /// one that is not runtime or library plumbing (nor `core`/`alloc`/`std`
    /// code inlined into user code); in a stack of nothing but plumbing (an
    /// idle worker parking), the innermost Rust function.
    pub fn most_telling(&self, frames: &[Frame]) -> Option<ResolvedFrame> {
        let all = self.expand(frames);
        all.iter()
            .find(|f| !is_plumbing(&f.function) && !is_library_frame(f))
            .or_else(|| all.iter().find(|f| f.function.contains("::")))
            .or(all.first())
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_telling_skips_runtime_and_std() {
        let mut symbols = Symbols::default();
        let f = |m: u32, o: u64| Frame { module: m, offset: o };
        let name = |s: &str| vec![ResolvedFrame::unknown(s.into())];
        symbols.frames.insert(f(0, 1), name("clock_nanosleep"));
        symbols.frames.insert(f(0, 2), name("std::thread::sleep"));
        symbols.frames.insert(f(1, 3), name("demo_app::block_in_syscall"));
        symbols.frames.insert(f(1, 4), name("tokio::runtime::task::raw::poll"));
        let stack = [f(0, 1), f(0, 2), f(1, 3), f(1, 4)];
        assert_eq!(symbols.most_telling(&stack).unwrap().function, "demo_app::block_in_syscall");
        assert_eq!(symbols.most_telling(&stack[..2]).unwrap().function, "std::thread::sleep");
        assert_eq!(symbols.most_telling(&stack[..1]).unwrap().function, "clock_nanosleep");
        assert_eq!(symbols.resolve(&f(7, 0x10))[0].function, "[unknown] module 7+0x10");
        // With debuginfo, core's inlined arithmetic is not the answer.
        let inlined = |name: &str, file: &str| ResolvedFrame { function: name.into(), file: Some(file.into()), line: Some(1), inlined: true };
        symbols.frames.insert(
            f(1, 5),
            vec![
                inlined("<u64>::wrapping_add", "/rustc/17067e9ac6d7e98f18d4d6ed6ea54b4d5bb53d1e/library/core/src/num/uint_macros.rs"),
                inlined("core::hint::black_box", "/rustc/1/library/core/src/hint.rs"),
                ResolvedFrame { function: "demo_app::cpu_heavy_poll".into(), file: Some("crates/demo-app/src/main.rs".into()), line: Some(30), inlined: false },
            ],
        );
        assert_eq!(symbols.most_telling(&[f(1, 5)]).unwrap().function, "demo_app::cpu_heavy_poll");
        assert!(is_library_frame(&ResolvedFrame::unknown("<[T]>::iter".into())));
        assert!(!is_library_frame(&ResolvedFrame::unknown("<my::Type>::method".into())));
        assert!(symbols.resolve(&f(Frame::NO_MODULE, 0xdead))[0].function.contains("anonymous"));
        assert!(symbols.resolve(&f(Frame::NO_MODULE, 0x7fff_ffff_e00d))[0].function.starts_with("[uprobes]"));
    }
}
