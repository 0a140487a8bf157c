//! The flight recorder's memory: the last seconds of a recording as capture
//! frames, each drained batch encoded once (about 20 bytes an event), and
//! bounded twice: by age and by bytes. Beside them it keeps what turns any
//! suffix of the frames into a capture of its own: the threads alive, their
//! names, the modules, the workers' loop entries and Tokio's task ids as of
//! the oldest frame held (updated as frames fall out).

use scope_model::capture::{CaptureWriter, Start, Stop, encode_events};
use scope_model::{Event, Module, StopReason, ThreadInfo};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, Write};
use std::sync::Arc;

/// Task ids kept for tasks polled before the window (an address per live
/// task; the allocator reuses them): beyond this many, the oldest go.
const MAX_TASK_IDS: usize = 200_000;
/// Rough heap cost of an event kept decoded (the structural ones).
const DECODED_EVENT_BYTES: usize = 96;
const FRAME_OVERHEAD_BYTES: usize = 96;

/// One drained batch.
struct Stored {
    first_ts: u64,
    last_ts: u64,
    framed: Arc<Vec<u8>>,
    events: u64,
    /// The events that change `Base` (threads, names, modules, worker
    /// entries, task ids), kept decoded for when the frame falls out.
    structural: Vec<Event>,
    /// Highest in-band lost-record count per CPU in the batch.
    lost: Vec<(u32, u32)>,
}

impl Stored {
    fn bytes(&self) -> usize {
        self.framed.capacity() + FRAME_OVERHEAD_BYTES + self.structural.len() * DECODED_EVENT_BYTES
    }
}

/// What is known at some instant without the events before it.
#[derive(Clone, Debug, Default)]
struct Base {
    threads: BTreeMap<u32, String>,
    modules: Vec<Module>,
    /// `WorkerRun` / `CurrentThreadRun` of live threads.
    worker_entries: BTreeMap<u32, Event>,
    /// `WorkerLoop` of live threads: a window's parks have no stacks.
    worker_loops: BTreeMap<u32, Event>,
    /// `PollReturnsOff`: a window's polls end where their thread is next
    /// seen outside them, not at returns.
    returns_off: Option<Event>,
    /// Task header → its `TaskId` event, and the order they came in.
    task_ids: HashMap<u64, Event>,
    task_order: VecDeque<u64>,
    lost: HashMap<u32, u32>,
}

fn is_structural(e: &Event) -> bool {
    matches!(
        e,
        Event::NewThread { .. }
            | Event::Exit { .. }
            | Event::Rename { .. }
            | Event::NewModule { .. }
            | Event::WorkerRun { .. }
            | Event::CurrentThreadRun { .. }
            | Event::TaskId { .. }
            | Event::WorkerLoop { .. }
            | Event::PollReturnsOff { .. }
    )
}

impl Base {
    fn apply(&mut self, e: &Event) {
        match e {
            Event::NewThread { tid, name, .. } | Event::Rename { tid, name, .. } => {
                self.threads.insert(*tid, name.clone());
            }
            Event::Exit { tid, .. } => {
                self.threads.remove(tid);
                self.worker_entries.remove(tid);
                self.worker_loops.remove(tid);
            }
            Event::WorkerLoop { tid, .. } => {
                self.worker_loops.insert(*tid, e.clone());
            }
            Event::PollReturnsOff { .. } => self.returns_off = Some(e.clone()),
            Event::NewModule { index, module, .. } => {
                let i = *index as usize;
                if self.modules.len() <= i {
                    self.modules.resize(i + 1, (**module).clone());
                }
                self.modules[i] = (**module).clone();
            }
            Event::WorkerRun { tid, .. } | Event::CurrentThreadRun { tid, .. } => {
                self.worker_entries.insert(*tid, e.clone());
            }
            Event::TaskId { task, .. } => {
                if self.task_ids.insert(*task, e.clone()).is_none() {
                    self.task_order.push_back(*task);
                }
                while self.task_ids.len() > MAX_TASK_IDS {
                    match self.task_order.pop_front() {
                        Some(old) => {
                            self.task_ids.remove(&old);
                        }
                        None => break,
                    }
                }
            }
            _ => {}
        }
    }

