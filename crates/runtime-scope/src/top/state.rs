//! The model behind `top`: the last few seconds of events, turned into what
//! the screen shows (worker lanes, task table, long polls, status). Pure:
//! fed events, asked for a [`View`] at an instant; tested from fixtures.

use scope_export::insights::long_polls::{Cause, classify, is_leaf};
use scope_export::tasks;
use scope_model::capture::Start;
use scope_model::{Event, Frame, Module, OffReason, Recording, SpanState, StopReason, Symbols, ThreadInfo, ThreadTimeline, Timeline, WorkerRule};
use std::collections::{HashMap, HashSet, VecDeque};

/// What one column of a worker lane was mostly doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cell {
    Busy,
    BlockedInPoll,
    Preempted,
    Idle,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Lane {
    pub name: String,
    pub cells: Vec<Cell>,
    /// The task kind being polled at the end of the window.
    pub running: Option<String>,
    pub busy_pct: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TaskRow {
    pub kind: String,
    pub polls_per_s: f64,
    pub busy_pct: f64,
    pub longest_ms: f64,
    /// Seconds since its last poll ended (0 while running).
    pub last_seen_s: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LongPoll {
    pub end_ns: u64,
    pub ms: f64,
    /// No return probe (`--polls starts`): `ms` is an upper bound.
    pub upper_bound: bool,
    pub cause: Cause,
    pub kind: String,
    pub site: String,
    pub thread: String,
    pub frames: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortBy {
    Busy,
    PollRate,
    Longest,
}

impl SortBy {
    pub fn next(self) -> SortBy {
        match self {
            SortBy::Busy => SortBy::PollRate,
            SortBy::PollRate => SortBy::Longest,
            SortBy::Longest => SortBy::Busy,
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            SortBy::Busy => "busy",
            SortBy::PollRate => "polls/s",
            SortBy::Longest => "longest",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct View {
    pub title: String,
    pub window_s: f64,
    pub lanes: Vec<Lane>,
    pub tasks: Vec<TaskRow>,
    pub long_polls: Vec<LongPoll>,
    pub events_per_s: f64,
    pub lost_events: u64,
    /// The instant the view shows (the end of the window).
    pub now_ns: u64,
}

const LONG_POLLS_KEPT: usize = 50;
/// Beyond this many events the window is cut short: rebuilding the view
/// from millions of events twice a second would take the CPU from the
/// program being watched.
const WINDOW_EVENTS_MAX: usize = 500_000;

pub struct TopState {
    start: Option<Start>,
    threads: HashMap<u32, String>,
    events: VecDeque<Event>,
    window_ns: u64,
    long_poll_ns: u64,
    rule: WorkerRule,
    symbols: Symbols,
    symbolized: HashSet<Frame>,
    modules: Vec<Module>,
    seen_long: HashSet<(u32, u64)>,
    long_polls: VecDeque<LongPoll>,
    lost: crate::live::LostByCpu,
    received: VecDeque<(u64, usize)>,
    /// Poll returns are not probed (`--polls starts`) since some time.
    returns_off: bool,
}

impl TopState {
    pub fn new(window_ns: u64, long_poll_ns: u64, rule: WorkerRule) -> Self {
        TopState {
            start: None,
            threads: HashMap::new(),
            events: VecDeque::new(),
            window_ns,
            long_poll_ns,
            rule,
            symbols: Symbols::default(),
            symbolized: HashSet::new(),
            modules: Vec::new(),
            seen_long: HashSet::new(),
            long_polls: VecDeque::new(),
            lost: crate::live::LostByCpu::default(),
            received: VecDeque::new(),
            returns_off: false,
        }
    }

    pub fn begin(&mut self, start: Start) {
        self.threads = start.threads.iter().map(|t| (t.tid, t.name.clone())).collect();
        self.modules = start.modules.clone();
        self.start = Some(start);
    }

    pub fn feed(&mut self, batch: Vec<Event>) {
        if let Some(last) = batch.last() {
            self.received.push_back((last.ts(), batch.len()));
        }
        for e in batch {
            match &e {
                Event::NewThread { tid, name, .. } | Event::Rename { tid, name, .. } => {
                    self.threads.insert(*tid, name.clone());
                }
                Event::NewModule { index, module, .. } => {
                    let i = *index as usize;
                    if self.modules.len() <= i {
                        self.modules.resize(i + 1, (**module).clone());
                    }
                    self.modules[i] = (**module).clone();
                }
                Event::Switch { cpu, cpu_lost, .. } => self.lost.saw(*cpu, *cpu_lost),
                // Kept past the window: its polls end without returns.
                Event::PollReturnsOff { .. } => self.returns_off = true,
                _ => {}
            }
            self.events.push_back(e);
        }
    }

    /// Drops what fell out of the window ending at `now`.
    fn trim(&mut self, now: u64) {
        let from = now.saturating_sub(self.window_ns);
        while self.events.front().is_some_and(|e| e.ts() < from) || self.events.len() > WINDOW_EVENTS_MAX {
            self.events.pop_front();
        }
        while self.received.front().is_some_and(|r| r.0 < from) {
            self.received.pop_front();
        }
    }

    fn recording(&self, now: u64) -> Option<Recording> {
        let start = self.start.as_ref()?;
        let mut from = now.saturating_sub(self.window_ns).max(start.start_ns);
        if self.events.len() >= WINDOW_EVENTS_MAX {
            // Cut short by the event cap: rates are over what is held.
            from = from.max(self.events.front().map_or(from, Event::ts));
        }
        let mut threads: Vec<ThreadInfo> = self
            .threads
            .iter()
            .map(|(tid, name)| ThreadInfo { tid: *tid, name: name.clone(), cpu_ns_at_start: None, cpu_ns_at_stop: None })
            .collect();
        threads.sort_by_key(|t| t.tid);
        Some(Recording {
            tool_version: start.tool_version.clone(),
            pid: start.pid,
            command: start.command.clone(),
            executable: start.executable.clone(),
            start_ns: from,
            end_ns: now.max(from),
            stop_reason: StopReason::Incomplete,
            modules: self.modules.clone(),
            probes: Vec::new(),
            launch: None,
            lost_events: 0,
            untracked_threads: 0,
            threads,
            events: self
                .returns_off
                .then_some(Event::PollReturnsOff { ts: from })
                .into_iter()
                .chain(self.events.iter().filter(|e| !matches!(e, Event::NewModule { .. })).cloned())
                .collect(),
        })
    }

    /// Names every frame not named yet (poll instances and stack frames).
    fn symbolize_new(&mut self, tl: &Timeline) {
        let fresh: Vec<Frame> = tl.frames().into_iter().filter(|f| self.symbolized.insert(*f)).collect();
        if fresh.is_empty() {
            return;
        }
        let named = scope_stacks::symbolize::symbolize(&self.modules, fresh);
        self.symbols.frames.extend(named.frames);
        self.symbols.kinds.extend(named.kinds);
        for w in named.warnings {
            if !self.symbols.warnings.contains(&w) {
                self.symbols.warnings.push(w);
            }
        }
    }

    /// Uses symbols given by the caller (tests) instead of reading modules.
    #[cfg(test)]
    pub fn set_symbols(&mut self, symbols: Symbols) {
        self.symbolized.extend(symbols.frames.keys().copied());
        self.symbols = symbols;
    }

    pub fn view(&mut self, now: u64, columns: usize, sort: SortBy) -> Option<View> {
        self.trim(now);
        let rec = self.recording(now)?;
        let mut tl = Timeline::build(&rec, &self.rule);
        self.symbolize_new(&tl);
        tasks::classify_threads(&mut tl, &self.symbols);
        let kinds = tasks::kind_names(&tl, &self.symbols);
        self.note_long_polls(&tl, &kinds);
        let window_s = tl.duration_ns().max(1) as f64 / 1e9;
        let lanes = tl.workers().map(|t| lane(&tl, t, &kinds, columns.max(1))).collect();
        let received: usize = self.received.iter().filter(|r| r.0 >= tl.start_ns).map(|r| r.1).sum();
        Some(View {
            title: format!("{} (pid {})", rec.command, rec.pid),
            window_s,
            lanes,
            tasks: task_rows(&tl, &kinds, sort),
            long_polls: self.long_polls.iter().cloned().collect(),
            events_per_s: received as f64 / window_s,
            lost_events: self.lost.total(),
            now_ns: tl.end_ns,
        })
    }

    /// Long polls that ended in this window and were not seen before, newest first.
    fn note_long_polls(&mut self, tl: &Timeline, kinds: &HashMap<Frame, String>) {
        let mut fresh = Vec::new();
        for t in &tl.threads {
            for p in t.polls.iter().filter(|p| p.finished && p.duration_ns() >= self.long_poll_ns && is_leaf(t, p)) {
                if self.seen_long.insert((t.tid, p.start_ns)) {
                    let v = classify(tl, t, p, &self.symbols, kinds);
                    fresh.push(LongPoll {
                        end_ns: p.end_ns,
                        ms: p.duration_ns() as f64 / 1e6,
                        upper_bound: p.bounded,
                        cause: v.cause,
                        kind: v.kind,
                        site: v.site,
                        thread: t.display_name(),
                        frames: v.frames,
                    });
                }
            }
        }
        fresh.sort_by_key(|l| l.end_ns);
        for l in fresh {
            self.long_polls.push_front(l);
        }
        self.long_polls.truncate(LONG_POLLS_KEPT);
    }
}

fn lane(tl: &Timeline, t: &ThreadTimeline, kinds: &HashMap<Frame, String>, columns: usize) -> Lane {
    let span = tl.duration_ns().max(1);
    let leaf: Vec<(u64, u64)> = t.polls.iter().filter(|p| is_leaf(t, p)).map(|p| (p.start_ns, p.end_ns)).collect();
    let in_poll = |ts: u64| {
        let i = leaf.partition_point(|p| p.0 <= ts);
        i > 0 && leaf[i - 1].1 > ts
    };
    let cells = (0..columns)
        .map(|c| {
            let a = tl.start_ns + span * c as u64 / columns as u64;
            let b = tl.start_ns + span * (c as u64 + 1) / columns as u64;
            let mut share = [0u64; 4];
            for s in t.spans_between(a, b) {
                let d = s.end_ns.min(b).saturating_sub(s.start_ns.max(a));
                let i = match s.state {
                    SpanState::OnCpu { .. } => 0,
                    SpanState::OffCpu(OffReason::Blocked { .. }) if in_poll(s.start_ns) => 1,
                    SpanState::OffCpu(OffReason::Preempted | OffReason::Woken) => 2,
                    SpanState::OffCpu(_) => 3,
                };
                share[i] += d;
            }
            // Any real work in a column shows: idle wins only when alone.
            let i = (0..3).max_by_key(|&i| (share[i], std::cmp::Reverse(i))).filter(|&i| share[i] * 10 >= b - a).unwrap_or(3);
            [Cell::Busy, Cell::BlockedInPoll, Cell::Preempted, Cell::Idle][i]
        })
        .collect();
    let running = t.polls.iter().rev().find(|p| !p.finished && is_leaf(t, p)).and_then(|p| kinds.get(&tl.poll_fn(p)).cloned());
    Lane { name: t.display_name(), cells, running, busy_pct: t.on_cpu_ns() as f64 * 100.0 / t.lifetime_ns().max(1) as f64 }
}

fn task_rows(tl: &Timeline, kinds: &HashMap<Frame, String>, sort: SortBy) -> Vec<TaskRow> {
    let window_s = tl.duration_ns().max(1) as f64 / 1e9;
    let mut last_end: HashMap<&str, u64> = HashMap::new();
    for t in &tl.threads {
        for p in t.polls.iter().filter(|p| is_leaf(t, p)) {
            if let Some(k) = kinds.get(&tl.poll_fn(p)) {
                let end = if p.finished { p.end_ns } else { tl.end_ns };
                let e = last_end.entry(k).or_default();
                *e = (*e).max(end);
            }
        }
    }
    let mut rows: Vec<TaskRow> = tasks::totals(tl, kinds)
        .into_iter()
        .filter(|(kind, _)| last_end.contains_key(kind.as_str()))
        .map(|(kind, k)| TaskRow {
            polls_per_s: k.polls as f64 / window_s,
            busy_pct: k.busy_ns as f64 * 100.0 / tl.duration_ns().max(1) as f64,
            longest_ms: k.longest_ns as f64 / 1e6,
            last_seen_s: tl.end_ns.saturating_sub(last_end[kind.as_str()]) as f64 / 1e9,
            kind,
        })
        .collect();
    let key = |r: &TaskRow| match sort {
        SortBy::Busy => r.busy_pct,
        SortBy::PollRate => r.polls_per_s,
        SortBy::Longest => r.longest_ms,
    };
    rows.sort_by(|a, b| key(b).total_cmp(&key(a)).then_with(|| a.kind.cmp(&b.kind)));
    rows
}
