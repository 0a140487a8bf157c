//! What a span or sample is called, from its stacks: the shared naming rule
//! of every export.

use scope_model::{ResolvedFrame, Span, Symbols, ThreadTimeline, Timeline};

/// `word` or its plural (`poll`/`polls`), as a count of `n` needs.
pub fn noun(n: u64, word: &str) -> String {
    if n == 1 { word.to_string() } else { format!("{word}s") }
}

/// `1 task`, `3 tasks`.
pub fn count(n: u64, word: &str) -> String {
    format!("{n} {}", noun(n, word))
}

/// The frames of a stack, innermost first, with inlined frames expanded,
/// and [`scope_model::CUT_SHORT`] last when it was not unwound to
/// its thread's start.
pub fn stack(tl: &Timeline, symbols: &Symbols, index: u32) -> Vec<ResolvedFrame> {
    let Some(stack) = tl.stacks.get(index as usize) else { return Vec::new() };
    let mut frames = symbols.expand(&stack.frames);
    if !stack.complete {
        frames.push(ResolvedFrame::unknown(scope_model::CUT_SHORT.to_string()));
    }
    frames
}

pub fn most_telling(tl: &Timeline, symbols: &Symbols, index: u32) -> Option<ResolvedFrame> {
    symbols.most_telling(&tl.stacks.get(index as usize)?.frames)
}

/// What an on-CPU span ran: the most telling frame of its first sample.
pub fn running(tl: &Timeline, t: &ThreadTimeline, span: &Span, symbols: &Symbols) -> Option<ResolvedFrame> {
    t.samples_in(span).iter().find_map(|&(_, s)| most_telling(tl, symbols, s))
}

/// The stack of a blocked span, as text lines, and its most telling frame.
pub fn blocked(tl: &Timeline, t: &ThreadTimeline, span: &Span, symbols: &Symbols) -> Option<(Vec<String>, ResolvedFrame)> {
    let index = t.blocked_stack(span)?;
    let frames = stack(tl, symbols, index);
    let telling = most_telling(tl, symbols, index)?;
    Some((frames.iter().map(ResolvedFrame::describe).collect(), telling))
}

/// What a span's code was doing, for categories and colours in the traces
/// (the seed's "by what the code does"): user code, runtime plumbing, a
/// blocking call inside a task's poll, an idle worker parked, preempted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Doing {
    UserCode,
    Runtime,
    BlockingInPoll,
    Idle,
    Preempted,
    /// Woken, waiting for a CPU.
    Woken,
}

impl Doing {
    pub fn category(self) -> &'static str {
        match self {
            Doing::UserCode => "user",
            Doing::Runtime => "runtime",
            Doing::BlockingInPoll => "blocking",
            Doing::Idle => "idle",
            Doing::Preempted => "preempted",
            Doing::Woken => "woken",
        }
    }

    /// Chrome's reserved colour names.
    pub fn chrome_colour(self) -> &'static str {
        match self {
            Doing::UserCode => "thread_state_running",
            Doing::Runtime => "olive",
            Doing::BlockingInPoll => "terrible",
            Doing::Idle => "thread_state_sleeping",
            Doing::Preempted | Doing::Woken => "thread_state_runnable",
        }
    }
}

/// None when nothing tells (an on-CPU span without samples, unknown state).
pub fn doing(tl: &Timeline, t: &ThreadTimeline, span: &Span, symbols: &Symbols) -> Option<Doing> {
    use scope_model::{OffReason, SpanState};
    match span.state {
        SpanState::OnCpu { .. } => {
            let sampled = t.samples_in(span).first()?;
            let frames = &tl.stacks.get(sampled.1 as usize)?.frames;
            let user = symbols.expand(frames).iter().any(|f| !scope_model::symbols_is_plumbing(&f.function) && !f.function.starts_with("[unknown]"));
            Some(if user { Doing::UserCode } else { Doing::Runtime })
        }
        SpanState::OffCpu(OffReason::Preempted) => Some(Doing::Preempted),
        SpanState::OffCpu(OffReason::Woken) => Some(Doing::Woken),
        SpanState::OffCpu(OffReason::Blocked { .. }) => {
            let i = t.polls.partition_point(|p| p.start_ns <= span.start_ns);
            let in_poll = t.polls[..i].iter().rev().take(64).any(|p| p.end_ns > span.start_ns && crate::insights::long_polls::is_leaf(t, p));
            Some(if in_poll { Doing::BlockingInPoll } else { Doing::Idle })
        }
        SpanState::OffCpu(OffReason::Unknown) => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_agree_in_number() {
        assert_eq!((super::count(1, "task"), super::count(2, "task"), super::count(0, "sample")), ("1 task".into(), "2 tasks".into(), "0 samples".into()));
    }
}
