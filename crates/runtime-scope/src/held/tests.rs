use super::*;

fn out(ts: u64, tid: u32) -> Switch {
    Switch { header: Header { kind: kind::SWITCH, cpu: 0, ts }, prev_tid: tid, next_tid: 0, prev_state: 1, ours: side::PREV, cpu_lost: 0, task_id: 0 }
}

fn waking(ts: u64, tid: u32) -> Waking {
    Waking { header: Header { kind: kind::WAKING, cpu: 1, ts }, tid, waker_tid: 9, waker_pid: 9, flags: 0 }
}

/// Slots in ordinary memory, as the kernel would leave them.
fn slots(tids: &[u32]) -> (HeldSlots, *mut Pending) {
    let mut memory = vec![Pending::default(); PENDING_SLOTS as usize].into_boxed_slice();
    let base = memory.as_mut_ptr();
    (HeldSlots::over(base, Memory::Owned(memory), tids.iter().copied()), base)
}

fn hold_out(base: *mut Pending, record: Switch) {
    let slot = unsafe { &mut *base.add((record.prev_tid & PENDING_MASK) as usize) };
    slot.out = record;
    slot.out_tid = record.prev_tid;
}

fn hold_waking(base: *mut Pending, record: Waking) {
    let slot = unsafe { &mut *base.add((record.tid & PENDING_MASK) as usize) };
    slot.waking = record;
    slot.waking_tid = record.tid;
}

fn kinds_and_ts(records: &[Vec<u8>]) -> Vec<(u32, u64)> {
    records.iter().map(|r| (header_of(r).kind, header_of(r).ts)).collect()
}

#[test]
fn a_half_held_too_long_is_delivered_once_and_its_own_record_then_dropped() {
    let (mut held, base) = slots(&[10, 11]);
    hold_out(base, out(1_000, 10));
    hold_waking(base, waking(1_500, 10));
    hold_out(base, out(1_900, 11));
    // Not due yet.
    assert!(held.take_due(1_900, 1_000).is_empty());
    let due = held.take_due(2_600, 1_000);
    assert_eq!(kinds_and_ts(&due), [(kind::SWITCH, 1_000), (kind::WAKING, 1_500)]);
    // Still in the slot (the thread still sleeps): not delivered twice.
    assert!(held.take_due(2_700, 1_000).is_empty());
    // The switch-in record carrying them arrives: both parts are repeats,
    // once; a different switch-out of the same thread is not. (The kernel
    // empties the slot before it sends that record.)
    unsafe { (*base.add(10)).out_tid = 0 };
    unsafe { (*base.add(10)).waking_tid = 0 };
    assert!(held.is_repeat(&bytes_of(&out(1_000, 10))));
    assert!(!held.is_repeat(&bytes_of(&out(1_000, 10))));
    assert!(!held.is_repeat(&bytes_of(&out(1_200, 10))));
    assert!(held.is_repeat(&bytes_of(&waking(1_500, 10))));
    assert!(held.delivered.is_empty());
    // At the end everything still held goes, whatever its age.
    assert_eq!(kinds_and_ts(&held.take_due(2_700, 0)), [(kind::SWITCH, 1_900)]);
}

#[test]
fn a_half_being_written_or_held_for_another_thread_is_left_alone() {
    let (mut held, base) = slots(&[10]);
    hold_out(base, out(1_000, 10));
    unsafe { (*base.add(10)).out_seq = 1 };
    assert!(held.take_due(5_000, 0).is_empty(), "an odd seqcount: being written");
    unsafe { (*base.add(10)).out_seq = 2 };
    assert_eq!(held.take_due(5_000, 0).len(), 1);
    // Thread 10 + 16384 shares the slot: the kernel sent its records at
    // once, and a slot tagged for another thread is not this one's.
    let (mut held, base) = slots(&[10 + PENDING_SLOTS]);
    hold_out(base, out(1_000, 10));
    assert!(held.take_due(5_000, 0).is_empty());
}

#[test]
fn threads_are_followed_and_exited_ones_dropped_once_nothing_is_held() {
    let (mut held, base) = slots(&[]);
    held.saw(&Event::NewThread { ts: 1, tid: 12, parent_tid: 1, name: "w".into() });
    hold_out(base, out(100, 12));
    held.saw(&Event::Exit { ts: 150, tid: 12 });
    // Its last switch-out is held for a switch-in that never comes.
    assert_eq!(kinds_and_ts(&held.take_due(200, 0)), [(kind::SWITCH, 100)]);
    assert!(held.tids.contains_key(&12));
    unsafe { (*base.add(12)).out_tid = 0 };
    assert!(held.take_due(300, 0).is_empty());
    assert!(!held.tids.contains_key(&12));
}

/// A waking held while its thread was still on its CPU is superseded in
/// its slot by the next one, and the kernel then sends the old one on its
/// own: both may have been delivered from the slot by then (top and watch
/// take every half at each drain), and each of their records is a repeat.
#[test]
fn a_superseded_half_delivered_from_its_slot_is_still_known_when_its_record_comes() {
    let (mut held, base) = slots(&[10]);
    hold_waking(base, waking(100, 10));
    assert_eq!(kinds_and_ts(&held.take_due(150, 0)), [(kind::WAKING, 100)]);
    hold_waking(base, waking(200, 10));
    assert_eq!(kinds_and_ts(&held.take_due(250, 0)), [(kind::WAKING, 200)]);
    assert!(held.is_repeat(&bytes_of(&waking(100, 10))), "the old one, sent on its own");
    assert!(held.is_repeat(&bytes_of(&waking(200, 10))), "the new one, in the switch-in's record");
    assert!(held.delivered.is_empty());
}
