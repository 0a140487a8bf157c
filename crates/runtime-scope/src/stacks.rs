//! Turns copied stacks into frames while the target is alive: unwinds with
//! the target's modules (re-reading its maps when an address falls outside
//! every known one: late dlopen, or libraries mapped after a launch's exec),
//! then drops the stack bytes.

use crate::{images, modules};
use scope_model::decode::RawStack;
use scope_model::{Event, Frame, Module};
use scope_stacks::unwind::StackUnwinder;
use crate::fast_map::Map;
use std::collections::HashSet;
use std::ops::Range;
use std::time::{Duration, Instant};

/// A stack's frames, shared by the events that repeat it.
type Frames = std::sync::Arc<[scope_model::Frame]>;

/// What the kernel remembers as one of a thread's waits, unwound: the
/// frames a repeat of it carries. The kernel compares ip, sp and the words
/// atop the stack, so a repeat is known to share only the frames found
/// from those (`frames_within_words`): a deeper caller may differ (seen on
/// mini-redis: two callers of one mutex wait); past those the repeat is
/// cut short, not completed from the copy.
struct Remembered {
    frames: Frames,
    complete: bool,
    /// The open polls' real return addresses put back from behind the
    /// uprobe trampolines to unwind it (None: none were): the kernel sees
    /// the trampoline, so a repeat is this stack only inside the same polls.
    polls: Option<Vec<u64>>,
}

/// Maps are re-read at most this often for addresses already found in no
/// module after a fresh read (JIT code, garbage from a broken walk)...
const RESCAN_EVERY: Duration = Duration::from_millis(200);
/// ...and at once for one not seen yet (a library the loader mapped after
/// our last read: a launch's first milliseconds), up to this many pages
/// between changes of the maps.
const UNRESOLVED_PAGES: usize = 256;
/// Stack depth is counted in steps of this many bytes, up to --stack-size's
/// largest (32 KiB).
const USED_STEP: u32 = 64;
const USED_STEPS: usize = 32768 / USED_STEP as usize;

/// Tokio's park code in the binary that holds it
/// (`scope_stacks::probe_points::PARK_CODE`): file offset ranges, and the
/// build-id (else the path) its module is known by.
pub struct ParkCode {
    pub path: String,
    pub build_id: Option<String>,
    pub ranges: Vec<Range<u64>>,
}

impl ParkCode {
    fn holds(&self, module: &Module, offset: u64) -> bool {
        // The offsets first: most frames are elsewhere, and cheaper to tell.
        self.ranges.iter().any(|r| r.contains(&offset))
            && match (&self.build_id, &module.build_id) {
                (Some(a), Some(b)) => a == b,
                _ => module.path == self.path,
            }
    }
}

pub struct StackCollector {
    pid: u32,
    unwinder: StackUnwinder,
    modules: Vec<Module>,
    last_rescan: Instant,
    /// Pages (avma >> 12) of addresses in no module after the last read
    /// of the maps.
    unresolved: HashSet<u64>,
    pub warnings: Vec<String>,
    pub stacks: u64,
    pub complete: u64,
    /// Stack bytes the kernel copied to us, for the bandwidth report.
    pub bytes_copied: u64,
    /// How many complete walks needed each 64-byte step of stack, to report
    /// the depth users need: counts, not one entry per stack, so a
    /// recording of hours (`watch`) does not grow with it.
    bytes_used: Vec<u64>,
    pending: Vec<Event>,
    /// Indexes of the modules mapped now (all of `modules` until an exec
    /// replaced the image; frames keep their old indexes).
    live: Vec<u32>,
    /// Per thread, the real return addresses of its open polls (innermost
    /// last): each is hidden on the stack behind the uretprobe trampoline.
    open_polls: Map<u32, Vec<u64>>,
    uprobes: Option<Range<u64>>,
    /// Per thread and remembered wait (the kernel keeps four a thread), the
    /// stack last copied for it: the kernel says "same as that one"
    /// instead of copying a wait again.
    last_blocked: Map<(u32, u8), Remembered>,
    /// Blocked switch-outs that repeated a remembered wait's stack, and
    /// how many of those are cut short (see [`Remembered`]).
    pub repeats: u64,
    pub repeats_cut: u64,
    /// Where to say which words of a remembered wait its unwinding read.
    pub masks: Option<crate::wait_masks::WaitMasks>,
    /// Where workers park, and where to say each one's own loop id.
    pub parks: Option<(ParkCode, crate::worker_loops::WorkerLoops)>,
    /// Each worker's own loop id, as told to the kernel.
    loops: Map<u32, u64>,
    /// Repeats copied anyway (`RUNTIME_SCOPE_CHECK_REPEATS`), and how many
    /// of those unwound to other frames than the wait they repeated.
    checked: u64,
    check_differed: u64,
    /// The first difference, described.
    check_example: Option<String>,
}

