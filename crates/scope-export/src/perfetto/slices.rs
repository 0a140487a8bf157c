//! Thread tracks: each span a slice on its thread's own packet sequence,
//! names, categories, annotation names and string values interned.
//!
//! Most of the file is per-packet overhead (framing, delta timestamp,
//! sequence id, event type: ~11 bytes an END), so what a BEGIN adds is kept
//! to ids: one category id per slice (a combined name such as
//! `offcpu,idle` reads the same in the UI as two categories), interned
//! annotation values, and the worker counter riding on the slice edges that
//! change it instead of packets of its own.

use super::{Sequence, sequence_start, thread_uuid};
use crate::{labels, tasks};
use perfetto_protos::debug_annotation::{DebugAnnotation, DebugAnnotationName};
use perfetto_protos::interned_data::InternedData;
use perfetto_protos::profile_common::InternedString;
use perfetto_protos::trace_packet::TracePacket;
use perfetto_protos::track_event::track_event::Type;
use perfetto_protos::track_event::{EventCategory, EventName, TrackEvent};
use scope_model::{Frame, OffReason, Span, SpanState, Symbols, ThreadTimeline, Timeline};
use std::collections::{BTreeMap, HashMap};

const ANNOTATION_CPU: u64 = 1;
const ANNOTATION_BLOCKED_IN: u64 = 3;
const ANNOTATION_STACK: u64 = 4;
const ANNOTATION_TASK: u64 = 5;
const ANNOTATION_POLL: u64 = 6;
const ANNOTATION_TOKIO_ID: u64 = 7;

/// Where a slice comes from: a span or a poll of its thread (by index).
#[derive(Clone, Copy)]
pub(super) enum Source {
    Span(usize),
    Poll(usize),
}

/// A slice's place on its track: depth 0 for spans, 1 + nesting for the
/// on-CPU pieces of polls.
#[derive(Clone, Copy)]
pub(super) struct Slice {
    pub start: u64,
    pub end: u64,
    pub depth: u32,
    source: Source,
}

/// Every slice of a thread, sorted by (start, depth): the order flow ids
/// and packets refer to.
pub(super) fn geometry(t: &ThreadTimeline) -> Vec<Slice> {
    let mut out: Vec<Slice> = t
        .spans
        .iter()
        .enumerate()
        .filter(|(_, s)| !matches!(s.state, SpanState::OffCpu(OffReason::Unknown)))
        .map(|(i, s)| Slice { start: s.start_ns, end: s.end_ns, depth: 0, source: Source::Span(i) })
        .collect();
    for (i, poll) in t.polls.iter().enumerate() {
        for (a, b) in tasks::on_cpu_pieces(t, poll) {
            out.push(Slice { start: a, end: b, depth: 1 + poll.depth, source: Source::Poll(i) });
        }
    }
    out.sort_by_key(|s| (s.start, s.depth));
    out
}

