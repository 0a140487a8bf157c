//! The flight recorder as a recording sink: every drained batch goes into
//! the ring and past the trigger detector; a candidate that the judge says
//! is a user's task (or needs no judging), outside the cooldown and within
//! --max-snapshots, starts a snapshot, which is cut `--after` seconds later
//! (the aftermath) and handed to the writer thread. The recorder is never
//! held up: judging and writing happen on other threads.

use super::judge::{Judge, Key, Verdict};
use super::ring::{Ring, Window};
use super::triggers::{Candidate, Detector, Noticed, Rule, Sighting, Stretch, Subject, Thresholds};
use scope_model::kinds::WORKER_LOOP;
use crate::sink::Sink;
use scope_model::capture::{Start, Stop};
use scope_model::{Event, Module, WorkerRule};
use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Events are drained every ~100 ms; a record reserved just before a drain
/// can be read just after it. Before `now - WATERMARK_LAG_NS` all are in.
const WATERMARK_LAG_NS: u64 = 20_000_000;
/// Candidates waiting for the judge, at most.
const MAX_AWAITING: usize = 64;
/// A task id whose stacks named nothing is asked about again this often.
const MAX_TRIES: u8 = 3;
/// Verdicts kept, at most (then forgotten and asked again when needed).
const MAX_VERDICTS: usize = 50_000;
/// Questions about recurring ids per thread to find its worker loop's id
/// before giving up (a thread that is not a multi-thread worker has none).
const MAX_SIGHTINGS: u8 = 32;
/// Questions about one recurring id whose stacks named nothing.
const MAX_UNNAMED: u8 = 4;

#[derive(Clone, Debug)]
pub struct Policy {
    pub keep_ns: u64,
    pub after_ns: u64,
    pub cooldown_ns: u64,
    pub max_snapshots: u32,
    pub limits: Thresholds,
    pub ring_bytes: usize,
}

impl Policy {
    /// How long frames stay in the ring: `--keep` before a trigger's start,
    /// which is noticed up to the longest threshold (plus a drain) after it.
    pub fn retain_ns(&self) -> u64 {
        self.keep_ns + self.limits.longest_ns() + 500_000_000
    }
}

/// What fired a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trigger {
    pub number: u32,
    pub candidate: Candidate,
    /// The judge's name for its task, when it has one.
    pub kind: Option<String>,
    /// When the trigger was accepted (CLOCK_MONOTONIC).
    pub at_ns: u64,
}

/// A window cut out for a trigger, for the writer.
pub struct Snapshot {
    pub trigger: Trigger,
    pub window: Window,
    /// Anything the window lacks that was asked for, one line each.
    pub notes: Vec<String>,
}

struct Pending {
    trigger: Trigger,
    due_ns: u64,
    hold_from: u64,
}

/// Counts for the end-of-run line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub snapshots: u32,
    /// Triggers (judged tasks, or needing no judge) that came while a
    /// snapshot was pending or within the cooldown: covered or rate-limited.
    pub held_back: u64,
    /// Candidates over a threshold whose task could not be told (no stack
    /// named it): never triggers.
    pub unattributed: u64,
}

/// Each multi-thread worker runs as a blocking task of its own: outside the
/// polls of user tasks its current task id is that one, always. Once a
/// stack shows a thread's loop id, any other id on that thread is a task
/// being polled, named or not: stacks at a busy server's switch-outs are
/// mostly over the budget, and a stall must not need one to be seen.
#[derive(Default)]
struct Loops {
    of: HashMap<u32, u64>,
    /// Questions out about a thread's stacks: key → thread.
    asking: HashMap<Key, u32>,
    tries: HashMap<u32, u8>,
    /// Answers that named nothing, per id asked about.
    unnamed: HashMap<Key, u8>,
}

pub struct FlightSink<J: Judge> {
    policy: Policy,
    ring: Option<Ring>,
    detector: Detector,
    judge: J,
    verdicts: HashMap<Key, Verdict>,
    tries: HashMap<Key, u8>,
    awaiting: Vec<Candidate>,
    pending: Option<Pending>,
    last_fired: Option<u64>,
    loops: Loops,
    pub tally: Tally,
    manual: Arc<AtomicBool>,
    /// Set once --max-snapshots are taken: recording can stop.
    stop: Box<dyn Fn()>,
    deliver: Box<dyn FnMut(Snapshot)>,
    /// Messages for the user (stderr, or the dashboard's status line).
    say: Box<dyn FnMut(String)>,
    start: Option<Start>,
    modules: Arc<Vec<Module>>,
    said_size: bool,
    /// A launched program's exit status, from the recording's end.
    pub exit_status: Option<i32>,
}

