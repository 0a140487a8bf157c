//! One thread's on/off-CPU spans from what the kernel reported: the state
//! machine behind the timeline, and behind the live per-second line, so
//! the share a worker shows live and the report's for the same second are
//! one computation (they disagreed: 66% live, 3% in the report).

use super::{OffReason, Span, SpanState};
use crate::{Event, StackReason, ThreadState};

/// The state of a thread seen asleep without its switch-out (before the
/// first one, or never switching): the kernel did not tell which sleep, so
/// the common one, `S`.
const ASLEEP: ThreadState = ThreadState(0x01);

/// A thread's spans inside `window` (end `u64::MAX` while recording).
#[derive(Clone, Debug)]
pub struct ThreadSpans {
    window: (u64, u64),
    /// Its life in the window starts here (window start, or its creation).
    pub(crate) begin_ns: u64,
    /// State since a timestamp; None until the first event tells us.
    current: Option<(SpanState, u64)>,
    pub spans: Vec<Span>,
    pub(crate) exited_ns: Option<u64>,
}

/// Where threads' spans live: the timeline keeps them with each thread's
/// polls and stacks, the live view alone.
pub trait SpansOf {
    fn spans_of(&mut self, tid: u32) -> &mut ThreadSpans;
}

/// Applies what one event says about its threads' scheduling; returns how
/// many contradictions it found (a sign of events lost). Events must come
/// in time order.
pub fn apply(threads: &mut impl SpansOf, event: &Event) -> u64 {
    let mut contradictions = 0;
    if let Some((tid, cpu)) = fired_by_running_thread(event) {
        contradictions += threads.spans_of(tid).running(event.ts(), cpu);
    }
    match event {
        Event::Switch { ts, cpu, prev_tid, next_tid, prev_state, prev_ours, next_ours, .. } => {
            if *prev_ours {
                contradictions += threads.spans_of(*prev_tid).switch_out(*ts, *cpu, *prev_state);
            }
            if *next_ours {
                contradictions += threads.spans_of(*next_tid).switch_in(*ts, *cpu);
            }
        }
        Event::NewThread { ts, tid, .. } => threads.spans_of(*tid).created(*ts),
        Event::Exit { ts, tid } => threads.spans_of(*tid).exit(*ts),
        Event::Waking { ts, tid, .. } => threads.spans_of(*tid).woken(*ts),
        _ => {}
    }
    contradictions
}

/// The thread (and CPU, when known) an event proves was running at its
/// time: a uprobe fires only on the running thread, and a cpu-clock sample
/// only catches a running one (see `ThreadSpans::running`).
fn fired_by_running_thread(event: &Event) -> Option<(u32, Option<u32>)> {
    match event {
        Event::Stack { tid, cpu, reason: StackReason::Sample, .. } => Some((*tid, Some(*cpu))),
        Event::PollStart { tid, .. } | Event::PollEnd { tid, .. } | Event::TaskSpawn { tid, .. } | Event::TaskWake { tid, .. } => {
            Some((*tid, None))
        }
        _ => None,
    }
}

/// On-CPU time inside [start, end) of sorted, contiguous spans (binary search).
pub fn on_cpu_between(spans: &[Span], start: u64, end: u64) -> u64 {
    let from = spans.partition_point(|s| s.end_ns <= start);
    let to = spans.partition_point(|s| s.start_ns < end).max(from);
    spans[from..to]
        .iter()
        .filter(|s| matches!(s.state, SpanState::OnCpu { .. }))
        .map(|s| s.end_ns.min(end).saturating_sub(s.start_ns.max(start)))
        .sum()
}

/// A share in percent, rounded to 0.1 as every output shows it.
pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { (part as f64 * 1000.0 / whole as f64).round() / 10.0 }
}

impl ThreadSpans {
    pub fn new(window: (u64, u64)) -> Self {
        ThreadSpans { window, begin_ns: window.0, current: None, spans: Vec::new(), exited_ns: None }
    }

    /// Created at `ts` while recording: runnable, then unknown until it runs.
    fn created(&mut self, ts: u64) {
        self.begin_ns = ts.max(self.window.0);
        self.current = Some((SpanState::OffCpu(OffReason::Unknown), ts));
    }

    fn push(&mut self, state: SpanState, start: u64, end: u64) {
        let start = start.max(self.begin_ns).max(self.window.0);
        let end = end.min(self.window.1);
        if end > start {
            self.spans.push(Span { start_ns: start, end_ns: end, state });
        }
    }

    /// Closes the current state at `ts`; `assumed` is what the event implies
    /// the thread was doing when nothing was observed before.
    fn close(&mut self, ts: u64, assumed: SpanState) -> SpanState {
        let (state, since) = self.current.unwrap_or((assumed, self.begin_ns));
        self.push(state, since, ts);
        state
    }

