//! Task kinds that naming from the binary has got wrong, one shape each,
//! all compiled into one program (one build serves every shape):
//!
//! - `alias`: three `async fn`s whose futures drop alike (`ticker`,
//!   `hog_cpu`, `sleepy_poll`): their drop glue is one function with three
//!   alias names. `hog_cpu` burns ~30 ms of CPU per poll.
//! - `generic`: one `async fn` and one hand-written future, each spawned
//!   with two different generic arguments.
//! - `instrumented`: connection handlers wrapped in `tracing::Instrumented`.
//! - `nested`: two async blocks spawned from inside one `async fn`.
//! - `local`: `LocalSet::spawn_local` tasks.
//! - `blocking`: two `spawn_blocking` closures.
//! - `current-thread`: a future spawned on a current_thread runtime too.
//!
//! `kind-scenarios SHAPE [SECONDS]` runs one shape (default 1 s);
//! `kind-scenarios all` runs each briefly.

mod shapes;

use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1);
    let shape = args.next().unwrap_or_default();
    let seconds = args.next().and_then(|s| s.parse::<f64>().ok()).unwrap_or(1.0);
    let run_for = Duration::from_secs_f64(seconds);
    let run = |name: &str| match name {
        "alias" => shapes::alias(run_for),
        "generic" => shapes::generic(run_for),
        "instrumented" => shapes::instrumented(run_for),
        "nested" => shapes::nested(run_for),
        "local" => shapes::local(run_for),
        "blocking" => shapes::blocking(run_for),
        "current-thread" => shapes::current_thread(run_for),
        _ => {
            eprintln!("usage: kind-scenarios <alias|generic|instrumented|nested|local|blocking|current-thread|all> [SECONDS]");
            std::process::exit(2);
        }
    };
    if shape == "all" {
        for name in shapes::ALL {
            run(name);
        }
    } else {
        run(&shape);
    }
}
