//! Names for Tokio task ids read without poll probes: an id seen inside a
//! probed poll takes that poll's kind; otherwise the stacks taken while it
//! was set vote (the future inside the innermost task harness frame), and
//! only a clear majority names it. A multi-thread worker is itself a
//! blocking task, so a parked worker carries its own loop's id: that kind
//! is the worker loop, never a task.

use crate::tasks::{abbreviate, is_async_body, is_harness, is_poll_step};
use scope_model::kinds::{KindRole, WORKER_LOOP};
use scope_model::identity::stacks_with_ids;
use scope_model::{Frame, Poll, ResolvedFrame, Symbols, ThreadTimeline, Timeline};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

/// Functions only a worker's own loop runs (parking, the I/O driver), never
/// a task's poll: `block_in_place` inside a task runs worker code too, but
/// not these.
const SCHEDULER_OWN: [&str; 5] = [
    "scheduler::multi_thread::worker::Context::park",
    "scheduler::multi_thread::park::",
    "tokio::runtime::park::",
    "tokio::runtime::driver::",
    "mio::poll::Poll::poll",
];

/// Share of an id's stacks that must agree on its kind.
const AGREEMENT: f64 = 0.75;

/// What a stack taken with a task id set says the id belongs to: the
/// worker's own loop when the innermost task harness runs the scheduler
/// (parked, or driving I/O and timers), else the async body polled inside
/// it. Only names that are futures: an async fn or block's body
/// (`{{closure}}`), a `spawn_blocking` closure; never a wrapper's `poll`,
/// a waker or a runtime function. None when the stack shows neither.
pub fn kind_in_stack(frames: &[ResolvedFrame]) -> Option<String> {
    let Some(harness) = frames.iter().position(is_harness) else {
        // Cut short before any harness (a repeated wait keeps only the
        // frames it was compared on): a worker parked or driving I/O still
        // shows the scheduler's own frames, which no task's poll runs.
        return frames.iter().any(|f| SCHEDULER_OWN.iter().any(|s| f.function.contains(s))).then(|| WORKER_LOOP.to_string());
    };
    // Freeing or completing a task, not polling one: the id set then may be
    // the task's or the caller's (a worker's loop, or another task).
    if !is_poll_step(&frames[harness]) {
        return None;
    }
    let inside = &frames[..harness];
    if inside.iter().any(|f| f.function.contains("scheduler::multi_thread::worker::")) {
        return Some(WORKER_LOOP.to_string());
    }
    if let Some(b) = inside.iter().rposition(|f| f.function.contains("BlockingTask<")) {
        let closure = inside[..b].iter().rev().find(|f| is_async_body(&f.function))?;
        return Some(format!("spawn_blocking({})", abbreviate(&closure.function)));
    }
    // Outermost body inside the harness: the task's own future, not what it awaits.
    // Drop glue spells a future too (`drop_in_place<…{{closure}}>`): not a body.
    let body = inside.iter().rev().find(|f| !f.function.starts_with("tokio::") && !f.function.starts_with("<tokio::") && is_async_body(&f.function))?;
    Some(abbreviate(&body.function))
}

/// The kind of the innermost task harness on a stack, from the binary
/// (exact, or ambiguous and said so); failing that, from frame names.
fn kind_of_stack(symbols: &Symbols, frames: &[Frame]) -> Option<String> {
    let from_binary = frames.iter().find_map(|f| symbols.instance_of.get(f)).and_then(|instance| {
        let kind = symbols.kinds.get(instance)?;
        if kind.role == KindRole::WorkerLoop {
            return Some(WORKER_LOOP.to_string());
        }
        kind.label()
    });
    from_binary.or_else(|| kind_in_stack(&symbols.expand(frames)))
}

pub struct TaskIdKinds {
    kind_of: HashMap<u64, String>,
    /// Ids read where the poll probes saw no poll open: Tokio sets a
    /// task's id only inside its poll, so these are no task's (a worker's
    /// own loop, or the harness before the id is set).
    outside_polls: HashSet<u64>,
}

