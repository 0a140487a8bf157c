//! What the user sees while recording: in live mode one line per second with
//! each worker's on-CPU share; otherwise a progress line every 2 s. Never one
//! line per event. All of it on stderr.
//!
//! The shares are the report's own computation: the same span state
//! machine (`scope_model::spans`) fed the same events in time order, the
//! same seconds (from the recording's start), the same rounding and row
//! labels. A second is shown once it is over and the events of it have
//! arrived (they come late and slightly out of order: see `REORDER_NS`).

use scope_model::spans::{self, SpansOf, ThreadSpans};
use scope_model::{Event, Role, StackReason, WorkerRule, WorkerStart, rows_so_far};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

const SECOND_NS: u64 = 1_000_000_000;
const PROGRESS_EVERY_NS: u64 = 2_000_000_000;
/// Events reach us up to a drain period late (100 ms) and out of order
/// across CPUs: a second is computed only this long after it ended.
const REORDER_NS: u64 = 300_000_000;

/// At most this many long-poll lines per second; the rest are counted.
const LONG_LINES_PER_S: u32 = 5;

/// Every thread's spans, live: only what the next second needs is kept.
struct Sched {
    window: (u64, u64),
    threads: BTreeMap<u32, ThreadSpans>,
}

impl SpansOf for Sched {
    fn spans_of(&mut self, tid: u32) -> &mut ThreadSpans {
        let window = self.window;
        self.threads.entry(tid).or_insert_with(|| ThreadSpans::new(window))
    }
}

/// One finished second: (label, busy %) per worker, the other threads'
/// busy % summed, events and polls in it.
#[derive(Debug, PartialEq)]
pub struct Second {
    pub index: u64,
    pub workers: Vec<(String, f64)>,
    pub others: f64,
    pub events: u64,
    pub polls: u64,
}

/// Events the kernel lost, as each CPU's switch records count them (a
/// running count per CPU: the highest seen is that CPU's total). Indexed
/// by CPU, not hashed: it is updated on every switch.
#[derive(Default)]
pub struct LostByCpu(Vec<u32>);

impl LostByCpu {
    pub fn saw(&mut self, cpu: u32, lost: u32) {
        let cpu = cpu as usize;
        if self.0.len() <= cpu {
            self.0.resize(cpu + 1, 0);
        }
        self.0[cpu] = self.0[cpu].max(lost);
    }

    pub fn total(&self) -> u64 {
        self.0.iter().map(|&n| u64::from(n)).sum()
    }
}

pub struct LiveView {
    live: bool,
    rule: WorkerRule,
    /// Known threads: name, created while recording.
    names: BTreeMap<u32, (String, bool)>,
    starts: Vec<WorkerStart>,
    start_ns: u64,
    duration_ns: Option<u64>,
    next_progress: u64,
    sched: Sched,
    /// Scheduling events not yet applied (waiting for stragglers).
    pending: Vec<Event>,
    /// Everything before this is applied.
    applied_to: u64,
    next_second: u64,
    /// (events, polls) by second since the start.
    counts: BTreeMap<u64, (u64, u64)>,
    events_total: u64,
    /// Highest lost-record count each CPU has reported in-band.
    lost: LostByCpu,
    /// Open polls per thread: (start, had a poll nested in it).
    open_polls: crate::fast_map::Map<u32, Vec<(u64, bool)>>,
    /// Poll returns are not probed (`--polls starts`): polls are counted,
    /// not timed.
    unreturned: bool,
    long_poll_ns: u64,
    /// Long-poll lines printed in the current second (rate limit).
    long_lines: u32,
    long_suppressed: u32,
}

impl LiveView {
    pub fn new(live: bool, rule: WorkerRule, names: HashMap<u32, String>, start_ns: u64, duration_ns: Option<u64>) -> Self {
        LiveView {
            live,
            rule,
            names: names.into_iter().map(|(tid, name)| (tid, (name, false))).collect(),
            starts: Vec::new(),
            start_ns,
            duration_ns,
            next_progress: start_ns + PROGRESS_EVERY_NS,
            sched: Sched { window: (start_ns, u64::MAX), threads: BTreeMap::new() },
            pending: Vec::new(),
            applied_to: start_ns,
            next_second: 0,
            counts: BTreeMap::new(),
            events_total: 0,
            lost: LostByCpu::default(),
            open_polls: Default::default(),
            unreturned: false,
            long_poll_ns: u64::MAX,
            long_lines: 0,
            long_suppressed: 0,
        }
    }

