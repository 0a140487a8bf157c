//! Chrome Trace Event Format (JSON object form). One row per thread: workers
//! first, each on-CPU span a complete event (`ph: "X"`, `cat: "oncpu"`), each
//! observed off-CPU gap one too (`cat: "offcpu"`) named by its reason.

use crate::{labels, micros, tasks};
use scope_model::{OffReason, ResolvedFrame, Role, SpanState, Symbols, ThreadTimeline, Timeline};
use std::collections::HashMap;
use serde::Serialize;
use serde_json::{Value, json};
use std::io::{self, Write};

#[derive(Serialize)]
struct TraceFile<'a> {
    #[serde(rename = "traceEvents")]
    trace_events: Vec<Value>,
    #[serde(rename = "stackFrames")]
    stack_frames: serde_json::Map<String, Value>,
    #[serde(rename = "displayTimeUnit")]
    display_time_unit: &'a str,
    #[serde(rename = "otherData")]
    other_data: Value,
}

/// Metadata rows: process name and, per thread, its label and sort position.
fn metadata(tl: &Timeline, events: &mut dyn Events) {
    events.push(json!({
        "name": "process_name", "ph": "M", "pid": tl.pid, "tid": tl.pid,
        "args": { "name": format!("{} (pid {})", tl.command, tl.pid) }
    }));
    for (position, t) in tl.threads.iter().enumerate() {
        events.push(json!({
            "name": "thread_name", "ph": "M", "pid": tl.pid, "tid": t.tid,
            "args": { "name": t.display_name() }
        }));
        events.push(json!({
            "name": "thread_sort_index", "ph": "M", "pid": tl.pid, "tid": t.tid,
            "args": { "sort_index": position }
        }));
    }
}

/// The `stackFrames` tree: one node per distinct (parent, frame).
#[derive(Default)]
struct FrameTree {
    ids: HashMap<(Option<u64>, String), u64>,
    nodes: serde_json::Map<String, Value>,
}

impl FrameTree {
    /// Id of the leaf of `frames` (innermost first).
    fn leaf(&mut self, frames: &[ResolvedFrame]) -> Option<u64> {
        let mut parent = None;
        for f in frames.iter().rev() {
            let key = (parent, f.describe());
            let next = self.ids.len() as u64 + 1;
            let id = *self.ids.entry(key).or_insert_with(|| {
                let mut node = json!({ "name": f.describe(), "category": if f.inlined { "inlined" } else { "function" } });
                if let Some(p) = parent {
                    node["parent"] = json!(p.to_string());
                }
                self.nodes.insert(next.to_string(), node);
                next
            });
            parent = Some(id);
        }
        parent
    }
}

fn span_events(tl: &Timeline, t: &ThreadTimeline, symbols: &Symbols, events: &mut dyn Events) {
    for span in &t.spans {
        let ts = micros(span.start_ns - tl.start_ns);
        let dur = micros(span.duration_ns());
        let mut event = match span.state {
            SpanState::OnCpu { cpu } => {
                let mut args = json!({ "cpu": cpu, "duration_us": dur });
                if let Role::Worker { index, .. } = t.role {
                    args["worker_id"] = json!(index);
                }
                let name = match labels::running(tl, t, span, symbols) {
                    Some(frame) => {
                        args["running"] = json!(frame.describe());
                        frame.function
                    }
                    None => "on-cpu".to_string(),
                };
                json!({
                    "name": name, "cat": "oncpu", "ph": "X",
                    "ts": ts, "dur": dur, "pid": tl.pid, "tid": t.tid, "args": args
                })
            }
            SpanState::OffCpu(OffReason::Unknown) => continue,
            SpanState::OffCpu(OffReason::Preempted) => json!({
                "name": "preempted", "cat": "offcpu", "ph": "X", "cname": "grey",
                "ts": ts, "dur": dur, "pid": tl.pid, "tid": t.tid,
                "args": { "reason": "preempted", "duration_us": dur }
            }),
            SpanState::OffCpu(OffReason::Woken) => {
                let mut args = json!({ "reason": "woken", "duration_us": dur });
                if let Some(w) = t.woken_by(span) {
                    args["woken_by"] = json!(crate::insights::long_polls::waker_name(tl, w));
                }
                json!({
                    "name": "woken, waiting for a CPU", "cat": "offcpu", "ph": "X", "cname": "thread_state_runnable",
                    "ts": ts, "dur": dur, "pid": tl.pid, "tid": t.tid, "args": args
                })
            }
            SpanState::OffCpu(OffReason::Blocked { state }) => {
                let mut args = json!({
                    "reason": "blocked",
                    "state": state.letter().to_string(),
                    "state_meaning": state.describe(),
                    "duration_us": dur
                });
                if let Some((stack, telling)) = labels::blocked(tl, t, span, symbols) {
                    args["blocked_in"] = json!(telling.describe());
                    args["stack"] = json!(stack);
                }
                json!({
                    "name": format!("blocked ({})", state.letter()), "cat": "offcpu", "ph": "X",
                    "cname": "thread_state_sleeping",
                    "ts": ts, "dur": dur, "pid": tl.pid, "tid": t.tid, "args": args
                })
            }
        };
        if let Some(doing) = labels::doing(tl, t, span, symbols) {
            let cat = format!("{},{}", event["cat"].as_str().unwrap_or_default(), doing.category());
            event["cat"] = json!(cat);
            event["cname"] = json!(doing.chrome_colour());
        }
        events.push(event);
    }
}

