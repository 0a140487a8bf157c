use super::*;
use crate::Recording;
use proptest::prelude::*;

fn fixture() -> Recording {
    serde_json::from_str(include_str!("../../../scope-export/tests/fixtures/demo-recording.json")).unwrap()
}

fn encoded(rec: &Recording) -> Vec<u8> {
    let mut bytes = Vec::new();
    write_recording(rec, &mut bytes).unwrap();
    bytes
}

#[test]
fn round_trips_a_recording_exactly() {
    let rec = fixture();
    let loaded = read(&encoded(&rec)).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(loaded.recording, rec);
}

#[test]
fn capture_is_compact() {
    let rec = fixture();
    let bytes = encoded(&rec);
    let per_event = bytes.len() as f64 / rec.events.len() as f64;
    // Start frame dominates this small fixture; events themselves are ~20 B.
    assert!(per_event < 40.0, "{per_event} bytes/event");
}

#[test]
fn truncated_capture_keeps_every_complete_frame() {
    let rec = fixture();
    let mut bytes = Vec::new();
    let mut w = CaptureWriter::new(&mut bytes, &Start::of(&rec)).unwrap();
    let (first, second) = rec.events.split_at(50);
    w.events(first).unwrap();
    let cut = w.bytes_written() as usize;
    w.events(second).unwrap();
    w.finish(&Stop::of(&rec)).unwrap();
    // Killed mid-way through the second batch.
    let loaded = read(&bytes[..cut + 20]).unwrap();
    assert_eq!(loaded.recording.events, first);
    assert_eq!(loaded.recording.stop_reason, StopReason::Incomplete);
    assert_eq!(loaded.recording.end_ns, first.iter().map(|e| e.ts()).max().unwrap());
    assert_eq!(loaded.warnings.len(), 2, "{:?}", loaded.warnings);
    assert!(loaded.warnings[0].contains("cut short"), "{:?}", loaded.warnings);
    assert!(loaded.warnings[1].contains("no stop record"), "{:?}", loaded.warnings);
}

#[test]
fn every_prefix_reads_or_fails_cleanly() {
    let bytes = encoded(&fixture());
    for len in 0..bytes.len() {
        match read(&bytes[..len]) {
            Ok(loaded) => assert!(!loaded.warnings.is_empty(), "prefix {len} read without a warning"),
            Err(e) => assert!(matches!(e, CaptureError::NoStart), "prefix {len}: {e}"),
        }
    }
}

#[test]
fn newer_versions_and_foreign_files_are_refused() {
    let mut bytes = encoded(&fixture());
    bytes[8] = 9;
    assert_eq!(
        read(&bytes).unwrap_err(),
        CaptureError::NewerVersion { found: 9, supported: FORMAT_VERSION }
    );
    assert!(read(&bytes).unwrap_err().to_string().contains("upgrade runtime-scope"));
    assert_eq!(read(b"{\"traceEvents\": []}").unwrap_err(), CaptureError::NotACapture);
}

#[test]
fn flipped_byte_is_caught_by_the_checksum() {
    let rec = fixture();
    let mut bytes = encoded(&rec);
    let at = bytes.len() - 30; // inside the stop frame
    bytes[at] ^= 0x40;
    let loaded = read(&bytes).unwrap();
    assert_eq!(loaded.recording.events, rec.events);
    assert!(loaded.warnings.iter().any(|w| w.contains("checksum mismatch")), "{:?}", loaded.warnings);
}

