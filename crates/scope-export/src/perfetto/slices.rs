//! Thread tracks: each span a slice on its thread's own packet sequence,
//! names, categories, annotation names and blocked stacks interned.

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

const CATEGORY_ONCPU: u64 = 1;
const CATEGORY_OFFCPU: u64 = 2;
const CATEGORY_POLL: u64 = 3;
const CATEGORY_LONG_POLL: u64 = 4;
const DOINGS: [labels::Doing; 5] =
    [labels::Doing::UserCode, labels::Doing::Runtime, labels::Doing::BlockingInPoll, labels::Doing::Idle, labels::Doing::Preempted];

/// Interned category ids 5.. for what the code was doing.
fn category_of(d: labels::Doing) -> u64 {
    5 + DOINGS.iter().position(|&x| x == d).unwrap_or(0) as u64
}
const ANNOTATION_CPU: u64 = 1;
const ANNOTATION_STATE: u64 = 2;
const ANNOTATION_BLOCKED_IN: u64 = 3;
const ANNOTATION_STACK: u64 = 4;
const ANNOTATION_TASK: u64 = 5;
const ANNOTATION_POLL: u64 = 6;

/// What a span shows: name, category, and its annotations.
struct Label {
    name: String,
    category: u64,
    /// What the code was doing (user, runtime, blocking, idle, preempted).
    doing: Option<u64>,
    cpu: Option<u32>,
    state: Option<&'static str>,
    blocked_in: Option<String>,
    stack: Option<String>,
    /// (annotation name iid, value) pairs.
    numbers: Vec<(u64, u64)>,
    /// Flow arrows through this slice (spawn → first poll).
    flows: Vec<u64>,
}

fn label(tl: &Timeline, t: &ThreadTimeline, span: &Span, symbols: &Symbols) -> Option<Label> {
    let doing = labels::doing(tl, t, span, symbols).map(category_of);
    let plain = |name: &str, category| Label { name: name.into(), category, doing, cpu: None, state: None, blocked_in: None, stack: None, numbers: Vec::new(), flows: Vec::new() };
    match span.state {
        SpanState::OnCpu { cpu } => {
            let name = labels::running(tl, t, span, symbols).map_or("on-cpu".to_string(), |f| f.function);
            Some(Label { cpu, ..plain(&name, CATEGORY_ONCPU) })
        }
        SpanState::OffCpu(OffReason::Preempted) => Some(plain("preempted", CATEGORY_OFFCPU)),
        SpanState::OffCpu(OffReason::Blocked { state }) => {
            let mut l = plain(&format!("blocked ({})", state.letter()), CATEGORY_OFFCPU);
            l.state = Some(state.describe());
            if let Some((stack, telling)) = labels::blocked(tl, t, span, symbols) {
                l.blocked_in = Some(telling.describe());
                l.stack = Some(stack.join("\n"));
            }
            Some(l)
        }
        SpanState::OffCpu(OffReason::Unknown) => None,
    }
}

/// Interning ids, assigned in first-use order.
#[derive(Default)]
struct Table(BTreeMap<String, u64>);

impl Table {
    fn id(&mut self, s: &str) -> u64 {
        let next = self.0.len() as u64 + 1;
        *self.0.entry(s.to_string()).or_insert(next)
    }
}

fn annotation(name_iid: u64) -> DebugAnnotation {
    let mut a = DebugAnnotation::new();
    a.set_name_iid(name_iid);
    a
}

fn interned(names: &Table, strings: &Table) -> InternedData {
    let mut data = InternedData::new();
    for (name, &iid) in &names.0 {
        let mut n = EventName::new();
        n.iid = Some(iid);
        n.name = Some(name.clone());
        data.event_names.push(n);
    }
    for (iid, name) in [(CATEGORY_ONCPU, "oncpu"), (CATEGORY_OFFCPU, "offcpu"), (CATEGORY_POLL, "poll"), (CATEGORY_LONG_POLL, "long_poll")]
        .into_iter()
        .chain(DOINGS.iter().map(|&d| (category_of(d), d.category())))
    {
        let mut c = EventCategory::new();
        c.iid = Some(iid);
        c.name = Some(name.into());
        data.event_categories.push(c);
    }
    for (iid, name) in [
        (ANNOTATION_CPU, "cpu"),
        (ANNOTATION_STATE, "state"),
        (ANNOTATION_BLOCKED_IN, "blocked_in"),
        (ANNOTATION_STACK, "stack"),
        (ANNOTATION_TASK, "task"),
        (ANNOTATION_POLL, "poll"),
    ] {
        let mut a = DebugAnnotationName::new();
        a.iid = Some(iid);
        a.name = Some(name.into());
        data.debug_annotation_names.push(a);
    }
    for (value, &iid) in &strings.0 {
        let mut s = InternedString::new();
        s.iid = Some(iid);
        s.str = Some(value.clone().into_bytes());
        data.debug_annotation_string_values.push(s);
    }
    data
}

