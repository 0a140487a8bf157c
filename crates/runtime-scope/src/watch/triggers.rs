//! What fires a flight-recorder snapshot, noticed as events are drained:
//! long polls, stretches blocked inside a poll, waits for a CPU. Pure and
//! incremental: fed each batch in order, it keeps a little state per thread
//! and says which stretches crossed a `--on` threshold, once each, and when
//! one reported while still going has ended.
//!
//! Two tiers (see `tiers`): with exact poll probes a poll's length is known;
//! without them a poll is seen only through Tokio's task id read at a
//! switch-out (`TaskAt`): a thread blocked with a task's id set was inside
//! that task's poll for the whole time it was off the CPU (a lower bound of
//! the poll), and a run of samples all carrying one task id, with no
//! switch-out under another id between, shows a task that kept a worker
//! busy, but not whether in one poll or several back to back. Whether an id
//! or a poll instance is a user's async task (and not Tokio's worker loop or
//! `spawn_blocking` work) takes symbols: candidates carry what a judge
//! needs (see `judge`), they are not yet verdicts.

use scope_model::{Event, Frame, StackReason, ThreadState, WorkerRule};
use std::collections::HashMap;

/// The `--on` conditions with a threshold (None: not asked for).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Thresholds {
    pub long_poll_ns: Option<u64>,
    pub blocked_ns: Option<u64>,
    pub sched_delay_ns: Option<u64>,
}

impl Thresholds {
    /// The longest of them: how far back a trigger may start before it is noticed.
    pub fn longest_ns(&self) -> u64 {
        [self.long_poll_ns, self.blocked_ns, self.sched_delay_ns].into_iter().flatten().max().unwrap_or(0)
    }
}

/// Which `--on` a candidate satisfies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    LongPoll,
    Blocked,
    SchedDelay,
    /// SIGUSR1 or the key in `top`.
    Manual,
}

impl Rule {
    pub fn flag(self) -> &'static str {
        match self {
            Rule::LongPoll => "long-poll",
            Rule::Blocked => "blocked",
            Rule::SchedDelay => "sched-delay",
            Rule::Manual => "signal",
        }
    }
}

/// What a stretch was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stretch {
    /// A probed poll, from its start to its return.
    Poll,
    /// Off the CPU, not runnable, inside a poll.
    Blocked,
    /// Consecutive samples with one task id (a lower bound of it holding the worker).
    Sampled { samples: u32 },
    /// A worker woken (or preempted), until it was back on a CPU.
    WorkerWait { preempted: bool },
    /// A task woken, until its next poll began.
    TaskWait,
    /// Asked for by hand.
    Manual,
}

/// Whose stretch it was, as far as the events say.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A probed poll of the task whose header is `task`; `poll_fn` is the
    /// `raw::poll` instance (its kind).
    Poll { task: u64, poll_fn: Frame },
    /// Tokio's task id read at a switch-out or sample.
    TaskId(u64),
    /// A thread, no task.
    Thread,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub rule: Rule,
    pub stretch: Stretch,
    pub subject: Subject,
    pub tid: u32,
    pub start_ns: u64,
    /// So far, when `ongoing`: a lower bound.
    pub duration_ns: u64,
    pub ongoing: bool,
    /// A stack taken inside the stretch (blocked switch-out, or a sample),
    /// innermost first: what names a task id.
    pub evidence: Vec<Frame>,
}

/// A stretch reported while still going has ended (thread, start, end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ended {
    pub tid: u32,
    pub start_ns: u64,
    pub end_ns: u64,
}

/// A stack taken on a thread while a task id was set: what tells a
/// worker's own loop id (see `Detector::sighted`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sighting {
    pub tid: u32,
    pub id: u64,
    pub stack: Vec<Frame>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Noticed {
    pub candidates: Vec<Candidate>,
    pub ended: Vec<Ended>,
    /// At most one per thread per batch, for threads still being learned.
    pub sightings: Vec<Sighting>,
}

/// Fewer samples in a row name nothing: at 99 Hz, 3 span 20 ms.
const MIN_SAMPLES: u32 = 3;
/// Tasks woken and not polled yet, at most (a task that ends after a wake
/// is never polled again); beyond, the oldest knowledge is dropped.
const MAX_WOKEN_TASKS: usize = 100_000;

