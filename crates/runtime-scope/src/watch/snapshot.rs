//! Writing snapshots, on a thread of their own so recording goes on: the
//! window as a capture (always: `report` and `export` work on it later),
//! the trace in the format of `-o`'s extension, and the report of that
//! window with its trigger first. A write that fails (disk full) is said
//! and the files it left are removed; recording is not affected.

use super::flight::Snapshot;
use super::incident;
use crate::cli::Format;
use crate::{commands, formats, output};
use anyhow::{Context, Result};
use scope_model::{WorkerRule, capture};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Where what a snapshot says goes.
#[derive(Clone)]
pub enum Announce {
    /// The trigger, the files and the report, with our other messages on stderr.
    Print,
    /// One line for a dashboard that owns the terminal.
    Status(Arc<Mutex<Option<String>>>),
}

pub struct Output {
    /// `-o`, with `%t` (the trigger's local time) and `%n` (its number).
    pub pattern: PathBuf,
    pub format: Format,
    pub rule: WorkerRule,
    pub debug_files: Vec<PathBuf>,
    pub long_poll_ms: f64,
    pub announce: Announce,
}

impl Output {
    /// Snapshots to `pattern` (format by its extension unless `format`),
    /// once a name like theirs is known to be writable: a bad path fails
    /// now, not when the first incident comes.
    pub fn checked(pattern: &Path, format: Option<Format>, rule: &WorkerRule, debug_files: Vec<PathBuf>, long_poll_ms: f64) -> Result<Output> {
        let out = Output::new(pattern, format, rule, debug_files, long_poll_ms)?;
        let sample = file_name(pattern, "00000000-000000", 1, |_| false);
        output::check_writable(&sample)?;
        if out.format != Format::Capture {
            output::check_writable(&capture_path_of(&sample))?;
        }
        Ok(out)
    }

    /// Snapshots to `pattern`, not checked for being writable yet.
    pub fn new(pattern: &Path, format: Option<Format>, rule: &WorkerRule, debug_files: Vec<PathBuf>, long_poll_ms: f64) -> Result<Output> {
        let format = formats::choose(pattern, format)?;
        Ok(Output { pattern: pattern.to_path_buf(), format, rule: rule.clone(), debug_files, long_poll_ms, announce: Announce::Print })
    }

    /// Says what became of each snapshot in one line for a dashboard.
    pub fn with_status(self, status: Arc<Mutex<Option<String>>>) -> Output {
        Output { announce: Announce::Status(status), ..self }
    }
}

/// The snapshot writer: a thread taking snapshots in order.
pub struct Writer {
    queue: Option<Sender<Snapshot>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    pub fn spawn(mut handle: impl FnMut(Snapshot) + Send + 'static) -> Writer {
        let (queue, inbox) = channel::<Snapshot>();
        let thread = std::thread::Builder::new()
            .name("rscope-snapshot".into())
            .spawn(move || {
                for snapshot in inbox {
                    handle(snapshot);
                }
            })
            .ok();
        Writer { queue: Some(queue), thread }
    }

    /// Hands one over; it is written after those before it.
    pub fn sender(&self) -> Sender<Snapshot> {
        self.queue.clone().expect("writer running")
    }

