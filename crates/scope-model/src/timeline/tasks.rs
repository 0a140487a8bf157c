//! Task identity over time: header addresses → serials, poll numbers,
//! spawns, wakes (and which of them are self-wakes), worker-loop entries.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// A task spawned by thread `tid` at `ts`; its polls carry `serial`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spawn {
    pub ts: u64,
    pub tid: u32,
    pub serial: u32,
}

/// Thread `tid` woke task [`Wake::serial`] at `ts`. 16 bytes (a flag of
/// its own made it 24: 12 MB more on 1.5 M wakes, all held at the end).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wake {
    pub ts: u64,
    pub tid: u32,
    /// The serial, and [`Wake::self_wake`] in the top bit (serials count
    /// tasks from 1, far below 2^31).
    serial_and_self: u32,
}

const SELF_WAKE: u32 = 1 << 31;

impl Wake {
    pub fn new(ts: u64, tid: u32, serial: u32, self_wake: bool) -> Wake {
        debug_assert!(serial & SELF_WAKE == 0);
        Wake { ts, tid, serial_and_self: serial & !SELF_WAKE | if self_wake { SELF_WAKE } else { 0 } }
    }

    /// The task woken.
    pub fn serial(&self) -> u32 {
        self.serial_and_self & !SELF_WAKE
    }

    /// The task woke itself: from inside its own poll, or deferred by the
    /// worker right after that poll (`yield_now`) before the thread blocked
    /// or polled anything else.
    pub fn self_wake(&self) -> bool {
        self.serial_and_self & SELF_WAKE != 0
    }
}

/// A thread that entered `multi_thread::worker::run`, or took a
/// current_thread runtime's core (then `index` is 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStart {
    pub ts: u64,
    pub tid: u32,
    pub index: u64,
    pub runtime: u64,
    #[serde(default)]
    pub current_thread: bool,
}

/// What one thread's latest task activity was, for self-wake marking.
#[derive(Clone, Copy)]
enum Latest {
    /// A poll started since (the innermost open poll says which).
    Polling,
    /// Its last poll (of this serial) ended; nothing polled or blocked since.
    JustPolled(u32),
    /// Blocked since its last poll.
    Blocked,
}

#[derive(Default)]
pub(super) struct TaskTracker {
    /// Live header address → task serial; serials stay unique after frees.
    serials: HashMap<u64, u32>,
    /// Serial − 1 → the header address it was given for: serials are
    /// handed out from 1, one per entry.
    pub addrs: Vec<u64>,
    poll_numbers: HashMap<u32, u32>,
    latest: HashMap<u32, Latest>,
    pub spawns: Vec<Spawn>,
    pub wakes: Vec<Wake>,
    pub worker_starts: Vec<WorkerStart>,
    /// Serial → Tokio's task id, where the probe could read it.
    pub tokio_ids: BTreeMap<u32, u64>,
}

impl TaskTracker {
    /// A header address names one task until a spawn reuses it.
    fn serial_of(&mut self, task: u64) -> u32 {
        match self.serials.get(&task) {
            Some(&serial) => serial,
            None => self.new_serial(task),
        }
    }

    /// A new task at header address `task`, from now on its serial.
    fn new_serial(&mut self, task: u64) -> u32 {
        self.addrs.push(task);
        let serial = self.addrs.len() as u32;
        self.serials.insert(task, serial);
        serial
    }

    /// (serial, poll number) of a poll starting now on `tid`.
    pub fn poll_start(&mut self, tid: u32, task: u64) -> (u32, u32) {
        let serial = self.serial_of(task);
        let number = self.poll_numbers.entry(serial).or_insert(0);
        *number += 1;
        self.latest.insert(tid, Latest::Polling);
        (serial, *number)
    }

    /// The innermost poll on `tid` ended (a worker's own outer poll may
    /// still be open around it: deferred wakes run there).
    pub fn poll_end(&mut self, tid: u32, serial: u32) {
        self.latest.insert(tid, Latest::JustPolled(serial));
    }

    /// `tid` switched out waiting: a later wake by it is not deferred work.
    pub fn blocked(&mut self, tid: u32) {
        self.latest.insert(tid, Latest::Blocked);
    }

    pub fn spawn(&mut self, ts: u64, tid: u32, task: u64) {
        let serial = self.new_serial(task);
        self.spawns.push(Spawn { ts, tid, serial });
    }

    /// `innermost` is the serial of the poll open on `tid`, if any.
    pub fn wake(&mut self, ts: u64, tid: u32, task: u64, innermost: Option<u32>) {
        let serial = self.serial_of(task);
        let self_wake = innermost == Some(serial)
            || matches!(self.latest.get(&tid), Some(Latest::JustPolled(s)) if *s == serial);
        self.wakes.push(Wake::new(ts, tid, serial, self_wake));
    }

    /// The task at header address `task` has Tokio id `id`. Another id
    /// than the one its serial has means the address now holds another
    /// task (its spawn went unseen): a new serial, so the two never merge.
    pub fn tokio_id(&mut self, task: u64, id: u64) {
        let mut serial = self.serial_of(task);
        if self.tokio_ids.get(&serial).is_some_and(|&known| known != id) {
            serial = self.new_serial(task);
        }
        self.tokio_ids.insert(serial, id);
    }

    pub fn worker_run(&mut self, ts: u64, tid: u32, index: u64, runtime: u64) {
        self.worker_starts.push(WorkerStart { ts, tid, index, runtime, current_thread: false });
    }

    pub fn current_thread_run(&mut self, ts: u64, tid: u32, runtime: u64) {
        self.worker_starts.push(WorkerStart { ts, tid, index: 0, runtime, current_thread: true });
    }
}
