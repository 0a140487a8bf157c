//! Tasks: what each kind of task is called (by its future type), the pieces
//! of each poll that ran on a CPU (so polls nest inside on-CPU spans), and
//! per-kind totals for the report.

use scope_model::{Frame, Poll, Polled, ResolvedFrame, SpanState, Symbols, ThreadTimeline, Timeline};
use scope_model::symbols_is_plumbing as is_plumbing;
use std::collections::HashMap;

pub use scope_model::kinds::abbreviate;
use scope_model::kinds::{WORKER_LOOP, kind_of_future};
use scope_model::{KindRole, TaskKind};

/// The task kind in `raw::poll<F, S>` when the symbol spells it (v0,
/// DWARF, or the drop-glue name put there by symbolization).
fn from_generic_name(name: &str) -> Option<String> {
    let start = name.find("poll<").map(|i| i + 5).or_else(|| name.find("poll::<").map(|i| i + 7))?;
    let (mut depth, mut args, mut from) = (0, Vec::new(), start);
    for (i, c) in name[start..].char_indices() {
        let at = start + i;
        match c {
            '<' | '(' | '[' => depth += 1,
            '>' if depth == 0 => {
                args.push(name[from..at].trim());
                break;
            }
            '>' | ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                args.push(name[from..at].trim());
                from = at + 1;
            }
            _ => {}
        }
    }
    let future = args.first()?;
    Some(kind_of_future(future, args.get(1).copied().unwrap_or("_")))
}

/// The kind a `raw::poll` instance's own symbol spells out (its outermost
/// frame: the instance itself, not something inlined into it).
fn kind_from_symbol(symbols: &Symbols, poll_fn: &Frame) -> Option<String> {
    from_generic_name(&symbols.resolve(poll_fn).last()?.function)
}

pub(crate) fn is_harness(f: &ResolvedFrame) -> bool {
    f.function.contains("task::harness::") || f.function.contains("task::raw::") || f.function.contains("Harness<")
}

/// The innermost task harness frame of a stack, if it is polling a task.
/// Inside any other harness step (`complete`, `dealloc`, `shutdown`, a
/// join handle's drop) the stack tells no task's poll: the id set there may
/// be the task's (dropping its future) or the caller's (freeing its
/// memory), and drop glue names the task being dropped, not the running one.
pub(crate) fn polling_harness(frames: &[ResolvedFrame]) -> Option<usize> {
    let at = frames.iter().position(is_harness)?;
    is_poll_step(&frames[at]).then_some(at)
}

/// A harness frame that polls the task (`poll`, `poll_inner`, `poll_future`).
pub(crate) fn is_poll_step(harness: &ResolvedFrame) -> bool {
    last_step(&harness.function).starts_with("poll")
}

/// The last path segment that names a step: `poll` in
/// `…Harness<T,S>::poll`, `<…Harness<F, S>>::poll`, `raw::poll::<F, S>`
/// or `harness::poll_future::{{closure}}`; `drop` in `<… as Drop>::drop`.
fn last_step(function: &str) -> &str {
    let (mut depth, mut from, mut segments) = (0i32, 0, Vec::new());
    let bytes = function.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'<' => depth += 1,
            b'>' if i == 0 || bytes[i - 1] != b'-' => depth -= 1,
            b':' if depth == 0 && bytes.get(i + 1) == Some(&b':') => {
                segments.push(&function[from..i]);
                from = i + 2;
            }
            _ => {}
        }
    }
    segments.push(&function[from..]);
    segments.into_iter().rev().find(|s| !s.is_empty() && !s.starts_with('<') && !is_async_body(s)).map_or("", |s| s.split('<').next().unwrap_or(s))
}

/// In a stack taken inside a poll, the future being polled: the first
/// frame inside the innermost task harness frame that is a future's own
/// poll code (an async fn or block: `…::{{closure}}`, `{async_fn_env#0}`).
/// Anything else there (a waker, a wrapper's generic `poll`, a runtime or
/// library function the inlined body called) names no future, so names
/// nothing.
pub fn future_in_stack(frames: &[ResolvedFrame]) -> Option<String> {
    let harness = polling_harness(frames)?;
    let inside = &frames[..harness];
    // spawn_blocking tasks (Tokio's own workers run as one): name the closure.
    if let Some(b) = inside.iter().rposition(|f| f.function.contains("BlockingTask<")) {
        let closure = inside[..b].iter().rev().find(|f| !f.function.starts_with("core::") && !f.function.starts_with("<core::"))?;
        return is_async_body(&closure.function).then(|| format!("spawn_blocking({})", abbreviate(&closure.function)));
    }
    let first = inside.iter().rev().find(|f| !is_plumbing(&f.function))?;
    is_async_body(&first.function).then(|| abbreviate(&first.function))
}

