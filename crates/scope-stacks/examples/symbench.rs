//! Symbolization speed and memory, next to llvm-addr2line:
//!
//!   cargo run --release -p scope-stacks --example symbench -- BINARY [ADDRESSES]
//!
//! Takes ADDRESSES (default 2000) code addresses from BINARY's symbol table
//! (function starts and small offsets into them, the same every run), names
//! them through the export's path (`Namer`: build-id check, blazesym with
//! inlined frames and file:line) cold (a fresh symbolizer: opens the file,
//! parses DWARF) and warm (the same symbolizer again), medians of 3, and with
//! one `llvm-addr2line-22 -f -i -C` process fed on stdin. Prints
//! `symbench KEY VALUE…` lines, which `cargo xtask bench` parses.

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, SymbolKind};
use scope_model::{Frame, Module};
use scope_stacks::symbolize::{Namer, clean_name};
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::process::{Command, Stdio};
use std::time::Instant;

const ADDR2LINE: &str = "llvm-addr2line-22";

/// VmHWM counts the binary's pages blazesym touched through its mapping
/// (page cache, reclaimable) with the heap; counting allocations tells the
/// heap alone, which is what grows with the parsed DWARF.
struct CountingAlloc;
static HEAP: AtomicUsize = AtomicUsize::new(0);
static HEAP_PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = HEAP.fetch_add(by, Ordering::Relaxed) + by;
    HEAP_PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HEAP.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        HEAP.fetch_sub(layout.size(), Ordering::Relaxed);
        grew(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

struct Address {
    svma: u64,
    file_offset: u64,
}

/// (addresses, bytes of .debug_* sections). Function starts and offsets
/// up to 64 bytes in, spread evenly over all functions by address.
fn pick_addresses(data: &[u8], count: usize) -> Result<(Vec<Address>, u64), String> {
    let file = object::File::parse(data).map_err(|e| e.to_string())?;
    let debug_bytes = file.sections().filter(|s| s.name().is_ok_and(|n| n.starts_with(".debug_"))).map(|s| s.size()).sum();
    let mut functions: Vec<(u64, u64)> =
        file.symbols().filter(|s| s.kind() == SymbolKind::Text && s.size() > 0).map(|s| (s.address(), s.size())).collect();
    functions.sort_unstable();
    functions.dedup_by_key(|f| f.0);
    if functions.is_empty() {
        return Err("no function symbols (stripped?)".into());
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let (start, size) = functions[i * functions.len() / count % functions.len()];
        let into = if i % 3 == 0 { 0 } else { (i as u64 * 37) % size.min(64) };
        let svma = start + into;
        let segment = file
            .segments()
            .find(|s| (s.address()..s.address() + s.size()).contains(&svma))
            .ok_or_else(|| format!("{svma:#x} is in no segment"))?;
        out.push(Address { svma, file_offset: svma - segment.address() + segment.file_range().0 });
    }
    Ok((out, debug_bytes))
}

fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix(key)?.trim().strip_suffix("kB")?.trim().parse().ok()))
        .unwrap_or(0)
}

/// Innermost function per address, from `-a` output: an address line, then
/// (function, file:line) pairs, innermost first.
fn addr2line(binary: &str, addresses: &[Address]) -> Result<(Vec<String>, f64), String> {
    let started = Instant::now();
    let mut child = Command::new(ADDR2LINE)
        .args(["-f", "-i", "-C", "-a", "-e", binary])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{ADDR2LINE}: {e} (cargo xtask setup installs it with llvm-22)"))?;
    let input: String = addresses.iter().map(|a| format!("{:#x}\n", a.svma)).collect();
    let mut stdin = child.stdin.take().expect("piped");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let mut text = String::new();
    child.stdout.take().expect("piped").read_to_string(&mut text).map_err(|e| e.to_string())?;
    let status = child.wait().map_err(|e| e.to_string())?;
    let seconds = started.elapsed().as_secs_f64();
    writer.join().expect("writer thread").map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("{ADDR2LINE} failed: {status}"));
    }
    let mut names = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if !line.starts_with("0x") {
            return Err(format!("{ADDR2LINE}: expected an address line, got {line:?}"));
        }
        names.push(lines.next().unwrap_or("??").to_string());
        while lines.peek().is_some_and(|l| !l.starts_with("0x")) {
            lines.next();
        }
    }
    if names.len() != addresses.len() {
        return Err(format!("{ADDR2LINE} answered {} of {} addresses", names.len(), addresses.len()));
    }
    Ok((names, seconds))
}

