//! Our own messages: progress, live lines, warnings, the summary. They go
//! to stderr (stdout belongs to a launched program and to what a command
//! was asked to print) and never panic: a closed pipe or a terminal gone
//! (`| head -1`, SIGHUP) is a reason to stop recording cleanly, which the
//! recorder checks with [`broken`], not a crash that loses the trace.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static BROKEN: AtomicBool = AtomicBool::new(false);

/// Writes one line to stderr; a failure is remembered, never raised.
pub fn line(text: std::fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    if writeln!(err, "{text}").and_then(|()| err.flush()).is_err() {
        BROKEN.store(true, Ordering::Relaxed);
    }
}

/// Writes text as is (a multi-line summary) to stderr.
pub fn text(text: &str) {
    let mut err = std::io::stderr().lock();
    if err.write_all(text.as_bytes()).and_then(|()| err.flush()).is_err() {
        BROKEN.store(true, Ordering::Relaxed);
    }
}

/// Whoever reads our messages went away (EPIPE, EIO).
pub fn broken() -> bool {
    BROKEN.load(Ordering::Relaxed)
}

/// Writes what a command was asked to print to stdout; a reader that went
/// away (`report … | head -1`) ends it quietly, as for any Unix filter.
pub fn out(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// `eprintln!` that never panics: see [`line`].
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::say::line(format_args!($($arg)*))
    };
}