/// When the poll probes are the truth about thread `t`: from its first
/// probed poll's start (a poll begun before the window has no start seen)
/// on; if `--polls auto` took the probes off, only up to the end of its
/// last poll in the timeline (one still open then is left out of the
/// timeline, its end never seen, so the probes cannot say it was not open).
pub fn watched(tl: &Timeline, t: &ThreadTimeline) -> std::ops::Range<u64> {
    let from = t.polls.first().map_or(u64::MAX, |p| p.start_ns);
    let off = tl.polls_off_ns();
    let until = if off == u64::MAX { u64::MAX } else { t.polls.iter().map(|p| p.end_ns).max().unwrap_or(0).min(off) };
    from..until
}

/// For instants fed in time order: whether the poll probes watched thread
/// `t` then ([`watched`]) and saw no poll open. Tokio sets a task's id only
/// inside its poll, so an id read at such an instant is no task's.
pub struct Unpolled<'a> {
    polls: &'a [Poll],
    watched: std::ops::Range<u64>,
    next: usize,
    open: BinaryHeap<Reverse<u64>>,
}

impl<'a> Unpolled<'a> {
    pub fn new(tl: &Timeline, t: &'a ThreadTimeline) -> Self {
        Unpolled { polls: &t.polls, watched: watched(tl, t), next: 0, open: BinaryHeap::new() }
    }

    pub fn at(&mut self, ts: u64) -> bool {
        if !self.watched.contains(&ts) {
            return false;
        }
        while let Some(p) = self.polls.get(self.next).filter(|p| p.start_ns <= ts) {
            self.open.push(Reverse(p.end_ns));
            self.next += 1;
        }
        while self.open.peek().is_some_and(|&Reverse(end)| end <= ts) {
            self.open.pop();
        }
        self.open.is_empty()
    }
}

impl TaskIdKinds {
    pub fn learn(tl: &Timeline, symbols: &Symbols, kinds: &HashMap<Frame, String>) -> TaskIdKinds {
        let mut kind_of: HashMap<u64, String> = HashMap::new();
        // The recorder saw each of these at a park: its stacks were not taken.
        for &(_, id) in &tl.worker_loops {
            kind_of.insert(id, WORKER_LOOP.to_string());
        }
        for t in &tl.threads {
            for poll in &t.polls {
                // Not the placeholder of an instance nothing named.
                let kind = kinds.get(&tl.poll_fn(poll)).filter(|k| !k.starts_with("task kind "));
                if let (Some(id), Some(kind)) = (tl.tokio_ids.get(&poll.serial), kind) {
                    kind_of.entry(*id).or_insert_with(|| kind.clone());
                }
            }
        }
        let mut votes: HashMap<u64, HashMap<String, u32>> = HashMap::new();
        for t in &tl.threads {
            for (_, stack, id) in stacks_with_ids(t) {
                if kind_of.contains_key(&id) {
                    continue;
                }
                let Some(s) = tl.stacks.get(stack as usize) else { continue };
                if let Some(name) = kind_of_stack(symbols, &s.frames) {
                    *votes.entry(id).or_default().entry(name).or_default() += 1;
                }
            }
        }
        for (id, counts) in votes {
            let total: u32 = counts.values().sum();
            if let Some((kind, n)) = counts.into_iter().max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
                && f64::from(n) >= AGREEMENT * f64::from(total)
            {
                kind_of.insert(id, kind);
            }
        }
        let mut outside_polls = HashSet::new();
        for t in &tl.threads {
            let mut unpolled = Unpolled::new(tl, t);
            outside_polls.extend(t.task_marks.iter().filter(|&&(ts, id)| id != 0 && unpolled.at(ts)).map(|&(_, id)| id));
        }
        TaskIdKinds { kind_of, outside_polls }
    }

    pub fn kind(&self, id: u64) -> Option<&str> {
        self.kind_of.get(&id).map(String::as_str)
    }