/// Polls as the pieces of them that ran on a CPU, one nesting level below
/// the on-CPU span they ran in (plus their own nesting).
fn poll_slices(t: &ThreadTimeline, kinds: &HashMap<Frame, String>) -> Vec<(u64, u64, u32, Label)> {
    let mut out = Vec::new();
    for poll in &t.polls {
        for (a, b) in tasks::on_cpu_pieces(t, poll) {
            let label = Label {
                name: kinds.get(&poll.poll_fn).cloned().unwrap_or_default(),
                category: if tasks::is_long(poll) { CATEGORY_LONG_POLL } else { CATEGORY_POLL },
                doing: None,
                cpu: None,
                state: None,
                blocked_in: None,
                stack: None,
                numbers: vec![(ANNOTATION_TASK, u64::from(poll.serial)), (ANNOTATION_POLL, u64::from(poll.number))],
                flows: Vec::new(),
            };
            out.push((a, b, 1 + poll.depth, label));
        }
    }
    out
}

fn begin_event(l: &Label, names: &mut Table, strings: &mut Table) -> TrackEvent {
    let mut begin = TrackEvent::new();
    begin.set_type(Type::TYPE_SLICE_BEGIN);
    begin.set_name_iid(names.id(&l.name));
    begin.category_iids.push(l.category);
    begin.category_iids.extend(l.doing);
    if let Some(cpu) = l.cpu {
        let mut a = annotation(ANNOTATION_CPU);
        a.set_uint_value(u64::from(cpu));
        begin.debug_annotations.push(a);
    }
    if let Some(state) = l.state {
        let mut a = annotation(ANNOTATION_STATE);
        a.set_string_value(state.into());
        begin.debug_annotations.push(a);
    }
    for (iid, value) in [(ANNOTATION_BLOCKED_IN, &l.blocked_in), (ANNOTATION_STACK, &l.stack)] {
        if let Some(v) = value {
            let mut a = annotation(iid);
            a.set_string_value_iid(strings.id(v));
            begin.debug_annotations.push(a);
        }
    }
    for &(iid, value) in &l.numbers {
        let mut a = annotation(iid);
        a.set_uint_value(value);
        begin.debug_annotations.push(a);
    }
    begin.flow_ids.extend(&l.flows);
    begin
}

/// The sequence of one thread: its start packet, then BEGIN/END in time
/// order, properly nested (at equal times: ends before begins, inner ends
/// first, outer begins first).
pub(super) fn thread_packets(
    tl: &Timeline,
    t: &ThreadTimeline,
    symbols: &Symbols,
    kinds: &HashMap<Frame, String>,
    flows: &[crate::flows::Flow],
    seq: &mut Sequence,
    emit: &mut dyn FnMut(&TracePacket) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut slices: Vec<(u64, u64, u32, Label)> =
        t.spans.iter().filter_map(|s| Some((s.start_ns, s.end_ns, 0, label(tl, t, s, symbols)?))).collect();
    slices.extend(poll_slices(t, kinds));
    // A flow leaves from the innermost slice around the spawn and ends on
    // the first piece of the task's first poll. Sorted by (start, depth),
    // the innermost slice holding an instant is the last-started one that
    // still holds it.
    slices.sort_by_key(|s| (s.0, s.2));
    // One sweep with the stack of open slices: searching back from each
    // instant was quadratic when one on-CPU span held 500k polls (a 1M-poll
    // capture took 5 minutes to export).
    let mut froms: Vec<(u64, u64)> = flows.iter().filter(|f| f.from.0 == t.tid).map(|f| (f.from.1, f.id)).collect();
    froms.sort_unstable();
    let (mut open, mut next): (Vec<usize>, usize) = (Vec::new(), 0);
    for (ts, id) in froms {
        while next < slices.len() && slices[next].0 <= ts {
            while open.last().is_some_and(|&o| slices[o].1 <= slices[next].0) {
                open.pop();
            }
            open.push(next);
            next += 1;
        }
        while open.last().is_some_and(|&o| slices[o].1 <= ts) {
            open.pop();
        }
        if let Some(&i) = open.last() {
            slices[i].3.flows.push(id);
        }
    }
    for flow in flows {
        if flow.to.0 == t.tid {
            let at = slices.partition_point(|s| s.0 < flow.to.1);
            if let Some(i) = (at..slices.len()).take_while(|&i| slices[i].0 == flow.to.1).find(|&i| slices[i].2 >= 1) {
                slices[i].3.flows.push(flow.id);
            }
        }
    }
    let (mut names, mut strings) = (Table::default(), Table::default());
    for (_, _, _, l) in &slices {
        names.id(&l.name);
        for s in [&l.blocked_in, &l.stack].into_iter().flatten() {
            strings.id(s);
        }
    }
    // Packets are written as they are made: a million of them in memory
    // took gigabytes.
    emit(&sequence_start(seq.id, thread_uuid(tl.pid, t.tid), interned(&names, &strings)))?;
    // (ts, 0 = end / 1 = begin, nesting order, slice index)
    let mut edges: Vec<(u64, u8, i64, usize)> = Vec::new();
    for (i, (start, end, depth, _)) in slices.iter().enumerate() {
        edges.push((*start, 1, i64::from(*depth), i));
        edges.push((*end, 0, -i64::from(*depth), i));
    }
    edges.sort();
    for (ts, kind, _, i) in edges {
        let event = if kind == 1 {
            begin_event(&slices[i].3, &mut names, &mut strings)
        } else {
            let mut end = TrackEvent::new();
            end.set_type(Type::TYPE_SLICE_END);
            end
        };
        emit(&seq.packet(ts - tl.start_ns, event))?;
    }
    Ok(())
}
