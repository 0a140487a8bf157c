//! Every stack taken with a Tokio task id set, and the kind the watch
//! judge would read from it alone (`task_ids::kind_in_stack`): for finding
//! stacks that name an id wrongly. `cargo run --release -p scope-export
//! --example id_stacks -- X.rscope` prints one line per stack:
//! `tid T id N ts NS kind K :: innermost <- … <- outermost`.

use scope_model::{Timeline, WorkerRule};
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let recording = scope_model::capture::read(&bytes).unwrap().recording;
    let mut timeline = Timeline::build(&recording, &WorkerRule::default());
    let symbols = scope_stacks::symbolize::symbolize(&recording.all_modules(), timeline.frames());
    scope_export::tasks::classify_threads(&mut timeline, &symbols);
    for t in &timeline.threads {
        for (ts, stack, id) in scope_model::identity::stacks_with_ids(t) {
            let s = &timeline.stacks[stack as usize];
            let frames = symbols.expand(&s.frames);
            let kind = scope_export::task_ids::kind_in_stack(&frames);
            let names: Vec<&str> = frames.iter().map(|f| f.function.as_str()).collect();
            println!("tid {} id {id} ts {ts} kind {:?} :: {}", t.tid, kind, names.join(" <- "));
        }
    }
}
