//! runtime-scope: timeline profiler for async Rust, built on eBPF.

mod btf;
#[macro_use]
mod say;
mod cli;
mod commands;
mod exec_follow;
mod fast_map;
mod failure;
mod identity;
mod formats;
mod kernel_features;
mod kernel_layout;
mod handoff;
mod held;
mod images;
mod launch;
mod mapped_array;
mod live;
mod modules;
mod output;
mod poll_returns;
mod privileges;
mod probes;
mod process;
mod recorder;
mod sink;
mod stacks;
mod stopping;
mod top;
mod thread_names;
mod tiers;
mod tracefs;
mod uprobe_multi;
mod wait_masks;
mod worker_loops;
mod watch;

use clap::Parser;
use cli::{Cli, Command};

fn main() {
    // A program launched under the profiler starts as us, held here.
    launch::run_stub_if_requested();
    let cli = Cli::parse();
    let result = match cli.command {
        None => commands::seed(cli.seed).map(|()| 0),
        Some(Command::Record(args)) => commands::record(args),
        Some(Command::Top(args)) => top::run(args),
        Some(Command::Watch(args)) => watch::run(args),
        Some(Command::Export(args)) => commands::export(args).map(|()| 0),
        Some(Command::Report(args)) => commands::report(args),
        Some(Command::Check) => kernel_features::check().map(|()| 0),
    };
    // Output is written by now; the probes may still be coming off.
    recorder::finish_detaching();
    match result {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            say!("runtime-scope: error: {err:#}");
            std::process::exit(failure::exit_code(&err));
        }
    }
}
