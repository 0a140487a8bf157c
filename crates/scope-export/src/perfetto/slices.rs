//! Thread tracks: each poll a slice on its thread's own packet sequence,
//! and each time the thread blocked inside one; names, categories,
//! annotation names and string values interned.
//!
//! Most of the file is per-packet overhead (framing, delta timestamp,
//! sequence id, event type: ~11 bytes an END), so what a BEGIN adds is kept
//! to ids: one category id per slice (a combined name such as
//! `offcpu,blocking` reads the same in the UI as two categories) and
//! interned annotation values.

use super::{Sequence, sequence_start, thread_uuid};
use crate::{labels, tasks};
use perfetto_protos::debug_annotation::{DebugAnnotation, DebugAnnotationName};
use perfetto_protos::interned_data::InternedData;
use perfetto_protos::profile_common::InternedString;
use perfetto_protos::trace_packet::TracePacket;
use perfetto_protos::track_event::track_event::Type;
use perfetto_protos::track_event::{EventCategory, EventName, TrackEvent};
use scope_model::{Frame, OffReason, Span, SpanState, Symbols, ThreadTimeline, Timeline};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

const ANNOTATION_BLOCKED_IN: u64 = 3;
const ANNOTATION_STACK: u64 = 4;
const ANNOTATION_TASK: u64 = 5;
const ANNOTATION_POLL: u64 = 6;
const ANNOTATION_TOKIO_ID: u64 = 7;

/// Where a slice comes from: a poll of its thread, or a span in which it
/// blocked inside a poll (by index).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Source {
    Poll(u32),
    Blocked(u32),
}

/// A slice's place on its track: a poll at its nesting depth, a blocked
/// span one below the poll it blocked. 24 bytes (the source's kind is the
/// top bit of its index; as an enum it made 32, and a busy thread has
/// millions of slices, all held while arrows are placed).
#[derive(Clone, Copy)]
pub(super) struct Slice {
    pub start: u64,
    pub end: u64,
    pub depth: u32,
    source: u32,
}

const BLOCKED_BIT: u32 = 1 << 31;

impl Slice {
    pub fn new(start: u64, end: u64, depth: u32, source: Source) -> Self {
        let source = match source {
            // Indexes into a thread's polls and spans: far below 2^31.
            Source::Poll(i) => i & !BLOCKED_BIT,
            Source::Blocked(i) => i | BLOCKED_BIT,
        };
        Slice { start, end, depth, source }
    }

    pub fn source(&self) -> Source {
        if self.source & BLOCKED_BIT != 0 { Source::Blocked(self.source & !BLOCKED_BIT) } else { Source::Poll(self.source) }
    }
}

/// Every slice of a thread, sorted by (start, depth): the order flow ids
/// and packets refer to. Whether the thread ran, waited for a CPU or slept
/// is the scheduling data's to show ([`super::sched`]): slices are only
/// what it did, whole polls, plus each time it blocked inside one (the
/// runtime stalled: named with the stack it blocked in).
pub(super) fn geometry(t: &ThreadTimeline) -> Vec<Slice> {
    let mut out: Vec<Slice> = t
        .polls
        .iter()
        .enumerate()
        .filter(|(_, p)| p.end_ns > p.start_ns)
        .map(|(i, p)| Slice::new(p.start_ns, p.end_ns, u32::from(p.depth), Source::Poll(i as u32)))
        .collect();
    for (i, span) in t.spans.iter().enumerate() {
        if !matches!(span.state, SpanState::OffCpu(OffReason::Blocked { .. })) {
            continue;
        }
        let Some(poll) = leaf_poll_at(t, span.start_ns) else { continue };
        let (start, end) = (span.start_ns.max(poll.start_ns), span.end_ns.min(poll.end_ns));
        if end > start {
            out.push(Slice::new(start, end, u32::from(poll.depth) + 1, Source::Blocked(i as u32)));
        }
    }
    out.sort_by_key(|s| (s.start, s.depth));
    out
}

/// The deepest poll open at `ts` if it is a leaf (ran no polls itself).
/// Nesting is proper, so it is the last started poll still open; one with
/// 64 closed polls started after it has run polls, so the search stops.
fn leaf_poll_at(t: &ThreadTimeline, ts: u64) -> Option<&scope_model::Poll> {
    let upto = t.polls.partition_point(|p| p.start_ns <= ts);
    t.polls[..upto].iter().rev().take(64).find(|p| p.end_ns > ts).filter(|p| crate::insights::long_polls::is_leaf(t, p))
}