/// Each poll as the slices of it that ran on a CPU, nested in the on-CPU
/// spans of the thread's row (a poll that blocks spans several).
fn poll_events(tl: &Timeline, t: &ThreadTimeline, kinds: &HashMap<scope_model::Frame, String>, events: &mut dyn Events) {
    for poll in &t.polls {
        let pieces: Vec<(u64, u64)> = tasks::on_cpu_pieces(t, poll).collect();
        let on = pieces.iter().map(|(a, b)| b - a).sum::<u64>();
        let kind = kinds.get(&tl.poll_fn(poll)).cloned().unwrap_or_default();
        let long = tasks::is_long_leaf(t, poll);
        for (i, (a, b)) in pieces.iter().enumerate() {
            let mut args = json!({
                "task": poll.serial,
                "task_addr": format!("{:#x}", tl.task_addr(poll.serial).unwrap_or(0)),
                "poll": poll.number,
                "poll_us": micros(poll.duration_ns()),
                "on_cpu_us": micros(on),
                "off_cpu_us": micros(poll.duration_ns() - on),
            });
            if let Some(id) = tl.tokio_ids.get(&poll.serial) {
                args["tokio_task_id"] = json!(id);
            }
            if pieces.len() > 1 {
                args["piece"] = json!(format!("{} of {}", i + 1, pieces.len()));
            }
            if !poll.finished {
                args["unfinished"] = json!(true);
            }
            if poll.bounded {
                // No return probe (`--polls starts`): it ended by its end.
                args["end"] = json!("upper bound");
            }
            events.push(json!({
                "name": kind, "cat": if long { "poll,long_poll" } else { "poll" }, "ph": "X",
                "cname": if long { "bad" } else { "good" },
                "ts": micros(a - tl.start_ns), "dur": micros(b - a), "pid": tl.pid, "tid": t.tid, "args": args
            }));
        }
    }
}

/// cpu-clock samples as instant events: `sf` points into `stackFrames`
/// (chrome://tracing shows it on click), `args.stack` spells it out for
/// viewers that ignore `sf`.
fn sample_events(tl: &Timeline, t: &ThreadTimeline, symbols: &Symbols, tree: &mut FrameTree, events: &mut dyn Events) {
    for &(ts, index) in &t.samples {
        let frames = labels::stack(tl, symbols, index);
        let name = labels::most_telling(tl, symbols, index).map_or("sample".to_string(), |f| f.function);
        let mut event = json!({
            "name": name, "cat": "sample", "ph": "i", "s": "t",
            "ts": micros(ts.saturating_sub(tl.start_ns)), "pid": tl.pid, "tid": t.tid,
            "args": { "stack": frames.iter().map(ResolvedFrame::describe).collect::<Vec<_>>() }
        });
        if let Some(leaf) = tree.leaf(&frames) {
            event["sf"] = json!(leaf.to_string());
        }
        events.push(event);
    }
}

