//! Raw ring-buffer records (`scope_common` structs) → [`Event`]s.

use crate::Event;
use crate::StackReason;
use scope_common::{
    COMM_LEN, Comm, ContextCopy, Exit, Header, NewThread, PollEnter, PollExit, Resumed, StackHeader, Switch, TaskSpawn, TaskWake,
    Waking, WorkerRun, kind, resumed, side, stack_reason,
};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than the header or than the record its kind announces.
    Truncated { kind: Option<u32>, len: usize },
    UnknownKind(u32),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { kind, len } => {
                write!(f, "truncated record ({len} bytes, kind {kind:?})")
            }
            DecodeError::UnknownKind(k) => write!(f, "unknown record kind {k}"),
        }
    }
}

impl std::error::Error for DecodeError {}

fn read<T: Copy>(bytes: &[u8], kind: Option<u32>) -> Result<T, DecodeError> {
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::Truncated { kind, len: bytes.len() });
    }
    // SAFETY: length checked; T is a #[repr(C)] all-integer struct, any bit
    // pattern is valid; read_unaligned because ring-buffer slices are only
    // 8-byte aligned by convention, not by type.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Kernel comm bytes → String (NUL-terminated, not necessarily UTF-8).
pub fn comm_to_string(comm: &[u8; COMM_LEN]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

/// A stack record before unwinding: registers and the copied bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawStack<'a> {
    pub ts: u64,
    pub cpu: u32,
    pub tid: u32,
    pub reason: StackReason,
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// Stack memory from `sp` upwards.
    pub bytes: &'a [u8],
    /// Tokio's current task id on the thread (0: none or not read).
    pub task_id: u64,
    /// A blocked switch-out whose stack is one the thread's earlier waits
    /// sent (no bytes: from a switch record, [`switch_same_stack`]).
    pub same_as_last: bool,
    /// Which of the thread's remembered waits (0 to 3) this stack repeats
    /// (`same_as_last`, `check`) or becomes (a copy); None: not remembered.
    pub way: Option<u8>,
    /// A copy of a wait its switch record already said repeats `way`: to
    /// check that repeat, never a stack of its own (`stack_reason::BLOCKED_CHECK`).
    pub check: bool,
}

/// Stack records need the target's modules to become events (unwinding).
pub fn is_stack(bytes: &[u8]) -> bool {
    read::<Header>(bytes, None).is_ok_and(|h| h.kind == kind::STACK)
}

/// A poll entry before its instance address is normalised to a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawPollStart {
    pub ts: u64,
    pub tid: u32,
    pub task: u64,
    pub fn_avma: u64,
    pub ret_addr: u64,
    /// Tokio's task id, 0 when not read.
    pub task_id: u64,
    /// The task id it was entered under (`PollEnter::outer_id`), 0 when not read.
    pub outer_id: u64,
}

/// Poll entries need the module table too (address → (module, offset)).
pub fn decode_poll_start(bytes: &[u8]) -> Option<RawPollStart> {
    let r: PollEnter = read(bytes, Some(kind::POLL_ENTER)).ok()?;
    (r.header.kind == kind::POLL_ENTER).then_some(RawPollStart { ts: r.header.ts, tid: r.tid, task: r.task, fn_avma: r.fn_avma, ret_addr: r.ret_addr, task_id: r.task_id, outer_id: r.outer_id })
}

/// The target executed a new program at this time: the recorder moves its
/// probes (no event of its own in the capture: the new image's modules are).
pub fn decode_exec(bytes: &[u8]) -> Option<u64> {
    let r: scope_common::Exec = read(bytes, Some(kind::EXEC)).ok()?;
    (r.header.kind == kind::EXEC).then_some(r.header.ts)
}

pub fn decode_stack(bytes: &[u8]) -> Result<RawStack<'_>, DecodeError> {
    let head: StackHeader = read(bytes, Some(kind::STACK))?;
    let data = &bytes[size_of::<StackHeader>()..];
    let stack = data.get(..head.len as usize).ok_or(DecodeError::Truncated { kind: Some(kind::STACK), len: bytes.len() })?;
    Ok(RawStack {
        ts: head.header.ts,
        cpu: head.header.cpu,
        tid: head.tid,
        reason: if head.reason == stack_reason::SAMPLE { StackReason::Sample } else { StackReason::Blocked },
        ip: head.ip,
        sp: head.sp,
        bp: head.bp,
        bytes: stack,
        task_id: head.task_id,
        same_as_last: false,
        way: (1..=scope_common::WAIT_WAYS).contains(&head.remembered).then(|| (head.remembered - 1) as u8),
        check: head.reason == stack_reason::BLOCKED_CHECK,
    })
}