struct OpenPoll {
    start: u64,
    task: u64,
    poll_fn: Frame,
    nested: bool,
    reported: bool,
}

struct Off {
    since: u64,
    /// When it was woken: blocked until then, waiting for a CPU after.
    woken: Option<u64>,
    blocked: bool,
    within: Option<Subject>,
    stack: Vec<Frame>,
    reported: bool,
}

struct Run {
    id: u64,
    first: u64,
    last: u64,
    samples: u32,
    stack: Vec<Frame>,
    reported: bool,
}

#[derive(Default)]
struct Thread {
    worker: bool,
    /// Probed polls open on it, innermost last.
    open: Vec<OpenPoll>,
    off: Option<Off>,
    /// Waiting for a CPU since (ts, preempted), reported yet.
    waiting: Option<(u64, bool, bool)>,
    /// The latest task id read on it: (ts, id); belongs to the switch or
    /// sample with the same ts, which the recorder puts right after it.
    mark: Option<(u64, u64)>,
    /// A blocked stack that came before its switch record.
    early_stack: Option<(u64, Vec<Frame>)>,
    run: Option<Run>,
    /// The latest sample taken with a task id set: (id, stack). Names the
    /// id when its blocked switch-out got no stack (over the budget).
    last_sample: Option<(u64, Vec<Frame>)>,
    /// Its stacks with ids are still wanted (see `Detector::learned`).
    learned: bool,
    sighted: bool,
    /// Ids seen in its stacks lately, with how often: a worker's loop id
    /// comes back again and again, most tasks' once.
    recurring: Vec<(u64, u32)>,
}

/// Distinct ids a thread's recurrence count keeps.
const RECURRING_IDS: usize = 8;

pub struct Detector {
    limits: Thresholds,
    rule: WorkerRule,
    threads: HashMap<u32, Thread>,
    /// Task header → when it was first woken since its last poll.
    woken: HashMap<u64, u64>,
    /// Exact polls seen, and whether their probes were since taken off.
    polls_seen: bool,
    polls_off: bool,
}

impl Detector {
    pub fn new(limits: Thresholds, rule: WorkerRule) -> Detector {
        Detector { limits, rule, threads: HashMap::new(), woken: HashMap::new(), polls_seen: false, polls_off: false }
    }