    /// A user task's id (named, and not a worker's own loop). Unnamed ids
    /// are left out: a parked worker whose stacks could not be named must
    /// not pass for a task blocked in its poll.
    pub fn is_task(&self, id: u64) -> bool {
        self.kind(id).is_some_and(|k| k != WORKER_LOOP) && !self.outside_polls.contains(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(names: &[&str]) -> Vec<ResolvedFrame> {
        names.iter().map(|n| ResolvedFrame { function: n.to_string(), file: None, line: None, inlined: false }).collect()
    }

    #[test]
    fn names_only_futures() {
        let harness = "tokio::runtime::task::harness::Harness<T,S>::poll";
        let parked = stack(&["syscall", "tokio::runtime::scheduler::multi_thread::worker::Context::park", harness, "start_thread"]);
        assert_eq!(kind_in_stack(&parked).as_deref(), Some(WORKER_LOOP));
        let io = stack(&["epoll_wait", "mio::poll::Poll::poll", "tokio::runtime::scheduler::multi_thread::worker::Context::park_timeout", harness]);
        assert_eq!(kind_in_stack(&io).as_deref(), Some(WORKER_LOOP), "the I/O driver is the worker's, not a task");
        let wrapped = stack(&["write", "app::Handler::run::{{closure}}", "<tracing::instrument::Instrumented<T> as core::future::future::Future>::poll", harness]);
        assert_eq!(kind_in_stack(&wrapped).as_deref(), Some("app::Handler::run"));
        let no_future = stack(&["mio::poll::Poll::poll", harness]);
        assert_eq!(kind_in_stack(&no_future), None, "not a future: unnamed");
        assert_eq!(kind_in_stack(&stack(&["app::main"])), None, "no harness");
        let cut_short = stack(&["epoll_wait", "mio::poll::Poll::poll", "tokio::runtime::io::driver::Driver::turn"]);
        assert_eq!(kind_in_stack(&cut_short).as_deref(), Some(WORKER_LOOP), "a park cut short before the harness");
        let waiting = stack(&["syscall", "<std::sys::sync::condvar::futex::Condvar>::wait"]);
        assert_eq!(kind_in_stack(&waiting), None, "a wait cut short could be a task's");
    }

    /// A worker frees a finished task after its poll, with its own loop's
    /// id set again: the drop glue names the freed task (seen on the demo,
    /// where it named worker 0's loop id after `short_task_loop`'s child).
    #[test]
    fn freeing_or_completing_a_task_names_nothing() {
        let worker = [
            "tokio::runtime::scheduler::multi_thread::worker::Context::run_task",
            "tokio::runtime::scheduler::multi_thread::worker::run",
            "<tokio::runtime::blocking::task::BlockingTask<T> as core::future::future::Future>::poll",
            "tokio::runtime::task::raw::poll",
        ];
        let on_worker = |inner: &[&str]| stack(&[inner, &worker[..]].concat());
        let freed = on_worker(&[
            "core::ptr::drop_in_place<alloc::boxed::Box<tokio::runtime::task::core::Cell<app::spawner::{{closure}}::{{closure}},alloc::sync::Arc<tokio::runtime::scheduler::multi_thread::handle::Handle>>>>",
            "tokio::runtime::task::harness::Harness<T,S>::complete",
        ]);
        assert_eq!(kind_in_stack(&freed), None, "not the freed task's, nor surely the loop's");
        let released = on_worker(&["tokio::util::sharded_list::ShardedList<L>::remove", "tokio::runtime::task::harness::Harness<T,S>::complete"]);
        assert_eq!(kind_in_stack(&released), None);
        let v0 = on_worker(&["<tokio::runtime::task::harness::Harness<app::poll::Job, alloc::sync::Arc<h::Handle>>>::dealloc"]);
        assert_eq!(kind_in_stack(&v0), None, "a type path with `poll` in it is no poll step");
        // Completion inlined into the poll: the future's own drop glue.
        let dropped = on_worker(&[
            "core::ptr::drop_in_place<tokio::runtime::task::core::Stage<app::job::{{closure}}>>",
            "tokio::runtime::task::harness::Harness<T,S>::poll",
        ]);
        assert_eq!(kind_in_stack(&dropped), None);
        let polled = on_worker(&["app::job::{{closure}}", "tokio::runtime::task::harness::poll_future::{{closure}}", "tokio::runtime::task::raw::poll::<app::job::{{closure}}, _>"]);
        assert_eq!(kind_in_stack(&polled).as_deref(), Some("app::job"), "poll steps in every spelling");
    }
}