impl StackCollector {
    pub fn new(pid: u32, modules: &[Module]) -> Self {
        let mut collector = StackCollector {
            pid,
            unwinder: StackUnwinder::default(),
            modules: Vec::new(),
            last_rescan: Instant::now(),
            unresolved: HashSet::new(),
            warnings: Vec::new(),
            stacks: 0,
            complete: 0,
            bytes_used: vec![0; USED_STEPS],
            bytes_copied: 0,
            pending: Vec::new(),
            live: Vec::new(),
            open_polls: Map::default(),
            last_blocked: Map::default(),
            masks: None,
            parks: None,
            loops: Map::default(),
            repeats: 0,
            repeats_cut: 0,
            uprobes: None,
            checked: 0,
            check_differed: 0,
            check_example: None,
        };
        for m in modules {
            collector.add(m.clone());
        }
        collector
    }

    fn add(&mut self, module: Module) -> u32 {
        let index = self.modules.len() as u32;
        // Unwind tables from the image that runs, not the file at its path now.
        let live = match images::live_path(&module) {
            Some(path) => Module { path: path.display().to_string(), ..module.clone() },
            None => module.clone(),
        };
        if let Err(e) = self.unwinder.add_module(index, &live) {
            self.warn(format!("cannot unwind through {} ({e})", module.path));
        }
        self.modules.push(module);
        self.live.push(index);
        index
    }

    /// Each warning once: the maps are re-read many times.
    fn warn(&mut self, warning: String) {
        if !self.warnings.contains(&warning) {
            self.warnings.push(warning);
        }
    }

    pub fn poll_started(&mut self, tid: u32, ret_addr: u64) {
        self.open_polls.entry(tid).or_default().push(ret_addr);
    }

    /// The poll probes are gone: no open poll will see its return.
    pub fn forget_polls(&mut self) {
        self.open_polls.clear();
    }

    pub fn poll_ended(&mut self, tid: u32) {
        if let Some(open) = self.open_polls.get_mut(&tid) {
            open.pop();
        }
    }

    /// `stack` with the return addresses uretprobes replaced put back: the
    /// slots holding a trampoline address, lowest (innermost) first, get the
    /// thread's open polls' return addresses, innermost first. None when
    /// there is nothing to put back (no open poll): most stacks are then
    /// unwound where the ring buffer holds them, not copied.
    fn restore_return_addresses(&mut self, tid: u32, stack: &[u8]) -> Option<Vec<u8>> {
        let open = self.open_polls.get(&tid).filter(|o| !o.is_empty())?;
        if self.uprobes.is_none() {
            self.uprobes = modules::uprobes_area(self.pid);
        }
        let area = self.uprobes.clone()?;
        let mut stack = stack.to_vec();
        let mut next = open.iter().rev();
        for slot in stack.chunks_exact_mut(8) {
            let value = u64::from_le_bytes(slot.try_into().expect("8 bytes"));
            if area.contains(&value) {
                match next.next() {
                    Some(real) => slot.copy_from_slice(&real.to_le_bytes()),
                    None => break,
                }
            }
        }
        Some(stack)
    }

