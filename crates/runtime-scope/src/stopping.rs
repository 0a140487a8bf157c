//! When and why a session stops, and what a signal does in each phase.
//!
//! While recording, SIGINT, SIGTERM and SIGHUP (the terminal closed) stop
//! the recording; the capture is finished and the trace written as for any
//! other stop. After it, while the trace is written (the finishing phase),
//! the first signal is acknowledged ("finishing the export; Ctrl-C again to
//! abandon it"), a second abandons the export: the half-written output is
//! removed, the capture is kept under a visible name and said where, and
//! we exit 130. The handling runs on a thread of its own (signal-hook's
//! iterator), so it may print and touch files.

use scope_model::StopReason;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

/// Set once, by whoever stops the recording first; says why.
#[derive(Default)]
pub struct StopFlag(AtomicU8);

fn code(reason: StopReason) -> u8 {
    match reason {
        StopReason::Duration => 1,
        StopReason::Signal => 2,
        StopReason::TargetExited => 3,
        StopReason::Incomplete => 4,
        StopReason::Quit => 5,
        StopReason::OutputClosed => 6,
        StopReason::Snapshot => 7,
    }
}

impl StopFlag {
    /// Asks the recording to stop; the first reason given is kept.
    pub fn request(&self, reason: StopReason) {
        let _ = self.0.compare_exchange(0, code(reason), Ordering::Relaxed, Ordering::Relaxed);
    }

    pub fn requested(&self) -> Option<StopReason> {
        let reasons = [
            StopReason::Duration,
            StopReason::Signal,
            StopReason::TargetExited,
            StopReason::Incomplete,
            StopReason::Quit,
            StopReason::OutputClosed,
            StopReason::Snapshot,
        ];
        let now = self.0.load(Ordering::Relaxed);
        reasons.into_iter().find(|r| code(*r) == now)
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed) != 0
    }
}

/// What a second signal while finishing abandons and what it keeps.
#[derive(Default)]
struct Finishing {
    active: bool,
    signals: u32,
    /// The output being written, and its temporary name (removed).
    output: Option<(PathBuf, PathBuf)>,
    /// The capture, kept: a temporary one is moved to a visible name.
    capture: Option<(PathBuf, bool)>,
}

pub struct Session {
    pub stop: StopFlag,
    finishing: Mutex<Finishing>,
}

/// Installs the handlers for this process's session.
pub fn install() -> anyhow::Result<Arc<Session>> {
    let session = Arc::new(Session { stop: StopFlag::default(), finishing: Mutex::new(Finishing::default()) });
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    let handler = Arc::clone(&session);
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        for signal in signals.forever() {
            handler.on_signal(signal);
        }
    })?;
    Ok(session)
}

impl Session {
    /// The recording is over; what follows writes `output` (via `temp`)
    /// from `capture` (`temporary`: ours, not asked for by the user).
    pub fn finishing(&self, output: Option<(PathBuf, PathBuf)>, capture: Option<(PathBuf, bool)>) {
        let mut f = self.finishing.lock().unwrap_or_else(|e| e.into_inner());
        *f = Finishing { active: true, signals: 0, output, capture };
    }

    fn on_signal(&self, signal: i32) {
        let mut f = self.finishing.lock().unwrap_or_else(|e| e.into_inner());
        if !f.active {
            self.stop.request(StopReason::Signal);
            return;
        }
        f.signals += 1;
        if signal == SIGHUP {
            // Nobody to talk to: finish quietly.
            return;
        }
        if f.signals == 1 {
            say!("runtime-scope: finishing the export; Ctrl-C again to abandon it");
            return;
        }
        let mut said = String::from("runtime-scope: abandoned");
        if let Some((output, temp)) = &f.output {
            let _ = std::fs::remove_file(temp);
            said.push_str(&format!(" writing {}", output.display()));
        }
        if let Some((capture, temporary)) = &f.capture {
            let kept = if *temporary { crate::output::keep_visible(capture) } else { capture.clone() };
            said.push_str(&format!(
                "; the capture is kept in {} (convert it later with `runtime-scope export {} -o trace.pftrace`)",
                kept.display(),
                kept.display()
            ));
        }
        say!("{said}");
        std::process::exit(130);
    }
}
