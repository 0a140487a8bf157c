//! What the user sees while recording: in live mode one line per second with
//! each worker's on-CPU share; otherwise a progress line every 2 s. Never one
//! line per event.

use scope_model::{Event, WorkerRule};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

const LIVE_EVERY_NS: u64 = 1_000_000_000;
const PROGRESS_EVERY_NS: u64 = 2_000_000_000;

pub struct LiveView {
    live: bool,
    rule: WorkerRule,
    names: HashMap<u32, String>,
    start_ns: u64,
    duration_ns: Option<u64>,
    interval_start: u64,
    next_tick: u64,
    /// Threads on a CPU now, since when.
    on_since: HashMap<u32, u64>,
    busy_in_interval: BTreeMap<u32, u64>,
    events_in_interval: u64,
    events_total: u64,
    polls_in_interval: u64,
    /// Highest lost-record count each CPU has reported in-band.
    lost_by_cpu: HashMap<u32, u32>,
    /// Threads seen entering tokio's worker loop: (runtime ordinal, index).
    worker_index: BTreeMap<u32, (u64, u64)>,
    runtimes: Vec<u64>,
    /// Open polls per thread: (start, had a poll nested in it).
    open_polls: HashMap<u32, Vec<(u64, bool)>>,
    long_poll_ns: u64,
    /// Long-poll lines printed in the current second (rate limit).
    long_lines: u32,
    long_suppressed: u32,
}

/// At most this many long-poll lines per second; the rest are counted.
const LONG_LINES_PER_S: u32 = 5;