/// What a slice shows: name, category, and its annotations.
struct Label {
    name: String,
    /// One category, or several joined by commas.
    category: String,
    blocked_in: Option<String>,
    stack: Option<String>,
    /// Task and poll number of a poll; the task is Tokio's id when the
    /// probe read it (`tokio_task_id`), else our serial (`task`): one
    /// annotation either way, each a byte or two.
    task: Option<(TaskRef, u32)>,
}

#[derive(Clone, Copy)]
enum TaskRef {
    Tokio(u64),
    Serial(u32),
}

/// A span it blocked in inside a poll: the kernel state's letter, as in
/// the Chrome args, and the stack it blocked in.
fn blocked_label(tl: &Timeline, t: &ThreadTimeline, span: &Span, symbols: &Symbols) -> Label {
    let letter = match span.state {
        SpanState::OffCpu(OffReason::Blocked { state }) => state.letter(),
        _ => unreachable!("blocked slices come from blocked spans (`geometry`)"),
    };
    let doing = labels::doing(tl, t, span, symbols).map_or(String::new(), |d| format!(",{}", d.category()));
    let telling = labels::blocked(tl, t, span, symbols);
    Label {
        name: format!("blocked ({letter})"),
        category: format!("offcpu{doing}"),
        blocked_in: telling.as_ref().map(|(_, f)| f.describe()),
        stack: telling.map(|(stack, _)| stack.join("\n")),
        task: None,
    }
}

fn label(tl: &Timeline, t: &ThreadTimeline, slice: &Slice, symbols: &Symbols, kinds: &HashMap<Frame, String>) -> Label {
    match slice.source() {
        Source::Blocked(i) => blocked_label(tl, t, &t.spans[i as usize], symbols),
        Source::Poll(i) => {
            let poll = &t.polls[i as usize];
            Label {
                name: kinds.get(&tl.poll_fn(poll)).cloned().unwrap_or_default(),
                // `upper_bound`: no return probe (`--polls starts`); it ended by its end.
                category: format!(
                    "{}{}",
                    if tasks::is_long_leaf(t, poll) { "long_poll" } else { "poll" },
                    if poll.bounded { ",upper_bound" } else { "" }
                ),
                blocked_in: None,
                stack: None,
                task: Some((tl.tokio_ids.get(&poll.serial).map_or(TaskRef::Serial(poll.serial), |&id| TaskRef::Tokio(id)), poll.number)),
            }
        }
    }
}

/// Interning ids, assigned in first-use order.
#[derive(Default)]
struct Table(BTreeMap<String, u64>);

impl Table {
    fn id(&mut self, s: &str) -> u64 {
        if let Some(&id) = self.0.get(s) {
            return id;
        }
        let next = self.0.len() as u64 + 1;
        self.0.insert(s.to_string(), next);
        next
    }
}

#[derive(Default)]
struct Tables {
    names: Table,
    categories: Table,
    strings: Table,
}

fn annotation(name_iid: u64) -> DebugAnnotation {
    let mut a = DebugAnnotation::new();
    a.set_name_iid(name_iid);
    a
}

fn interned(tables: &Tables) -> InternedData {
    let mut data = InternedData::new();
    for (name, &iid) in &tables.names.0 {
        let mut n = EventName::new();
        n.iid = Some(iid);
        n.name = Some(name.clone());
        data.event_names.push(n);
    }
    for (name, &iid) in &tables.categories.0 {
        let mut c = EventCategory::new();
        c.iid = Some(iid);
        c.name = Some(name.clone());
        data.event_categories.push(c);
    }
    for (iid, name) in [
        (ANNOTATION_BLOCKED_IN, "blocked_in"),
        (ANNOTATION_STACK, "stack"),
        (ANNOTATION_TASK, "task"),
        (ANNOTATION_POLL, "poll"),
        (ANNOTATION_TOKIO_ID, "tokio_task_id"),
    ] {
        let mut a = DebugAnnotationName::new();
        a.iid = Some(iid);
        a.name = Some(name.into());
        data.debug_annotation_names.push(a);
    }
    for (value, &iid) in &tables.strings.0 {
        let mut s = InternedString::new();
        s.iid = Some(iid);
        s.str = Some(value.clone().into_bytes());
        data.debug_annotation_string_values.push(s);
    }
    data
}

