//! Unwinding copied stacks with framehop from each module's `.eh_frame`
//! (plus instruction analysis of `.text` for prologues and epilogues).

use crate::elf;
use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, FrameAddress, Unwinder};
use object::{Object, ObjectSection};
use scope_model::{Frame, Module};
use std::ops::Range;

/// Stops runaway unwinds on corrupt stacks.
const MAX_FRAMES: usize = 256;

/// Words atop a stack the kernel compares to tell a wait it has seen
/// (`scope_common::WAIT_WORDS`; see [`Unwound::words_read`]).
pub const WORDS_COMPARED: usize = 64;

struct Mapped {
    index: u32,
    avma: Range<u64>,
    file_offset: u64,
}

pub struct StackUnwinder {
    unwinder: UnwinderX86_64<Vec<u8>>,
    cache: CacheX86_64,
    mapped: Vec<Mapped>,
}

/// An unwound stack: frames normalised, and whether the walk reached the
/// thread's first frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unwound {
    pub frames: Vec<Frame>,
    pub complete: bool,
    /// Addresses that fell in no known module (a reason to re-read maps).
    pub unknown_addresses: usize,
    /// Bytes above `sp` the walk read: what this stack needed copied.
    pub bytes_used: usize,
    /// Which of the first 64 words above `sp` the frames found depend on
    /// (bit i: the 8 bytes at `sp + 8 i`), with ip and sp: those the walk
    /// read a return address from, or a saved frame pointer that points
    /// into this stack (one a caller's frame could be found by). A saved
    /// `rbp` holding data (it is a general register in code built without
    /// frame pointers) was read but found nothing.
    pub words_read: u64,
    /// How many of the first frames depend on nothing but ip, sp and those
    /// 64 words: all a wait that matches there is known to share (the
    /// frames found by reading deeper may differ).
    pub frames_within_words: usize,
}

impl Unwound {
    /// The first address that fell in no known module, if any.
    pub fn first_unknown(&self) -> Option<u64> {
        self.frames.iter().find(|f| f.module == Frame::NO_MODULE).map(|f| f.offset)
    }
}

fn section(file: &object::File<'_>, name: &str) -> (Option<Range<u64>>, Option<Vec<u8>>) {
    match file.section_by_name(name) {
        Some(s) => (Some(s.address()..s.address() + s.size()), s.data().ok().map(<[u8]>::to_vec)),
        None => (None, None),
    }
}

impl Default for StackUnwinder {
    fn default() -> Self {
        StackUnwinder { unwinder: UnwinderX86_64::new(), cache: CacheX86_64::new(), mapped: Vec::new() }
    }
}

impl StackUnwinder {
    /// Loads one module's unwind tables; `index` is its place in the
    /// recording's module list.
    pub fn add_module(&mut self, index: u32, module: &Module) -> Result<(), String> {
        let data = std::fs::read(&module.path).map_err(|e| format!("{}: {e}", module.path))?;
        let file = object::File::parse(&*data).map_err(|e| format!("{}: {e}", module.path))?;
        let svma = elf::svma_of_file_offset(&file, module.file_offset)
            .ok_or_else(|| format!("{}: no segment holds file offset {:#x}", module.path, module.file_offset))?;
        let base_avma = module.start_avma.wrapping_sub(svma);
        let (text_svma, text) = section(&file, ".text");
        let (eh_frame_svma, eh_frame) = section(&file, ".eh_frame");
        let (eh_frame_hdr_svma, eh_frame_hdr) = section(&file, ".eh_frame_hdr");
        let info = ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma,
            text,
            eh_frame_svma,
            eh_frame,
            eh_frame_hdr_svma,
            eh_frame_hdr,
            ..Default::default()
        };
        let avma = module.start_avma..module.end_avma;
        self.unwinder.add_module(framehop::Module::new(module.path.clone(), avma.clone(), base_avma, info));
        self.mapped.push(Mapped { index, avma, file_offset: module.file_offset });
        Ok(())
    }

    /// Forgets the module loaded as `index` (its mapping is gone).
    pub fn remove_module(&mut self, index: u32) {
        self.mapped.retain(|m| {
            if m.index == index {
                self.unwinder.remove_module(m.avma.start);
            }
            m.index != index
        });
    }

    /// (module, file offset) of an address, if it is in a loaded module.
    pub fn normalise(&self, avma: u64) -> Option<Frame> {
        self.mapped
            .iter()
            .find(|m| m.avma.contains(&avma))
            .map(|m| Frame { module: m.index, offset: avma - m.avma.start + m.file_offset })
    }

    /// Walks the stack copied at `sp` (`stack` holds memory from `sp` up).
    pub fn unwind(&mut self, ip: u64, sp: u64, bp: u64, stack: &[u8]) -> Unwound {
        let bytes_used = std::cell::Cell::new(0usize);
        // (offset, value) of the reads in the first 64 words.
        let mut reads: Vec<(usize, u64)> = Vec::new();
        let mut read_stack = |addr: u64| -> Result<u64, ()> {
            let at = addr.checked_sub(sp).ok_or(())? as usize;
            let bytes = stack.get(at..at + 8).ok_or(())?;
            bytes_used.set(bytes_used.get().max(at + 8));
            if at < WORDS_COMPARED * 8 {
                reads.push((at, u64::from_le_bytes(bytes.try_into().map_err(|_| ())?)));
            }
            Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| ())?))
        };
        let mut frames = Vec::new();
        let mut return_addresses = Vec::new();
        let mut unknown = 0;
        let mut complete = false;
        let mut frames_within_words = 0;
        let mut iter = self.unwinder.iter_frames(ip, UnwindRegsX86_64::new(ip, sp, bp), &mut self.cache, &mut read_stack);
        loop {
            match iter.next() {
                Ok(Some(address)) => {
                    let lookup = match address {
                        FrameAddress::InstructionPointer(a) => a,
                        // The call instruction, not the one after it.
                        FrameAddress::ReturnAddress(a) => {
                            return_addresses.push(a.get());
                            a.get() - 1
                        }
                    };
                    let frame = self.mapped.iter().find(|m| m.avma.contains(&lookup)).map(|m| Frame {
                        module: m.index,
                        offset: lookup - m.avma.start + m.file_offset,
                    });
                    frames.push(frame.unwrap_or_else(|| {
                        unknown += 1;
                        Frame { module: Frame::NO_MODULE, offset: lookup }
                    }));
                    if bytes_used.get() <= WORDS_COMPARED * 8 {
                        frames_within_words = frames.len();
                    }
                    if frames.len() >= MAX_FRAMES {
                        break;
                    }
                }
                Ok(None) => {
                    // Walks end cleanly in code we cannot unwind too (the
                    // `[uprobes]` page): a thread's entry is in a module.
                    complete = frames.last().is_some_and(|f| f.module != Frame::NO_MODULE);
                    break;
                }
                Err(_) => break,
            }
        }
        let stack_range = sp..sp.saturating_add(stack.len() as u64);
        let mut words_read = 0u64;
        for (at, value) in reads {
            if return_addresses.contains(&value) || stack_range.contains(&value) {
                // An unaligned read touches two words.
                for word in [at / 8, at.div_ceil(8)] {
                    if word < WORDS_COMPARED {
                        words_read |= 1 << word;
                    }
                }
            }
        }
        Unwound { frames, complete, unknown_addresses: unknown, bytes_used: bytes_used.get(), words_read, frames_within_words }
    }

    pub fn knows(&self, avma: u64) -> bool {
        self.normalise(avma).is_some()
    }
}