    /// The threads alive when recording began.
    pub fn begin<'a>(&mut self, threads: impl IntoIterator<Item = (u32, &'a str)>) {
        for (tid, name) in threads {
            self.threads.entry(tid).or_default().worker = self.rule.is_worker(name);
        }
    }

    /// Sample runs stand in for poll lengths only where no poll is probed.
    fn sampled_tier(&self) -> bool {
        self.polls_off || !self.polls_seen
    }

    pub fn feed(&mut self, events: &[Event], out: &mut Noticed) {
        for event in events {
            self.one(event, out);
        }
        for t in self.threads.values_mut() {
            t.sighted = false;
        }
    }

    /// No more sightings from `tid`: its loop id is known, or it has none.
    pub fn learned(&mut self, tid: u32) {
        self.thread(tid).learned = true;
    }

    /// A stack with `id` set on a thread still being learned: from the
    /// second time an id is seen there, it is worth a question.
    fn sight(tid: u32, t: &mut Thread, id: u64, stack: &[Frame], out: &mut Noticed) {
        if t.learned || stack.is_empty() {
            return;
        }
        let count = match t.recurring.iter_mut().find(|(seen, _)| *seen == id) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                if t.recurring.len() >= RECURRING_IDS {
                    let rarest = (0..t.recurring.len()).min_by_key(|&i| t.recurring[i].1).unwrap_or(0);
                    t.recurring.swap_remove(rarest);
                }
                t.recurring.push((id, 1));
                1
            }
        };
        // Every time it recurs until the thread is learned: a stack can name
        // nothing (cut short, inside a harness step that is no poll), and a
        // worker's loop may run on the CPU only a few times a second. The
        // flight sink bounds the questions.
        if count >= 2 && !t.sighted {
            t.sighted = true;
            out.sightings.push(Sighting { tid, id, stack: stack.to_vec() });
        }
    }

    fn one(&mut self, event: &Event, out: &mut Noticed) {
        match event {
            Event::TaskAt { ts, tid, id } => self.thread(*tid).mark = Some((*ts, *id)),
            Event::Switch { ts, prev_tid, next_tid, prev_state, prev_ours, next_ours, .. } => {
                if *prev_ours {
                    self.switch_out(*ts, *prev_tid, ThreadState(*prev_state), out);
                }
                if *next_ours {
                    self.switch_in(*ts, *next_tid, out);
                }
            }
            Event::Waking { ts, tid, .. } => {
                let t = self.thread(*tid);
                // Only a thread seen going to sleep: a waking can race with a
                // thread that never got off the CPU. Its blocked time ends
                // here, as the timeline's blocked span does; the thread is
                // still inside its poll while it waits for a CPU.
                if t.waiting.is_none() && let Some(off) = t.off.as_mut().filter(|o| o.blocked) {
                    t.waiting = Some((*ts, false, false));
                    off.woken = Some(*ts);
                }
            }
            Event::Stack { ts, tid, reason: StackReason::Blocked, frames, .. } => {
                let id = self.id_at(*tid, *ts);
                let t = self.thread(*tid);
                match t.off.as_mut() {
                    Some(off) if off.since == *ts => off.stack = frames.to_vec(),
                    _ => t.early_stack = Some((*ts, frames.to_vec())),
                }
                if let Some(id) = id {
                    Self::sight(*tid, t, id, frames, out);
                }
            }
            Event::Stack { ts, tid, reason: StackReason::Sample, frames, .. } => self.sample(*ts, *tid, frames, out),
            // Without returns (`--polls starts`) a poll's end is not seen
            // here: long polls come from the stretches, as with no probes.
            Event::PollStart { ts, tid, .. } if self.polls_off => self.running(*tid, *ts, out),
            Event::PollStart { ts, tid, task, poll_fn } => {
                self.polls_seen = true;
                self.running(*tid, *ts, out);
                let t = self.thread(*tid);
                if let Some(parent) = t.open.last_mut() {
                    parent.nested = true;
                }
                t.open.push(OpenPoll { start: *ts, task: *task, poll_fn: *poll_fn, nested: false, reported: false });
                if let Some(woke) = self.woken.remove(task) {
                    let waited = ts.saturating_sub(woke);
                    if self.limits.sched_delay_ns.is_some_and(|l| waited >= l) {
                        out.candidates.push(Candidate {
                            rule: Rule::SchedDelay,
                            stretch: Stretch::TaskWait,
                            subject: Subject::Poll { task: *task, poll_fn: *poll_fn },
                            tid: *tid,
                            start_ns: woke,
                            duration_ns: waited,
                            ongoing: false,
                            evidence: Vec::new(),
                        });
                    }
                }
            }
            Event::PollEnd { ts, tid } => {
                let limit = self.limits.long_poll_ns;
                let Some(poll) = self.thread(*tid).open.pop() else { return };
                if poll.nested {
                    return;
                }
                let took = ts.saturating_sub(poll.start);
                if poll.reported {
                    out.ended.push(Ended { tid: *tid, start_ns: poll.start, end_ns: *ts });
                } else if limit.is_some_and(|l| took >= l) {
                    out.candidates.push(poll_candidate(*tid, &poll, took, false));
                }
            }
            Event::TaskWake { ts, task, .. } => {
                if self.limits.sched_delay_ns.is_some() {
                    if self.woken.len() >= MAX_WOKEN_TASKS {
                        self.woken.clear();
                    }
                    self.woken.entry(*task).or_insert(*ts);
                }
            }
            Event::PollReturnsOff { .. } => {
                self.polls_off = true;
                for t in self.threads.values_mut() {
                    t.open.clear();
                }
            }
            Event::Probes { polls, wakes, .. } => {
                if !*polls {
                    // Polls open now will never be seen to return.
                    self.polls_off = true;
                    for t in self.threads.values_mut() {
                        t.open.clear();
                    }
                }
                if !*wakes {
                    self.woken.clear();
                }
            }
            Event::WorkerRun { tid, .. } | Event::CurrentThreadRun { tid, .. } => self.thread(*tid).worker = true,
            // Its loop id is known: no more sightings needed (the flight
            // sink keeps the id).
            Event::WorkerLoop { tid, .. } => {
                let t = self.thread(*tid);
                (t.worker, t.learned) = (true, true);
            }
            Event::NewThread { tid, name, .. } | Event::Rename { tid, name, .. } => {
                let worker = self.rule.is_worker(name);
                let t = self.thread(*tid);
                t.worker |= worker;
            }
            Event::Exit { tid, .. } => {
                self.threads.remove(tid);
            }
            Event::NewModule { .. } | Event::TaskSpawn { .. } | Event::TaskId { .. } | Event::PollInside { .. } => {}
        }
    }

    fn thread(&mut self, tid: u32) -> &mut Thread {
        self.threads.entry(tid).or_default()
    }

    /// The task id on this thread at this instant, if any: marks are
    /// written only when the id read changes, so the last one at or before
    /// it holds (0: no task).
    fn id_at(&self, tid: u32, ts: u64) -> Option<u64> {
        self.threads.get(&tid)?.mark.filter(|&(at, id)| at <= ts && id != 0).map(|(_, id)| id)
    }

    fn switch_out(&mut self, ts: u64, tid: u32, state: ThreadState, out: &mut Noticed) {
        let id = self.id_at(tid, ts);
        let t = self.thread(tid);
        t.waiting = None;
        if t.run.as_ref().is_some_and(|r| Some(r.id) != id) {
            end_run(tid, t, out);
        }
        let blocked = !state.is_runnable();
        // Inside a probed poll the poll says whose it is; otherwise the id.
        let within = match t.open.last() {
            Some(p) => Some(Subject::Poll { task: p.task, poll_fn: p.poll_fn }),
            None => id.map(Subject::TaskId),
        };
        let stack = match t.early_stack.take() {
            Some((at, frames)) if at == ts => frames,
            // Until (unless) its own stack comes: the task's latest sample.
            _ => t.last_sample.as_ref().filter(|(sampled, _)| Some(*sampled) == id).map(|(_, f)| f.clone()).unwrap_or_default(),
        };
        t.off = Some(Off { since: ts, woken: None, blocked, within, stack, reported: false });
        if !blocked {
            t.waiting = Some((ts, true, false));
        }
    }

    fn switch_in(&mut self, ts: u64, tid: u32, out: &mut Noticed) {
        let limits = self.limits;
        let t = self.thread(tid);
        if let Some(off) = t.off.take() {
            blocked_stretch(tid, &off, ts, false, &limits, out);
        }
        if let Some((since, preempted, reported)) = t.waiting.take() {
            wait_stretch(tid, t.worker, since, preempted, reported, ts, false, &limits, out);
        }
    }

    /// The thread ran at `ts` (a probe fired on it, a sample caught it):
    /// what we thought it was waiting for is over and its switch-in was
    /// lost. How long it waited is unsure, so that is never a trigger; one
    /// already reported has ended.
    fn running(&mut self, tid: u32, ts: u64, out: &mut Noticed) {
        let t = self.thread(tid);
        if let Some(off) = t.off.take().filter(|o| o.reported) {
            out.ended.push(Ended { tid, start_ns: off.since, end_ns: ts });
        }
        if let Some((since, _, true)) = t.waiting.take() {
            out.ended.push(Ended { tid, start_ns: since, end_ns: ts });
        }
    }

    fn sample(&mut self, ts: u64, tid: u32, frames: &[Frame], out: &mut Noticed) {
        let id = self.id_at(tid, ts);
        let sampled_tier = self.sampled_tier();
        let limit = self.limits.long_poll_ns;
        self.running(tid, ts, out);
        let t = self.thread(tid);
        let Some(id) = id else {
            end_run(tid, t, out);
            return;
        };
        t.last_sample = Some((id, frames.to_vec()));
        Self::sight(tid, t, id, frames, out);
        match t.run.as_mut() {
            Some(run) if run.id == id => {
                run.last = ts;
                run.samples += 1;
            }
            _ => {
                end_run(tid, t, out);
                t.run = Some(Run { id, first: ts, last: ts, samples: 1, stack: frames.to_vec(), reported: false });
            }
        }
        let run = t.run.as_mut().expect("just set");
        let held = run.last - run.first;
        if sampled_tier && !run.reported && run.samples >= MIN_SAMPLES && limit.is_some_and(|l| held >= l) {
            run.reported = true;
            out.candidates.push(Candidate {
                rule: Rule::LongPoll,
                stretch: Stretch::Sampled { samples: run.samples },
                subject: Subject::TaskId(id),
                tid,
                start_ns: run.first,
                duration_ns: held,
                ongoing: true,
                evidence: run.stack.clone(),
            });
        }
    }

    /// Stretches still going at `watermark` (every event before it has been
    /// fed) that already crossed a threshold: a stalled worker fires before
    /// it recovers, or if it never does.
    pub fn ongoing(&mut self, watermark: u64, out: &mut Noticed) {
        let limits = self.limits;
        for (&tid, t) in self.threads.iter_mut() {
            if let Some(poll) = t.open.last_mut().filter(|p| !p.nested && !p.reported && p.start < watermark) {
                let took = watermark - poll.start;
                if limits.long_poll_ns.is_some_and(|l| took >= l) {
                    poll.reported = true;
                    out.candidates.push(poll_candidate(tid, poll, took, true));
                }
            }
            if let Some(off) = t.off.as_mut().filter(|o| !o.reported && o.since < watermark) {
                off.reported = blocked_stretch(tid, off, watermark, true, &limits, out);
            }
            if let Some((since, preempted, reported)) = t.waiting.as_mut().filter(|w| !w.2 && w.0 < watermark) {
                *reported = wait_stretch(tid, t.worker, *since, *preempted, false, watermark, true, &limits, out);
            }
        }
    }
}