/// A closure or async body by its name's last segment.
pub(crate) fn is_async_body(function: &str) -> bool {
    let last = function.rsplit("::").next().unwrap_or("");
    last == "{{closure}}" || last.starts_with("{closure") || last.starts_with("{async_")
}

/// For stacks taken at `times` (sorted), the innermost poll open at each:
/// one sweep, keeping the stack of open polls (polls nest on a thread).
fn innermost_polls<'a>(t: &'a ThreadTimeline, times: &[u64]) -> Vec<Option<&'a Poll>> {
    let mut open: Vec<&Poll> = Vec::new();
    let mut next = 0;
    times
        .iter()
        .map(|&ts| {
            while next < t.polls.len() && t.polls[next].start_ns <= ts {
                let p = &t.polls[next];
                while open.last().is_some_and(|o| o.end_ns <= p.start_ns) {
                    open.pop();
                }
                open.push(p);
                next += 1;
            }
            while open.last().is_some_and(|o| o.end_ns <= ts) {
                open.pop();
            }
            open.last().copied()
        })
        .collect()
}

/// Name of every task kind (keyed by its `raw::poll` instance): what the
/// binary says (scope-stacks: exact, ambiguous, or where it is spawned);
/// failing that, the async body most sampled inside its polls, marked as
/// such; last `task kind module+offset`.
pub fn kind_names(tl: &Timeline, symbols: &Symbols) -> HashMap<Frame, String> {
    let mut votes: HashMap<Frame, HashMap<String, usize>> = HashMap::new();
    for t in &tl.threads {
        let mut taken: Vec<(u64, u32)> = t.samples.iter().chain(&t.blocked_stacks).copied().collect();
        taken.sort_unstable();
        let times: Vec<u64> = taken.iter().map(|&(ts, _)| ts).collect();
        for (&(_, stack), poll) in taken.iter().zip(innermost_polls(t, &times)) {
            let Some(poll) = poll else { continue };
            let Some(s) = tl.stacks.get(stack as usize) else { continue };
            if let Some(name) = future_in_stack(&symbols.expand(&s.frames)) {
                *votes.entry(tl.poll_fn(poll)).or_default().entry(name).or_default() += 1;
            }
        }
    }
    let mut names = HashMap::new();
    for t in &tl.threads {
        for poll in &t.polls {
            names.entry(tl.poll_fn(poll)).or_insert_with(|| {
                symbols
                    .kinds
                    .get(&tl.poll_fn(poll))
                    .and_then(TaskKind::label)
                    .or_else(|| kind_from_symbol(symbols, &tl.poll_fn(poll)))
                    .or_else(|| {
                        let v = votes.get(&tl.poll_fn(poll))?;
                        let (name, _) = v.iter().max_by_key(|(n, c)| (**c, std::cmp::Reverse((*n).clone())))?;
                        Some(format!("{name} (from samples)"))
                    })
                    .unwrap_or_else(|| {
                        let module = tl.module_paths.get(tl.poll_fn(poll).module as usize).map_or("?", |p| p.rsplit('/').next().unwrap_or(p));
                        format!("task kind {module}+{:#x}", tl.poll_fn(poll).offset)
                    })
            });
        }
    }
    names
}

/// Tells threads apart by what they polled (workers poll async tasks,
/// blocking-pool threads only `spawn_blocking` work), for those the
/// worker-loop probes did not see. Only what the binary says counts (a kind
/// voted from samples could be a blocking closure); in a stripped binary
/// that is the vtable's shape, and a blocking task whose polls hold other
/// polls is the worker loop.
pub fn classify_threads(tl: &mut Timeline, symbols: &Symbols) {
    let mut holds_polls: std::collections::HashSet<Frame> = std::collections::HashSet::new();
    for t in &tl.threads {
        for (i, poll) in t.polls.iter().enumerate() {
            if t.polls.get(i + 1).is_some_and(|next| u32::from(next.depth) == u32::from(poll.depth) + 1 && next.start_ns < poll.end_ns) {
                holds_polls.insert(tl.poll_fn(poll));
            }
        }
    }
    let mut polled: HashMap<Frame, Polled> = HashMap::new();
    for t in &tl.threads {
        for poll in &t.polls {
            polled.entry(tl.poll_fn(poll)).or_insert_with(|| match symbols.kinds.get(&tl.poll_fn(poll)).map(|k| k.role) {
                Some(KindRole::WorkerLoop) => Polled::WorkerLoop,
                Some(KindRole::Blocking) if holds_polls.contains(&tl.poll_fn(poll)) => Polled::WorkerLoop,
                Some(KindRole::Blocking) => Polled::Blocking,
                Some(KindRole::Async) => Polled::Task,
                // A LocalSet runs wherever it is driven: says nothing.
                Some(KindRole::Local) => Polled::Unknown,
                Some(KindRole::Unknown) | None => match kind_from_symbol(symbols, &tl.poll_fn(poll)) {
                    Some(kind) if kind == WORKER_LOOP => Polled::WorkerLoop,
                    Some(kind) if kind.starts_with("spawn_blocking(") => Polled::Blocking,
                    Some(kind) if kind.starts_with("spawn_local(") => Polled::Unknown,
                    Some(_) => Polled::Task,
                    None => Polled::Unknown,
                },
            });
        }
    }
    tl.classify_by_polls(|frame| polled.get(frame).copied().unwrap_or(Polled::Unknown));
}