    /// Live mode also prints each poll of at least `ns` as it ends.
    pub fn with_long_polls(mut self, ns: u64) -> Self {
        self.long_poll_ns = ns;
        self
    }

    /// (tid, role, label) of every known thread, as the report will label them.
    fn rows(&self) -> Vec<(u32, Role, String)> {
        let threads: Vec<(u32, String, bool)> = self.names.iter().map(|(t, (n, c))| (*t, n.clone(), *c)).collect();
        rows_so_far(&threads, &self.rule, &self.starts)
    }

    fn thread_label(&self, tid: u32) -> String {
        self.rows().into_iter().find(|r| r.0 == tid).map_or(format!("tid {tid}"), |r| r.2)
    }

    /// A leaf poll (nothing polled inside it) that ran long: one line now.
    fn poll_ended(&mut self, ts: u64, tid: u32) -> Option<String> {
        let (start, nested) = self.open_polls.get_mut(&tid)?.pop()?;
        let took = ts.saturating_sub(start);
        if nested || took < self.long_poll_ns || !self.live {
            return None;
        }
        if self.long_lines >= LONG_LINES_PER_S {
            self.long_suppressed += 1;
            return None;
        }
        self.long_lines += 1;
        let line = format!(
            "[{:>5.1}s] long poll {:.1} ms on {}",
            start.saturating_sub(self.start_ns) as f64 / 1e9,
            took as f64 / 1e6,
            self.thread_label(tid)
        );
        say!("{line}");
        Some(line)
    }

    /// What the span state machine needs of an event (a sample's frames
    /// are not kept: only that it caught its thread running).
    fn scheduling_part(event: &Event) -> Option<Event> {
        match event {
            Event::Switch { .. }
            | Event::NewThread { .. }
            | Event::Exit { .. }
            | Event::Waking { .. }
            | Event::PollStart { .. }
            | Event::PollEnd { .. }
            | Event::TaskSpawn { .. }
            | Event::TaskWake { .. } => Some(event.clone()),
            Event::Stack { ts, cpu, tid, reason: StackReason::Sample, .. } => Some(Event::Stack {
                ts: *ts,
                cpu: *cpu,
                tid: *tid,
                reason: StackReason::Sample,
                frames: std::sync::Arc::from([]),
                complete: false,
            }),
            _ => None,
        }
    }

    pub fn feed(&mut self, event: &Event) {
        self.events_total += 1;
        if let Event::Switch { cpu, cpu_lost, .. } = event {
            self.lost.saw(*cpu, *cpu_lost);
        }
        // The progress line needs only the counts above. Spans are applied
        // only when a live line asks for its second: kept without one, they
        // grew with every switch (watch on a busy server: 3 MB/s).
        if !self.live {
            return;
        }
        let second = event.ts().saturating_sub(self.start_ns) / SECOND_NS;
        let count = self.counts.entry(second).or_default();
        count.0 += 1;
        match event {
            Event::NewThread { tid, name, .. } => {
                self.names.insert(*tid, (name.clone(), true));
            }
            Event::Rename { tid, name, .. } => {
                self.names.entry(*tid).or_insert_with(|| (String::new(), false)).0 = name.clone();
            }
            Event::PollReturnsOff { .. } => {
                self.unreturned = true;
                self.open_polls.clear();
            }
            Event::PollStart { .. } if self.unreturned => count.1 += 1,
            Event::PollStart { ts, tid, .. } => {
                count.1 += 1;
                let open = self.open_polls.entry(*tid).or_default();
                if let Some(parent) = open.last_mut() {
                    parent.1 = true;
                }
                open.push((*ts, false));
            }
            Event::PollEnd { ts, tid } => {
                self.poll_ended(*ts, *tid);
            }
            Event::WorkerRun { ts, tid, index, runtime } => {
                self.starts.push(WorkerStart { ts: *ts, tid: *tid, index: *index, runtime: *runtime, current_thread: false });
            }
            Event::CurrentThreadRun { ts, tid, runtime } => {
                self.starts.push(WorkerStart { ts: *ts, tid: *tid, index: 0, runtime: *runtime, current_thread: true });
            }
            _ => {}
        }
        if let Some(part) = Self::scheduling_part(event) {
            self.pending.push(part);
        }
    }

