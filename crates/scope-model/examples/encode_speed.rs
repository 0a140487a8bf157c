//! How fast the recorder's capture encoder is: every event of a capture
//! encoded in batches of 256 (what a drain of a busy ring buffer holds), a
//! few rounds, ns per event (median): `cargo run --release -p scope-model
//! --example encode_speed -- run.rscope`.

use scope_model::capture::{CaptureWriter, Start, Stop};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: encode_speed CAPTURE")?;
    let rec = scope_model::capture::read(&std::fs::read(path)?)?.recording;
    let mut rounds = Vec::new();
    for _ in 0..7 {
        let started = Instant::now();
        let mut w = CaptureWriter::new(std::io::sink(), &Start::of(&rec))?;
        for batch in rec.events.chunks(256) {
            w.events(batch)?;
        }
        w.finish(&Stop::of(&rec))?;
        rounds.push(started.elapsed().as_nanos() as f64 / rec.events.len() as f64);
    }
    rounds.sort_by(f64::total_cmp);
    println!("{} events: {:.1} ns per event (median of {})", rec.events.len(), rounds[rounds.len() / 2], rounds.len());
    Ok(())
}
