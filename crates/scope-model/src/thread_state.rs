//! The `prev_state` of `sched_switch`, as the tracepoint encodes it: the low
//! byte is one bit per reportable state (S, D, T, t, X, Z, P, I), bit 8
//! (`TASK_REPORT_MAX`) marks a preemption; no state bit means still runnable.

use serde::{Deserialize, Serialize};

const STATE_MASK: u64 = 0xff;
const LETTERS: [(u64, char); 8] = [
    (0x01, 'S'),
    (0x02, 'D'),
    (0x04, 'T'),
    (0x08, 't'),
    (0x10, 'X'),
    (0x20, 'Z'),
    (0x40, 'P'),
    (0x80, 'I'),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ThreadState(pub u64);

impl ThreadState {
    /// Switched out while runnable: the CPU was taken away (preemption or a
    /// yield), the thread did not wait for anything.
    pub fn is_runnable(self) -> bool {
        self.0 & STATE_MASK == 0
    }

    /// The letter `ps` and `perf sched` use: R, S, D, …
    pub fn letter(self) -> char {
        let bits = self.0 & STATE_MASK;
        LETTERS.iter().find(|(bit, _)| bits & bit != 0).map_or('R', |&(_, c)| c)
    }

    pub fn describe(self) -> &'static str {
        match self.letter() {
            'R' => "runnable",
            'S' => "sleeping",
            'D' => "uninterruptible (disk/IO)",
            'T' | 't' => "stopped",
            'X' | 'Z' => "exiting",
            'P' => "parked",
            _ => "idle",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ThreadState;

    #[test]
    fn decodes_kernel_encoding() {
        assert!(ThreadState(0).is_runnable());
        assert!(ThreadState(0x100).is_runnable());
        assert_eq!(ThreadState(0x100).letter(), 'R');
        assert!(!ThreadState(1).is_runnable());
        assert_eq!(ThreadState(1).letter(), 'S');
        assert_eq!(ThreadState(2).letter(), 'D');
        assert_eq!(ThreadState(2).describe(), "uninterruptible (disk/IO)");
        assert_eq!(ThreadState(0x80).letter(), 'I');
    }
}