/// llvm's `-C` demangles the Itanium shell of legacy Rust symbols but
/// keeps Rust's escapes (`$LT$`, `..`) and the hash; finish the job the way
/// rustc-demangle does, so names compare with ours.
fn normalise_llvm(name: &str) -> String {
    let name = name.split(" (.llvm.").next().unwrap_or(name);
    let mut out = String::with_capacity(name.len());
    for (i, part) in name.split("::").enumerate() {
        if i > 0 {
            out.push_str("::");
        }
        let part = part.strip_prefix("_$").map_or(part.to_string(), |rest| format!("${rest}"));
        let mut rest = part.replace("..", "::");
        for (from, to) in [
            ("$LT$", "<"), ("$GT$", ">"), ("$LP$", "("), ("$RP$", ")"), ("$C$", ","), ("$RF$", "&"),
            ("$BP$", "*"), ("$SP$", "@"), ("$u20$", " "), ("$u27$", "'"), ("$u5b$", "["), ("$u5d$", "]"),
            ("$u7b$", "{"), ("$u7d$", "}"), ("$u7e$", "~"), ("$u3d$", "="), ("$u3b$", ";"), ("$u2b$", "+"), ("$u22$", "\""),
        ] {
            rest = rest.replace(from, to);
        }
        out.push_str(&rest);
    }
    clean_name(&out)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("symbench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let binary = args.first().ok_or("usage: symbench BINARY [ADDRESSES]")?.clone();
    let count: usize = args.get(1).map_or(Ok(2000), |n| n.parse()).map_err(|e| format!("ADDRESSES: {e}"))?;
    let data = std::fs::read(&binary).map_err(|e| format!("{binary}: {e}"))?;
    let size = data.len() as u64;
    let (addresses, debug_bytes) = pick_addresses(&data, count)?;
    drop(data);
    if debug_bytes == 0 {
        return Err(format!("{binary} has no DWARF: build it with debuginfo"));
    }
    let module = Module { path: binary.clone(), start_avma: 0, end_avma: 0, file_offset: 0, build_id: None };
    let frames: Vec<Frame> = addresses.iter().map(|a| Frame { module: 0, offset: a.file_offset }).collect();
    let distinct = frames.iter().collect::<std::collections::BTreeSet<_>>().len();

    // Peak RSS of symbolizing alone: reset the high-water mark (clear_refs
    // 5) now that the symbol table read above is freed.
    std::fs::write("/proc/self/clear_refs", "5").map_err(|e| format!("cannot reset VmHWM: {e}"))?;
    let rss_before = status_kib("VmRSS:");
    HEAP_PEAK.store(HEAP.load(Ordering::Relaxed), Ordering::Relaxed);
    let heap_before = HEAP.load(Ordering::Relaxed);
    let modules = std::slice::from_ref(&module);
    let timed = |namer: &Namer| {
        let started = Instant::now();
        let symbols = namer.symbolize(modules, frames.iter().copied());
        (symbols, started.elapsed().as_secs_f64())
    };
    let namer = Namer::default();
    let (cold, first_cold_s) = timed(&namer);
    let peak_cold = status_kib("VmHWM:");
    let heap_peak_cold = HEAP_PEAK.load(Ordering::Relaxed) - heap_before;
    let heap_kept = HEAP.load(Ordering::Relaxed) - heap_before;
    let (rss_file, rss_anon) = (status_kib("RssFile:"), status_kib("RssAnon:"));
    let mut warm_s = vec![timed(&namer).1, timed(&namer).1, timed(&namer).1];
    let peak = status_kib("VmHWM:");
    drop(namer);
    // Later cold runs find the file in the page cache, as an export usually does.
    let mut cold_s = vec![first_cold_s, timed(&Namer::default()).1, timed(&Namer::default()).1];
    if !cold.warnings.is_empty() {
        return Err(format!("symbolize: {:?}", cold.warnings));
    }
    assert_eq!(cold.frames, Namer::default().symbolize(modules, frames.iter().copied()).frames, "every pass names the same");
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (cold_s, warm_s) = (median(&mut cold_s), median(&mut warm_s));

    let (theirs, llvm_s) = addr2line(&binary, &addresses)?;
    let ours: Vec<String> = frames.iter().map(|f| cold.resolve(f)[0].function.clone()).collect();
    let agree = ours.iter().zip(&theirs).filter(|(a, b)| **a == normalise_llvm(b)).count();
    let named = ours.iter().filter(|n| !n.starts_with("[unknown]")).count();

    let per_s = |s: f64| count as f64 / s.max(1e-9);
    println!("symbench binary {binary} bytes {size} debuginfo-bytes {debug_bytes}");
    println!("symbench addresses {count} distinct {distinct} named {named}");
    println!("symbench cold addresses-per-s {:.0} seconds {cold_s:.4} first {first_cold_s:.4}", per_s(cold_s));
    println!("symbench warm addresses-per-s {:.0} seconds {warm_s:.4}", per_s(warm_s));
    println!("symbench llvm-addr2line addresses-per-s {:.0} seconds {llvm_s:.4}", per_s(llvm_s));
    println!("symbench agreement fraction {:.4} same {agree} of {count}", agree as f64 / count as f64);
    println!("symbench rss-kib before {rss_before} peak-cold {peak_cold} peak {peak} file {rss_file} anon {rss_anon}");
    println!("symbench heap-kib peak-cold {} kept {}", heap_peak_cold / 1024, heap_kept / 1024);
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate().filter(|(_, (a, b))| **a != normalise_llvm(b)).take(5) {
        println!("symbench disagree {:#x} ours {a:?} llvm {b:?}", addresses[i].svma);
    }
    Ok(())
}
