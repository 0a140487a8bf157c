//! Stacks without frame pointers or debug builds: copied user stacks are
//! unwound with the `.eh_frame` every Rust binary carries ([`unwind`]), and
//! addresses, normalised to (module, file offset), are named by blazesym
//! with inlined frames and source lines where debuginfo exists
//! ([`symbolize`]). Pure: reads binaries, never the target.

pub mod context_dwarf;
pub mod debug_file;
mod drop_glue;
mod dwarf_kinds;
pub mod elf;
mod future_code;
mod image;
pub mod locations;
pub mod poll_code;
pub mod probe_points;
pub mod symbolize;
pub mod task_context;
pub mod task_kinds;
pub mod task_layout;
mod task_vtables;
pub mod unwind;
