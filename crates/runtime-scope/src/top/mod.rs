//! `runtime-scope top -p PID`: a terminal dashboard. The recorder runs on
//! the main thread as for `record`; the UI gets copies of each batch on its
//! own thread and never holds collection up (see `sink::TeeSink`).

mod keys;
mod state;
mod stderr;
mod ui;

use crate::cli::{TopArgs, ViewArgs};
use crate::failure::usage;
use crate::sink::{Both, CaptureSink, Feed, TeeSink};
use crate::{commands, output, privileges, process, recorder};
use anyhow::{Context, Result};
use ratatui::crossterm::event::{self, Event as Key, KeyEventKind, KeyModifiers};
use state::{TopState, View};
use crate::stopping::StopFlag;
use crate::watch::flight::{FlightSink, Policy};
use crate::watch::judge::Never;
use crate::watch::snapshot;
use scope_model::StopReason;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::sync::mpsc::{Receiver, TryRecvError, sync_channel};
use std::time::{Duration, Instant};

const REDRAW: Duration = Duration::from_millis(500);

pub fn run(args: TopArgs) -> Result<i32> {
    use std::io::IsTerminal;
    if let Some(path) = &args.record {
        // What is kept is a capture: a .json name would promise a trace.
        let regular = output::destination(path)? == output::Destination::File;
        if regular && crate::formats::choose(path, None).ok() != Some(crate::cli::Format::Capture) {
            return usage(format!(
                "--record {} keeps a capture: give it a .rscope name (then `runtime-scope export` makes a trace)",
                path.display()
            ));
        }
        output::check_writable(path)?;
    }
    if !std::io::stdout().is_terminal() {
        return usage("top draws on a terminal; to record without one use `runtime-scope record`");
    }
    // Checked now only when asked for; the default is tried when `w` is pressed.
    let snapshots = match &args.snapshot {
        Some(pattern) => snapshot::Output::checked(pattern, None, &rule_of(&args), Vec::new(), args.long_poll)?,
        None => snapshot::Output::new(std::path::Path::new("top-%t.pftrace"), None, &rule_of(&args), Vec::new(), args.long_poll)?,
    };
    let mut target = process::Target::open(args.pid, None)?;
    privileges::check()?;
    let view_args = ViewArgs { no_live: true, worker_prefixes: args.worker_prefixes.clone(), long_poll: args.long_poll, debug_files: Vec::new() };
    let mut settings = commands::settings(&view_args, &args.stacks, args.duration);
    settings.polls = commands::poll_points(&args.stacks, &view_args.debug_files, &target.image(), &target.executable);
    settings.program = Some(target.image());
    settings.quiet = true;
    settings.detach_after_exit = true;
    // Snapshots and lanes end now: every switch-out held so far is in them.
    settings.held_due_ns = 0;
    let rule = settings.rule.clone();
    let session = crate::stopping::install()?;
    let (tx, rx) = sync_channel(64);
    let skipped = Arc::new(AtomicU64::new(0));
    let capture = args.record.as_deref().map(CaptureSink::create).transpose()?;
    let mut tee = TeeSink::new(capture, tx, Arc::clone(&skipped));
    // `w` asks the flight recorder for the last --window seconds.
    let (asked, note) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(None)));
    let mut flight = flight_sink(&args, snapshots.with_status(Arc::clone(&note)), Arc::clone(&asked), Arc::clone(&session));
    // Our own messages would scribble over the screen: keep them for later.
    let log = stderr::Held::start()?;
    let ui = {
        let (session, skipped) = (Arc::clone(&session), Arc::clone(&skipped));
        let state = TopState::new(args.window * 1_000_000_000, (args.long_poll * 1e6) as u64, rule);
        std::thread::spawn(move || ui_loop(rx, state, &session.stop, &skipped, Snapshots { asked, note }))
    };
    let recorded = recorder::record(&mut target, settings, &session.stop, &mut Both(&mut tee, &mut flight.sink));
    // Recording ended on its own (the target exited): the UI stops too.
    session.stop.request(StopReason::TargetExited);
    let capture = tee.capture.take();
    drop(tee);
    drop(flight.sink);
    flight.writer.finish();
    let shown = ui.join();
    log.release();
    recorded?;
    shown.map_err(|_| anyhow::anyhow!("the display thread panicked"))??;
    if let Some(capture) = capture {
        capture.deliver()?;
    }
    if let Some(path) = &args.record {
        say!("Capture written to {}. Convert it with `runtime-scope export {} -o trace.pftrace`.", path.display(), path.display());
    }
    Ok(0)
}

