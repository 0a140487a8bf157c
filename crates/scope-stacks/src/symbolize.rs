//! Names for frames with blazesym: demangled (legacy and v0 Rust, `.llvm.N`
//! and hash suffixes removed), inlined functions and file:line where DWARF
//! exists (also split `.debug` files via debug links), the symbol table
//! otherwise, `[unknown] module+offset` when neither. Each module is read
//! where the caller locates it (the recorder holds the images the target
//! ran) or else at its recorded path, and checked against the build-id
//! recorded while the target ran: a binary replaced on disk is not used
//! (wrong names are worse than none), and a warning names the module.

use crate::elf;
use crate::task_kinds::NamingOptions;
use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};
use scope_model::{Frame, Module, ResolvedFrame, Symbols};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// `foo::bar::h0123456789abcdef` and `foo.llvm.123` → `foo::bar`, `foo`.
pub fn clean_name(name: &str) -> String {
    let mut name = name;
    if let Some(i) = name.find(".llvm.") {
        name = &name[..i];
    }
    if let Some(i) = name.rfind("::h") {
        let hash = &name[i + 3..];
        if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) {
            name = &name[..i];
        }
    }
    name.to_string()
}

fn location(info: Option<&blazesym::symbolize::CodeInfo<'_>>) -> (Option<String>, Option<u32>) {
    match info {
        Some(ci) => {
            let file = match &ci.dir {
                Some(dir) if !dir.as_os_str().is_empty() => dir.join(&*ci.file).display().to_string(),
                _ => ci.file.to_string_lossy().into_owned(),
            };
            (Some(file), ci.line)
        }
        None => (None, None),
    }
}

/// Innermost first: the inlined callees (deepest first), then the function.
/// blazesym gives each its own location: the symbol's `code_info` is where
/// in the outer function execution is (the first inlined call), each inlined
/// function's is where in *it* execution is.
fn frames_of(sym: &blazesym::symbolize::Sym<'_>) -> Vec<ResolvedFrame> {
    let mut out: Vec<ResolvedFrame> = sym
        .inlined
        .iter()
        .rev()
        .map(|inlined| {
            let (file, line) = location(inlined.code_info.as_ref());
            ResolvedFrame { function: clean_name(&inlined.name), file, line, inlined: true }
        })
        .collect();
    let (file, line) = location(sym.code_info.as_deref());
    out.push(ResolvedFrame { function: clean_name(&sym.name), file, line, inlined: false });
    out
}

/// Symbolizes every distinct frame once, module by module.
///
/// A fresh symbolizer per module: each binary's parsed DWARF is freed before
/// the next is indexed, so the heap peaks at the largest module's, not the
/// sum over all modules with debuginfo.
pub fn symbolize(modules: &[Module], frames: impl IntoIterator<Item = Frame>) -> Symbols {
    symbolize_reporting(modules, frames, &NamingOptions::default(), &|_| None, |_, _, _| {})
}

/// Where to read a module instead of its recorded path (None: that path).
/// The recorder passes the images it holds open (the ones the target ran).
pub type Locate<'a> = &'a dyn Fn(&Module) -> Option<PathBuf>;

/// As [`symbolize`], reading each module where `locate` says, and calling
/// `before(module, file, addresses)` ahead of each module: naming in a
/// large binary takes seconds, and users want to know. `options` say where
/// else the DWARF of the main binary may be (task kinds).
pub fn symbolize_reporting(
    modules: &[Module],
    frames: impl IntoIterator<Item = Frame>,
    options: &NamingOptions,
    locate: Locate<'_>,
    mut before: impl FnMut(&Module, &Path, usize),
) -> Symbols {
    let mut by_module: BTreeMap<u32, Vec<Frame>> = BTreeMap::new();
    for f in frames {
        by_module.entry(f.module).or_default().push(f);
    }
    let mut symbols = Symbols::default();
    for (index, frames) in by_module {
        if let Some(module) = modules.get(index as usize) {
            before(module, &locate(module).unwrap_or_else(|| PathBuf::from(&module.path)), frames.len());
        }
        let one = symbolize_with(&Namer::default().symbolizer, modules, frames, options, locate);
        symbols.frames.extend(one.frames);
        symbols.kinds.extend(one.kinds);
        symbols.instance_of.extend(one.instance_of);
        symbols.warnings.extend(one.warnings);
    }
    symbols
}