/// Where trace events go: collected (tests), or written as they come (a
/// million-poll trace built as one JSON value took 4 GB).
trait Events {
    fn push(&mut self, event: Value);
}

impl Events for Vec<Value> {
    fn push(&mut self, event: Value) {
        Vec::push(self, event);
    }
}

struct Streamed<W: Write> {
    out: W,
    count: usize,
    error: Option<io::Error>,
}

impl<W: Write> Events for Streamed<W> {
    fn push(&mut self, event: Value) {
        if self.error.is_some() {
            return;
        }
        let sep: &[u8] = if self.count == 0 { b"" } else { b"," };
        let written = self.out.write_all(sep).and_then(|()| serde_json::to_writer(&mut self.out, &event).map_err(io::Error::from));
        if let Err(e) = written {
            self.error = Some(e);
        }
        self.count += 1;
    }
}

/// Every trace event, in the order the file lists them; returns the stack
/// frames the samples refer to.
fn all_events(tl: &Timeline, symbols: &Symbols, events: &mut dyn Events) -> FrameTree {
    let mut tree = FrameTree::default();
    metadata(tl, events);
    let kinds = tasks::kind_names(tl, symbols);
    let flows = crate::flows::flows(tl);
    for series in crate::counters::series(tl, &flows) {
        for (ts, value) in series.points {
            let ts = micros(ts.saturating_sub(tl.start_ns));
            events.push(json!({ "name": series.name, "ph": "C", "ts": ts, "pid": tl.pid, "args": { "value": value } }));
        }
    }
    for flow in flows {
        // Flow events bind to the slice enclosing them on their thread.
        let at = |(tid, ts): (u32, u64)| (tid, micros(ts.saturating_sub(tl.start_ns)));
        let ((from_tid, from_ts), (to_tid, to_ts)) = (at(flow.from()), at(flow.to()));
        let name = flow.kind.name();
        events.push(json!({ "name": name, "cat": name, "ph": "s", "id": flow.id, "ts": from_ts, "pid": tl.pid, "tid": from_tid }));
        events.push(json!({ "name": name, "cat": name, "ph": "f", "bp": "e", "id": flow.id, "ts": to_ts, "pid": tl.pid, "tid": to_tid }));
    }
    for t in &tl.threads {
        span_events(tl, t, symbols, events);
        poll_events(tl, t, &kinds, events);
        sample_events(tl, t, symbols, &mut tree, events);
    }
    tree
}

fn other_data(tl: &Timeline, tool_version: &str) -> Value {
    json!({
            "tool": format!("runtime-scope {tool_version}"),
            "pid": tl.pid,
            "command": tl.command,
            "duration_us": micros(tl.duration_ns()),
            "lost_events": tl.lost_events,
            "missing_switches": tl.inconsistencies,
            "stop_reason": tl.stop_reason,
            "workers": tl.workers().count(),
    })
}

/// The whole trace as a JSON value (tests and small traces).
pub fn to_value(tl: &Timeline, symbols: &Symbols, tool_version: &str) -> Value {
    let mut events = Vec::new();
    let tree = all_events(tl, symbols, &mut events);
    serde_json::to_value(TraceFile {
        trace_events: events,
        stack_frames: tree.nodes,
        display_time_unit: "ms",
        other_data: other_data(tl, tool_version),
    })
    .expect("trace values are plain JSON")
}

/// Writes the trace as it is made; returns the number of trace events.
pub fn write(tl: &Timeline, symbols: &Symbols, tool_version: &str, mut out: impl Write) -> io::Result<usize> {
    out.write_all(b"{\"traceEvents\":[")?;
    let mut events = Streamed { out: &mut out, count: 0, error: None };
    let tree = all_events(tl, symbols, &mut events);
    if let Some(e) = events.error {
        return Err(e);
    }
    let count = events.count;
    out.write_all(b"],\"stackFrames\":")?;
    serde_json::to_writer(&mut out, &tree.nodes)?;
    out.write_all(b",\"displayTimeUnit\":\"ms\",\"otherData\":")?;
    serde_json::to_writer(&mut out, &other_data(tl, tool_version))?;
    out.write_all(b"}")?;
    Ok(count)
}