/// A slice's label as interning ids: what a BEGIN needs (made when it is
/// written, not held per slice).
struct Interned {
    name: u32,
    category: u32,
    /// Interned ids start at 1: 0 is none.
    blocked_in: u32,
    stack: u32,
    poll: u32,
    task: Option<TaskRef>,
}

/// Ids a table gives fit in 32 bits: the labels of a busy thread's million
/// slices are 32 bytes each, not 80.
fn id32(id: u64) -> u32 {
    u32::try_from(id).expect("fewer than 2^32 distinct strings")
}

fn intern(l: Label, tables: &mut Tables) -> Interned {
    Interned {
        name: id32(tables.names.id(&l.name)),
        category: id32(tables.categories.id(&l.category)),
        blocked_in: l.blocked_in.map_or(0, |s| id32(tables.strings.id(&s))),
        stack: l.stack.map_or(0, |s| id32(tables.strings.id(&s))),
        poll: l.task.map_or(0, |t| t.1),
        task: l.task.map(|t| t.0),
    }
}

fn begin_event(l: &Interned, flows: &[u64]) -> TrackEvent {
    let mut begin = TrackEvent::new();
    begin.set_type(Type::TYPE_SLICE_BEGIN);
    begin.set_name_iid(u64::from(l.name));
    begin.category_iids.push(u64::from(l.category));
    let uint = |iid, value: u64| {
        let mut a = annotation(iid);
        a.set_uint_value(value);
        a
    };
    for (iid, value) in [(ANNOTATION_BLOCKED_IN, l.blocked_in), (ANNOTATION_STACK, l.stack)] {
        if value != 0 {
            let mut a = annotation(iid);
            a.set_string_value_iid(u64::from(value));
            begin.debug_annotations.push(a);
        }
    }
    if let Some(task) = l.task {
        begin.debug_annotations.push(match task {
            TaskRef::Tokio(id) => uint(ANNOTATION_TOKIO_ID, id),
            TaskRef::Serial(serial) => uint(ANNOTATION_TASK, u64::from(serial)),
        });
        begin.debug_annotations.push(uint(ANNOTATION_POLL, u64::from(l.poll)));
    }
    // Varints: the `fixed64` field costs 10 bytes an id whatever its size.
    #[allow(deprecated)]
    begin.flow_ids_old.extend(flows);
    begin
}

/// What one thread's sequence needs besides the thread.
pub(super) struct ThreadInput {
    pub slices: Vec<Slice>,
    /// `(slice index, flow id)`, sorted.
    pub flows: Vec<(u32, u32)>,
    /// Arrows leaving the thread outside every slice (wakes from the
    /// worker's driver between polls): `(ts, name, flow ids)`, an instant
    /// each.
    pub instants: Vec<(u64, &'static str, Vec<u64>)>,
}

/// An edge of the thread's sequence, in write order at equal times: ends
/// (inner first), instants (outside every slice), begins (outer first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Edge {
    End { depth: Reverse<u32>, slice: usize },
    Instant { index: usize },
    Begin { depth: u32, slice: usize },
}

/// A thread's edges in write order, without a list of them all (two per
/// slice were 100 MB on a busy thread): begins come in slice order (sorted
/// by start and depth), instants in theirs (by time), and the ends of the
/// slices begun so far wait in a heap.
struct Edges<'a> {
    slices: &'a [Slice],
    instants: Vec<u64>,
    open: BinaryHeap<Reverse<(u64, Edge)>>,
    next_slice: usize,
    next_instant: usize,
}

impl<'a> Edges<'a> {
    fn new(slices: &'a [Slice], instants: Vec<u64>) -> Self {
        Edges { slices, instants, open: BinaryHeap::new(), next_slice: 0, next_instant: 0 }
    }
}

