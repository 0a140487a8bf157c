//! Write throughput of the Perfetto and Chrome exporters on one capture,
//! side by side: the capture is read, analysed and symbolized once (not
//! timed, as `runtime-scope export` does before writing), then each format
//! is written to memory three times, alternating; medians.
//!
//! `cargo run --release -p scope-export --example export_speed -- X.rscope`
//! prints one line per format: `name events bytes seconds`.

use scope_model::{Symbols, Timeline, WorkerRule};
use std::time::Instant;

type Writer = fn(&Timeline, &Symbols, &mut Vec<u8>) -> std::io::Result<usize>;

fn main() {
    let path = std::env::args().nth(1).expect("usage: export_speed CAPTURE.rscope");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let recording = scope_model::capture::read(&bytes).unwrap_or_else(|e| panic!("{path}: {e}")).recording;
    let mut timeline = Timeline::build(&recording, &WorkerRule::default());
    let symbols = scope_stacks::symbolize::symbolize(&recording.all_modules(), timeline.frames());
    scope_export::tasks::classify_threads(&mut timeline, &symbols);
    let events = recording.events.len();
    drop(recording);
    let formats: [(&str, Writer); 2] = [
        ("perfetto", |tl, symbols, out| scope_export::perfetto::write(tl, symbols, out)),
        ("chrome", |tl, symbols, out| scope_export::chrome::write(tl, symbols, "bench", out)),
    ];
    let mut runs: Vec<Vec<(f64, usize)>> = vec![Vec::new(); formats.len()];
    for _ in 0..3 {
        for (i, (_, write)) in formats.iter().enumerate() {
            let mut out = Vec::new();
            let started = Instant::now();
            write(&timeline, &symbols, &mut out).expect("written to memory");
            runs[i].push((started.elapsed().as_secs_f64(), out.len()));
        }
    }
    for ((name, _), mut times) in formats.iter().zip(runs) {
        times.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (seconds, size) = times[1];
        println!("{name} {events} {size} {seconds:.4}");
    }
}
