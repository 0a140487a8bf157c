//! Whether a candidate's task is a user's async task: Tokio's worker loop is
//! itself a blocking task (a parked worker carries its id, its poll never
//! ends), and `spawn_blocking` work is meant to block. That takes names, so
//! it is asked of a thread that symbolizes (the recorder must not wait on
//! reading a binary); answers come back on a later batch and are kept.

use scope_model::kinds::{KindRole, WORKER_LOOP};
use scope_model::{Frame, Module};
use scope_stacks::symbolize::Namer;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};

/// What is judged: a probed poll's `raw::poll` instance, or a task id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    PollFn(Frame),
    Id(u64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A user's task, and its kind as the report would name it.
    Task(String),
    /// Not one (the worker loop, `spawn_blocking` work): named.
    NotTask(String),
    /// The evidence named nothing.
    Unknown,
}

pub trait Judge {
    /// Asks about `key`, with a stack taken inside it for a task id.
    fn ask(&mut self, key: Key, evidence: Vec<Frame>, modules: &Arc<Vec<Module>>);
    /// Verdicts reached since the last call.
    fn answers(&mut self) -> Vec<(Key, Verdict)>;
}

/// For a flight recorder with no thresholds (`top`'s key): never asked.
pub struct Never;

impl Judge for Never {
    fn ask(&mut self, _: Key, _: Vec<Frame>, _: &Arc<Vec<Module>>) {}

    fn answers(&mut self) -> Vec<(Key, Verdict)> {
        Vec::new()
    }
}

/// A verdict from symbols: the kind of a `raw::poll` instance, or what a
/// stack taken with a task id set shows running inside the task harness
/// (`scope_export::task_ids`, the report's own rule).
pub fn verdict(key: Key, symbols: &scope_model::Symbols, evidence: &[Frame]) -> Verdict {
    match key {
        Key::PollFn(poll_fn) => match symbols.kinds.get(&poll_fn) {
            Some(kind) => {
                let label = kind.label().unwrap_or_else(|| "task".into());
                match kind.role {
                    KindRole::Blocking | KindRole::WorkerLoop => Verdict::NotTask(label),
                    KindRole::Async | KindRole::Local | KindRole::Unknown => Verdict::Task(label),
                }
            }
            // Not named (no symbols): still a probed task's poll.
            None => Verdict::Task("task".into()),
        },
        Key::Id(_) => match scope_export::task_ids::kind_in_stack(&symbols.expand(evidence)) {
            Some(kind) if kind == WORKER_LOOP || kind.starts_with("spawn_blocking(") => Verdict::NotTask(kind),
            Some(kind) => Verdict::Task(kind),
            None => Verdict::Unknown,
        },
    }
}

struct Request {
    key: Key,
    evidence: Vec<Frame>,
    modules: Arc<Vec<Module>>,
}

/// The real judge: one thread with a symbolizer that keeps what it parsed.
pub struct Symbolizing {
    requests: Option<Sender<Request>>,
    answers: Receiver<(Key, Verdict)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Symbolizing {
    pub fn start() -> Symbolizing {
        let (requests, inbox) = channel::<Request>();
        let (outbox, answers) = channel();
        let thread = std::thread::Builder::new()
            .name("rscope-judge".into())
            .spawn(move || {
                let namer = Namer::default();
                for r in inbox {
                    let mut frames = r.evidence.clone();
                    if let Key::PollFn(f) = r.key {
                        frames.push(f);
                    }
                    let symbols = namer.symbolize(&r.modules, frames);
                    if outbox.send((r.key, verdict(r.key, &symbols, &r.evidence))).is_err() {
                        break;
                    }
                }
            })
            .ok();
        Symbolizing { requests: Some(requests), answers, thread }
    }
}

impl Judge for Symbolizing {
    fn ask(&mut self, key: Key, evidence: Vec<Frame>, modules: &Arc<Vec<Module>>) {
        if let Some(tx) = &self.requests {
            let _ = tx.send(Request { key, evidence, modules: Arc::clone(modules) });
        }
    }

    fn answers(&mut self) -> Vec<(Key, Verdict)> {
        self.answers.try_iter().collect()
    }
}

impl Drop for Symbolizing {
    fn drop(&mut self) {
        self.requests = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scope_model::kinds::{Evidence, KindName, TaskKind};
    use scope_model::{ResolvedFrame, Symbols};

    fn named(symbols: &mut Symbols, frame: Frame, names: &[&str]) {
        symbols.frames.insert(frame, names.iter().map(|n| ResolvedFrame { function: n.to_string(), file: None, line: None, inlined: false }).collect());
    }

    fn kind(future: &str, role: KindRole) -> TaskKind {
        TaskKind { name: KindName::Exact { future: future.into(), scheduler: None }, evidence: Evidence::Dwarf, role, spawn_sites: Vec::new(), body_lines: Vec::new() }
    }

    #[test]
    fn user_tasks_pass_worker_loops_and_blocking_work_do_not() {
        let f = |offset| Frame { module: 0, offset };
        let mut symbols = Symbols::default();
        symbols.kinds.insert(f(1), kind("app::handler::{{closure}}", KindRole::Async));
        symbols.kinds.insert(f(2), kind("tokio::runtime::blocking::task::BlockingTask<app::job::{{closure}}>", KindRole::Blocking));
        assert_eq!(verdict(Key::PollFn(f(1)), &symbols, &[]), Verdict::Task("app::handler".into()));
        assert_eq!(verdict(Key::PollFn(f(2)), &symbols, &[]), Verdict::NotTask("spawn_blocking(app::job)".into()));
        let harness = "tokio::runtime::task::harness::Harness<T,S>::poll";
        named(&mut symbols, f(10), &["clock_nanosleep"]);
        named(&mut symbols, f(11), &["app::stall::{{closure}}"]);
        named(&mut symbols, f(12), &[harness]);
        named(&mut symbols, f(13), &["tokio::runtime::scheduler::multi_thread::worker::Context::park"]);
        assert_eq!(verdict(Key::Id(7), &symbols, &[f(10), f(11), f(12)]), Verdict::Task("app::stall".into()));
        assert_eq!(verdict(Key::Id(1), &symbols, &[f(10), f(13), f(12)]), Verdict::NotTask(WORKER_LOOP.into()));
        assert_eq!(verdict(Key::Id(7), &symbols, &[f(10)]), Verdict::Unknown, "no harness: nothing known");
    }
}
