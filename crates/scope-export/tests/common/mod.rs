use scope_model::{Recording, Timeline, WorkerRule};

/// 115 events from a real run of the demo app, tids and clock renumbered.
pub fn fixture() -> Timeline {
    let rec: Recording = serde_json::from_str(include_str!("../fixtures/demo-recording.json")).expect("fixture parses");
    Timeline::build(&rec, &WorkerRule::default())
}
