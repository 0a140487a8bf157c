//! Tasks seen without poll probes: Tokio's current task id, read at each
//! switch-out and sample (`ThreadTimeline::task_marks`). What this proves,
//! and nothing more:
//!
//! - a thread that switched out blocked with task X's id set was inside
//!   X's poll (or its drop) for the whole time it was off the CPU: Tokio
//!   sets the id around polling a task and restores the previous one
//!   after, and a thread off the CPU cannot leave a poll;
//! - a sample with X's id was running X.
//!
//! Outside user tasks the id is not always 0: a multi-thread worker is
//! itself a blocking task, so a parked worker carries its own loop's id.
//! Which ids are tasks is for the caller to say (from the stacks' names).

use crate::timeline::{OffReason, Span, SpanState, ThreadTimeline};

/// The task id read at a switch-out or sample of `t` at `ts` (marks are
/// recorded when the id read changes, so the last one at or before `ts`).
/// Only meaningful at such instants; None for no task.
pub fn id_at(t: &ThreadTimeline, ts: u64) -> Option<u64> {
    let i = t.task_marks.partition_point(|&(m, _)| m <= ts);
    let &(_, id) = t.task_marks.get(i.checked_sub(1)?)?;
    (id != 0).then_some(id)
}

/// A thread blocked inside a task's poll: the blocked span and the wait
/// for a CPU after its waking are both inside it (together a lower bound
/// of that poll's length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedInTask {
    pub span: Span,
    pub id: u64,
    /// The `Woken` span right after it: still in the poll, not blocked.
    pub waited_ns: u64,
}

impl BlockedInTask {
    /// How long the thread was surely inside the poll.
    pub fn in_poll_ns(&self) -> u64 {
        self.span.duration_ns() + self.waited_ns
    }
}

/// Every blocked span of `t` that began with the id of a task
/// (`is_task`) set.
pub fn blocked_in_tasks(t: &ThreadTimeline, is_task: impl Fn(u64) -> bool) -> Vec<BlockedInTask> {
    if t.task_marks.is_empty() {
        return Vec::new();
    }
    t.spans
        .iter()
        .enumerate()
        .filter(|(_, s)| matches!(s.state, SpanState::OffCpu(OffReason::Blocked { .. })))
        .filter_map(|(i, s)| id_at(t, s.start_ns).filter(|&id| is_task(id)).map(|id| BlockedInTask { span: *s, id, waited_ns: t.wait_after(i).map_or(0, Span::duration_ns) }))
        .collect()
}

/// (ts, stack index, task id) of each sample and blocked stack of `t`
/// taken while a task id was set: what names the ids.
pub fn stacks_with_ids(t: &ThreadTimeline) -> Vec<(u64, u32, u64)> {
    t.samples.iter().chain(&t.blocked_stacks).filter_map(|&(ts, stack)| id_at(t, ts).map(|id| (ts, stack, id))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(start: u64, end: u64) -> Span {
        Span { start_ns: start, end_ns: end, state: SpanState::OffCpu(OffReason::Blocked { state: crate::ThreadState(1) }) }
    }

    fn thread(spans: Vec<Span>, marks: Vec<(u64, u64)>) -> ThreadTimeline {
        ThreadTimeline {
            tid: 1,
            name: "w".into(),
            role: crate::Role::Other,
            spans,
            created_ns: None,
            exited_ns: None,
            kernel_cpu_ns: None,
            samples: vec![(150, 0), (160, 1), (170, 2)],
            blocked_stacks: vec![(40, 3)],
            polls: Vec::new(),
            wakings: Vec::new(),
            task_marks: marks,
        }
    }

    #[test]
    fn blocked_spans_inside_tasks_not_the_worker_loop() {
        // Id 1 is the worker's own loop; marks where the id read changed.
        let marks = vec![(10, 1), (40, 7), (90, 8), (125, 0), (150, 8), (170, 9)];
        let on = Span { start_ns: 30, end_ns: 40, state: SpanState::OnCpu { cpu: Some(0) } };
        let woken = Span { start_ns: 80, end_ns: 85, state: SpanState::OffCpu(OffReason::Woken) };
        let t = thread(vec![blocked(10, 30), on, blocked(40, 80), woken, blocked(90, 120), blocked(125, 130)], marks);
        let found = blocked_in_tasks(&t, |id| id != 1);
        assert_eq!(found.iter().map(|b| (b.span.start_ns, b.id, b.in_poll_ns())).collect::<Vec<_>>(), vec![(40, 7, 45), (90, 8, 30)]);
        let sampled: Vec<Option<u64>> = t.samples.iter().map(|&(ts, _)| id_at(&t, ts)).collect();
        assert_eq!(sampled, vec![Some(8), Some(8), Some(9)]);
        assert_eq!(stacks_with_ids(&t).len(), 4);
        assert_eq!(id_at(&t, 160), Some(8), "unchanged since the last mark");
        assert_eq!(id_at(&t, 126), None, "no task since 125");
        assert_eq!(id_at(&t, 5), None, "before any mark");
    }
}