    fn fall_out(&mut self, s: &Stored) {
        for e in &s.structural {
            self.apply(e);
        }
        for &(cpu, lost) in &s.lost {
            let l = self.lost.entry(cpu).or_default();
            *l = (*l).max(lost);
        }
    }
}

/// A capture cut out of the ring: ready to be written, cheap to make (the
/// frames are shared, not copied).
pub struct Window {
    pub start: Start,
    /// Worker entries and task ids from before the window, at its start.
    pub prefix: Vec<Event>,
    frames: Vec<(Arc<Vec<u8>>, u64)>,
    pub stop: Stop,
}

impl Window {
    pub fn events(&self) -> u64 {
        self.prefix.len() as u64 + self.frames.iter().map(|f| f.1).sum::<u64>()
    }

    /// Writes it as a capture; returns the writer's output.
    pub fn write<W: Write>(&self, out: W) -> io::Result<W> {
        let mut writer = CaptureWriter::new(out, &self.start)?;
        writer.events(&self.prefix)?;
        for (framed, count) in &self.frames {
            writer.encoded_events(framed, *count)?;
        }
        writer.finish(&self.stop)
    }
}

pub struct Ring {
    retain_ns: u64,
    max_bytes: usize,
    frames: VecDeque<Stored>,
    bytes: usize,
    base: Base,
    /// Per CPU, the highest lost-record count seen so far.
    lost_head: HashMap<u32, u32>,
    /// Set when the byte bound pushed out frames younger than `retain_ns`:
    /// the newest instant it cut.
    pub cut_by_size: Option<u64>,
}

impl Ring {
    /// Keeps `retain_ns` of frames, and at most about `max_bytes`.
    pub fn new(start: &Start, retain_ns: u64, max_bytes: usize) -> Ring {
        let base = Base {
            threads: start.threads.iter().map(|t| (t.tid, t.name.clone())).collect(),
            modules: start.modules.clone(),
            ..Base::default()
        };
        Ring { retain_ns, max_bytes, frames: VecDeque::new(), bytes: 0, base, lost_head: HashMap::new(), cut_by_size: None }
    }

    /// Memory the frames take now (encoded bytes and what is kept beside them).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The time the frames held span.
    pub fn span_ns(&self) -> u64 {
        match (self.frames.front(), self.frames.back()) {
            (Some(a), Some(b)) => b.last_ts.saturating_sub(a.first_ts),
            _ => 0,
        }
    }