    /// Re-reads the maps: new modules are added (events for the capture),
    /// modules no longer mapped are dropped, so an address where a
    /// library was unmapped and another mapped is never named from the old.
    fn rescan(&mut self, ts: u64) -> Vec<Event> {
        self.last_rescan = Instant::now();
        let mut events = Vec::new();
        let mut warnings = Vec::new();
        let found = modules::read(self.pid, &mut warnings);
        for warning in warnings {
            self.warn(warning);
        }
        let same = |a: &Module, b: &Module| a.start_avma == b.start_avma && a.path == b.path;
        // An empty read is a process that has exited: its stacks still in
        // the ring need the modules it had.
        if !found.is_empty() {
            let (kept, gone): (Vec<u32>, Vec<u32>) =
                self.live.iter().partition(|&&i| found.iter().any(|m| same(m, &self.modules[i as usize])));
            if !gone.is_empty() {
                for index in gone {
                    self.unwinder.remove_module(index);
                }
                self.live = kept;
                self.unresolved.clear();
            }
        }
        for module in found {
            if !self.live.iter().any(|&i| same(&self.modules[i as usize], &module)) {
                let index = self.add(module.clone());
                events.push(Event::NewModule { ts, index, module: Box::new(module) });
                self.unresolved.clear();
            }
        }
        events
    }

    /// Whether an address in no known module is worth a new read of the
    /// maps now (see [`RESCAN_EVERY`]).
    fn worth_rescan(&self, avma: u64) -> bool {
        self.last_rescan.elapsed() >= RESCAN_EVERY || (self.unresolved.len() < UNRESOLVED_PAGES && !self.unresolved.contains(&(avma >> 12)))
    }

    /// The process executed a new program: its old mappings are gone. The
    /// new image's modules get new indexes (events for the capture).
    pub fn exec(&mut self, ts: u64) -> Vec<Event> {
        self.unwinder = StackUnwinder::default();
        self.live.clear();
        self.unresolved.clear();
        self.open_polls.clear();
        self.uprobes = None;
        // The old image's workers are gone, and the new one numbers its
        // tasks from 1 again: no id may pass for a park. Its park code is
        // not looked for (every park is checked, as without symbols).
        if let Some((_, mut loops)) = self.parks.take() {
            for &tid in self.loops.keys() {
                loops.publish(tid, 0);
            }
        }
        self.loops.clear();
        self.rescan(ts)
    }

    /// (module, file offset) of a code address; re-reads the maps once if
    /// it is in none of the known modules.
    pub fn frame_of(&mut self, avma: u64) -> Frame {
        if let Some(f) = self.unwinder.normalise(avma) {
            return f;
        }
        if self.worth_rescan(avma) {
            let found = self.rescan(0);
            self.pending.extend(found);
        }
        self.unwinder.normalise(avma).unwrap_or_else(|| {
            self.unresolved.insert(avma >> 12);
            Frame { module: Frame::NO_MODULE, offset: avma }
        })
    }

