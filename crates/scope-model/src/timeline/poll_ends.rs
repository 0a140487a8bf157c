//! Where polls end when their returns are not probed (`--polls starts`:
//! a probe on each poll's entry only, about half the cost of entry and
//! return). A poll then ends at most where its thread is first seen
//! outside it: its next poll that is not nested in it, a switch-out or
//! sample that read another task id (or none), the thread's exit. Each
//! such end is an upper bound, and the poll says so (`Poll::bounded`).
//!
//! A task id read at a preemption ends nothing: a worker preempted in
//! Tokio's own bookkeeping around a poll (after the task's id is unset,
//! before `raw::poll` returns: storing the task's state, waking its
//! `JoinHandle`) reads the worker loop's id while the poll is still open.
//! Seen once in ~1 800 polls with two recorders sharing two CPUs (a poll
//! cut 94 µs before its return; a preemption the likeliest cause). The
//! read is held until the switch it came with says whether the thread
//! was preempted (the recorder writes a switch-out's `TaskAt` just before
//! its `Switch`, at the same time).
//!
//! Nesting is told by the task id polls are entered with
//! (`Event::PollInside`, written when it changes on a thread): a poll is
//! nested in the open poll of the task with that id (a `LocalSet` run
//! inside a task). A task whose Tokio id could not be read is never ended
//! by a switch or sample (nothing says whose they are), only by the next
//! poll outside it or the exit: a looser bound, never a wrong one.

use super::{Builder, Poll};
use super::tasks::TaskTracker;
use std::collections::HashMap;

#[derive(Default)]
pub(super) struct PollEnds {
    /// When poll returns stopped being probed (`Event::PollReturnsOff`).
    pub off_ns: Option<u64>,
    /// The id each thread's polls are entered under, until it changes.
    entered_under: HashMap<u32, u64>,
    /// The last task id read on each thread, (ts, id), not applied yet.
    marks: HashMap<u32, (u64, u64)>,
}

impl PollEnds {
    /// Whether poll returns are no longer probed: ends are inferred.
    pub fn unprobed(&self) -> bool {
        self.off_ns.is_some()
    }

    pub fn entered_under(&mut self, tid: u32, id: u64) {
        self.entered_under.insert(tid, id);
    }

    /// A poll starts on `tid` at `ts`: the open polls it is not nested in
    /// have ended by now. Before any `PollInside` on the thread (a window
    /// cut from a longer recording) its polls count as entered from its
    /// own loop (`loop_id`, when known) or from no task.
    pub fn poll_starts(&mut self, b: &mut Builder, tasks: &mut TaskTracker, tid: u32, ts: u64, loop_id: Option<u64>) {
        self.flush(b, tasks, tid);
        let under = self.entered_under.get(&tid).copied().or(loop_id);
        let encloses = |p: &Poll| under.is_some_and(|id| id != 0 && tasks.tokio_ids.get(&p.serial) == Some(&id));
        let ended = b.open_polls.pop_while(|p| !encloses(p));
        close(b, tasks, tid, ts, ended);
    }

    /// Thread `tid`'s current task id read `id` at `ts` (a switch-out or a
    /// sample): held until it is known not to be a preemption's.
    pub fn task_at(&mut self, b: &mut Builder, tasks: &mut TaskTracker, tid: u32, ts: u64, id: u64) {
        self.flush(b, tasks, tid);
        self.marks.insert(tid, (ts, id));
    }

    /// Thread `tid` switched out at `ts`; `preempted`: still runnable.
    pub fn switched_out(&mut self, b: &mut Builder, tasks: &mut TaskTracker, tid: u32, ts: u64, preempted: bool) {
        if preempted && self.marks.get(&tid).is_some_and(|&(at, _)| at == ts) {
            self.marks.remove(&tid);
        }
        self.flush(b, tasks, tid);
    }

    /// Applies the thread's held task id read: the open polls of other
    /// known ids have ended by then.
    pub fn flush(&mut self, b: &mut Builder, tasks: &mut TaskTracker, tid: u32) {
        let Some((ts, id)) = self.marks.remove(&tid) else { return };
        let ended = b.open_polls.pop_while(|p| tasks.tokio_ids.get(&p.serial).is_some_and(|&own| own != id));
        close(b, tasks, tid, ts, ended);
    }

    /// The thread exits: whatever it was polling ended before.
    pub fn exits(&mut self, b: &mut Builder, tasks: &mut TaskTracker, tid: u32, ts: u64) {
        self.flush(b, tasks, tid);
        self.entered_under.remove(&tid);
        let ended = b.open_polls.pop_while(|_| true);
        close(b, tasks, tid, ts, ended);
    }
}

fn close(b: &mut Builder, tasks: &mut TaskTracker, tid: u32, ts: u64, ended: Vec<Poll>) {
    for mut poll in ended {
        tasks.poll_end(tid, poll.serial);
        poll.end_ns = ts;
        poll.finished = true;
        poll.bounded = true;
        b.polls.push(poll);
    }
}