    pub fn push(&mut self, batch: &[Event]) -> io::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut lost: Vec<(u32, u32)> = Vec::new();
        for e in batch {
            if let Event::Switch { cpu, cpu_lost, .. } = e {
                match lost.iter_mut().find(|l| l.0 == *cpu) {
                    Some(l) => l.1 = l.1.max(*cpu_lost),
                    None => lost.push((*cpu, *cpu_lost)),
                }
            }
        }
        for &(cpu, n) in &lost {
            let l = self.lost_head.entry(cpu).or_default();
            *l = (*l).max(n);
        }
        let stored = Stored {
            first_ts: first_ts(batch),
            last_ts: batch.iter().map(Event::ts).max().unwrap_or(0),
            framed: Arc::new(encode_events(batch)?),
            events: batch.len() as u64,
            structural: batch.iter().filter(|e| is_structural(e)).cloned().collect(),
            lost,
        };
        self.bytes += stored.bytes();
        self.frames.push_back(stored);
        Ok(())
    }

    fn pop(&mut self) {
        if let Some(s) = self.frames.pop_front() {
            self.bytes -= s.bytes();
            self.base.fall_out(&s);
        }
    }

    /// Lets go of frames older than `now - retain`, and of what a pending
    /// snapshot does not need (`hold_from`: the earliest instant it wants);
    /// then of the oldest while over the byte bound, whatever their age.
    pub fn evict(&mut self, now: u64, hold_from: Option<u64>) {
        let limit = now.saturating_sub(self.retain_ns).min(hold_from.unwrap_or(u64::MAX));
        // The newest frame wholly before the limit stays: it holds the
        // events up to the limit itself.
        while self.frames.get(1).is_some_and(|f| f.last_ts < limit) {
            self.pop();
        }
        while self.bytes > self.max_bytes && self.frames.len() > 1 {
            let cut = self.frames.front().map_or(0, |f| f.last_ts);
            self.cut_by_size = Some(self.cut_by_size.map_or(cut, |c| c.max(cut)));
            self.pop();
        }
    }

    /// The frames from the first whose events reach `from` to the newest,
    /// as a capture with `start`'s identity (None when nothing is held).
    pub fn window(&self, start: &Start, from: u64) -> Option<Window> {
        let mut base = self.base.clone();
        let mut frames = Vec::new();
        let (mut first, mut last) = (u64::MAX, 0);
        // From the newest frame that ends before `from`: the window then
        // reaches back to `from` itself, not to the next drain after it.
        let skip = self.frames.iter().position(|s| s.last_ts >= from)?.saturating_sub(1);
        for (i, s) in self.frames.iter().enumerate() {
            if i < skip {
                base.fall_out(s);
                continue;
            }
            first = first.min(s.first_ts);
            last = last.max(s.last_ts);
            frames.push((Arc::clone(&s.framed), s.events));
        }
        if frames.is_empty() {
            return None;
        }
        let mut prefix: Vec<Event> =
            base.worker_entries.values().chain(base.worker_loops.values()).chain(&base.returns_off).cloned().collect();
        prefix.extend(base.task_order.iter().filter_map(|t| base.task_ids.get(t)).cloned());
        for e in &mut prefix {
            set_ts(e, first);
        }
        let lost_events = self.lost_head.iter().map(|(cpu, &n)| u64::from(n.saturating_sub(base.lost.get(cpu).copied().unwrap_or(0)))).sum();
        let start = Start {
            start_ns: first,
            threads: base.threads.iter().map(|(&tid, name)| ThreadInfo { tid, name: name.clone(), cpu_ns_at_start: None, cpu_ns_at_stop: None }).collect(),
            modules: base.modules,
            launch: start.launch.as_ref().map(|l| scope_model::Launch { exit_status: None, ..l.clone() }),
            ..start.clone()
        };
        let stop = Stop { end_ns: last, stop_reason: StopReason::Snapshot, lost_events, untracked_threads: 0, cpu_ns_at_stop: Vec::new(), exit_status: None };
        Some(Window { start, prefix, frames, stop })
    }
}

/// Where a batch begins in time. Two kinds of events carry older times and
/// must not stretch a window back: task ids read from CONTEXT copies taken
/// before Tokio's id was located (stamped when taken, sent when located),
/// and modules found by a map rescan (stamped 0).
fn first_ts(batch: &[Event]) -> u64 {
    let timed = batch.iter().filter(|e| !matches!(e, Event::TaskAt { .. } | Event::NewModule { .. }));
    timed.map(Event::ts).min().unwrap_or_else(|| batch.iter().map(Event::ts).max().unwrap_or(0))
}