    /// Module events found outside `process` (to be written with the next batch).
    pub fn take_pending(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.pending)
    }

    /// Stack bytes that 95% of complete walks needed (to 64 bytes).
    pub fn p95_bytes(&self) -> Option<u32> {
        let total: u64 = self.bytes_used.iter().sum();
        let mut seen = 0;
        for (step, n) in self.bytes_used.iter().enumerate() {
            seen += n;
            if total > 0 && seen * 100 >= total * 95 {
                return Some((step as u32 + 1) * USED_STEP);
            }
        }
        None
    }

    fn count_used(&mut self, bytes: usize) {
        let step = bytes.div_ceil(USED_STEP as usize).saturating_sub(1).min(USED_STEPS - 1);
        self.bytes_used[step] += 1;
    }

    /// The remembered wait a repeat on `tid` names, if its frames hold
    /// there: a stack unwound inside other polls (their return addresses
    /// put back from behind the trampolines) gives the repeat none.
    /// (Over the two maps, not `self`: the caller counts while it holds it.)
    fn repeated<'a>(last_blocked: &'a Map<(u32, u8), Remembered>, open_polls: &Map<u32, Vec<u64>>, tid: u32, way: Option<u8>) -> Option<&'a Remembered> {
        let known = last_blocked.get(&(tid, way?))?;
        match &known.polls {
            Some(polls) if open_polls.get(&tid) != Some(polls) => None,
            _ => Some(known),
        }
    }

    /// A repeat copied anyway: what it unwinds to, against the frames the
    /// repeat was given.
    fn check_repeat(&mut self, raw: &RawStack<'_>) {
        let restored = self.restore_return_addresses(raw.tid, raw.bytes);
        let unwound = self.unwinder.unwind(raw.ip, raw.sp, raw.bp, restored.as_deref().unwrap_or(raw.bytes));
        let Some(known) = Self::repeated(&self.last_blocked, &self.open_polls, raw.tid, raw.way) else { return };
        let way = raw.way.unwrap_or_default();
        self.checked += 1;
        let same = unwound.frames.get(..known.frames.len()) == Some(&known.frames[..])
            && (!known.complete || (unwound.complete && unwound.frames.len() == known.frames.len()));
        if !same {
            self.check_differed += 1;
            if self.check_example.is_none() {
                let at = known.frames.iter().zip(&unwound.frames).position(|(a, b)| a != b);
                self.check_example = Some(format!(
                    "tid {} way {way}: remembered {} frames (complete {}), copy {} frames (complete {}), first different frame {at:?}: {:?} vs {:?}",
                    raw.tid,
                    known.frames.len(),
                    known.complete,
                    unwound.frames.len(),
                    unwound.complete,
                    at.map(|i| known.frames[i]),
                    at.map(|i| unwound.frames[i])
                ));
            }
        }
    }

    /// The end-of-run line of a check of the repeats, if one was made.
    pub fn check_summary(&self) -> Option<String> {
        (self.checked > 0).then(|| {
            format!(
                "repeat check: {} repeated waits copied anyway, {} of them unwound to other frames than the wait they repeated{}",
                self.checked,
                self.check_differed,
                self.check_example.as_ref().map_or(String::new(), |e| format!(" (the first: {e})"))
            )
        })
    }

    /// A blocked stack through Tokio's park code was taken with the worker's
    /// own loop id set: that id, told to the kernel, spares the worker's
    /// later parks the stack check (and the capture says so).
    fn learn_loop(&mut self, raw: &RawStack<'_>, frames: &[Frame], out: &mut Vec<Event>) {
        let Some((code, loops)) = self.parks.as_mut() else { return };
        if raw.task_id == 0 || self.loops.get(&raw.tid) == Some(&raw.task_id) {
            return;
        }
        let parked = frames.iter().any(|f| self.modules.get(f.module as usize).is_some_and(|m| code.holds(m, f.offset)));
        if parked {
            self.loops.insert(raw.tid, raw.task_id);
            loops.publish(raw.tid, raw.task_id);
            out.push(Event::WorkerLoop { ts: raw.ts, tid: raw.tid, id: raw.task_id });
        }
    }

    /// Workers whose own loop id the kernel was told.
    pub fn loops_learned(&self) -> usize {
        self.loops.len()
    }

    /// The stack's event, after any modules found for it, onto `out`.
    pub fn process(&mut self, raw: &RawStack<'_>, out: &mut Vec<Event>) {
        if raw.check {
            self.check_repeat(raw);
            return;
        }
        if raw.same_as_last {
            // The busy path (most waits of a server): no allocation.
            let Some(known) = Self::repeated(&self.last_blocked, &self.open_polls, raw.tid, raw.way) else { return };
            let (frames, complete) = (known.frames.clone(), known.complete);
            self.repeats += 1;
            self.repeats_cut += u64::from(!complete);
            // The id is often located after the worker's first parks were
            // copied: its repeats teach the loop id as well.
            self.learn_loop(raw, &frames, out);
            out.push(Event::Stack { ts: raw.ts, cpu: raw.cpu, tid: raw.tid, reason: raw.reason, frames, complete });
            return;
        }
        let restored = self.restore_return_addresses(raw.tid, raw.bytes);
        let bytes = restored.as_deref().unwrap_or(raw.bytes);
        let mut unwound = self.unwinder.unwind(raw.ip, raw.sp, raw.bp, bytes);
        if unwound.first_unknown().is_some_and(|avma| self.worth_rescan(avma)) {
            let found = self.rescan(raw.ts);
            let any = !found.is_empty();
            out.extend(found);
            self.uprobes = modules::uprobes_area(self.pid);
            if any {
                unwound = self.unwinder.unwind(raw.ip, raw.sp, raw.bp, bytes);
            }
            if let Some(still) = unwound.first_unknown() {
                self.unresolved.insert(still >> 12);
            }
        }
        self.stacks += 1;
        self.bytes_copied += raw.bytes.len() as u64;
        self.complete += u64::from(unwound.complete);
        if unwound.complete {
            self.count_used(unwound.bytes_used);
        }
        let frames: Frames = unwound.frames.into();
        if raw.reason == scope_model::StackReason::Blocked {
            self.learn_loop(raw, &frames, out);
        }
        if let (scope_model::StackReason::Blocked, Some(way)) = (raw.reason, raw.way) {
            let polls = restored.as_ref().and_then(|_| self.open_polls.get(&raw.tid).cloned());
            let within = unwound.frames_within_words;
            let remembered = if within >= frames.len() {
                Remembered { frames: frames.clone(), complete: unwound.complete, polls }
            } else {
                Remembered { frames: frames[..within].into(), complete: false, polls }
            };
            self.last_blocked.insert((raw.tid, way), remembered);
            if let Some(masks) = self.masks.as_mut() {
                masks.publish(raw.tid, way, raw.ts, unwound.words_read);
            }
        }
        out.push(Event::Stack {
            ts: raw.ts,
            cpu: raw.cpu,
            tid: raw.tid,
            reason: raw.reason,
            frames,
            complete: unwound.complete,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A library mapped after the collector read the maps (what the loader
    /// does in a launch's first milliseconds) is found by the first address
    /// in it, without waiting for [`RESCAN_EVERY`]; one unmapped since is
    /// forgotten at the next read, never used to name what is there now.
    #[test]
    fn modules_are_found_when_mapped_and_forgotten_when_unmapped() {
        let mut c = StackCollector::new(std::process::id(), &[]);
        let own_code = modules_are_found_when_mapped_and_forgotten_when_unmapped as *const () as u64;
        assert_ne!(c.frame_of(own_code).module, Frame::NO_MODULE, "found at once");
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        let len = 1 << 16;
        // SAFETY: a fresh private read-only mapping of our own binary.
        let at = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_EXEC, libc::MAP_PRIVATE, std::os::fd::AsRawFd::as_raw_fd(&file), 0)
        };
        assert_ne!(at, libc::MAP_FAILED);
        let inside = at as u64 + 0x100;
        let mapped = c.frame_of(inside);
        assert_eq!(mapped.offset, 0x100, "a second mapping of the binary, from file offset 0: {mapped:?}");
        // SAFETY: unmapping what we mapped above.
        assert_eq!(unsafe { libc::munmap(at, len) }, 0);
        assert_eq!(c.frame_of(0x1000).module, Frame::NO_MODULE, "nothing is mapped at the first page");
        assert_eq!(c.frame_of(inside).module, Frame::NO_MODULE, "the unmapped module is forgotten");
        assert_ne!(c.frame_of(own_code).module, Frame::NO_MODULE);
    }

    #[test]
    fn the_depth_users_need_is_counted_in_fixed_memory() {
        let mut c = StackCollector::new(std::process::id(), &[]);
        assert_eq!(c.p95_bytes(), None);
        for i in 0..100_000 {
            c.count_used(if i % 100 < 95 { 1700 } else { 9000 });
        }
        assert_eq!(c.p95_bytes(), Some(1728), "to 64 bytes above 1700");
        c.count_used(1 << 20);
        assert_eq!(c.bytes_used.len(), USED_STEPS, "never grows");
    }
}