impl Iterator for Edges<'_> {
    type Item = (u64, Edge);

    fn next(&mut self) -> Option<(u64, Edge)> {
        let begin = self.slices.get(self.next_slice).map(|s| (s.start, Edge::Begin { depth: s.depth, slice: self.next_slice }));
        let instant = self.instants.get(self.next_instant).map(|&ts| (ts, Edge::Instant { index: self.next_instant }));
        let end = self.open.peek().map(|Reverse(e)| *e);
        let next = [begin, instant, end].into_iter().flatten().min()?;
        match next.1 {
            Edge::Begin { depth, slice } => {
                self.open.push(Reverse((self.slices[slice].end, Edge::End { depth: Reverse(depth), slice })));
                self.next_slice += 1;
            }
            Edge::Instant { .. } => self.next_instant += 1,
            Edge::End { .. } => {
                self.open.pop();
            }
        }
        Some(next)
    }
}

/// The sequence of one thread: its start packet, then BEGIN/END in time
/// order, properly nested, and the instants.
pub(super) fn thread_packets(
    tl: &Timeline,
    t: &ThreadTimeline,
    symbols: &Symbols,
    kinds: &HashMap<Frame, String>,
    input: ThreadInput,
    seq: &mut Sequence,
    emit: &mut dyn FnMut(&TracePacket) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let ThreadInput { slices, flows, instants } = input;
    let mut tables = Tables::default();
    // Every string goes in the sequence's first packet, so the labels are
    // made twice: here for their strings, then at each BEGIN (found in
    // the tables by then). Kept, they were 40 bytes a slice: 60 MB for a
    // thread of 1.5 M polls.
    for s in &slices {
        intern(label(tl, t, s, symbols, kinds), &mut tables);
    }
    let instant_names: Vec<u64> = instants.iter().map(|&(_, name, _)| tables.names.id(name)).collect();
    // Packets are written as they are made: a million of them in memory
    // took gigabytes.
    emit(&sequence_start(seq.id, Some(thread_uuid(tl.pid, t.tid)), interned(&tables)))?;
    for (ts, edge) in Edges::new(&slices, instants.iter().map(|i| i.0).collect()) {
        let event = match edge {
            Edge::Begin { slice, .. } => {
                let at = flows.partition_point(|f| (f.0 as usize) < slice);
                let ids: Vec<u64> = flows[at..].iter().take_while(|f| f.0 as usize == slice).map(|f| u64::from(f.1)).collect();
                begin_event(&intern(label(tl, t, &slices[slice], symbols, kinds), &mut tables), &ids)
            }
            Edge::End { .. } => {
                let mut end = TrackEvent::new();
                end.set_type(Type::TYPE_SLICE_END);
                end
            }
            Edge::Instant { index } => {
                let mut instant = TrackEvent::new();
                instant.set_type(Type::TYPE_INSTANT);
                instant.set_name_iid(instant_names[index]);
                let flows = &instants[index].2;
                #[allow(deprecated)]
                instant.flow_ids_old.extend(flows);
                instant
            }
        };
        emit(&seq.packet(ts - tl.start_ns, event))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The merge gives the order sorting every edge gave (ties included:
    /// ends inner first, instants, begins outer first).
    #[test]
    fn edges_come_in_the_order_a_full_sort_gives() {
        let mut state = 7u64;
        let mut random = |n: u64| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) % n
        };
        for _ in 0..2000 {
            let mut slices: Vec<Slice> = (0..random(12))
                .map(|i| {
                    let start = random(40);
                    Slice::new(start, start + 1 + random(15), random(3) as u32, Source::Poll(i as u32))
                })
                .collect();
            slices.sort_by_key(|s| (s.start, s.depth));
            let mut instants: Vec<u64> = (0..random(6)).map(|_| random(60)).collect();
            instants.sort_unstable();
            let mut sorted: Vec<(u64, Edge)> = Vec::new();
            for (i, s) in slices.iter().enumerate() {
                sorted.push((s.start, Edge::Begin { depth: s.depth, slice: i }));
                sorted.push((s.end, Edge::End { depth: Reverse(s.depth), slice: i }));
            }
            sorted.extend(instants.iter().enumerate().map(|(index, &ts)| (ts, Edge::Instant { index })));
            sorted.sort_unstable();
            assert_eq!(Edges::new(&slices, instants).collect::<Vec<_>>(), sorted);
        }
    }

    #[test]
    fn a_slice_is_24_bytes_and_keeps_its_source() {
        assert_eq!(std::mem::size_of::<Slice>(), 24);
        assert_eq!(Slice::new(1, 2, 0, Source::Poll(7)).source(), Source::Poll(7));
        assert_eq!(Slice::new(1, 2, 1, Source::Blocked(7)).source(), Source::Blocked(7));
    }
}