#[test]
fn frames_encoded_ahead_read_back_like_written_ones() {
    let rec = fixture();
    let (first, second) = rec.events.split_at(40);
    let framed = encode_events(second).unwrap();
    let payload = &framed[8..];
    assert_eq!(payload, postcard::to_stdvec(&Frame::Events(second.to_vec())).unwrap(), "same bytes as an owned frame");
    let mut bytes = Vec::new();
    let mut w = CaptureWriter::new(&mut bytes, &Start::of(&rec)).unwrap();
    w.events(first).unwrap();
    w.encoded_events(&framed, second.len() as u64).unwrap();
    assert_eq!(w.events_written(), rec.events.len() as u64);
    w.finish(&Stop::of(&rec)).unwrap();
    let loaded = read(&bytes).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(loaded.recording, rec);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = read(&bytes);
    }

    #[test]
    fn corrupted_captures_never_panic(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
                                     cut in any::<usize>()) {
        let mut bytes = encoded(&fixture());
        for (at, value) in edits {
            let i = at % bytes.len();
            bytes[i] = value;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        let _ = read(&bytes);
    }
}

/// The crafted captures of issue 16 item 9, each with valid checksums:
/// nothing they hold may size an allocation or a loop by itself.
#[test]
fn crafted_values_do_not_size_anything() {
    let rec = fixture();
    let start = Start::of(&rec);
    let switch = |ts| crate::Event::Switch { ts, cpu: 0, prev_tid: 0, next_tid: 7, prev_state: 0, prev_ours: false, next_ours: true, cpu_lost: 0 };
    let module = crate::Module { path: "/x".into(), start_avma: 0, end_avma: 1, file_offset: 0, build_id: None };
    let capture = |events: Vec<crate::Event>, stop: Option<Stop>| {
        let mut bytes = Vec::new();
        let mut w = CaptureWriter::new(&mut bytes, &start).unwrap();
        w.events(&events).unwrap();
        if let Some(stop) = stop {
            w.finish(&stop).unwrap();
        }
        read(&bytes).unwrap()
    };
    // A module index of 0xFFFFFFF0: ignored, not a 4-billion-entry table.
    let loaded = capture(vec![crate::Event::NewModule { ts: rec.start_ns, index: 0xFFFF_FFF0, module: Box::new(module) }], Some(Stop::of(&rec)));
    assert_eq!(loaded.recording.all_modules().len(), rec.modules.len());
    // A stop time of 2^62 ns: the window ends at the last plausible event.
    let far = Stop { end_ns: 1 << 62, ..Stop::of(&rec) };
    let loaded = capture(vec![switch(rec.start_ns + 5)], Some(far));
    assert_eq!(loaded.recording.end_ns, rec.start_ns + 5);
    assert!(loaded.warnings.iter().any(|w| w.contains("stop time")), "{:?}", loaded.warnings);
    // A switch far in the future and no stop record: neither stretches the window.
    let loaded = capture(vec![switch(rec.start_ns + 5), switch(1 << 62)], None);
    assert_eq!(loaded.recording.end_ns, rec.start_ns + 5);
    assert_eq!(loaded.recording.events.len(), 1, "the far one is left out");
    // A stop before the start.
    let early = Stop { end_ns: 0, ..Stop::of(&rec) };
    let loaded = capture(vec![], Some(early));
    assert_eq!(loaded.recording.end_ns, loaded.recording.start_ns);
}


/// A capture of `rec`'s events cut into batches of the given sizes, each
/// event's time moved by a pseudo-random jitter of up to `jitter` ns (and
/// every `far`-th one far outside the window), so that frames overlap in time.
fn jittered(rec: &Recording, batches: &[usize], jitter: u64, far: usize, seed: u64, stop: bool) -> Vec<u8> {
    let mut state = seed | 1;
    let mut events = rec.events.clone();
    for (i, e) in events.iter_mut().enumerate() {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let shift = if jitter == 0 { 0 } else { (state >> 33) % (2 * jitter) };
        let ts = if far > 0 && i % far == far - 1 { if i % 2 == 0 { 1 << 62 } else { 0 } } else { (e.ts() + shift).saturating_sub(jitter) };
        set_ts(e, ts);
    }
    let mut bytes = Vec::new();
    let mut w = CaptureWriter::new(&mut bytes, &Start::of(rec)).unwrap();
    let mut rest = &events[..];
    for &n in batches.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (batch, after) = rest.split_at(n.clamp(1, rest.len()));
        w.events(batch).unwrap();
        rest = after;
    }
    if stop {
        w.finish(&Stop::of(rec)).unwrap();
    }
    bytes
}

