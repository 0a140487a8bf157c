//! Where Tokio keeps the running task's id in a thread's memory, from the
//! binary alone: its `CONTEXT` thread-local (`tokio::runtime::context`),
//! which holds `current_task_id` while a task is polled. On x86-64 the
//! executable's TLS block sits just below the thread pointer (`fs` base):
//! a thread's CONTEXT is at `fs - tls_offset + st_value(CONTEXT)`.
//!
//! The id's offset *inside* CONTEXT depends on how rustc laid the struct
//! out; [`Calibration`] learns it from copies of CONTEXT taken while exact
//! poll probes say which task is running.

use object::elf::PT_TLS;
use object::read::elf::{ElfFile64, ProgramHeader};
use object::{Endianness, Object, ObjectSymbol, SymbolKind};

const CONTEXT: &str = "tokio::runtime::context::CONTEXT";

/// CONTEXT's place relative to the thread pointer, and its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextTls {
    /// Address of CONTEXT minus the thread pointer (negative).
    pub from_thread_pointer: i64,
    pub size: u64,
    /// Offset of the current task id in it, when DWARF says (else it is
    /// learned while recording).
    pub task_id_field: Option<u32>,
}

/// Finds CONTEXT in an executable that links tokio statically. `None`
/// when there is no such TLS symbol (stripped, or tokio in a shared
/// library, whose TLS block the thread pointer does not locate).
pub fn context_tls(data: &[u8]) -> Option<ContextTls> {
    context_tls_with(data, None)
}

/// As [`context_tls`], reading the id's offset from the DWARF in `debug`
/// (the binary itself or its separate debug file) when given.
pub fn context_tls_with(data: &[u8], debug: Option<&[u8]>) -> Option<ContextTls> {
    let file = ElfFile64::<Endianness>::parse(data).ok()?;
    let endian = file.endian();
    let tls = file.elf_program_headers().iter().find(|ph| ph.p_type(endian) == PT_TLS)?;
    let (memsz, align, vaddr) = (tls.p_memsz(endian), tls.p_align(endian).max(1), tls.p_vaddr(endian));
    let symbol = file
        .symbols()
        .filter(|s| s.kind() == SymbolKind::Tls && s.size() > 0)
        .filter_map(|s| {
            let raw = s.name().ok()?;
            let name = format!("{:#}", rustc_demangle::demangle(raw));
            name.starts_with(CONTEXT).then_some((name, s.address(), s.size(), raw.to_string()))
        })
        // The storage itself (`…::__RUST_STD_INTERNAL_VAL`, `…::VAL`), not a
        // lazy-init state flag beside it.
        .max_by_key(|(name, _, size, _)| (name.ends_with("VAL"), *size))?;
    let task_id_field = debug
        .and_then(|d| object::File::parse(d).ok())
        .and_then(|d| crate::context_dwarf::task_id_field(&d, &symbol.3))
        .filter(|&f| u64::from(f) + 8 <= symbol.2);
    // glibc's `_dl_determine_tlsoffset` for the first module (variant II):
    // the block ends at the thread pointer, its first byte aligned as the
    // segment's is.
    let firstbyte = vaddr.wrapping_neg() & (align - 1);
    let offset = (memsz - firstbyte).div_ceil(align) * align + firstbyte;
    Some(ContextTls { from_thread_pointer: symbol.1 as i64 - offset as i64, size: symbol.2, task_id_field })
}

/// Learns which 8-byte word of CONTEXT holds the current task's id, from
/// copies of CONTEXT taken while the innermost open poll on that thread is
/// known (exact poll probes, with Tokio's id read from the task).
#[derive(Debug, Default)]
pub struct Calibration {
    /// Per word offset: copies in which it equalled the polled task's id.
    matches: Vec<u32>,
    observations: u32,
    /// Distinct task ids seen per word offset (a few suffice).
    ids: Vec<Vec<u64>>,
    /// Distinct values each word took over every copy, in polls or not (2
    /// suffice): a word that never changes is a constant (the thread's own
    /// id, say), however often it equals the polled task's id.
    values: Vec<Vec<u64>>,
}

/// Copies needed before deciding, and distinct task ids among them: a
/// constant field (the thread's own id, a depth) can equal one task's id
/// by chance, not several tasks' ids. A program with one busy task (a
/// single connection, a loop) decides after more copies instead: a
/// constant equal to its id would match as often as the real field and
/// leave no clear winner.
const MIN_OBSERVATIONS: u32 = 16;
const MIN_DISTINCT_IDS: usize = 3;
const MIN_OBSERVATIONS_FEW_IDS: u32 = 48;

