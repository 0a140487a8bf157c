//! What a span or sample is called, from its stacks: the shared naming rule
//! of every export.

use scope_model::{ResolvedFrame, Span, Symbols, ThreadTimeline, Timeline};

/// The frames of a stack, innermost first, with inlined frames expanded.
pub fn stack(tl: &Timeline, symbols: &Symbols, index: u32) -> Vec<ResolvedFrame> {
    tl.stacks.get(index as usize).map_or_else(Vec::new, |s| symbols.expand(&s.frames))
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