fn set_ts(e: &mut crate::Event, to: u64) {
    use crate::Event::*;
    match e {
        Switch { ts, .. } | NewThread { ts, .. } | Exit { ts, .. } | Rename { ts, .. } | Stack { ts, .. } | NewModule { ts, .. }
        | PollStart { ts, .. } | PollEnd { ts, .. } | TaskSpawn { ts, .. } | TaskWake { ts, .. } | WorkerRun { ts, .. }
        | Waking { ts, .. } | CurrentThreadRun { ts, .. } | TaskId { ts, .. } | TaskAt { ts, .. } | Probes { ts, .. } | WorkerLoop { ts, .. }
        | PollReturnsOff { ts } | PollInside { ts, .. } => *ts = to,
    }
}

/// Both passes over `bytes`: the recording (events: `NewModule` only), the
/// events replayed, and the warnings of both passes in order.
fn replayed(bytes: &[u8], second: &[u8]) -> (Recording, Vec<crate::Event>, Vec<String>) {
    let indexed = index(bytes).unwrap();
    let mut replay = replay(second, &indexed).unwrap();
    let events: Vec<crate::Event> = replay.by_ref().collect();
    assert_eq!(replay.kept(), events.len() as u64);
    let mut warnings = indexed.loaded.warnings.clone();
    warnings.extend(replay.warnings());
    (indexed.loaded.recording, events, warnings)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The two-pass read gives what reading the capture whole and sorting
    /// its events stably by time gave: the same events in the same order,
    /// the same warnings, the same timeline.
    #[test]
    fn replay_is_the_whole_read_sorted(batches in proptest::collection::vec(1usize..80, 1..6),
                                       jitter in prop_oneof![Just(0u64), Just(1_000), Just(1_000_000), Just(2_000_000_000)],
                                       far in prop_oneof![Just(0usize), Just(7), Just(97)],
                                       seed in any::<u64>(), stop in any::<bool>()) {
        let rec = fixture();
        let bytes = jittered(&rec, &batches, jitter, far, seed, stop);
        let whole = read(&bytes).unwrap();
        let (header, events, warnings) = replayed(&bytes, &bytes);
        let mut sorted = whole.recording.events.clone();
        sorted.sort_by_key(|e| e.ts());
        prop_assert_eq!(&events, &sorted);
        prop_assert_eq!(&warnings, &whole.warnings);
        let modules: Vec<_> = whole.recording.events.iter().filter(|e| matches!(e, crate::Event::NewModule { .. })).cloned().collect();
        prop_assert_eq!(&header, &Recording { events: modules, ..whole.recording.clone() });
        let rule = crate::WorkerRule::default();
        prop_assert_eq!(crate::Timeline::build_from(&header, events, &rule), crate::Timeline::build(&whole.recording, &rule));
    }
}

#[test]
fn replay_of_a_changed_file_says_so() {
    let rec = fixture();
    let bytes = jittered(&rec, &[40], 0, 0, 1, true);
    let shorter = jittered(&Recording { events: rec.events[..100].to_vec(), ..rec.clone() }, &[40], 0, 0, 1, true);
    let (_, events, warnings) = replayed(&bytes, &shorter);
    assert_eq!(events.len(), 100);
    assert!(warnings.iter().any(|w| w.contains("changed while it was read")), "{warnings:?}");
}