/// A symbolizer that keeps what it parsed (each binary's DWARF, looked up
/// lazily) for its next call: one export names everything in one call, so
/// only something that symbolizes repeatedly needs to hold one.
pub struct Namer {
    symbolizer: Symbolizer,
}

impl Default for Namer {
    fn default() -> Self {
        Namer { symbolizer: Symbolizer::builder().enable_code_info(true).enable_inlined_fns(true).build() }
    }
}

impl Namer {
    pub fn symbolize(&self, modules: &[Module], frames: impl IntoIterator<Item = Frame>) -> Symbols {
        symbolize_with(&self.symbolizer, modules, frames, &NamingOptions::default(), &|_| None)
    }
}

/// Every frame of a module that cannot be named gets the module's name and
/// the offset, so no output shows a bare module number.
fn leave_unnamed(module: &Module, index: u32, offsets: &BTreeSet<u64>, symbols: &mut Symbols) {
    let base = module.path.rsplit('/').next().unwrap_or(&module.path);
    for &offset in offsets {
        symbols.frames.insert(Frame { module: index, offset }, vec![ResolvedFrame::unknown(format!("[unknown] {base}+{offset:#x}"))]);
    }
}

fn symbolize_with(
    symbolizer: &Symbolizer,
    modules: &[Module],
    frames: impl IntoIterator<Item = Frame>,
    options: &NamingOptions,
    locate: Locate<'_>,
) -> Symbols {
    let mut by_module: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
    for f in frames {
        if f.module != Frame::NO_MODULE {
            by_module.entry(f.module).or_default().insert(f.offset);
        }
    }
    let mut symbols = Symbols::default();
    for (index, offsets) in by_module {
        let Some(module) = modules.get(index as usize) else { continue };
        let located = locate(module);
        // A recorded path under /proc, /sys or /dev is no binary (a damaged
        // or crafted capture): never opened.
        if located.is_none() && ["/proc/", "/sys/", "/dev/"].iter().any(|p| module.path.starts_with(p)) {
            symbols.warnings.push(format!("{}: not a binary file; its {} frames are not named", module.path, offsets.len()));
            leave_unnamed(module, index, &offsets, &mut symbols);
            continue;
        }
        let file = located.unwrap_or_else(|| PathBuf::from(&module.path));
        // Only regular files are opened: a path that is now a FIFO or a
        // device would block or feed us anything.
        let unusable = match std::fs::metadata(&file) {
            Err(e) => Some(e.to_string()),
            Ok(m) if !m.is_file() => Some("not a regular file".to_string()),
            Ok(_) => None,
        };
        if let Some(why) = unusable {
            symbols.warnings.push(format!("{}: {why}; its {} frames are not named", module.path, offsets.len()));
            leave_unnamed(module, index, &offsets, &mut symbols);
            continue;
        }
        // Through blazesym's mapping of the file: reading the whole binary
        // for its build-id put its size in heap on top of the DWARF already
        // parsed for earlier modules (+10 MB peak on a warm symbench pass).
        let now = blazesym::helper::read_elf_build_id(&file).ok().flatten().map(|id| elf::hex(&id));
        if let Some(recorded) = &module.build_id
            && now.as_ref() != Some(recorded)
        {
            let found = now.map_or("no build-id".to_string(), |id| format!("build-id {id}"));
            symbols.warnings.push(format!(
                "{} is not the binary that ran (recorded build-id {recorded}, the file there now has {found}): \
                 its {} frames are not named",
                module.path,
                offsets.len()
            ));
            leave_unnamed(module, index, &offsets, &mut symbols);
            continue;
        }
        let unnamed = offsets.clone();
        let offsets: Vec<u64> = offsets.into_iter().collect();
        let src = Source::Elf(Elf::new(&file));
        let results = match symbolizer.symbolize(&src, Input::FileOffset(&offsets)) {
            Ok(r) => r,
            Err(e) => {
                symbols.warnings.push(format!("{}: cannot symbolize ({e}); its frames stay unnamed", module.path));
                leave_unnamed(module, index, &unnamed, &mut symbols);
                continue;
            }
        };
        let mut named = 0;
        for (offset, result) in offsets.iter().zip(results) {
            let frame = Frame { module: index, offset: *offset };
            let resolved = match &result {
                Symbolized::Sym(sym) => {
                    named += 1;
                    frames_of(sym)
                }
                Symbolized::Unknown(_) => {
                    let base = module.path.rsplit('/').next().unwrap_or(&module.path);
                    vec![ResolvedFrame::unknown(format!("[unknown] {base}+{offset:#x}"))]
                }
            };
            symbols.frames.insert(frame, resolved);
        }
        name_task_kinds(&file, index, named, options, &mut symbols);
        if named == 0 && !offsets.is_empty() {
            symbols.warnings.push(format!("{}: no symbols (stripped?); frames shown as module+offset", module.path));
        }
    }
    symbols
}

