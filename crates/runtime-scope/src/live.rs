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
}

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
        }
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
            Event::PollStart { .. } => self.polls_in_interval += 1,
            Event::Stack { .. } | Event::NewModule { .. } | Event::PollEnd { .. } | Event::TaskSpawn { .. }
            | Event::TaskWake { .. }
            | Event::WorkerRun { .. }
            | Event::Waking { .. } => {}
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
        let mut workers: Vec<u32> = self
            .names
            .iter()
            .filter(|(_, n)| self.rule.is_worker(n))
            .map(|(&t, _)| t)
            .collect();
        workers.sort_unstable();
        // Records from several CPUs arrive slightly out of order: clamp.
        let pct = |tid: &u32| {
            (self.busy_in_interval.get(tid).copied().unwrap_or(0) as f64 * 100.0 / interval as f64).min(100.0)
        };
        let mut line = format!("[{:>5.1}s]", (now_ns - self.start_ns) as f64 / 1e9);
        for (i, tid) in workers.iter().enumerate() {
            let _ = write!(line, " worker {i} {:>3.0}% │", pct(tid));
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