/// What a slice shows: name, category, and its annotations.
struct Label {
    name: String,
    /// One category, or several joined by commas.
    category: String,
    cpu: Option<u32>,
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

fn span_label(tl: &Timeline, t: &ThreadTimeline, span: &Span, symbols: &Symbols) -> Label {
    let doing = labels::doing(tl, t, span, symbols);
    let plain = |name: String, category: &str| Label {
        name,
        category: doing.map_or(category.to_string(), |d| format!("{category},{}", d.category())),
        cpu: None,
        blocked_in: None,
        stack: None,
        task: None,
    };
    match span.state {
        SpanState::OnCpu { cpu } => {
            let name = labels::running(tl, t, span, symbols).map_or("on-cpu".to_string(), |f| f.function);
            Label { cpu, ..plain(name, "oncpu") }
        }
        SpanState::OffCpu(OffReason::Blocked { state }) => {
            // The name's letter is the state (as in the Chrome args).
            let mut l = plain(format!("blocked ({})", state.letter()), "offcpu");
            if let Some((stack, telling)) = labels::blocked(tl, t, span, symbols) {
                l.blocked_in = Some(telling.describe());
                l.stack = Some(stack.join("\n"));
            }
            l
        }
        // Unknown gaps are not slices (see `geometry`).
        SpanState::OffCpu(_) => plain("preempted".into(), "offcpu"),
    }
}

fn label(tl: &Timeline, t: &ThreadTimeline, slice: &Slice, symbols: &Symbols, kinds: &HashMap<Frame, String>) -> Label {
    match slice.source {
        Source::Span(i) => span_label(tl, t, &t.spans[i], symbols),
        Source::Poll(i) => {
            let poll = &t.polls[i];
            Label {
                name: kinds.get(&poll.poll_fn).cloned().unwrap_or_default(),
                category: if tasks::is_long_leaf(t, poll) { "long_poll" } else { "poll" }.into(),
                cpu: None,
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
        (ANNOTATION_CPU, "cpu"),
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

fn intern(l: &Label, tables: &mut Tables) {
    tables.names.id(&l.name);
    tables.categories.id(&l.category);
    for s in [&l.blocked_in, &l.stack].into_iter().flatten() {
        tables.strings.id(s);
    }
}

fn begin_event(l: &Label, tables: &mut Tables, flows: &[u64]) -> TrackEvent {
    let mut begin = TrackEvent::new();
    begin.set_type(Type::TYPE_SLICE_BEGIN);
    begin.set_name_iid(tables.names.id(&l.name));
    begin.category_iids.push(tables.categories.id(&l.category));
    let uint = |iid, value: u64| {
        let mut a = annotation(iid);
        a.set_uint_value(value);
        a
    };
    if let Some(cpu) = l.cpu {
        begin.debug_annotations.push(uint(ANNOTATION_CPU, u64::from(cpu)));
    }
    for (iid, value) in [(ANNOTATION_BLOCKED_IN, &l.blocked_in), (ANNOTATION_STACK, &l.stack)] {
        if let Some(v) = value {
            let mut a = annotation(iid);
            a.set_string_value_iid(tables.strings.id(v));
            begin.debug_annotations.push(a);
        }
    }
    if let Some((task, poll)) = l.task {
        begin.debug_annotations.push(match task {
            TaskRef::Tokio(id) => uint(ANNOTATION_TOKIO_ID, id),
            TaskRef::Serial(serial) => uint(ANNOTATION_TASK, u64::from(serial)),
        });
        begin.debug_annotations.push(uint(ANNOTATION_POLL, u64::from(poll)));
    }
    // Varints: the `fixed64` field costs 10 bytes an id whatever its size.
    #[allow(deprecated)]
    begin.flow_ids_old.extend(flows);
    begin
}

/// What one thread's sequence needs besides the thread.
pub(super) struct ThreadInput<'a> {
    pub slices: Vec<Slice>,
    /// `(slice index, flow id)`, sorted.
    pub flows: Vec<(usize, u64)>,
    /// Worker-counter levels still to place, by ns since the start: the
    /// first on-CPU edge written at such an instant carries the level.
    pub counter: Option<(u64, &'a mut BTreeMap<u64, i64>)>,
}

/// The sequence of one thread: its start packet, then BEGIN/END in time
/// order, properly nested (at equal times: ends before begins, inner ends
/// first, outer begins first).
pub(super) fn thread_packets(
    tl: &Timeline,
    t: &ThreadTimeline,
    symbols: &Symbols,
    kinds: &HashMap<Frame, String>,
    input: ThreadInput,
    seq: &mut Sequence,
    emit: &mut dyn FnMut(&TracePacket) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let ThreadInput { slices, flows, mut counter } = input;
    let labels: Vec<Label> = slices.iter().map(|s| label(tl, t, s, symbols, kinds)).collect();
    let mut tables = Tables::default();
    for l in &labels {
        intern(l, &mut tables);
    }
    // Packets are written as they are made: a million of them in memory
    // took gigabytes.
    let counter_track: Vec<u64> = counter.as_ref().map(|c| c.0).into_iter().collect();
    emit(&sequence_start(seq.id, Some(thread_uuid(tl.pid, t.tid)), &counter_track, interned(&tables)))?;
    // (ts, 0 = end / 1 = begin, nesting order, slice index)
    let mut edges: Vec<(u64, u8, i64, usize)> = Vec::with_capacity(2 * slices.len());
    for (i, s) in slices.iter().enumerate() {
        edges.push((s.start, 1, i64::from(s.depth), i));
        edges.push((s.end, 0, -i64::from(s.depth), i));
    }
    edges.sort_unstable();
    for (ts, kind, _, i) in edges {
        let mut event = if kind == 1 {
            let at = flows.partition_point(|f| f.0 < i);
            let ids: Vec<u64> = flows[at..].iter().take_while(|f| f.0 == i).map(|f| f.1).collect();
            begin_event(&labels[i], &mut tables, &ids)
        } else {
            let mut end = TrackEvent::new();
            end.set_type(Type::TYPE_SLICE_END);
            end
        };
        let ts = ts - tl.start_ns;
        let on_cpu = matches!(slices[i].source, Source::Span(s) if matches!(t.spans[s].state, SpanState::OnCpu { .. }));
        if let Some(level) = counter.as_mut().filter(|_| on_cpu).and_then(|(_, levels)| levels.remove(&ts)) {
            event.extra_counter_values.push(level);
        }
        emit(&seq.packet(ts, event))?;
    }
    Ok(())
}
