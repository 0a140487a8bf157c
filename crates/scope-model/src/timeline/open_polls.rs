//! The polls open on one thread, innermost last, with the set of their
//! tasks so that "is this task's poll already open here?" costs O(1)
//! however deep lost returns have nested them.

use super::Poll;
use std::collections::HashMap;

#[derive(Default)]
pub(super) struct OpenPolls {
    stack: Vec<Poll>,
    /// Task serial → how many of its polls are in `stack` (normally 0 or 1).
    serials: HashMap<u32, u32>,
}

impl OpenPolls {
    pub fn len(&self) -> usize {
        self.stack.len()
    }

    pub fn last(&self) -> Option<&Poll> {
        self.stack.last()
    }

    pub fn push(&mut self, poll: Poll) {
        *self.serials.entry(poll.serial).or_default() += 1;
        self.stack.push(poll);
    }

    pub fn pop(&mut self) -> Option<Poll> {
        let poll = self.stack.pop()?;
        if let Some(n) = self.serials.get_mut(&poll.serial) {
            *n -= 1;
            if *n == 0 {
                self.serials.remove(&poll.serial);
            }
        }
        Some(poll)
    }

    pub fn clear(&mut self) {
        self.stack.clear();
        self.serials.clear();
    }

    /// Drops the open poll of task `serial` and every poll opened inside
    /// it; returns how many were dropped (0: the task had none open).
    /// Costs what it drops.
    pub fn drop_from(&mut self, serial: u32) -> u64 {
        if !self.serials.contains_key(&serial) {
            return 0;
        }
        let mut dropped = 0;
        while let Some(poll) = self.pop() {
            dropped += 1;
            if poll.serial == serial {
                break;
            }
        }
        dropped
    }
}
