//! What the BTF programs need to know about the running kernel, from its
//! BTF: `task_struct` offsets, the `sched_switch` prototype and the size of
//! a kernel stack.

use crate::btf::Btf;
use anyhow::{Context, Result, bail};
use scope_common::KernelLayout;

fn field(btf: &Btf, path: &str, sizes: &[u32]) -> Result<u32> {
    let (offset, size) = btf
        .offset_of("task_struct", path)
        .with_context(|| format!("task_struct.{path} not found in the kernel's BTF: unsupported kernel"))?;
    if !sizes.contains(&size) {
        bail!("task_struct.{path} is {size} bytes here, expected {sizes:?}: unsupported kernel");
    }
    Ok(offset)
}

pub fn read(btf: &Btf) -> Result<KernelLayout> {
    // `state` was a long until 5.14 renamed it `__state` (an unsigned int);
    // the low 32 bits hold every state bit either way (little-endian).
    let task_state = field(btf, "__state", &[4]).or_else(|_| field(btf, "state", &[8]))?;
    let switch_args = btf.tracepoint_args("sched_switch").context("no BTF prototype for sched_switch")?;
    Ok(KernelLayout {
        task_pid: field(btf, "pid", &[4])?,
        task_tgid: field(btf, "tgid", &[4])?,
        task_state,
        task_fsbase: field(btf, "thread.fsbase", &[8])?,
        switch_state_arg: u32::from(switch_args >= 4),
        task_stack: field(btf, "stack", &[8])?,
        // x86-64 sizes its interrupt stacks like task stacks (IRQ_STACK_ORDER
        // = THREAD_SIZE_ORDER, both grown by KASAN), and BTF has the former.
        thread_size: btf.struct_size("irq_stack").unwrap_or(0),
        task_flags: field(btf, "flags", &[4])?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_kernel_has_every_field() {
        let btf = Btf::from_sys_fs().expect("kernel BTF");
        let l = read(&btf).expect("layout");
        assert_eq!(l.task_tgid, l.task_pid + 4);
        assert!(l.thread_size == 16384 || l.thread_size == 32768, "thread size {}", l.thread_size);
    }
}
