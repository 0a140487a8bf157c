//! Prints what each task kind of a binary is called and on what evidence:
//! `cargo run --release -p scope-stacks --example kinds -- BINARY [DEBUG_FILE]`
//! (instances by symbol, or by vtable shape when stripped).

use scope_stacks::task_kinds::{NamingOptions, name_kinds, poll_instances_by_shape};
use std::path::PathBuf;

fn main() {
    let mut args = std::env::args().skip(1);
    let binary = PathBuf::from(args.next().expect("usage: kinds BINARY [DEBUG_FILE]"));
    let options = NamingOptions { debug_files: args.next().map(PathBuf::from).into_iter().collect(), ..Default::default() };
    let data = std::fs::read(&binary).expect("readable binary");
    let mut polls: Vec<u64> = scope_stacks::probe_points::tokio_probe_points(&data).map(|p| p.polls.iter().map(|p| p.file_offset).collect()).unwrap_or_default();
    let by_shape = poll_instances_by_shape(&binary);
    eprintln!("{} instances by symbol, {} by vtable shape", polls.len(), by_shape.len());
    if polls.is_empty() {
        polls = by_shape;
    }
    let naming = name_kinds(&binary, &polls, &options);
    let mut rows: Vec<_> = naming.kinds.iter().collect();
    rows.sort_by_key(|(o, _)| **o);
    for (offset, kind) in rows {
        println!("{offset:#x}\t{:?}\t{:?}\t{}", kind.evidence, kind.role, kind.label().unwrap_or_else(|| "-".into()));
        if !kind.spawn_sites.is_empty() {
            println!("\tspawned at {}", kind.spawn_sites.join(", "));
        }
        if !kind.body_lines.is_empty() {
            println!("\tbody lines {}", kind.body_lines.join(", "));
        }
    }
    for w in naming.warnings {
        eprintln!("warning: {w}");
    }
}
