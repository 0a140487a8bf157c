//! The timeline's stacks, each distinct one kept once. A worker waits at
//! the same place thousands of times (on mini-redis under load 96% of the
//! stacks repeat), and a copy of the frames per wait was the largest part
//! of the end phase on a realistic capture (25 of 68 MB).

use super::Stack;
use crate::{Frame, StackReason};
use std::collections::HashMap;
use std::hash::BuildHasher;

#[derive(Default)]
pub(super) struct StackTable {
    stacks: Vec<Stack>,
    /// A stack's hash → the index of the last stack with that hash (a
    /// collision only costs a stack kept twice).
    by_hash: HashMap<u64, u32>,
    hasher: std::collections::hash_map::RandomState,
}

impl StackTable {
    /// The index of this stack: an equal one's if one was seen. Borrowed:
    /// the frames are copied only for a stack not seen before (events
    /// share a repeated stack's frames).
    pub fn index_of(&mut self, cpu: u32, frames: &[Frame], complete: bool, reason: StackReason) -> u32 {
        let hash = self.hasher.hash_one((cpu, frames, complete, reason));
        if let Some(&i) = self.by_hash.get(&hash)
            && let seen = &self.stacks[i as usize]
            && (seen.cpu, &seen.frames[..], seen.complete, seen.reason) == (cpu, frames, complete, reason)
        {
            return i;
        }
        let i = self.stacks.len() as u32;
        self.stacks.push(Stack { cpu, frames: frames.to_vec(), complete, reason });
        self.by_hash.insert(hash, i);
        i
    }

    pub fn into_vec(self) -> Vec<Stack> {
        self.stacks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_stacks_share_an_index_and_others_do_not() {
        let stack = |cpu, offset| Stack { cpu, frames: vec![Frame { module: 0, offset }, Frame { module: 1, offset: 9 }], complete: true, reason: StackReason::Blocked };
        let mut table = StackTable::default();
        let indexes: Vec<u32> = [stack(0, 1), stack(0, 2), stack(0, 1), stack(1, 1), stack(0, 2)].into_iter().map(|s| table.index_of(s.cpu, &s.frames, s.complete, s.reason)).collect();
        assert_eq!(indexes, [0, 1, 0, 2, 1]);
        assert_eq!(table.into_vec(), [stack(0, 1), stack(0, 2), stack(1, 1)]);
    }
}
