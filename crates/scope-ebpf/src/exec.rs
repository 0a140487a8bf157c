//! Following the target through exec: `record -- env X=1 ./app` and
//! `sh -c "exec ./app"` start one program that becomes another under the
//! same pid. The tracepoint runs in the process after the new image is in
//! place; userspace then moves the task probes to it.

use crate::{emit, header, target_tgid};
use aya_ebpf::{EbpfContext, macros::tracepoint, programs::TracePointContext};
use scope_common::{Exec, kind};

#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    if ctx.tgid() == target_tgid() {
        emit(Exec { header: header(kind::EXEC), pid: ctx.tgid(), tid: ctx.pid() });
    }
    0
}