/// The parts of a poll that ran on a CPU: (start, end) inside on-CPU spans, by time.
pub fn on_cpu_pieces<'a>(t: &'a ThreadTimeline, poll: &'a Poll) -> impl Iterator<Item = (u64, u64)> + 'a {
    t.spans_between(poll.start_ns, poll.end_ns).iter().filter(|s| matches!(s.state, SpanState::OnCpu { .. })).filter_map(|s| {
        let (a, b) = (s.start_ns.max(poll.start_ns), s.end_ns.min(poll.end_ns));
        (b > a).then_some((a, b))
    })
}

/// Totals per task kind, for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KindTotals {
    pub polls: u64,
    pub tasks: u64,
    pub busy_ns: u64,
    pub longest_ns: u64,
}

/// On-CPU time of each poll of `t` itself (inside it, outside the polls
/// nested in it), in one pass: each poll's time is taken off its parent's
/// (the nearest open poll one level up). Asking poll by poll walks every
/// descendant of every poll, which is quadratic in the nesting depth (a
/// capture whose poll returns were lost nests each poll in the one before).
pub fn self_busy_all(t: &ThreadTimeline) -> Vec<u64> {
    let mut busy: Vec<u64> = t.polls.iter().map(|p| t.on_cpu_between(p.start_ns, p.end_ns)).collect();
    let mut open: Vec<usize> = Vec::new();
    for (i, p) in t.polls.iter().enumerate() {
        while open.last().is_some_and(|&j| t.polls[j].depth >= p.depth || t.polls[j].end_ns <= p.start_ns) {
            open.pop();
        }
        if let Some(&parent) = open.last().filter(|&&j| u32::from(t.polls[j].depth) + 1 == u32::from(p.depth)) {
            // Still its whole on-CPU time: its own children come after it.
            busy[parent] = busy[parent].saturating_sub(busy[i]);
        }
        open.push(i);
    }
    busy
}

pub fn totals(tl: &Timeline, names: &HashMap<Frame, String>) -> Vec<(String, KindTotals)> {
    let mut by: HashMap<&str, (KindTotals, std::collections::HashSet<u32>)> = HashMap::new();
    for t in &tl.threads {
        let busy = self_busy_all(t);
        for (poll, busy) in t.polls.iter().zip(busy) {
            let Some(name) = names.get(&tl.poll_fn(poll)) else { continue };
            let e = by.entry(name).or_default();
            e.0.polls += 1;
            e.0.busy_ns += busy;
            e.0.longest_ns = e.0.longest_ns.max(poll.duration_ns());
            e.1.insert(poll.serial);
        }
    }
    let mut out: Vec<(String, KindTotals)> = by
        .into_iter()
        .map(|(n, (mut k, tasks))| {
            k.tasks = tasks.len() as u64;
            (n.to_string(), k)
        })
        .collect();
    out.sort_by(|a, b| b.1.busy_ns.cmp(&a.1.busy_ns).then(a.0.cmp(&b.0)));
    out
}

/// Polls the exports mark as long (category `long_poll`): the report's
/// default threshold, since a trace is read without the report's options.
pub fn is_long(poll: &Poll) -> bool {
    poll.duration_ns() as f64 >= crate::insights::DEFAULT_LONG_POLL_MS * 1e6
}

