//! A checked-in stack (tests/fixtures: deep.c, its binaries and the dump it
//! wrote of itself, see regenerate.sh) unwound and named exactly as a
//! recording's would be: no root, no kernel, nothing of the host's. The
//! binary omits frame pointers, so only `.eh_frame` gets the walk past
//! `inner`; it is freestanding, so every frame down to `_start` is ours.

use scope_model::{Frame, Module};
use scope_stacks::elf;
use scope_stacks::symbolize::symbolize;
use scope_stacks::unwind::{StackUnwinder, Unwound};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn read(name: &str) -> Vec<u8> {
    let path = fixture(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (rebuild with tests/fixtures/regenerate.sh)", path.display()))
}

#[derive(Clone)]
struct Dump {
    ip: u64,
    sp: u64,
    bp: u64,
    /// (start, end, file offset) of the binary's r-x mapping(s).
    maps: Vec<(u64, u64, u64)>,
    stack: Vec<u8>,
}

fn hex(s: &str) -> u64 {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap_or_else(|e| panic!("bad hex {s:?} in deep.dump: {e}"))
}

fn load_dump() -> Dump {
    let text = String::from_utf8(read("deep.dump")).expect("deep.dump is text");
    let mut dump = Dump { ip: 0, sp: 0, bp: 0, maps: Vec::new(), stack: Vec::new() };
    let mut lines = text.lines().filter(|l| !l.starts_with('#'));
    let mut stack_len = None;
    for line in lines.by_ref() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["rip", v] => dump.ip = hex(v),
            ["rsp", v] => dump.sp = hex(v),
            ["rbp", v] => dump.bp = hex(v),
            ["map", a, b, off] => dump.maps.push((hex(a), hex(b), hex(off))),
            ["stack", n] => {
                stack_len = Some(hex(n) as usize);
                break;
            }
            _ => panic!("unexpected line in deep.dump: {line:?}"),
        }
    }
    let stack_len = stack_len.expect("deep.dump has no stack line");
    dump.stack = lines.flat_map(str::split_whitespace).map(|b| hex(b) as u8).collect();
    assert_eq!(dump.stack.len(), stack_len, "deep.dump: stack byte count");
    // Only the fixture's own frames belong in it, never argv or environment.
    assert!(stack_len < 1024, "deep.dump holds {stack_len} stack bytes; the fixture's frames need well under 1 KiB");
    assert!(dump.ip != 0 && dump.sp != 0 && !dump.maps.is_empty(), "deep.dump is incomplete");
    dump
}

fn modules(binary: &str, dump: &Dump) -> Vec<Module> {
    let build_id = elf::build_id(&read(binary));
    assert!(build_id.is_some(), "{binary} has no build-id");
    dump.maps
        .iter()
        .map(|&(start, end, offset)| Module {
            path: fixture(binary).display().to_string(),
            start_avma: start,
            end_avma: end,
            file_offset: offset,
            build_id: build_id.clone(),
        })
        .collect()
}

fn unwind(modules: &[Module], dump: &Dump) -> Unwound {
    let mut unwinder = StackUnwinder::default();
    for (i, m) in modules.iter().enumerate() {
        unwinder.add_module(i as u32, m).unwrap();
    }
    unwinder.unwind(dump.ip, dump.sp, dump.bp, &dump.stack)
}

/// 1-based line of deep.c that holds `marker`.
fn source_line(marker: &str) -> u32 {
    let source = String::from_utf8(read("deep.c")).unwrap();
    let hits: Vec<usize> = source.lines().enumerate().filter(|(_, l)| l.contains(marker)).map(|(i, _)| i + 1).collect();
    assert_eq!(hits.len(), 1, "{marker:?} should be on exactly one line of deep.c");
    hits[0] as u32
}

fn source_text(line: u32) -> String {
    let source = String::from_utf8(read("deep.c")).unwrap();
    source.lines().nth(line as usize - 1).unwrap_or_default().to_string()
}