/// Names the task kinds of the `raw::poll` instances among this module's
/// frames (see `task_kinds`): those its symbols call `raw::poll`, or, in a
/// binary without symbols, those its task vtables list.
fn name_task_kinds(path: &Path, index: u32, named: usize, options: &NamingOptions, symbols: &mut Symbols) {
    use crate::probe_points::RAW_POLL;
    let mut polls: Vec<u64> = symbols
        .frames
        .iter()
        .filter(|(f, names)| f.module == index && names.last().is_some_and(|n| n.function == RAW_POLL || n.function.starts_with("tokio::runtime::task::raw::poll::<")))
        .map(|(f, _)| f.offset)
        .collect();
    let all_instances: Vec<u64> = if named == 0 {
        crate::task_kinds::poll_instances_by_shape(path)
    } else {
        std::fs::read(path).ok().and_then(|d| crate::probe_points::tokio_probe_points(&d).ok()).map_or_else(Vec::new, |p| p.polls.iter().map(|p| p.file_offset).collect())
    };
    if named == 0 {
        let instances: std::collections::HashSet<u64> = all_instances.iter().copied().collect();
        polls.extend(symbols.frames.keys().filter(|f| f.module == index && instances.contains(&f.offset)).map(|f| f.offset));
    }
    // Stack frames in one instance's harness: that instance's kind names
    // the task a stack was taken in, with no poll probe to say it.
    let code = crate::poll_code::instance_code(path, &all_instances);
    if !code.is_empty() {
        let in_instances: Vec<(Frame, u64)> = symbols
            .frames
            .keys()
            .filter(|f| f.module == index)
            .filter_map(|f| Some((*f, crate::poll_code::instance_at(&code, f.offset)?)))
            .collect();
        for (frame, instance) in in_instances {
            symbols.instance_of.insert(frame, Frame { module: index, offset: instance });
            polls.push(instance);
        }
    }
    polls.sort_unstable();
    polls.dedup();
    if polls.is_empty() {
        return;
    }
    let naming = crate::task_kinds::name_kinds(path, &polls, options);
    symbols.warnings.extend(naming.warnings);
    for (offset, kind) in naming.kinds {
        symbols.kinds.insert(Frame { module: index, offset }, kind);
    }
}

#[cfg(test)]
mod tests {
    use super::clean_name;

    #[test]
    fn strips_hashes_and_llvm_suffixes() {
        assert_eq!(clean_name("demo_app::main::h0123456789abcdef"), "demo_app::main");
        assert_eq!(clean_name("tokio::runtime::park::Inner::park.llvm.4421"), "tokio::runtime::park::Inner::park");
        assert_eq!(clean_name("my::hash_table"), "my::hash_table");
        assert_eq!(clean_name("<T as core::fmt::Debug>::fmt"), "<T as core::fmt::Debug>::fmt");
    }
}