/// A long poll of user code, as the report counts them: executors (the
/// worker loop, a LocalSet) poll for as long as they run and are not marked.
pub fn is_long_leaf(t: &ThreadTimeline, poll: &Poll) -> bool {
    is_long(poll) && crate::insights::long_polls::is_leaf(t, poll)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str) -> ResolvedFrame {
        ResolvedFrame::unknown(name.into())
    }

    /// The definition, poll by poll (quadratic): what [`self_busy_all`] must give.
    fn self_busy_ns(t: &ThreadTimeline, poll: &Poll) -> u64 {
        let from = t.polls.partition_point(|p| p.start_ns < poll.start_ns);
        let to = t.polls.partition_point(|p| p.start_ns < poll.end_ns);
        let nested: u64 = t.polls[from..to.max(from)]
            .iter()
            .filter(|p| p.depth == poll.depth + 1)
            .map(|p| t.on_cpu_between(p.start_ns, p.end_ns))
            .sum();
        t.on_cpu_between(poll.start_ns, poll.end_ns).saturating_sub(nested)
    }

    fn nested_thread(polls: Vec<(u64, u64, u16)>) -> ThreadTimeline {
        use scope_model::{OffReason, Span, SpanState, ThreadState};
        let on = |a, b| Span { start_ns: a, end_ns: b, state: SpanState::OnCpu { cpu: Some(0) } };
        let blocked = Span { start_ns: 100, end_ns: 150, state: SpanState::OffCpu(OffReason::Blocked { state: ThreadState(1) }) };
        ThreadTimeline {
            tid: 1,
            name: "w".into(),
            role: scope_model::Role::Other,
            spans: vec![on(0, 100), blocked, on(150, 1_000_000)],
            created_ns: None,
            exited_ns: None,
            kernel_cpu_ns: None,
            samples: Vec::new(),
            blocked_stacks: Vec::new(),
            polls: polls
                .into_iter()
                .map(|(start_ns, end_ns, depth)| Poll {
                    start_ns,
                    end_ns,
                    serial: 1,
                    instance: 0,
                    depth,
                    number: 1,
                    finished: true,
                    bounded: false,
                })
                .collect(),
            wakings: Vec::new(),
            task_marks: Vec::new(),
        }
    }

    #[test]
    fn self_busy_in_one_pass_is_what_each_poll_asked_alone_gives() {
        let t = nested_thread(vec![(10, 290, 0), (20, 120, 1), (30, 60, 2), (70, 80, 2), (160, 200, 1), (295, 299, 0)]);
        let alone: Vec<u64> = t.polls.iter().map(|p| self_busy_ns(&t, p)).collect();
        assert_eq!(alone, vec![230 - 80 - 40, 80 - 30 - 10, 30, 10, 40, 4]);
        assert_eq!(self_busy_all(&t), alone);
        // Lost returns nest every poll in the one before: 3000 deep.
        let deep = nested_thread((0..3000u64).map(|i| (1000 + i, 10_000 - i, i as u16)).collect());
        let alone: Vec<u64> = deep.polls.iter().map(|p| self_busy_ns(&deep, p)).collect();
        assert_eq!(self_busy_all(&deep), alone);
    }

    #[test]
    fn names_futures() {
        assert_eq!(abbreviate("demo_app::cpu_heavy_loop::{{closure}}"), "demo_app::cpu_heavy_loop");
        assert_eq!(abbreviate("my_app::handler::{async_fn_env#0}"), "my_app::handler");
        assert_eq!(abbreviate("demo_app::short_task_loop::{{closure}}::{{closure}}"), "demo_app::short_task_loop::{closure}", "a block spawned inside stays apart");
        assert_eq!(
            from_generic_name("tokio::runtime::task::raw::poll::<my_app::handler::{async_fn_env#0}, alloc::sync::Arc<h::Handle>>"),
            Some("my_app::handler".into())
        );
        assert_eq!(from_generic_name("tokio::runtime::task::raw::poll"), None);
        assert_eq!(
            from_generic_name("tokio::runtime::task::raw::poll::<my::job::{{closure}}, alloc::sync::Arc<tokio::task::local::Shared>>"),
            Some("spawn_local(my::job)".into())
        );
        assert_eq!(
            from_generic_name("tokio::runtime::task::raw::poll::<tokio::runtime::blocking::task::BlockingTask<my::f::{{closure}}>, _>"),
            Some("spawn_blocking(my::f)".into())
        );
        let stack = [
            f("cpu_heavy_poll"),
            f("demo_app::cpu_heavy_loop::{{closure}}"),
            f("tokio::runtime::task::harness::Harness<T,S>::poll"),
            f("tokio::runtime::scheduler::multi_thread::worker::Context::run_task"),
            f("<tokio::runtime::blocking::task::BlockingTask<T> as core::future::future::Future>::poll"),
            f("tokio::runtime::task::raw::poll"),
            f("clone3"),
        ];
        assert_eq!(future_in_stack(&stack), Some("demo_app::cpu_heavy_loop".into()));
        assert_eq!(future_in_stack(&stack[..1]), None);
        let parked = [
            f("syscall"),
            f("tokio::runtime::park::Inner::park_timeout"),
            f("tokio::runtime::scheduler::multi_thread::worker::run"),
            f("tokio::runtime::scheduler::multi_thread::worker::Launch::launch::{{closure}}"),
            f("<tokio::runtime::blocking::task::BlockingTask<T> as core::future::future::Future>::poll"),
            f("tokio::runtime::task::raw::poll"),
        ];
        assert_eq!(
            future_in_stack(&parked),
            Some("spawn_blocking(tokio::runtime::scheduler::multi_thread::worker::Launch::launch)".into())
        );
    }
}