fn poll_candidate(tid: u32, poll: &OpenPoll, took: u64, ongoing: bool) -> Candidate {
    Candidate {
        rule: Rule::LongPoll,
        stretch: Stretch::Poll,
        subject: Subject::Poll { task: poll.task, poll_fn: poll.poll_fn },
        tid,
        start_ns: poll.start,
        duration_ns: took,
        ongoing,
        evidence: Vec::new(),
    }
}

/// A run of same-id samples ended: say so if it was reported.
fn end_run(tid: u32, t: &mut Thread, out: &mut Noticed) {
    if let Some(run) = t.run.take().filter(|r| r.reported) {
        out.ended.push(Ended { tid, start_ns: run.first, end_ns: run.last });
    }
}

/// An off-CPU stretch up to `until` (its end, or the watermark when
/// `ongoing`). Blocked inside a probed poll it may fire `blocked` (the time
/// up to its waking, as the report counts blocked time); inside a task
/// seen only by its id, also `long-poll` (up to `until`: the thread is in
/// the poll while it waits for a CPU too, so the poll was at least this
/// long). Returns whether it fired.
fn blocked_stretch(tid: u32, off: &Off, until: u64, ongoing: bool, limits: &Thresholds, out: &mut Noticed) -> bool {
    let Some(within) = off.within.clone().filter(|_| off.blocked) else { return false };
    if off.reported {
        out.ended.push(Ended { tid, start_ns: off.since, end_ns: until });
        return true;
    }
    let blocked = off.woken.unwrap_or(until).min(until).saturating_sub(off.since);
    let in_poll = until.saturating_sub(off.since);
    let by_id = matches!(within, Subject::TaskId(_));
    let (rule, took) = if limits.blocked_ns.is_some_and(|l| blocked >= l) {
        (Rule::Blocked, blocked)
    } else if by_id && limits.long_poll_ns.is_some_and(|l| in_poll >= l) {
        (Rule::LongPoll, in_poll)
    } else {
        return false;
    };
    out.candidates.push(Candidate {
        rule,
        stretch: Stretch::Blocked,
        subject: within,
        tid,
        start_ns: off.since,
        duration_ns: took,
        ongoing,
        evidence: off.stack.clone(),
    });
    true
}

/// A worker's wait for a CPU up to `until`. Returns whether it fired.
#[allow(clippy::too_many_arguments)]
fn wait_stretch(tid: u32, worker: bool, since: u64, preempted: bool, reported: bool, until: u64, ongoing: bool, limits: &Thresholds, out: &mut Noticed) -> bool {
    if reported {
        out.ended.push(Ended { tid, start_ns: since, end_ns: until });
        return true;
    }
    let took = until.saturating_sub(since);
    if !worker || limits.sched_delay_ns.is_none_or(|l| took < l) {
        return false;
    }
    out.candidates.push(Candidate {
        rule: Rule::SchedDelay,
        stretch: Stretch::WorkerWait { preempted },
        subject: Subject::Thread,
        tid,
        start_ns: since,
        duration_ns: took,
        ongoing,
        evidence: Vec::new(),
    });
    true
}

#[cfg(test)]
mod tests;
