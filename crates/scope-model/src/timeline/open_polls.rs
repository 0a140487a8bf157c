//! The polls open on one thread, innermost last, with the set of their
//! tasks so that "is this task's poll already open here?" costs O(1)
//! however deep lost returns have nested them.

use super::Poll;
use std::collections::HashSet;

#[derive(Default)]
pub(super) struct OpenPolls {
    stack: Vec<Poll>,
    /// The tasks of `stack`: one poll each, since a task's poll still open
    /// here is dropped ([`drop_from`](Self::drop_from)) before it is pushed again.
    serials: HashSet<u32>,
}

impl OpenPolls {
    pub fn len(&self) -> usize {
        self.stack.len()
    }

    pub fn last(&self) -> Option<&Poll> {
        self.stack.last()
    }

    pub fn push(&mut self, poll: Poll) {
        self.serials.insert(poll.serial);
        self.stack.push(poll);
    }

    pub fn pop(&mut self) -> Option<Poll> {
        let poll = self.stack.pop()?;
        self.serials.remove(&poll.serial);
        Some(poll)
    }

    pub fn clear(&mut self) {
        self.stack.clear();
        self.serials.clear();
    }

    /// Drops the open poll of task `serial` and every poll opened inside
    /// it, adding each one's (task serial, start) to `dropped`. Costs what
    /// it drops.
    pub fn drop_from(&mut self, serial: u32, dropped: &mut Vec<(u32, u64)>) {
        if !self.serials.contains(&serial) {
            return;
        }
        while let Some(poll) = self.pop() {
            dropped.push((poll.serial, poll.start_ns));
            if poll.serial == serial {
                break;
            }
        }
    }

    /// Pops the innermost polls while `ends` says they ended, innermost
    /// first; stops at the first that did not.
    pub fn pop_while(&mut self, mut ends: impl FnMut(&Poll) -> bool) -> Vec<Poll> {
        let mut ended = Vec::new();
        while self.stack.last().is_some_and(&mut ends) {
            ended.extend(self.pop());
        }
        ended
    }
}