impl<J: Judge> FlightSink<J> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        policy: Policy,
        rule: WorkerRule,
        judge: J,
        manual: Arc<AtomicBool>,
        stop: Box<dyn Fn()>,
        deliver: Box<dyn FnMut(Snapshot)>,
        say: Box<dyn FnMut(String)>,
    ) -> Self {
        FlightSink {
            detector: Detector::new(policy.limits, rule),
            policy,
            ring: None,
            judge,
            verdicts: HashMap::new(),
            tries: HashMap::new(),
            awaiting: Vec::new(),
            pending: None,
            last_fired: None,
            loops: Loops::default(),
            tally: Tally::default(),
            manual,
            stop,
            deliver,
            say,
            start: None,
            modules: Arc::new(Vec::new()),
            said_size: false,
            exit_status: None,
        }
    }

    /// Workers whose own loop id is known: there a stretch needs no stack.
    pub fn loops_known(&self) -> usize {
        self.loops.of.len()
    }

    pub fn ring_bytes(&self) -> usize {
        self.ring.as_ref().map_or(0, Ring::bytes)
    }

    /// One drained batch at `now` (CLOCK_MONOTONIC).
    pub fn batch(&mut self, batch: &[Event], now: u64) -> io::Result<()> {
        let Some(ring) = self.ring.as_mut() else { return Ok(()) };
        ring.push(batch)?;
        if batch.iter().any(|e| matches!(e, Event::NewModule { .. })) {
            let mut modules = (*self.modules).clone();
            for e in batch {
                if let Event::NewModule { index, module, .. } = e {
                    let i = *index as usize;
                    if modules.len() <= i {
                        modules.resize(i + 1, (**module).clone());
                    }
                    modules[i] = (**module).clone();
                }
            }
            self.modules = Arc::new(modules);
        }
        if let Some(Event::Probes { polls: false, .. }) = batch.iter().find(|e| matches!(e, Event::Probes { polls: false, .. })) {
            (self.say)("poll probes are off from now (over --overhead-budget): long polls are seen as stretches blocked inside a task (≥) and as runs of samples with one task id".into());
        }
        let mut noticed = Noticed::default();
        self.detector.feed(batch, &mut noticed);
        self.detector.ongoing(now.saturating_sub(WATERMARK_LAG_NS), &mut noticed);
        for ended in &noticed.ended {
            for c in self.awaiting.iter_mut().filter(|c| c.tid == ended.tid && c.start_ns == ended.start_ns) {
                c.duration_ns = ended.end_ns - ended.start_ns;
                c.ongoing = false;
            }
            if let Some(p) = self.pending.as_mut().filter(|p| p.trigger.candidate.tid == ended.tid && p.trigger.candidate.start_ns == ended.start_ns) {
                // The aftermath is counted from the end of the stall.
                p.due_ns = p.due_ns.max(ended.end_ns + self.policy.after_ns);
                p.trigger.candidate.duration_ns = ended.end_ns - ended.start_ns;
                p.trigger.candidate.ongoing = false;
            }
        }
        if self.manual.swap(false, Ordering::Relaxed) {
            noticed.candidates.push(Candidate {
                rule: Rule::Manual,
                stretch: Stretch::Manual,
                subject: Subject::Thread,
                tid: 0,
                start_ns: now,
                duration_ns: 0,
                ongoing: false,
                evidence: Vec::new(),
            });
        }
        for e in batch {
            match e {
                Event::Exit { tid, .. } => {
                    self.loops.of.remove(tid);
                    self.loops.tries.remove(tid);
                }
                Event::WorkerLoop { tid, id, .. } => {
                    self.loops.of.insert(*tid, *id);
                }
                _ => {}
            }
        }
        for sighting in noticed.sightings {
            self.learn(sighting);
        }
        for c in noticed.candidates {
            self.consider(c, now);
        }
        self.take_answers(now);
        if self.pending.as_ref().is_some_and(|p| now >= p.due_ns) {
            self.cut(now, None);
        }
        let hold = self.pending.as_ref().map(|p| p.hold_from);
        if let Some(ring) = self.ring.as_mut() {
            ring.evict(now, hold);
            if !self.said_size && ring.span_ns() + 500_000_000 >= self.policy.keep_ns {
                self.said_size = true;
                let line = format!(
                    "the ring holds the last {:.1} s in {} (bound: {})",
                    ring.span_ns() as f64 / 1e9,
                    mib(ring.bytes()),
                    mib(self.policy.ring_bytes)
                );
                (self.say)(line);
            }
        }
        Ok(())
    }

    fn blocked_by_policy(&self, c: &Candidate, now: u64) -> bool {
        if self.tally.snapshots >= self.policy.max_snapshots {
            return true;
        }
        if c.rule == Rule::Manual {
            return self.pending.is_some();
        }
        self.pending.is_some() || self.last_fired.is_some_and(|t| now < t + self.policy.cooldown_ns)
    }

    /// Asks what a stack with a task id shows on a thread whose loop id is
    /// not known yet, one question at a time per thread.
    fn learn(&mut self, sighting: Sighting) {
        let Sighting { tid, id, stack } = sighting;
        let key = Key::Id(id);
        match self.verdicts.get(&key).cloned() {
            None => {}
            Some(Verdict::Unknown) if self.loops.unnamed.get(&key).copied().unwrap_or(0) < MAX_UNNAMED => {}
            Some(Verdict::Unknown) => return,
            Some(verdict) => return self.learned(tid, id, &verdict),
        }
        if self.loops.asking.values().any(|&t| t == tid) || self.loops.asking.contains_key(&key) || self.loops.asking.len() >= MAX_AWAITING {
            return;
        }
        let tries = self.loops.tries.entry(tid).or_default();
        *tries += 1;
        if *tries > MAX_SIGHTINGS {
            self.detector.learned(tid);
            return;
        }
        self.loops.asking.insert(key, tid);
        if !self.awaiting.iter().any(|a| Self::key(a) == Some(key)) {
            self.judge.ask(key, stack, &self.modules);
        }
    }

    fn learned(&mut self, tid: u32, id: u64, verdict: &Verdict) {
        if matches!(verdict, Verdict::NotTask(kind) if kind == WORKER_LOOP) {
            self.loops.of.insert(tid, id);
            self.detector.learned(tid);
        }
    }

    /// A task id on a worker whose own loop carries another: a task's poll.
    fn polled_on_worker(&self, c: &Candidate) -> bool {
        matches!(c.subject, Subject::TaskId(id) if self.loops.of.get(&c.tid).is_some_and(|&own| own != id))
    }

    fn key(c: &Candidate) -> Option<Key> {
        match &c.subject {
            Subject::Poll { poll_fn, .. } => Some(Key::PollFn(*poll_fn)),
            Subject::TaskId(id) => Some(Key::Id(*id)),
            Subject::Thread => None,
        }
    }

    fn consider(&mut self, c: Candidate, now: u64) {
        let Some(key) = Self::key(&c) else {
            if self.blocked_by_policy(&c, now) {
                self.tally.held_back += 1;
            } else {
                self.accept(c, None, now);
            }
            return;
        };
        match self.verdicts.get(&key).cloned() {
            Some(Verdict::NotTask(_)) => {}
            Some(Verdict::Task(kind)) => {
                if self.blocked_by_policy(&c, now) {
                    self.tally.held_back += 1;
                } else {
                    self.accept(c, Some(kind), now);
                }
            }
            // Asked and unnamed (or not asked yet): ask, with this stack.
            Some(Verdict::Unknown) | None => {
                if self.blocked_by_policy(&c, now) {
                    return;
                }
                let tries = self.tries.entry(key).or_default();
                let id_without_stack = matches!(key, Key::Id(_)) && c.evidence.is_empty();
                if id_without_stack || *tries >= MAX_TRIES {
                    if self.polled_on_worker(&c) {
                        self.accept(c, None, now);
                    } else {
                        self.tally.unattributed += 1;
                    }
                    return;
                }
                // Bounded: at most MAX_AWAITING questions are ever open.
                if self.awaiting.len() >= MAX_AWAITING {
                    return;
                }
                if !self.awaiting.iter().any(|a| Self::key(a) == Some(key)) && !self.loops.asking.contains_key(&key) {
                    *tries += 1;
                    self.verdicts.remove(&key);
                    self.judge.ask(key, c.evidence.clone(), &self.modules);
                }
                self.awaiting.push(c);
            }
        }
    }

    fn take_answers(&mut self, now: u64) {
        let answers = self.judge.answers();
        if answers.is_empty() {
            return;
        }
        // Task ids are never reused: over hours, verdicts on them pile up.
        if self.verdicts.len() > MAX_VERDICTS {
            self.verdicts.clear();
            self.tries.clear();
            self.loops.unnamed.clear();
        }
        for (key, verdict) in answers {
            if let Key::Id(id) = key {
                let asker = self.loops.asking.remove(&key);
                if asker.is_some() && verdict == Verdict::Unknown {
                    *self.loops.unnamed.entry(key).or_default() += 1;
                }
                // A candidate's stack can show a worker's loop as well as a
                // sighting's: either teaches that worker its loop id.
                let candidates = self.awaiting.iter().filter(|c| Self::key(c) == Some(key)).map(|c| c.tid);
                let tids: Vec<u32> = asker.into_iter().chain(candidates).collect();
                for tid in tids {
                    self.learned(tid, id, &verdict);
                }
            }
            self.verdicts.insert(key, verdict);
        }
        // Candidates too old for the ring to hold their start are dropped.
        let oldest = now.saturating_sub(self.policy.retain_ns());
        let waiting = std::mem::take(&mut self.awaiting);
        for c in waiting {
            let key = Self::key(&c).expect("only judged candidates wait");
            match self.verdicts.get(&key) {
                None => self.awaiting.push(c),
                Some(_) if c.start_ns < oldest => {}
                Some(Verdict::Unknown) if self.polled_on_worker(&c) && !self.blocked_by_policy(&c, now) => self.accept(c, None, now),
                Some(Verdict::Unknown) => self.tally.unattributed += 1,
                Some(_) => self.consider(c, now),
            }
        }
    }

    fn accept(&mut self, c: Candidate, kind: Option<String>, now: u64) {
        let end = if c.ongoing { now } else { c.start_ns + c.duration_ns };
        let due_ns = if c.rule == Rule::Manual { now } else { end + self.policy.after_ns };
        let hold_from = c.start_ns.saturating_sub(self.policy.keep_ns);
        self.tally.snapshots += 1;
        self.last_fired = Some(now);
        let trigger = Trigger { number: self.tally.snapshots, candidate: c, kind, at_ns: now };
        let when = if due_ns > now { format!("; writing snapshot {} in {:.1} s", trigger.number, (due_ns - now) as f64 / 1e9) } else { String::new() };
        (self.say)(format!("trigger: {}{when}", super::incident::headline(&trigger)));
        self.pending = Some(Pending { trigger, due_ns, hold_from });
    }

    /// Cuts the pending snapshot out of the ring and hands it over.
    fn cut(&mut self, now: u64, cut_short: Option<&str>) {
        let Some(p) = self.pending.take() else { return };
        let (Some(ring), Some(start)) = (self.ring.as_ref(), self.start.as_ref()) else { return };
        let Some(window) = ring.window(start, p.hold_from) else { return };
        let mut notes = Vec::new();
        let before = p.trigger.candidate.start_ns.saturating_sub(window.start.start_ns);
        if before + 100_000_000 < self.policy.keep_ns {
            let why = match ring.cut_by_size {
                Some(_) => "the ring reached its byte bound (--ring-size)",
                None => "recording began later",
            };
            notes.push(format!("holds {:.1} s before the trigger, not {:.1} s: {why}", before as f64 / 1e9, self.policy.keep_ns as f64 / 1e9));
        }
        if let Some(why) = cut_short {
            let after = now.saturating_sub(p.trigger.candidate.start_ns + p.trigger.candidate.duration_ns);
            notes.push(format!("{why} {:.1} s after the trigger (--after {:.1})", after as f64 / 1e9, self.policy.after_ns as f64 / 1e9));
        }
        (self.deliver)(Snapshot { trigger: p.trigger, window, notes });
        if self.tally.snapshots >= self.policy.max_snapshots {
            (self.say)(format!("--max-snapshots {} taken: stopping", self.policy.max_snapshots));
            (self.stop)();
        }
    }
}

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

impl<J: Judge> Sink for FlightSink<J> {
    fn begin(&mut self, start: &Start) -> io::Result<()> {
        self.ring = Some(Ring::new(start, self.policy.retain_ns(), self.policy.ring_bytes));
        self.detector.begin(start.threads.iter().map(|t| (t.tid, t.name.as_str())));
        self.modules = Arc::new(start.modules.clone());
        self.start = Some(start.clone());
        Ok(())
    }

    fn events(&mut self, batch: &[Event]) -> io::Result<()> {
        self.batch(batch, crate::process::monotonic_ns())
    }

    fn end(&mut self, stop: &Stop) -> io::Result<()> {
        self.exit_status = stop.exit_status;
        // Its last events are in; the aftermath is as long as it got.
        self.take_answers(stop.end_ns);
        if self.pending.is_some() {
            self.cut(stop.end_ns, Some("recording stopped"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