    fn switch_out(&mut self, ts: u64, cpu: u32, prev_state: u64) -> u64 {
        if self.exited_ns.is_some() {
            return 0;
        }
        let was = self.close(ts, SpanState::OnCpu { cpu: Some(cpu) });
        let state = ThreadState(prev_state);
        let reason = if state.is_runnable() { OffReason::Preempted } else { OffReason::Blocked { state } };
        self.current = Some((SpanState::OffCpu(reason), ts));
        u64::from(!matches!(was, SpanState::OnCpu { .. }))
    }

    fn switch_in(&mut self, ts: u64, cpu: u32) -> u64 {
        if self.exited_ns.is_some() {
            return 0;
        }
        // Before its first switch-in, with no waking seen (that would have
        // set the state), a thread was runnable all along or its waking was
        // missed: not known.
        let was = self.close(ts, SpanState::OffCpu(OffReason::Unknown));
        self.current = Some((SpanState::OnCpu { cpu: Some(cpu) }, ts));
        u64::from(!matches!(was, SpanState::OffCpu(_)))
    }

    /// Woken at `ts`: a blocked stretch ends there, and the wait for a CPU
    /// begins (it ends at the switch-in). Only a sleeping thread is woken,
    /// so one never seen before slept until now. Not split: a thread still
    /// on its CPU (woken before it switched out), or in an unknown state.
    fn woken(&mut self, ts: u64) {
        if self.exited_ns.is_some() {
            return;
        }
        match self.current {
            None => self.push(SpanState::OffCpu(OffReason::Blocked { state: ASLEEP }), self.begin_ns, ts),
            Some((SpanState::OffCpu(OffReason::Blocked { .. }), since)) if ts >= since => {
                self.close(ts, SpanState::OffCpu(OffReason::Unknown));
            }
            _ => return,
        }
        self.current = Some((SpanState::OffCpu(OffReason::Woken), ts));
    }

    /// The thread itself did something at `ts` (a uprobe fired on it, a
    /// sample caught it): it was on a CPU. If we still think it off-CPU, its
    /// switch-in never reached us (the kernel skips tracepoint programs on a
    /// CPU where another BPF program or a map syscall is active); it ran
    /// from `ts` at the latest. Returns 1 for such a repair.
    fn running(&mut self, ts: u64, cpu: Option<u32>) -> u64 {
        match self.current {
            Some((SpanState::OffCpu(_), since)) if self.exited_ns.is_none() && ts > since => {
                self.close(ts, SpanState::OffCpu(OffReason::Unknown));
                self.current = Some((SpanState::OnCpu { cpu }, ts));
                1
            }
            _ => 0,
        }
    }

    fn exit(&mut self, ts: u64) {
        // The exiting thread runs its own exit path: it was on a CPU.
        self.close(ts, SpanState::OnCpu { cpu: None });
        self.current = None;
        self.exited_ns = Some(ts);
    }

    /// Ends the spans at the window's end. A thread that never switched
    /// while we watched was asleep throughout or running throughout; the
    /// kernel's own accounting over the window (schedstat at start and
    /// stop) says which. Without it, unknown.
    pub(crate) fn finish(&mut self, kernel_cpu_ns: Option<u64>) {
        if self.exited_ns.is_some() {
            return;
        }
        let end = self.window.1;
        match self.current {
            Some((state, since)) => self.push(state, since, end),
            None => {
                let lifetime = end.saturating_sub(self.begin_ns.max(self.window.0));
                let state = match kernel_cpu_ns {
                    Some(c) if c * 2 > lifetime => SpanState::OnCpu { cpu: None },
                    Some(_) => SpanState::OffCpu(OffReason::Blocked { state: ASLEEP }),
                    None => SpanState::OffCpu(OffReason::Unknown),
                };
                self.push(state, self.begin_ns, end);
            }
        }
    }

    /// On-CPU time inside [start, end), counting the state still open (a
    /// thread on a CPU now) up to `end`: what the live view asks for a
    /// second that is over.
    pub fn on_cpu_so_far(&self, start: u64, end: u64) -> u64 {
        let open = match self.current {
            Some((SpanState::OnCpu { .. }, since)) if self.exited_ns.is_none() => {
                end.min(self.window.1).saturating_sub(since.max(start).max(self.begin_ns))
            }
            _ => 0,
        };
        on_cpu_between(&self.spans, start, end) + open
    }

    /// Drops spans that ended by `ts`: the live view needs none before the
    /// second it shows next, and its memory must not grow with the run.
    pub fn forget_before(&mut self, ts: u64) {
        let keep = self.spans.partition_point(|s| s.end_ns <= ts);
        self.spans.drain(..keep);
    }
}