    /// Waits until every snapshot handed over is written.
    pub fn finish(mut self) {
        self.queue = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `YYYYMMDD-HHMMSS` in local time for a CLOCK_MONOTONIC instant.
fn local_time(at_mono_ns: u64) -> String {
    let now_mono = crate::process::monotonic_ns();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let secs = now.saturating_sub(now_mono.saturating_sub(at_mono_ns) / 1_000_000_000) as libc::time_t;
    // SAFETY: localtime_r writes only into `tm`.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&secs, &mut tm) }.is_null() {
        return format!("{secs}");
    }
    format!("{:04}{:02}{:02}-{:02}{:02}{:02}", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec)
}

/// The pattern filled in; never a file that exists (`-2`, `-3`… before
/// the extension), and never the same name for two snapshots even when
/// the pattern has no `%t` or `%n`.
pub fn file_name(pattern: &Path, time: &str, number: u32, exists: impl Fn(&Path) -> bool) -> PathBuf {
    let text = pattern.to_string_lossy();
    let filled = text.replace("%t", time).replace("%n", &number.to_string());
    let base = PathBuf::from(&filled);
    let numbered = |n: u32| {
        let stem = base.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let name = match base.extension() {
            Some(ext) => format!("{stem}-{n}.{}", ext.to_string_lossy()),
            None => format!("{stem}-{n}"),
        };
        base.with_file_name(name)
    };
    let mut candidate = if filled == text && number > 1 { numbered(number) } else { base.clone() };
    let mut n = 2;
    while exists(&candidate) || exists(&capture_path_of(&candidate)) {
        candidate = numbered(n);
        n += 1;
    }
    candidate
}

/// The capture written beside a trace (the trace's name, `.rscope`).
fn capture_path_of(path: &Path) -> PathBuf {
    path.with_extension("rscope")
}

/// Writes one snapshot and says what it holds. Never fails: each file that
/// cannot be written is reported and the rest goes on.
pub fn write(out: &Output, snapshot: Snapshot) {
    let number = snapshot.trigger.number;
    let path = file_name(&out.pattern, &local_time(snapshot.trigger.at_ns), number, |p| p.exists());
    let capture_path = if out.format == Format::Capture { path.clone() } else { capture_path_of(&path) };
    let mut lines = Vec::new();
    let mut failures = Vec::new();
    let bytes = match snapshot.window.write(Vec::new()) {
        Ok(b) => b,
        Err(e) => {
            fail(out, number, &format!("cannot encode the snapshot: {e}"));
            return;
        }
    };
    match output::write_atomically(&capture_path, |w| w.write_all(&bytes)) {
        Ok(((), _)) => lines.push(format!("capture: {} ({} events, {:.1} MB)", capture_path.display(), snapshot.window.events(), bytes.len() as f64 / 1e6)),
        Err(e) => failures.push(format!("{e:#}")),
    }
    let analysed = analyse(out, &bytes, &path, &snapshot, &mut lines, &mut failures);
    drop(bytes);
    for f in &failures {
        fail(out, number, &format!("{f}; recording goes on"));
    }
    match (&out.announce, analysed) {
        (Announce::Print, Ok(report)) => {
            let mut text = String::new();
            text.push_str(&report.0.join("\n"));
            text.push('\n');
            for note in &snapshot.notes {
                text.push_str(&format!("  note: this snapshot {note}\n"));
            }
            for line in &lines {
                text.push_str(&format!("  {line}\n"));
            }
            text.push_str(&report.1);
            // With our other messages: stdout belongs to a launched program.
            crate::say::text(&text);
        }
        (Announce::Print, Err(e)) => fail(out, number, &format!("{e:#}")),
        (Announce::Status(status), analysed) => {
            let what = match (&analysed, lines.first()) {
                (Ok(_), Some(_)) => format!("snapshot {number} written to {}", path.display()),
                _ => format!("snapshot {number} not written (see the messages after exit)"),
            };
            if let Err(e) = analysed {
                say!("runtime-scope: snapshot {number}: {e:#}");
            }
            *status.lock().unwrap_or_else(|e| e.into_inner()) = Some(what);
        }
    }
    release_freed_memory();
}

fn fail(out: &Output, number: u32, message: &str) {
    say!("runtime-scope: snapshot {number}: {message}");
    if let Announce::Status(status) = &out.announce {
        *status.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("snapshot {number}: {message}"));
    }
}

/// The trigger in the snapshot's own terms and the report's summary;
/// writes the trace when one was asked for.
fn analyse(out: &Output, bytes: &[u8], path: &Path, snapshot: &Snapshot, lines: &mut Vec<String>, failures: &mut Vec<String>) -> Result<(Vec<String>, String)> {
    let mut recording = capture::read(bytes).context("reading the snapshot back")?.recording;
    let (timeline, symbols) = commands::analyse(&recording, &out.rule, &out.debug_files);
    if out.format != Format::Capture {
        // Analysed: the timeline holds what the report and the trace need.
        recording.events = Vec::new();
    }
    let kinds = scope_export::tasks::kind_names(&timeline, &symbols);
    let incident = incident::describe(&snapshot.trigger, &timeline, &symbols, &kinds);
    let insights = scope_export::insights::build(&timeline, &symbols, commands::insight_options(out.long_poll_ms));
    if out.format != Format::Capture {
        match formats::write(path, out.format, &recording, &timeline, &symbols) {
            Ok(written) => lines.push(written),
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    use std::io::IsTerminal;
    let color = matches!(out.announce, Announce::Print) && std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    Ok((incident, scope_export::summary::render_with(&timeline, &symbols, &insights, color)))
}

/// A snapshot's analysis takes tens of MB for a moment; hand them back to
/// the system so the recorder's footprint stays that of the ring.
fn release_freed_memory() {
    // SAFETY: no preconditions; glibc only.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_filled_in_and_never_reused() {
        let none = |_: &Path| false;
        assert_eq!(file_name(Path::new("inc/stall-%t.pftrace"), "20260101-120000", 1, none), PathBuf::from("inc/stall-20260101-120000.pftrace"));
        assert_eq!(file_name(Path::new("s-%n.json"), "t", 3, none), PathBuf::from("s-3.json"));
        assert_eq!(file_name(Path::new("snap.pftrace"), "t", 1, none), PathBuf::from("snap.pftrace"));
        assert_eq!(file_name(Path::new("snap.pftrace"), "t", 2, none), PathBuf::from("snap-2.pftrace"), "no %t or %n: numbered");
        let taken = |p: &Path| p == Path::new("a-t.pftrace") || p == Path::new("a-t-2.rscope");
        assert_eq!(file_name(Path::new("a-%t.pftrace"), "t", 1, taken), PathBuf::from("a-t-3.pftrace"), "neither the trace nor its capture exists");
    }
}
