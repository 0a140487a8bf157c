//! runtime-scope: timeline profiler for async Rust, built on eBPF.

mod cli;
mod failure;
mod live;
mod output;
mod privileges;
mod probes;
mod process;
mod recorder;
mod tracefs;

use anyhow::Result;
use clap::Parser;
use cli::Args;
use scope_model::{Timeline, WorkerRule};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn install_signal_handlers() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second Ctrl-C while we are writing the trace exits at once.
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&stop))?;
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    Ok(stop)
}

fn run(args: Args) -> Result<()> {
    if args.trace {
        output::check_writable(&args.trace_output)?;
    }
    if let Some(path) = &args.save_recording {
        output::check_writable(path)?;
    }
    let target = process::Target::open(args.pid, args.target.clone())?;
    privileges::check()?;
    let rule = WorkerRule::with_extra(&args.worker_prefixes);
    let stop = install_signal_handlers()?;
    let settings = recorder::Settings {
        duration_ns: args.duration * 1_000_000_000,
        live: !args.no_live,
        rule: rule.clone(),
    };
    let recording = recorder::record(&target, &settings, &stop)?;
    let timeline = Timeline::build(&recording, &rule);
    if timeline.workers().next().is_none() {
        eprintln!(
            "runtime-scope: warning: no Tokio worker threads found in {} (names tokio-rt-worker / \
             tokio-runtime-w); all threads were recorded. Custom names: --workers PREFIX",
            recording.command
        );
    }
    if let Some(path) = &args.save_recording {
        output::write_atomically(path, |out| {
            serde_json::to_writer(out, &recording).map_err(std::io::Error::other)
        })?;
    }
    print!("{}", scope_export::summary::render(&timeline));
    if args.trace {
        let count = output::write_atomically(&args.trace_output, |out| {
            scope_export::chrome::write(&timeline, VERSION, out)
        })?;
        let size = std::fs::metadata(&args.trace_output).map(|m| m.len()).unwrap_or(0);
        println!(
            "Trace written to {} ({} events, {:.1} MB). Open it at https://ui.perfetto.dev \
             (\"Open trace file\") or in chrome://tracing (\"Load\").",
            args.trace_output.display(),
            count,
            size as f64 / 1e6
        );
    }
    Ok(())
}

fn main() {
    let args = Args::parse();
    if let Err(err) = run(args) {
        eprintln!("runtime-scope: error: {err:#}");
        std::process::exit(failure::exit_code(&err));
    }
}