/// Carried-over events are stated at the window's start (they held then).
fn set_ts(e: &mut Event, at: u64) {
    match e {
        Event::WorkerRun { ts, .. }
        | Event::CurrentThreadRun { ts, .. }
        | Event::TaskId { ts, .. }
        | Event::WorkerLoop { ts, .. }
        | Event::PollReturnsOff { ts } => *ts = at,
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scope_model::capture;

    const MS: u64 = 1_000_000;

    fn start() -> Start {
        Start {
            tool_version: "t".into(),
            clock: capture::CLOCK_MONOTONIC.into(),
            pid: 10,
            command: "app".into(),
            executable: "/bin/app".into(),
            start_ns: 0,
            threads: vec![ThreadInfo { tid: 10, name: "main".into(), cpu_ns_at_start: Some(5), cpu_ns_at_stop: None }],
            modules: vec![Module { path: "/bin/app".into(), start_avma: 0x1000, end_avma: 0x2000, file_offset: 0, build_id: None }],
            probes: vec!["p".into()],
            launch: None,
        }
    }

    fn switch(ts: u64, tid: u32, lost: u32) -> Event {
        Event::Switch { ts, cpu: 0, prev_tid: tid, next_tid: 0, prev_state: 1, prev_ours: true, next_ours: false, cpu_lost: lost }
    }

    #[test]
    fn a_window_is_a_capture_that_knows_what_came_before_it() {
        let mut ring = Ring::new(&start(), 1000 * MS, 1 << 30);
        let module = Module { path: "/lib/late.so".into(), start_avma: 0x9000, end_avma: 0xa000, file_offset: 0, build_id: None };
        ring.push(&[
            Event::NewThread { ts: 10 * MS, tid: 11, parent_tid: 10, name: "tokio-rt-worker".into() },
            Event::WorkerRun { ts: 11 * MS, tid: 11, index: 0, runtime: 7 },
            Event::NewModule { ts: 12 * MS, index: 1, module: Box::new(module.clone()) },
            Event::TaskId { ts: 13 * MS, tid: 11, task: 0xa0, id: 5 },
            switch(14 * MS, 11, 2),
        ])
        .unwrap();
        ring.push(&[Event::Rename { ts: 20 * MS, tid: 11, name: "api-worker".into() }, Event::Exit { ts: 21 * MS, tid: 10 }]).unwrap();
        let later = [switch(30 * MS, 11, 5), Event::PollStart { ts: 31 * MS, tid: 11, task: 0xa0, poll_fn: scope_model::Frame { module: 1, offset: 4 } }];
        ring.push(&later).unwrap();
        let last = [switch(40 * MS, 11, 6)];
        ring.push(&last).unwrap();
        // The window from 35 ms starts with the batch before (up to 31 ms):
        // the first two batches are left out.
        let w = ring.window(&start(), 35 * MS).unwrap();
        let mut bytes = Vec::new();
        w.write(&mut bytes).unwrap();
        let loaded = capture::read(&bytes).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let rec = loaded.recording;
        assert_eq!((rec.start_ns, rec.end_ns, rec.stop_reason), (30 * MS, 40 * MS, StopReason::Snapshot));
        assert_eq!(rec.threads.iter().map(|t| (t.tid, t.name.as_str())).collect::<Vec<_>>(), vec![(11, "api-worker")], "main exited before");
        assert_eq!(rec.modules, vec![start().modules[0].clone(), module], "the late module's index still resolves");
        assert_eq!(
            rec.events[..2],
            [Event::WorkerRun { ts: 30 * MS, tid: 11, index: 0, runtime: 7 }, Event::TaskId { ts: 30 * MS, tid: 11, task: 0xa0, id: 5 }],
            "worker entry and task id carried to the start"
        );
        assert_eq!(rec.events[2..4], later);
        assert_eq!(rec.events[4..], last);
        assert_eq!(rec.lost_events, 4, "records lost inside the window only");
        let whole = ring.window(&start(), 0).unwrap();
        assert_eq!(whole.start.threads.len(), 1);
        assert_eq!(whole.events(), 10);
    }

    #[test]
    fn bounded_by_age_and_by_bytes_whatever_the_rate() {
        let mut ring = Ring::new(&start(), 100 * MS, 1 << 30);
        for i in 0..50u64 {
            ring.push(&[switch(i * 10 * MS, 10, 0), switch(i * 10 * MS + 5 * MS, 10, 0)]).unwrap();
            ring.evict(i * 10 * MS + 5 * MS, None);
        }
        assert!(ring.span_ns() <= 120 * MS, "{}", ring.span_ns());
        // A pending snapshot holds older frames…
        ring.evict(600 * MS, Some(450 * MS));
        assert!(ring.window(&start(), 450 * MS).unwrap().start.start_ns <= 450 * MS);
        // …but never past the byte bound.
        let mut small = Ring::new(&start(), 10_000 * MS, 4096);
        let mut peak = 0;
        for i in 0..10_000u64 {
            small.push(&vec![switch(i * MS, 10, 0); 20]).unwrap();
            small.evict(i * MS, Some(0));
            peak = peak.max(small.bytes());
        }
        assert!(peak <= 4096 + 2048, "{peak}");
        assert!(small.cut_by_size.is_some_and(|c| c > 9_000 * MS), "says the size bound cut it");
    }

    #[test]
    fn late_stamps_do_not_stretch_a_window_back() {
        let mut ring = Ring::new(&start(), 1000 * MS, 1 << 30);
        ring.push(&[switch(10 * MS, 10, 0)]).unwrap();
        let module = Module { path: "/lib/x.so".into(), start_avma: 1, end_avma: 2, file_offset: 0, build_id: None };
        ring.push(&[Event::TaskAt { ts: MS, tid: 10, id: 3 }, Event::NewModule { ts: 0, index: 1, module: Box::new(module) }, switch(50 * MS, 10, 0)]).unwrap();
        ring.push(&[switch(90 * MS, 10, 0)]).unwrap();
        assert_eq!(ring.window(&start(), 80 * MS).unwrap().start.start_ns, 50 * MS);
    }

    /// A worker's loop id, learned once, still names its parks (which carry
    /// no stack) in a window that begins long after; an exited worker's not.
    #[test]
    fn worker_loop_ids_learned_before_a_window_are_carried_into_it() {
        let mut ring = Ring::new(&start(), 1000 * MS, 1 << 30);
        ring.push(&[Event::WorkerLoop { ts: 5 * MS, tid: 10, id: 1 }, Event::WorkerLoop { ts: 5 * MS, tid: 11, id: 2 }, switch(10 * MS, 10, 0)]).unwrap();
        ring.push(&[Event::Exit { ts: 20 * MS, tid: 11 }, switch(20 * MS, 10, 0)]).unwrap();
        ring.push(&[switch(500 * MS, 10, 0)]).unwrap();
        ring.push(&[switch(900 * MS, 10, 0)]).unwrap();
        let window = ring.window(&start(), 800 * MS).unwrap();
        let loops: Vec<&Event> = window.prefix.iter().filter(|e| matches!(e, Event::WorkerLoop { .. })).collect();
        assert_eq!(loops, vec![&Event::WorkerLoop { ts: window.start.start_ns, tid: 10, id: 1 }]);
    }

    /// Without returns (`--polls starts`) a window's polls end by inference:
    /// the switch to that must reach a window that begins after it.
    #[test]
    fn poll_returns_off_before_a_window_is_carried_into_it() {
        let mut ring = Ring::new(&start(), 1000 * MS, 1 << 30);
        ring.push(&[Event::PollReturnsOff { ts: 5 * MS }, switch(10 * MS, 10, 0)]).unwrap();
        ring.push(&[switch(500 * MS, 10, 0)]).unwrap();
        ring.push(&[switch(900 * MS, 10, 0)]).unwrap();
        let window = ring.window(&start(), 800 * MS).unwrap();
        assert!(window.prefix.contains(&Event::PollReturnsOff { ts: window.start.start_ns }), "{:?}", window.prefix);
    }

    #[test]
    fn task_ids_before_the_window_are_bounded() {
        let mut base = Base::default();
        for task in 0..(MAX_TASK_IDS as u64 + 10) {
            base.apply(&Event::TaskId { ts: 0, tid: 1, task, id: task + 1 });
        }
        assert_eq!(base.task_ids.len(), MAX_TASK_IDS);
        assert!(!base.task_ids.contains_key(&0) && base.task_ids.contains_key(&(MAX_TASK_IDS as u64 + 9)), "the oldest went");
    }
}
