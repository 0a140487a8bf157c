//! The polls open on every thread (innermost last), and the thread each
//! open task is on: "is this task's poll open already?" costs O(1) however
//! deep lost returns have nested them.

use super::Poll;
use std::collections::HashMap;

#[derive(Default)]
pub(super) struct OpenPolls {
    stacks: HashMap<u32, Vec<Poll>>,
    /// Task serial → the thread its open poll is on.
    on: HashMap<u32, u32>,
}

impl OpenPolls {
    pub fn innermost(&self, tid: u32) -> Option<&Poll> {
        self.stacks.get(&tid)?.last()
    }

    /// Opens `poll` on `tid`, one level inside what is open there. Tokio
    /// polls a task on one thread at a time and never inside its own poll:
    /// if the task's poll is open already (on this thread or another), that
    /// poll's return was lost. It is dropped with the polls opened inside
    /// it (their lengths are unknown); returns how many were dropped.
    pub fn open(&mut self, tid: u32, mut poll: Poll) -> u64 {
        let dropped = match self.on.get(&poll.serial) {
            Some(&at) => self.drop_from(at, poll.serial),
            None => 0,
        };
        let stack = self.stacks.entry(tid).or_default();
        poll.depth = stack.len() as u32;
        self.on.insert(poll.serial, tid);
        stack.push(poll);
        dropped
    }

    pub fn close_innermost(&mut self, tid: u32) -> Option<Poll> {
        let poll = self.stacks.get_mut(&tid)?.pop()?;
        self.on.remove(&poll.serial);
        Some(poll)
    }

    /// Every poll open on `tid` (it exited, or the recording ended).
    pub fn take_all(&mut self, tid: u32) -> Vec<Poll> {
        let polls = self.stacks.remove(&tid).unwrap_or_default();
        for p in &polls {
            self.on.remove(&p.serial);
        }
        polls
    }

    pub fn clear(&mut self) {
        self.stacks.clear();
        self.on.clear();
    }

    /// Costs what it drops.
    fn drop_from(&mut self, tid: u32, serial: u32) -> u64 {
        let mut dropped = 0;
        while let Some(poll) = self.close_innermost(tid) {
            dropped += 1;
            if poll.serial == serial {
                break;
            }
        }
        dropped
    }
}