#[test]
fn unwinds_through_eh_frame_and_names_every_frame_with_lines() {
    let dump = load_dump();
    let modules = modules("deep", &dump);
    let unwound = unwind(&modules, &dump);
    assert!(unwound.complete, "the walk should end at _start's undefined return address: {unwound:?}");
    assert_eq!(unwound.unknown_addresses, 0, "{unwound:?}");
    assert!(unwound.bytes_used <= dump.stack.len());

    let symbols = symbolize(&modules, unwound.frames.iter().copied());
    assert!(symbols.warnings.is_empty(), "{:?}", symbols.warnings);
    let resolved = symbols.expand(&unwound.frames);
    let names: Vec<&str> = resolved.iter().map(|f| f.function.as_str()).collect();
    assert_eq!(names, ["capture_here", "inner", "middle", "outer", "main", "_start"], "innermost first: {resolved:#?}");
    let inlined: Vec<bool> = resolved.iter().map(|f| f.inlined).collect();
    assert_eq!(inlined, [true, false, false, false, false, false], "{resolved:#?}");

    // The inlined function is where execution is; inner is at its call.
    let at = |i: usize| (resolved[i].file.clone().unwrap_or_default(), resolved[i].line);
    let (file, line) = at(0);
    assert!(file.ends_with("deep.c"), "{resolved:#?}");
    assert_eq!(line, Some(source_line("/* CAPTURE */")), "{resolved:#?}");
    let (file, line) = at(1);
    assert!(file.ends_with("deep.c"), "{resolved:#?}");
    assert_eq!(line, Some(source_line("/* CALL-CAPTURE */")), "{resolved:#?}");
    // Callers are named at their call (return address - 1), not after it.
    for (i, callee) in [(2, "inner("), (3, "middle("), (4, "outer(")] {
        let (file, line) = at(i);
        assert!(file.ends_with("deep.c"), "{resolved:#?}");
        let text = source_text(line.unwrap_or_else(|| panic!("no line for {}: {resolved:#?}", names[i])));
        assert!(text.contains(callee), "{} is at {text:?}, not at its call of {callee}", names[i]);
    }
}

#[test]
fn a_stripped_copy_unwinds_the_same_and_keeps_module_offsets() {
    let dump = load_dump();
    let full = unwind(&modules("deep", &dump), &dump);
    let modules = modules("deep-stripped", &dump);
    assert_eq!(
        modules[0].build_id,
        elf::build_id(&read("deep")),
        "strip keeps the build-id, so a recorded stripped binary matches its debug copy"
    );
    let unwound = unwind(&modules, &dump);
    assert!(unwound.complete, "{unwound:?}");
    assert_eq!(unwound.frames, full.frames, ".eh_frame survives strip: same walk");

    let symbols = symbolize(&modules, unwound.frames.iter().copied());
    let names: Vec<String> = symbols.expand(&unwound.frames).into_iter().map(|f| f.function).collect();
    let expected: Vec<String> = unwound.frames.iter().map(|f: &Frame| format!("[unknown] deep-stripped+{:#x}", f.offset)).collect();
    assert_eq!(names, expected, "no names, but module+offset for every frame");
    assert!(
        symbols.warnings.iter().any(|w| w.contains("deep-stripped") && w.contains("no symbols")),
        "{:?}",
        symbols.warnings
    );
}

/// The words the frames came from: changing any other word of the stack
/// (a local, a saved register) gives the same frames, changing one of
/// them gives other frames or none. What the kernel's repeated-wait check
/// compares on (`words_read`).
#[test]
fn the_frames_depend_on_the_words_read_and_on_no_other() {
    let dump = load_dump();
    let modules = modules("deep", &dump);
    let unwound = unwind(&modules, &dump);
    let words = unwound.words_read;
    assert_ne!(words, 0, "{unwound:?}");
    let window = dump.stack.len().min(64 * 8) / 8;
    for i in 0..window {
        let mut stack = dump.stack.clone();
        stack[i * 8..i * 8 + 8].copy_from_slice(&0x4141_4141_4141_4141u64.to_le_bytes());
        let changed = unwind(&modules, &Dump { stack, ..dump.clone() });
        if words & (1 << i) == 0 {
            assert_eq!(changed.frames, unwound.frames, "word {i} is not one the frames came from");
        } else {
            assert_ne!(changed.frames, unwound.frames, "word {i} is one the frames came from");
        }
    }
}