impl Calibration {
    /// One copy of CONTEXT, taken while task `polled` was in its poll if
    /// the probes say so.
    pub fn observe(&mut self, context: &[u8], polled: Option<u64>) {
        let words = context.len() / 8;
        if self.matches.len() < words {
            self.matches.resize(words, 0);
            self.ids.resize(words, Vec::new());
            self.values.resize(words, Vec::new());
        }
        for (i, chunk) in context.chunks_exact(8).enumerate() {
            let value = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            if self.values[i].len() < 2 && !self.values[i].contains(&value) {
                self.values[i].push(value);
            }
        }
        let Some(polled) = polled else { return };
        self.observations += 1;
        for (i, chunk) in context.chunks_exact(8).enumerate() {
            if u64::from_le_bytes(chunk.try_into().expect("8 bytes")) == polled {
                self.matches[i] += 1;
                if self.ids[i].len() < MIN_DISTINCT_IDS && !self.ids[i].contains(&polled) {
                    self.ids[i].push(polled);
                }
            }
        }
    }

    /// The id's byte offset, once one word clearly holds it: enough
    /// observations, several tasks, matching in at least 80% of copies
    /// (a sample can land in harness code outside Tokio's id guard), and
    /// no other word close to it.
    pub fn decided(&self) -> Option<u32> {
        if self.observations < MIN_OBSERVATIONS {
            return None;
        }
        // Only words that changed: the id changes as tasks come and go.
        let mut ranked: Vec<(usize, u32)> = self.matches.iter().copied().enumerate().filter(|&(i, _)| self.values[i].len() > 1).collect();
        ranked.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
        let (best, n) = *ranked.first()?;
        let runner_up = ranked.get(1).map_or(0, |&(_, m)| m);
        let clear = n * 5 >= self.observations * 4 && runner_up * 10 <= self.observations * 3;
        let enough = self.ids[best].len() >= MIN_DISTINCT_IDS || self.observations >= MIN_OBSERVATIONS_FEW_IDS;
        (clear && enough).then_some(best as u32 * 8)
    }

    pub fn observations(&self) -> u32 {
        self.observations
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(words: &[u64]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn finds_the_word_that_follows_the_polled_task() {
        let mut c = Calibration::default();
        // word 0: the thread's own id (constant 2), word 2: the task id,
        // word 4: a pointer. Task 2 collides with the thread id sometimes.
        for i in 0..20u64 {
            let task = 2 + i % 4;
            c.observe(&context(&[2, 0, task, 0, 0x7f00_0000_1000]), Some(task));
            if i < 15 {
                assert_eq!(c.decided(), None, "too early at {i}");
            }
        }
        assert_eq!(c.decided(), Some(16));
    }

    #[test]
    fn refuses_when_no_word_is_clear() {
        let mut c = Calibration::default();
        for i in 0..40u64 {
            // Half the copies outside the guard: the word holds the worker's id.
            let word = if i % 2 == 0 { 100 + i } else { 7 };
            c.observe(&context(&[word, 7]), Some(100 + i));
        }
        assert_eq!(c.decided(), None);
    }

    #[test]
    fn a_single_task_needs_more_copies() {
        let mut c = Calibration::default();
        // Outside the poll the id word holds the worker's own id (1).
        c.observe(&context(&[0, 1]), None);
        for _ in 0..47 {
            c.observe(&context(&[0, 5]), Some(5));
        }
        assert_eq!(c.decided(), None, "not yet");
        c.observe(&context(&[0, 5]), Some(5));
        assert_eq!(c.decided(), Some(8));
    }

    #[test]
    fn a_constant_equal_to_the_only_task_id_is_never_chosen() {
        let mut c = Calibration::default();
        for i in 0..100 {
            // word 0: a constant 5; word 1: the id, outside the guard now and then.
            c.observe(&context(&[5, if i % 10 == 0 { 1 } else { 5 }]), Some(5));
        }
        assert_eq!(c.decided(), Some(8), "the constant never changes: not the id");
        let mut c = Calibration::default();
        for i in 0..100 {
            // The real field mostly outside the guard: the constant matches
            // far more often, but a constant is never the id.
            c.observe(&context(&[5, if i % 10 == 0 { 5 } else { 1 }]), Some(5));
        }
        assert_eq!(c.decided(), None, "no clear word among those that change");
    }

    /// The demo's DWARF build says where the id is; calibration found the
    /// same on its stock build (CONTEXT+48 on rustc 1.95, tokio 1.54).
    #[test]
    fn dwarf_gives_the_task_id_field() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/release-debuginfo/demo-app");
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e} (cargo build --profile release-debuginfo -p demo-app)"));
        let with = context_tls_with(&data, Some(&data)).expect("CONTEXT in the demo");
        assert_eq!(with.task_id_field, Some(48), "{with:?}");
        assert!(with.from_thread_pointer < 0 && with.size >= 56);
        assert_eq!(context_tls(&data).unwrap().task_id_field, None, "no DWARF asked for");
    }

    /// The CONTEXT of this test binary's own tokio (a dev-dependency of no
    /// crate here) is not available; the demo app's is checked by the
    /// kernel tests. Here: a binary without tokio has none.
    #[test]
    fn no_context_without_tokio() {
        let me = std::fs::read("/proc/self/exe").unwrap();
        assert_eq!(context_tls(&me), None);
    }
}
