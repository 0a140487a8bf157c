//! Prints a capture's events, one JSON object per line in time order, for
//! looking at what the kernel delivered: `cargo run --release -p
//! scope-model --example capture_events -- run.rscope [FROM_NS TO_NS]`
//! (times relative to the recording's start).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args.first().ok_or("usage: capture_events CAPTURE [FROM_NS TO_NS]")?;
    let loaded = scope_model::capture::read(&std::fs::read(path)?)?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    let start = loaded.recording.start_ns;
    let bound = |i: usize, default: u64| args.get(i).and_then(|a| a.parse::<u64>().ok()).unwrap_or(default);
    let (from, to) = (bound(1, 0), bound(2, u64::MAX));
    let mut events: Vec<&scope_model::Event> = loaded.recording.events.iter().collect();
    events.sort_by_key(|e| e.ts());
    for e in events {
        let at = e.ts().saturating_sub(start);
        if (from..=to).contains(&at) {
            println!("{at} {}", serde_json::to_string(e)?);
        }
    }
    Ok(())
}