/// A stack equal to its thread's previous one in the same frame is written
/// as the one-frame marker and read back whole; other threads' stacks in
/// between, a changed completeness and a new frame do not count as repeats.
#[test]
fn repeated_stacks_are_written_once_a_frame_and_read_back_whole() {
    use crate::{Event, Frame, StackReason};
    let rec = fixture();
    let frames = |n: u64| (0..20).map(|i| Frame { module: 0, offset: 0x1000 * n + i }).collect::<Vec<_>>();
    let stack = |ts, tid, n, complete| Event::Stack { ts, cpu: 1, tid, reason: StackReason::Blocked, frames: frames(n).into(), complete };
    let events = vec![
        stack(rec.start_ns + 1, 7, 1, true),
        stack(rec.start_ns + 2, 8, 1, true),
        stack(rec.start_ns + 3, 7, 1, true),  // repeat of 7's
        stack(rec.start_ns + 4, 8, 2, true),  // 8's changed
        stack(rec.start_ns + 5, 7, 1, false), // completeness changed
        stack(rec.start_ns + 6, 7, 1, false), // repeat
        stack(rec.start_ns + 7, 8, 2, true),  // repeat
    ];
    let written = |batches: &[&[Event]]| {
        let mut bytes = Vec::new();
        let mut w = CaptureWriter::new(&mut bytes, &Start::of(&rec)).unwrap();
        for batch in batches {
            w.events(batch).unwrap();
        }
        w.finish(&Stop::of(&rec)).unwrap();
        bytes
    };
    let one = written(&[&events]);
    let loaded = read(&one).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(loaded.recording.events, events);
    // Each repeat is a handful of bytes instead of 20 frames.
    let split = written(&[&events[..3], &events[3..]]);
    let all_full = written(&events.iter().map(std::slice::from_ref).collect::<Vec<_>>());
    assert!(one.len() + 3 * 40 < all_full.len(), "{} vs {} bytes", one.len(), all_full.len());
    // A frame never refers to another: the next frame starts afresh.
    assert_eq!(read(&split).unwrap().recording.events, events);
    // A marker with nothing before it (a damaged frame): no frames, incomplete.
    let mut lone = vec![Event::Stack { ts: rec.start_ns, cpu: 0, tid: 9, reason: StackReason::Sample, frames: vec![REPEAT].into(), complete: true }];
    read::restore_repeats(&mut lone);
    assert!(matches!(&lone[0], Event::Stack { frames, complete: false, .. } if frames.is_empty()));
}

/// A worker alternating between two waits (its condvar, epoll), with a
/// sample between: each wait is written once a frame, the rest as markers
/// pointing a few stacks back, and all read back whole.
#[test]
fn alternating_stacks_of_a_thread_are_written_once_a_frame() {
    use crate::{Event, Frame, StackReason};
    let rec = fixture();
    let frames = |n: u64| (0..20).map(|i| Frame { module: 0, offset: 0x1000 * n + i }).collect::<Vec<_>>();
    let stack = |ts, n, reason| Event::Stack { ts: rec.start_ns + ts, cpu: 1, tid: 7, reason, frames: frames(n).into(), complete: true };
    let mut events = vec![stack(0, 1, StackReason::Blocked), stack(1, 2, StackReason::Blocked)];
    for i in 0..30 {
        events.push(stack(2 + 2 * i, 1, StackReason::Blocked));
        if i == 10 {
            events.push(stack(3 + 2 * i, 3, StackReason::Sample));
        }
        events.push(stack(3 + 2 * i, 2, StackReason::Blocked));
    }
    let mut bytes = Vec::new();
    let mut w = CaptureWriter::new(&mut bytes, &Start::of(&rec)).unwrap();
    w.events(&events).unwrap();
    w.finish(&Stop::of(&rec)).unwrap();
    assert_eq!(read(&bytes).unwrap().recording.events, events);
    // Three distinct stacks of 20 frames; 60 markers of a few bytes each.
    assert!(bytes.len() < 3 * 20 * 8 + 60 * 24 + 400, "{} bytes", bytes.len());
    // A marker reaching further back than the thread's stacks: none.
    let marker = Event::Stack { ts: rec.start_ns + 1, cpu: 1, tid: 7, reason: StackReason::Blocked, frames: vec![super::repeat(2)].into(), complete: true };
    let mut lone = vec![stack(0, 1, StackReason::Blocked), marker];
    read::restore_repeats(&mut lone);
    assert!(matches!(&lone[1], Event::Stack { frames, complete: false, .. } if frames.is_empty()));
}