impl LiveView {
    pub fn new(live: bool, rule: WorkerRule, names: HashMap<u32, String>, start_ns: u64, duration_ns: Option<u64>) -> Self {
        let every = if live { LIVE_EVERY_NS } else { PROGRESS_EVERY_NS };
        LiveView {
            live,
            rule,
            names,
            start_ns,
            duration_ns,
            interval_start: start_ns,
            next_tick: start_ns + every,
            on_since: HashMap::new(),
            busy_in_interval: BTreeMap::new(),
            events_in_interval: 0,
            events_total: 0,
            polls_in_interval: 0,
            lost_by_cpu: HashMap::new(),
            worker_index: BTreeMap::new(),
            runtimes: Vec::new(),
            open_polls: HashMap::new(),
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

    fn thread_label(&self, tid: u32) -> String {
        match self.worker_index.get(&tid) {
            Some((0, index)) if self.runtimes.len() <= 1 => format!("worker {index}"),
            Some((runtime, index)) => format!("runtime {runtime} worker {index}"),
            None => {
                let name = self.names.get(&tid).map_or("?", String::as_str);
                let mut by_name: Vec<u32> = self.names.iter().filter(|(_, n)| self.rule.is_worker(n)).map(|(&t, _)| t).collect();
                by_name.sort_unstable();
                match by_name.iter().position(|&t| t == tid) {
                    Some(i) if self.worker_index.is_empty() => format!("worker {i} (tid {tid})"),
                    _ => format!("{name} (tid {tid})"),
                }
            }
        }
    }

    fn worker_started(&mut self, tid: u32, index: u64, runtime: u64) {
        if !self.runtimes.contains(&runtime) {
            self.runtimes.push(runtime);
        }
        let ordinal = self.runtimes.iter().position(|&r| r == runtime).unwrap_or(0) as u64;
        self.worker_index.insert(tid, (ordinal, index));
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
        println!("{line}");
        Some(line)
    }

    pub fn feed(&mut self, event: &Event) {
        self.events_in_interval += 1;
        self.events_total += 1;
        match event {
            Event::Switch { ts, cpu, prev_tid, next_tid, prev_ours, next_ours, cpu_lost, .. } => {
                let lost = self.lost_by_cpu.entry(*cpu).or_default();
                *lost = (*lost).max(*cpu_lost);
                if *prev_ours {
                    let since = self.on_since.remove(prev_tid).unwrap_or(self.interval_start);
                    *self.busy_in_interval.entry(*prev_tid).or_default() +=
                        ts.saturating_sub(since.max(self.interval_start));
                }
                if *next_ours {
                    self.on_since.insert(*next_tid, *ts);
                }
            }
            Event::NewThread { tid, name, .. } | Event::Rename { tid, name, .. } => {
                self.names.insert(*tid, name.clone());
            }
            Event::Exit { tid, .. } => {
                self.on_since.remove(tid);
            }
            Event::PollStart { ts, tid, .. } => {
                self.polls_in_interval += 1;
                let open = self.open_polls.entry(*tid).or_default();
                if let Some(parent) = open.last_mut() {
                    parent.1 = true;
                }
                open.push((*ts, false));
            }
            Event::PollEnd { ts, tid } => {
                self.poll_ended(*ts, *tid);
            }
            Event::WorkerRun { tid, index, runtime, .. } => self.worker_started(*tid, *index, *runtime),
            Event::CurrentThreadRun { tid, runtime, .. } => self.worker_started(*tid, 0, *runtime),
            Event::Stack { .. }
            | Event::NewModule { .. }
            | Event::TaskSpawn { .. }
            | Event::TaskWake { .. }
            | Event::Waking { .. }
            | Event::TaskId { .. }
            | Event::TaskAt { .. }
            | Event::Probes { .. } => {}
        }
    }

    /// Prints a line when one is due; returns it for tests.
    pub fn tick(&mut self, now_ns: u64) -> Option<String> {
        if now_ns < self.next_tick {
            return None;
        }
        let lost: u64 = self.lost_by_cpu.values().map(|&n| u64::from(n)).sum();
        let line = if self.live { self.activity_line(now_ns, lost) } else { self.progress_line(now_ns, lost) };
        let every = if self.live { LIVE_EVERY_NS } else { PROGRESS_EVERY_NS };
        self.next_tick = now_ns + every;
        self.interval_start = now_ns;
        self.events_in_interval = 0;
        self.polls_in_interval = 0;
        self.busy_in_interval.clear();
        println!("{line}");
        if self.long_suppressed > 0 {
            println!("          … and {} more long polls (see the summary)", self.long_suppressed);
        }
        self.long_lines = 0;
        self.long_suppressed = 0;
        Some(line)
    }

    fn progress_line(&self, now_ns: u64, lost: u64) -> String {
        let total = self.duration_ns.map_or(String::new(), |d| format!("/{}", d / 1_000_000_000));
        format!(
            "recording… {:>4.0}{total} s  {} events  {} lost",
            (now_ns - self.start_ns) as f64 / 1e9,
            self.events_total,
            lost
        )
    }

    fn activity_line(&mut self, now_ns: u64, lost: u64) -> String {
        let interval = (now_ns - self.interval_start).max(1);
        // Close running spans at the tick so a thread pinned on a CPU shows 100%.
        for (tid, since) in self.on_since.iter_mut() {
            *self.busy_in_interval.entry(*tid).or_default() += now_ns.saturating_sub((*since).max(self.interval_start));
            *since = now_ns;
        }
        let mut workers: Vec<u32> = if self.worker_index.is_empty() {
            let mut by_name: Vec<u32> = self.names.iter().filter(|(_, n)| self.rule.is_worker(n)).map(|(&t, _)| t).collect();
            by_name.sort_unstable();
            by_name
        } else {
            self.worker_index.keys().copied().collect()
        };
        workers.sort_by_key(|t| (self.worker_index.get(t).copied(), *t));
        // Records from several CPUs arrive slightly out of order: clamp.
        let pct = |tid: &u32| {
            (self.busy_in_interval.get(tid).copied().unwrap_or(0) as f64 * 100.0 / interval as f64).min(100.0)
        };
        let mut line = format!("[{:>5.1}s]", (now_ns - self.start_ns) as f64 / 1e9);
        for (i, tid) in workers.iter().enumerate() {
            let label = if self.worker_index.is_empty() { format!("worker {i}") } else { self.thread_label(*tid) };
            let _ = write!(line, " {label} {:>3.0}% │", pct(tid));
        }
        let others: f64 = self
            .busy_in_interval
            .keys()
            .filter(|t| !workers.contains(t))
            .map(pct)
            .fold(0.0, |a, b| a + b);
        let per_sec = |n: u64| n * 1_000_000_000 / interval;
        let _ = write!(line, " other threads {others:>3.0}% │ {} events/s │", per_sec(self.events_in_interval));
        if self.polls_in_interval > 0 {
            let _ = write!(line, " {} polls/s │", per_sec(self.polls_in_interval));
        }
        let _ = write!(line, " {lost} lost");
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn switch(ts: u64, prev: u32, next: u32, prev_ours: bool, next_ours: bool) -> Event {
        Event::Switch { ts, cpu: 0, prev_tid: prev, next_tid: next, prev_state: 1, prev_ours, next_ours, cpu_lost: 3 }
    }

    #[test]
    fn prints_leaf_long_polls_as_they_end_rate_limited() {
        let names = HashMap::from([(7, "api".to_string())]);
        let mut view = LiveView::new(true, WorkerRule::default(), names, 0, None).with_long_polls(10_000_000);
        view.feed(&Event::WorkerRun { ts: 1, tid: 7, index: 2, runtime: 0x1000 });
        let start = |ts| Event::PollStart { ts, tid: 7, task: 1, poll_fn: scope_model::Frame { module: 0, offset: 0 } };
        let end = |ts| Event::PollEnd { ts, tid: 7 };
        view.feed(&start(0)); // the worker's own loop: an executor, never reported
        view.feed(&start(100_000_000));
        assert_eq!(view.poll_ended(130_000_000, 7).as_deref(), Some("[  0.1s] long poll 30.0 ms on worker 2"));
        view.feed(&start(200_000_000));
        assert_eq!(view.poll_ended(201_000_000, 7), None, "1 ms is not long");
        for i in 0..10 {
            view.feed(&start(300_000_000 + i * 20_000_000));
            view.feed(&end(315_000_000 + i * 20_000_000));
        }
        assert_eq!((view.long_lines, view.long_suppressed), (5, 6), "five lines a second, the rest counted");
        assert_eq!(view.poll_ended(3_000_000_000, 7), None, "the outer loop poll nested others");
        let line = view.tick(1_000_000_000).unwrap();
        assert!(line.contains("worker 2"), "named by its tokio index: {line}");
    }

    #[test]
    fn reports_worker_share_per_interval() {
        let names = HashMap::from([(7, "tokio-rt-worker".to_string()), (8, "main".to_string())]);
        let mut view = LiveView::new(true, WorkerRule::default(), names, 0, Some(10_000_000_000));
        view.feed(&switch(100_000_000, 0, 7, false, true));
        view.feed(&switch(600_000_000, 7, 8, true, true));
        assert!(view.tick(500_000_000).is_none(), "not due yet");
        let line = view.tick(1_000_000_000).unwrap();
        assert!(line.contains("worker 0  50%"), "{line}");
        assert!(line.contains("other threads  40%"), "{line}");
        assert!(line.contains("3 lost"), "{line}");
        // Thread 8 keeps running through the next interval.
        let line = view.tick(2_000_000_000).unwrap();
        assert!(line.contains("worker 0   0%") && line.contains("other threads 100%"), "{line}");
    }
}
