//! Task identity without a probe per poll (the recorder's half): learns
//! where Tokio keeps the current task's id in its CONTEXT thread-local from
//! the CONTEXT copies the kernel sends while exact poll probes say which
//! task is running, then checks the ids it reads against those probes.

use scope_model::Event;
use scope_stacks::task_context::Calibration;
use crate::fast_map::Map;

/// Copies kept to be turned into task marks once the offset is known.
const KEEP_COPIES: usize = 20_000;
/// Copies after which, still undecided, we give up (each switch-out and
/// sample of the target costs a 150-byte record meanwhile).
const GIVE_UP_AFTER: u32 = 4_000;

/// What the kernel side should do with the task id's offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Read the id at this byte offset in CONTEXT.
    Field(u32),
    /// Stop copying CONTEXT: the offset could not be learned.
    GiveUp,
}

#[derive(Default)]
pub struct Identity {
    calibration: Calibration,
    field: Option<u32>,
    gave_up: bool,
    /// Tokio ids of each thread's open polls, innermost last (0: unknown).
    open: Map<u32, Vec<u64>>,
    /// Copies taken before the offset was known: (ts, tid, bytes).
    pending: Vec<(u64, u32, Vec<u8>)>,
    /// Marks read while a poll with a known id was open: (agreed, total).
    pub checked: (u64, u64),
    /// Set once the poll probes are gone: open polls are no longer known.
    unprobed: bool,
    /// The id last recorded per thread: marks are written on change only.
    last: Map<u32, u64>,
}

impl Identity {
    pub fn with_field(field: Option<u32>) -> Identity {
        Identity { field, ..Identity::default() }
    }

    /// The poll probes are gone: no open poll will see its return.
    pub fn forget_polls(&mut self) {
        self.open.clear();
        self.unprobed = true;
    }

    pub fn poll_started(&mut self, tid: u32, id: u64) {
        // Entries still in flight when the probes came off have no return.
        if !self.unprobed {
            self.open.entry(tid).or_default().push(id);
        }
    }

    pub fn poll_ended(&mut self, tid: u32) {
        if let Some(open) = self.open.get_mut(&tid) {
            open.pop();
        }
    }

    /// A poll began on `tid` and its return is not probed: the thread's
    /// next id read is what ends it (or shows it still open), so it is
    /// recorded even if it is the same as the last.
    pub fn poll_entered(&mut self, tid: u32) {
        self.last.insert(tid, u64::MAX);
    }

    fn polled(&self, tid: u32) -> Option<u64> {
        self.open.get(&tid).and_then(|o| o.last()).copied().filter(|&id| id != 0)
    }

    /// A CONTEXT copy from the kernel. Returns a decision the first time
    /// one is reached.
    pub fn context_copy(&mut self, ts: u64, tid: u32, bytes: Vec<u8>) -> Option<Decision> {
        if self.field.is_some() || self.gave_up {
            return None;
        }
        self.calibration.observe(&bytes, self.polled(tid));
        if self.pending.len() < KEEP_COPIES {
            self.pending.push((ts, tid, bytes));
        }
        if let Some(field) = self.calibration.decided() {
            self.field = Some(field);
            return Some(Decision::Field(field));
        }
        if self.calibration.observations() >= GIVE_UP_AFTER || self.pending.len() >= KEEP_COPIES {
            self.gave_up = true;
            self.pending.clear();
            return Some(Decision::GiveUp);
        }
        None
    }

    /// Task marks for the copies taken before the offset was known.
    pub fn marks_from_copies(&mut self) -> Vec<Event> {
        let Some(field) = self.field else { return Vec::new() };
        let at = field as usize;
        let read: Vec<(u64, u32, u64)> = std::mem::take(&mut self.pending)
            .into_iter()
            .filter_map(|(ts, tid, bytes)| Some((ts, tid, u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))))
            .collect();
        // Not checked: the probes' open polls are today's, not those of then.
        read.into_iter().filter_map(|(ts, tid, id)| self.record(ts, tid, id)).collect()
    }

    /// The id read at a switch-out or sample (0: none): a mark when it
    /// differs from the thread's last one, and checked against the probes.
    pub fn mark(&mut self, ts: u64, tid: u32, id: u64) -> Option<Event> {
        if id != 0 {
            self.check(tid, id);
        }
        self.record(ts, tid, id)
    }

    fn record(&mut self, ts: u64, tid: u32, id: u64) -> Option<Event> {
        let last = self.last.insert(tid, id).unwrap_or(0);
        (last != id).then_some(Event::TaskAt { ts, tid, id })
    }

    /// Ids are no longer read: every thread's last mark ends here.
    pub fn end_marks(&mut self, ts: u64) -> Vec<Event> {
        let mut tids: Vec<u32> = self.last.iter().filter(|&(_, &id)| id != 0).map(|(&t, _)| t).collect();
        tids.sort_unstable();
        tids.into_iter().filter_map(|tid| self.record(ts, tid, 0)).collect()
    }

    /// A task id read by the kernel: counted against the exact probes when
    /// they say which task was open then.
    fn check(&mut self, tid: u32, id: u64) {
        if let Some(polled) = self.polled(tid) {
            self.checked.1 += 1;
            self.checked.0 += u64::from(polled == id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(words: &[u64]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn learns_the_offset_and_marks_earlier_copies() {
        let mut id = Identity::default();
        let mut decision = None;
        for i in 0..20u64 {
            let task = 10 + i % 5;
            id.poll_started(7, task);
            decision = decision.or(id.context_copy(i, 7, copy(&[3, task, 0])));
            id.poll_ended(7);
        }
        assert_eq!(decision, Some(Decision::Field(8)));
        let marks = id.marks_from_copies();
        assert_eq!(marks.len(), 16, "the copies up to the decision (each a new id)");
        assert_eq!(marks[0], Event::TaskAt { ts: 0, tid: 7, id: 10 });
        id.poll_started(7, 12);
        assert_eq!(id.mark(100, 7, 12), Some(Event::TaskAt { ts: 100, tid: 7, id: 12 }));
        assert_eq!(id.mark(101, 7, 12), None, "unchanged: no mark");
        assert!(id.mark(102, 7, 99).is_some());
        assert_eq!(id.checked, (2, 3));
        assert_eq!(id.end_marks(200), vec![Event::TaskAt { ts: 200, tid: 7, id: 0 }]);
    }

    /// Without returns a poll ends at its thread's next id read: that read
    /// is recorded even when the id is the one recorded before the poll.
    #[test]
    fn after_a_poll_entry_the_next_id_is_recorded_even_if_unchanged() {
        let mut id = Identity::with_field(Some(8));
        assert!(id.mark(100, 7, 1).is_some());
        assert_eq!(id.mark(110, 7, 1), None);
        id.poll_entered(7);
        assert_eq!(id.mark(120, 7, 1), Some(Event::TaskAt { ts: 120, tid: 7, id: 1 }));
        id.poll_entered(7);
        assert_eq!(id.mark(130, 7, 0), Some(Event::TaskAt { ts: 130, tid: 7, id: 0 }), "no task (a current_thread runtime) too");
    }

    #[test]
    fn copies_outside_polls_teach_nothing() {
        let mut id = Identity::default();
        for i in 0..100u64 {
            assert_eq!(id.context_copy(i, 7, copy(&[3, i, 0])), None);
        }
        assert_eq!(id.calibration.observations(), 0);
    }
}