/// Seconds of profiler CPU (user + system) so far, from /proc/self/stat.
fn own_cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    ticks as f64 / 100.0
}

fn rule_of(args: &TopArgs) -> scope_model::WorkerRule {
    scope_model::WorkerRule::with_extra(&args.worker_prefixes)
}

/// The flight recorder behind `w`, and the thread writing its snapshots.
struct Flight {
    sink: FlightSink<Never>,
    writer: snapshot::Writer,
}

fn flight_sink(args: &TopArgs, out: snapshot::Output, asked: Arc<AtomicBool>, session: Arc<crate::stopping::Session>) -> Flight {
    let policy = Policy {
        keep_ns: args.window * 1_000_000_000,
        after_ns: 0,
        cooldown_ns: 0,
        max_snapshots: u32::MAX,
        limits: Default::default(),
        ring_bytes: 256 << 20,
    };
    let writer = snapshot::Writer::spawn(move |s| snapshot::write(&out, s));
    let queue = writer.sender();
    let stop = Box::new(move || session.stop.request(StopReason::Quit));
    // Our messages are held while the dashboard runs: say nothing extra.
    let sink = FlightSink::new(policy, rule_of(args), Never, asked, stop, Box::new(move |s| drop(queue.send(s))), Box::new(|_| {}));
    Flight { sink, writer }
}

/// What the UI thread shares with the flight recorder.
struct Snapshots {
    asked: Arc<AtomicBool>,
    note: Arc<Mutex<Option<String>>>,
}

fn ui_loop(rx: Receiver<Feed>, mut state: TopState, stop: &StopFlag, skipped: &AtomicU64, snapshots: Snapshots) -> Result<()> {
    let mut terminal = ratatui::init();
    let result = (|| -> Result<()> {
        let mut chrome = ui::Chrome::new();
        let mut shown: Option<View> = None;
        let mut last_draw = Instant::now() - REDRAW;
        let mut redraw_every = REDRAW;
        let mut cpu_mark = (Instant::now(), own_cpu_s());
        loop {
            loop {
                match rx.try_recv() {
                    Ok(Feed::Begin(start)) => state.begin(*start),
                    Ok(Feed::Events(batch)) => state.feed(batch),
                    Ok(Feed::End) | Err(TryRecvError::Disconnected) => return Ok(()),
                    Err(TryRecvError::Empty) => break,
                }
            }
            if stop.is_set() {
                return Ok(());
            }
            let mut redraw = false;
            if event::poll(Duration::from_millis(100)).context("reading the keyboard")? {
                match event::read().context("reading the keyboard")? {
                    Key::Key(k) if k.kind == KeyEventKind::Press => {
                        if keys::apply(&mut chrome, k.code, k.modifiers.contains(KeyModifiers::CONTROL)) {
                            stop.request(StopReason::Quit);
                        }
                        if std::mem::take(&mut chrome.snapshot_asked) {
                            snapshots.asked.store(true, Ordering::Relaxed);
                            chrome.snapshot_note = Some("writing a snapshot…".into());
                        }
                        if let Some(v) = &shown {
                            chrome.clamp(v);
                        }
                    }
                    _ => {}
                }
                // Key presses and resizes show at once.
                redraw = true;
            }
            if last_draw.elapsed() >= redraw_every || redraw {
                let width = terminal.size().map(|s| s.width).unwrap_or(80);
                if !chrome.paused || shown.is_none() {
                    let building = Instant::now();
                    shown = state.view(process::monotonic_ns(), ui::lane_columns(width), chrome.sort).or(shown);
                    // Busy targets make big windows: never spend over a fifth of a CPU on the view.
                    redraw_every = REDRAW.max(building.elapsed() * 5);
                    let (at, cpu) = (Instant::now(), own_cpu_s());
                    let wall = at.duration_since(cpu_mark.0).as_secs_f64();
                    if wall >= 1.0 {
                        chrome.profiler_cpu_pct = (cpu - cpu_mark.1) * 100.0 / wall;
                        cpu_mark = (at, cpu);
                    }
                }
                chrome.ui_skipped = skipped.load(Ordering::Relaxed);
                if let Some(note) = snapshots.note.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    chrome.snapshot_note = Some(note);
                }
                if let Some(v) = &shown {
                    terminal.draw(|f| ui::draw(f, v, &chrome)).context("drawing")?;
                }
                last_draw = Instant::now();
            }
        }
    })();
    ratatui::restore();
    result
}

#[cfg(test)]
mod tests;
