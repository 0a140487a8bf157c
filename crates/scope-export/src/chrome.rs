//! Chrome Trace Event Format (JSON object form). One row per thread: workers
//! first, each on-CPU span a complete event (`ph: "X"`, `cat: "oncpu"`), each
//! observed off-CPU gap one too (`cat: "offcpu"`) named by its reason.

use crate::micros;
use scope_model::{OffReason, Role, SpanState, ThreadTimeline, Timeline};
use serde::Serialize;
use serde_json::{Value, json};
use std::io::{self, Write};

#[derive(Serialize)]
struct TraceFile<'a> {
    #[serde(rename = "traceEvents")]
    trace_events: Vec<Value>,
    #[serde(rename = "displayTimeUnit")]
    display_time_unit: &'a str,
    #[serde(rename = "otherData")]
    other_data: Value,
}

/// Metadata rows: process name and, per thread, its label and sort position.
fn metadata(tl: &Timeline, events: &mut Vec<Value>) {
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

fn span_events(tl: &Timeline, t: &ThreadTimeline, events: &mut Vec<Value>) {
    for span in &t.spans {
        let ts = micros(span.start_ns - tl.start_ns);
        let dur = micros(span.duration_ns());
        let event = match span.state {
            SpanState::OnCpu { cpu } => {
                let mut args = json!({ "cpu": cpu, "duration_us": dur });
                if let Role::Worker { index } = t.role {
                    args["worker_id"] = json!(index);
                }
                json!({
                    "name": "on-cpu", "cat": "oncpu", "ph": "X",
                    "ts": ts, "dur": dur, "pid": tl.pid, "tid": t.tid, "args": args
                })
            }
            SpanState::OffCpu(OffReason::Unknown) => continue,
            SpanState::OffCpu(OffReason::Preempted) => json!({
                "name": "preempted", "cat": "offcpu", "ph": "X", "cname": "grey",
                "ts": ts, "dur": dur, "pid": tl.pid, "tid": t.tid,
                "args": { "reason": "preempted", "duration_us": dur }
            }),
            SpanState::OffCpu(OffReason::Blocked { state }) => json!({
                "name": format!("blocked ({})", state.letter()), "cat": "offcpu", "ph": "X",
                "cname": "thread_state_sleeping",
                "ts": ts, "dur": dur, "pid": tl.pid, "tid": t.tid,
                "args": {
                    "reason": "blocked",
                    "state": state.letter().to_string(),
                    "state_meaning": state.describe(),
                    "duration_us": dur
                }
            }),
        };
        events.push(event);
    }
}

/// The whole trace as a JSON value (tests and small traces).
pub fn to_value(tl: &Timeline, tool_version: &str) -> Value {
    let mut events = Vec::new();
    metadata(tl, &mut events);
    for t in &tl.threads {
        span_events(tl, t, &mut events);
    }
    serde_json::to_value(TraceFile {
        trace_events: events,
        display_time_unit: "ms",
        other_data: json!({
            "tool": format!("runtime-scope {tool_version}"),
            "pid": tl.pid,
            "command": tl.command,
            "duration_us": micros(tl.duration_ns()),
            "lost_events": tl.lost_events,
            "missing_switches": tl.inconsistencies,
            "stop_reason": tl.stop_reason,
            "workers": tl.workers().count(),
        }),
    })
    .expect("trace values are plain JSON")
}

/// Writes the trace; returns the number of trace events written.
pub fn write(tl: &Timeline, tool_version: &str, out: impl Write) -> io::Result<usize> {
    let value = to_value(tl, tool_version);
    let count = value["traceEvents"].as_array().map_or(0, Vec::len);
    serde_json::to_writer(out, &value)?;
    Ok(count)
}