    /// Applies the events old enough that nothing earlier can still come.
    fn apply_until(&mut self, horizon: u64) {
        self.pending.sort_by_key(Event::ts);
        let ready = self.pending.partition_point(|e| e.ts() <= horizon);
        for event in self.pending.drain(..ready) {
            spans::apply(&mut self.sched, &event);
        }
        self.applied_to = self.applied_to.max(horizon);
    }

    /// The seconds that are over and whose events are all in, at `now`.
    pub fn finished_seconds(&mut self, now_ns: u64) -> Vec<Second> {
        self.apply_until(now_ns.saturating_sub(REORDER_NS));
        let mut done = Vec::new();
        loop {
            let from = self.start_ns + self.next_second * SECOND_NS;
            let to = from + SECOND_NS;
            if to > self.applied_to {
                break;
            }
            let busy = |tid: u32| self.sched.threads.get(&tid).map_or(0.0, |t| spans::percent(t.on_cpu_so_far(from, to), SECOND_NS));
            let rows = self.rows();
            let is_worker = |tid: u32| rows.iter().any(|r| r.0 == tid && matches!(r.1, Role::Worker { .. }));
            let workers: Vec<(String, f64)> = rows.iter().filter(|r| is_worker(r.0)).map(|r| (r.2.clone(), busy(r.0))).collect();
            let others = self.sched.threads.keys().filter(|t| !is_worker(**t)).map(|t| busy(*t)).fold(0.0, |a, b| a + b);
            let (events, polls) = self.counts.remove(&self.next_second).unwrap_or_default();
            done.push(Second { index: self.next_second, workers, others, events, polls });
            for t in self.sched.threads.values_mut() {
                t.forget_before(to);
            }
            self.next_second += 1;
        }
        done
    }

    /// Prints what is due; returns it for tests.
    pub fn tick(&mut self, now_ns: u64) -> Vec<String> {
        let lost = self.lost.total();
        let mut lines = Vec::new();
        if self.live {
            for second in self.finished_seconds(now_ns) {
                lines.push(activity_line(&second, lost));
            }
        } else if now_ns >= self.next_progress {
            self.next_progress = now_ns + PROGRESS_EVERY_NS;
            lines.push(self.progress_line(now_ns, lost));
        }
        for line in &lines {
            say!("{line}");
        }
        if self.long_suppressed > 0 && !lines.is_empty() {
            say!("          … and {} more long polls (see the summary)", self.long_suppressed);
        }
        if !lines.is_empty() {
            self.long_lines = 0;
            self.long_suppressed = 0;
        }
        lines
    }

    fn progress_line(&self, now_ns: u64, lost: u64) -> String {
        let total = self.duration_ns.map_or(String::new(), |d| format!("/{}", d / SECOND_NS));
        format!(
            "recording… {:>4.0}{total} s  {} events  {} lost",
            (now_ns - self.start_ns) as f64 / 1e9,
            self.events_total,
            lost
        )
    }
}

/// `[  3.0s] worker 0 (tid 7)  12.5% │ … │ other threads 0.3% │ 812 events/s │ 40 polls/s │ 0 lost`:
/// the second that ended at 3.0 s.
fn activity_line(second: &Second, lost: u64) -> String {
    let mut line = format!("[{:>5.1}s]", (second.index + 1) as f64);
    for (label, pct) in &second.workers {
        let _ = write!(line, " {label} {pct:>5.1}% │");
    }
    let _ = write!(line, " other threads {:>5.1}% │ {} events/s │", second.others, second.events);
    if second.polls > 0 {
        let _ = write!(line, " {} polls/s │", second.polls);
    }
    let _ = write!(line, " {lost} lost");
    line
}

#[cfg(test)]
mod tests;
