//! Unwinding and symbolization without root or a kernel: this test copies
//! its own registers and stack, the way the eBPF side does for a target,
//! then unwinds the copy with its own modules and names the frames.

use scope_model::{Frame, Module};
use scope_stacks::{symbolize, unwind::StackUnwinder};
use std::arch::asm;

fn own_modules() -> Vec<Module> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 6 || !f[1].contains('x') || !f[5].starts_with('/') {
                return None;
            }
            let (a, b) = f[0].split_once('-')?;
            Some(Module {
                path: f[5].to_string(),
                start_avma: u64::from_str_radix(a, 16).ok()?,
                end_avma: u64::from_str_radix(b, 16).ok()?,
                file_offset: u64::from_str_radix(f[2], 16).ok()?,
                build_id: None,
            })
        })
        .collect()
}

/// Reads our own memory without faulting past the end of the stack mapping.
fn copy_own_stack(sp: u64, max: usize) -> Vec<u8> {
    let mut size = max;
    while size >= 512 {
        let mut buf = vec![0u8; size];
        let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: size };
        let remote = libc::iovec { iov_base: sp as *mut _, iov_len: size };
        // SAFETY: valid iovecs; reading our own address space.
        let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
        if n == size as isize {
            return buf;
        }
        size /= 2;
    }
    panic!("could not read own stack");
}

struct Captured {
    ip: u64,
    sp: u64,
    bp: u64,
    stack: Vec<u8>,
}

#[inline(never)]
#[unsafe(no_mangle)]
fn scope_stacks_capture_here() -> Captured {
    let (ip, sp, bp): (u64, u64, u64);
    // SAFETY: reads registers only.
    unsafe {
        asm!("lea {ip}, [rip]", "mov {sp}, rsp", "mov {bp}, rbp", ip = out(reg) ip, sp = out(reg) sp, bp = out(reg) bp);
    }
    let stack = copy_own_stack(sp, 64 * 1024);
    std::hint::black_box(Captured { ip, sp, bp, stack })
}

#[inline(never)]
#[unsafe(no_mangle)]
fn scope_stacks_outer_caller() -> Captured {
    std::hint::black_box(scope_stacks_capture_here())
}

#[test]
fn unwinds_and_names_its_own_stack() {
    scope_stacks_test_body();
}

// Not the #[test] fn itself: release builds inline that into the harness.
#[inline(never)]
#[unsafe(no_mangle)]
fn scope_stacks_test_body() {
    let captured = scope_stacks_outer_caller();
    let modules = own_modules();
    let mut unwinder = StackUnwinder::default();
    for (i, m) in modules.iter().enumerate() {
        unwinder.add_module(i as u32, m).unwrap();
    }
    let unwound = unwinder.unwind(captured.ip, captured.sp, captured.bp, &captured.stack);
    assert!(unwound.complete, "walk should reach the thread's start: {:?}", unwound.frames);
    assert_eq!(unwound.unknown_addresses, 0);
    let symbols = symbolize::symbolize(&modules, unwound.frames.iter().copied());
    let names: Vec<String> = symbols.expand(&unwound.frames).into_iter().map(|f| f.function).collect();
    let pos = |needle: &str| names.iter().position(|n| n.contains(needle));
    let here = pos("scope_stacks_capture_here").unwrap_or_else(|| panic!("{names:#?}"));
    let outer = pos("scope_stacks_outer_caller").unwrap_or_else(|| panic!("{names:#?}"));
    let test = pos("scope_stacks_test_body").unwrap_or_else(|| panic!("{names:#?}"));
    assert!(here < outer && outer < test, "innermost first: {names:#?}");
    let last = names.last().unwrap();
    assert!(last.contains("clone") || last.contains("start_thread") || last.contains("_start"), "{names:#?}");
    assert!(symbols.warnings.is_empty(), "{:?}", symbols.warnings);
}

/// What a repeated wait may be said to share with the one it matched: the
/// frames found from ip, sp and the words the kernel compares stay
/// whatever the stack holds deeper; the frames after them do not.
#[test]
fn the_frames_within_the_compared_words_do_not_depend_on_deeper_ones() {
    let captured = scope_stacks_outer_caller();
    let mut unwinder = StackUnwinder::default();
    for (i, m) in own_modules().iter().enumerate() {
        unwinder.add_module(i as u32, m).unwrap();
    }
    let unwound = unwinder.unwind(captured.ip, captured.sp, captured.bp, &captured.stack);
    let within = unwound.frames_within_words;
    // The test harness's thread is deeper than the compared words.
    assert!(unwound.complete && within >= 2 && within < unwound.frames.len(), "{within} of {:?}", unwound.frames);
    let mut stack = captured.stack.clone();
    for word in stack.chunks_exact_mut(8).skip(scope_stacks::unwind::WORDS_COMPARED) {
        word.copy_from_slice(&0x4141_4141_4141_4141u64.to_le_bytes());
    }
    let changed = unwinder.unwind(captured.ip, captured.sp, captured.bp, &stack);
    assert_eq!(changed.frames[..within], unwound.frames[..within]);
    assert!(!changed.complete && changed.frames != unwound.frames, "deeper words found the frames after those");
}

#[test]
fn a_replaced_binary_is_not_trusted() {
    let modules: Vec<Module> = own_modules()
        .into_iter()
        .map(|m| Module { build_id: Some("00".repeat(20)), ..m })
        .collect();
    let frame = Frame { module: 0, offset: modules[0].file_offset + 16 };
    let symbols = symbolize::symbolize(&modules, [frame]);
    let named = symbols.frames.values().flatten().filter(|f| !f.function.starts_with("[unknown] ")).count();
    assert_eq!(named, 0, "no names from a binary whose build-id differs");
    assert!(symbols.warnings[0].contains("is not the binary that ran"), "{:?}", symbols.warnings);
    let base = modules[0].path.rsplit('/').next().unwrap();
    assert_eq!(symbols.resolve(&frame)[0].function, format!("[unknown] {base}+{:#x}", frame.offset), "says which module");
}

/// A module whose path is now a FIFO (or a device) is never opened: the
/// export would wait on it forever. Its frames stay unnamed, said once.
#[test]
fn a_module_path_that_is_a_fifo_is_not_opened() {
    let dir = std::env::temp_dir().join(format!("scope-stacks-fifo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("app");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let module = scope_model::Module { path: fifo.to_str().unwrap().into(), start_avma: 0x1000, end_avma: 0x2000, file_offset: 0, build_id: None };
    let dev = scope_model::Module { path: "/dev/zero".into(), ..module.clone() };
    let frames = [scope_model::Frame { module: 0, offset: 0x10 }, scope_model::Frame { module: 1, offset: 0x20 }];
    let symbols = symbolize::symbolize(&[module, dev], frames);
    std::fs::remove_file(&fifo).unwrap();
    assert_eq!(symbols.resolve(&frames[0])[0].function, "[unknown] app+0x10");
    assert_eq!(symbols.resolve(&frames[1])[0].function, "[unknown] zero+0x20");
    assert_eq!(symbols.warnings.len(), 2, "{:?}", symbols.warnings);
}