/// The task id read at a switch-out of the target: `(ts, tid, id)`, id 0
/// when none was set or read; `None` for other records.
pub fn switch_task(bytes: &[u8]) -> Option<(u64, u32, u64)> {
    let r: Switch = read(bytes, Some(kind::SWITCH)).ok()?;
    (r.header.kind == kind::SWITCH && r.ours & side::PREV != 0).then_some((r.header.ts, r.prev_tid, r.task_id))
}

/// The stack a blocked switch-out stands for when it carries
/// `side::SAME_STACK`: its thread's last blocked stack again (no stack
/// record follows it).
pub fn switch_same_stack(bytes: &[u8]) -> Option<RawStack<'static>> {
    let r: Switch = read(bytes, Some(kind::SWITCH)).ok()?;
    let same = r.header.kind == kind::SWITCH && r.ours & side::PREV != 0 && r.ours & side::SAME_STACK != 0;
    same.then_some(RawStack {
        ts: r.header.ts,
        cpu: r.header.cpu,
        tid: r.prev_tid,
        reason: StackReason::Blocked,
        ip: 0,
        sp: 0,
        bp: 0,
        bytes: &[],
        task_id: r.task_id,
        same_as_last: true,
        way: Some(side::same_way(r.ours) as u8),
        check: false,
    })
}

/// A thread's name as it exited: `(ts, tid, name)`.
pub fn exit_name(bytes: &[u8]) -> Option<(u64, u32, String)> {
    let r: Exit = read(bytes, Some(kind::EXIT)).ok()?;
    (r.header.kind == kind::EXIT).then(|| (r.header.ts, r.tid, comm_to_string(&r.comm)))
}

/// A copy of a thread's CONTEXT thread-local (while the task id's offset in
/// it is being learned): `(ts, tid, bytes)`.
pub fn context_copy(bytes: &[u8]) -> Option<(u64, u32, Vec<u8>)> {
    let r: ContextCopy = read(bytes, Some(kind::CONTEXT_COPY)).ok()?;
    let len = (r.len as usize).min(r.bytes.len());
    (r.header.kind == kind::CONTEXT_COPY).then(|| (r.header.ts, r.tid, r.bytes[..len].to_vec()))
}

/// The records in one ring-buffer record, oldest first: a [`Resumed`]
/// (a switch-in with the switch-out and waking the kernel held for it)
/// holds up to three, each a complete record of its own kind; any other
/// record is itself. Undecodable input comes back whole (for `decode` to
/// say why).
pub fn parts(bytes: &[u8]) -> Parts<'_> {
    let mut out = Parts { parts: [&[]; 3], len: 0 };
    let Ok(r) = read::<Resumed>(bytes, Some(kind::RESUMED)) else {
        out.push(bytes);
        return out;
    };
    if r.header.kind != kind::RESUMED {
        out.push(bytes);
        return out;
    }
    let mut found: [(u64, &[u8]); 3] = [(0, &[]); 3];
    let mut n = 0;
    let mut add = |present: bool, ts: u64, at: usize, len: usize| {
        if present {
            found[n] = (ts, &bytes[at..at + len]);
            n += 1;
        }
    };
    add(r.present & resumed::OUT != 0, r.out.header.ts, std::mem::offset_of!(Resumed, out), size_of::<Switch>());
    add(r.present & resumed::WAKING != 0, r.waking.header.ts, std::mem::offset_of!(Resumed, waking), size_of::<Waking>());
    add(true, r.switch.header.ts, std::mem::offset_of!(Resumed, switch), size_of::<Switch>());
    // A waking held while its thread was still on its CPU can be older
    // than the switch-out held after it.
    found[..n].sort_by_key(|p| p.0);
    for (_, part) in &found[..n] {
        out.push(part);
    }
    out
}

/// What [`parts`] returns: up to three record slices.
pub struct Parts<'a> {
    parts: [&'a [u8]; 3],
    len: usize,
}

impl<'a> Parts<'a> {
    fn push(&mut self, part: &'a [u8]) {
        self.parts[self.len] = part;
        self.len += 1;
    }
}

impl<'a> IntoIterator for Parts<'a> {
    type Item = &'a [u8];
    type IntoIter = std::iter::Take<std::array::IntoIter<&'a [u8], 3>>;
    fn into_iter(self) -> Self::IntoIter {
        self.parts.into_iter().take(self.len)
    }
}

pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let header: Header = read(bytes, None)?;
    let k = Some(header.kind);
    Ok(match header.kind {
        kind::SWITCH => {
            let r: Switch = read(bytes, k)?;
            Event::Switch {
                ts: header.ts,
                cpu: header.cpu,
                prev_tid: r.prev_tid,
                next_tid: r.next_tid,
                prev_state: r.prev_state,
                prev_ours: r.ours & side::PREV != 0,
                next_ours: r.ours & side::NEXT != 0,
                cpu_lost: r.cpu_lost,
            }
        }
        kind::NEW_THREAD => {
            let r: NewThread = read(bytes, k)?;
            Event::NewThread {
                ts: header.ts,
                tid: r.tid,
                parent_tid: r.parent_tid,
                name: comm_to_string(&r.comm),
            }
        }
        kind::EXIT => {
            let r: Exit = read(bytes, k)?;
            Event::Exit { ts: header.ts, tid: r.tid }
        }
        kind::TASK_SPAWN => {
            let r: TaskSpawn = read(bytes, k)?;
            Event::TaskSpawn { ts: header.ts, tid: r.tid, task: r.task }
        }
        kind::TASK_WAKE => {
            let r: TaskWake = read(bytes, k)?;
            Event::TaskWake { ts: header.ts, tid: r.tid, task: r.task }
        }
        kind::WORKER_RUN => {
            let r: WorkerRun = read(bytes, k)?;
            Event::WorkerRun { ts: header.ts, tid: r.tid, index: r.index, runtime: r.runtime }
        }
        kind::CURRENT_THREAD => {
            let r: WorkerRun = read(bytes, k)?;
            Event::CurrentThreadRun { ts: header.ts, tid: r.tid, runtime: r.runtime }
        }
        kind::WAKING => {
            let r: Waking = read(bytes, k)?;
            // In interrupt context `current` is whoever was interrupted: no waker.
            let in_interrupt = r.flags & scope_common::waking_flags::IN_INTERRUPT != 0;
            let (waker_tid, waker_pid) = if in_interrupt { (0, 0) } else { (r.waker_tid, r.waker_pid) };
            Event::Waking { ts: header.ts, tid: r.tid, waker_tid, waker_pid }
        }
        kind::POLL_EXIT => {
            let r: PollExit = read(bytes, k)?;
            Event::PollEnd { ts: header.ts, tid: r.tid }
        }
        kind::COMM => {
            let r: Comm = read(bytes, k)?;
            Event::Rename { ts: header.ts, tid: r.tid, name: comm_to_string(&r.comm) }
        }
        other => return Err(DecodeError::UnknownKind(other)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain #[repr(C)] value.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    #[test]
    fn decodes_switch_with_sides() {
        let raw = Switch {
            header: Header { kind: kind::SWITCH, cpu: 1, ts: 42 },
            prev_tid: 10,
            next_tid: 11,
            prev_state: 0x100,
            ours: side::NEXT,
            cpu_lost: 3,
            task_id: 0,
        };
        assert_eq!(
            decode(&bytes_of(&raw)).unwrap(),
            Event::Switch {
                ts: 42,
                cpu: 1,
                prev_tid: 10,
                next_tid: 11,
                prev_state: 0x100,
                prev_ours: false,
                next_ours: true,
                cpu_lost: 3
            }
        );
    }

    /// A blocked switch-out marked as waiting where it waited last stands
    /// for that stack again; the marker does not change the switch itself.
    #[test]
    fn a_switch_marked_same_stack_stands_for_the_last_blocked_stack() {
        let mut raw = Switch {
            header: Header { kind: kind::SWITCH, cpu: 1, ts: 42 },
            prev_tid: 10,
            next_tid: 11,
            prev_state: 1,
            ours: side::PREV | side::SAME_STACK,
            cpu_lost: 0,
            task_id: 7,
        };
        let stack = switch_same_stack(&bytes_of(&raw)).unwrap();
        assert_eq!(
            (stack.ts, stack.cpu, stack.tid, stack.reason, stack.task_id, stack.same_as_last, stack.way),
            (42, 1, 10, StackReason::Blocked, 7, true, Some(0))
        );
        assert!(matches!(decode(&bytes_of(&raw)).unwrap(), Event::Switch { prev_ours: true, next_ours: false, .. }));
        raw.ours |= 3 << side::SAME_WAY_SHIFT;
        assert_eq!(switch_same_stack(&bytes_of(&raw)).unwrap().way, Some(3), "the thread's fourth remembered wait");
        raw.ours = side::PREV;
        assert_eq!(switch_same_stack(&bytes_of(&raw)), None);
    }

    /// A switch-in record with what the kernel held for it comes apart
    /// into the records it stands for, oldest first; other records are
    /// themselves.
    #[test]
    fn a_resumed_record_is_its_held_switch_out_and_waking_then_its_switch() {
        let switch = |ts: u64, prev_tid: u32, next_tid: u32, ours: u32| Switch {
            header: Header { kind: kind::SWITCH, cpu: 1, ts },
            prev_tid,
            next_tid,
            prev_state: 1,
            ours,
            cpu_lost: 0,
            task_id: 0,
        };
        let waking = |ts: u64| Waking { header: Header { kind: kind::WAKING, cpu: 0, ts }, tid: 10, waker_tid: 3, waker_pid: 3, flags: 0 };
        let mut r = Resumed {
            header: Header { kind: kind::RESUMED, cpu: 1, ts: 300 },
            present: resumed::OUT | resumed::WAKING,
            _pad: 0,
            out: switch(100, 10, 0, side::PREV),
            waking: waking(200),
            switch: switch(300, 0, 10, side::NEXT),
        };
        let ts_of = |r: &Resumed| parts(&bytes_of(r)).into_iter().map(|p| decode(p).unwrap().ts()).collect::<Vec<_>>();
        assert_eq!(ts_of(&r), [100, 200, 300]);
        let events: Vec<Event> = parts(&bytes_of(&r)).into_iter().map(|p| decode(p).unwrap()).collect();
        assert!(matches!(events[0], Event::Switch { prev_tid: 10, prev_ours: true, next_ours: false, .. }));
        assert!(matches!(events[1], Event::Waking { tid: 10, waker_tid: 3, .. }));
        assert!(matches!(events[2], Event::Switch { next_tid: 10, prev_ours: false, next_ours: true, .. }));
        // Woken while still on its CPU, then preempted: the waking is older.
        r.waking = waking(50);
        assert_eq!(ts_of(&r), [50, 100, 300]);
        r.present = resumed::WAKING;
        assert_eq!(ts_of(&r), [50, 300]);
        r.present = 0;
        assert_eq!(ts_of(&r), [300]);
        let plain = bytes_of(&switch(7, 1, 2, side::PREV));
        assert_eq!(parts(&plain).into_iter().collect::<Vec<_>>(), [&plain[..]]);
        assert_eq!(parts(&[1, 2]).into_iter().count(), 1);
    }

    #[test]
    fn decodes_names_without_trailing_nuls() {
        let mut comm = [0u8; COMM_LEN];
        comm[..15].copy_from_slice(b"tokio-rt-worker");
        let raw = Comm {
            header: Header { kind: kind::COMM, cpu: 0, ts: 7 },
            tid: 5,
            _pad: 0,
            comm,
        };
        assert_eq!(
            decode(&bytes_of(&raw)).unwrap(),
            Event::Rename { ts: 7, tid: 5, name: "tokio-rt-worker".into() }
        );
        let full = [b'x'; COMM_LEN];
        assert_eq!(comm_to_string(&full).len(), COMM_LEN);
    }

    #[test]
    fn decodes_stack_records_with_their_bytes() {
        let head = StackHeader {
            header: Header { kind: kind::STACK, cpu: 1, ts: 9 },
            tid: 4,
            reason: stack_reason::BLOCKED,
            ip: 0x1000,
            sp: 0x7ff0,
            bp: 0,
            len: 3,
            remembered: 2,
            task_id: 0,
        };
        let mut bytes = bytes_of(&head);
        bytes.extend_from_slice(&[1, 2, 3]);
        assert!(is_stack(&bytes));
        let raw = decode_stack(&bytes).unwrap();
        assert_eq!((raw.tid, raw.reason, raw.ip, raw.bytes), (4, StackReason::Blocked, 0x1000, &[1u8, 2, 3][..]));
        assert_eq!(raw.way, Some(1), "kept by the kernel as the thread's second wait");
        assert!(!raw.check);
        assert!(decode_stack(&bytes[..bytes.len() - 1]).is_err(), "fewer bytes than announced");
        let check = StackHeader { reason: stack_reason::BLOCKED_CHECK, ..head };
        let mut bytes = bytes_of(&check);
        bytes.extend_from_slice(&[1, 2, 3]);
        let raw = decode_stack(&bytes).unwrap();
        assert_eq!((raw.reason, raw.check, raw.way), (StackReason::Blocked, true, Some(1)), "a copy of a repeat of the second wait");
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        let raw = Exit { header: Header { kind: kind::EXIT, cpu: 0, ts: 1 }, tid: 3, _pad: 0, comm: [0; COMM_LEN] };
        let bytes = bytes_of(&raw);
        assert_eq!(decode(&bytes).unwrap(), Event::Exit { ts: 1, tid: 3 });
        assert!(matches!(
            decode(&bytes[..bytes.len() - 1]),
            Err(DecodeError::Truncated { kind: Some(kind::EXIT), .. })
        ));
        assert!(matches!(decode(&bytes[..4]), Err(DecodeError::Truncated { kind: None, .. })));
        let bogus = Header { kind: 99, cpu: 0, ts: 0 };
        assert_eq!(decode(&bytes_of(&bogus)), Err(DecodeError::UnknownKind(99)));
    }
}
