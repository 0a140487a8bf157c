//! The subcommands and the prototype's flat CLI, each from parsed arguments
//! to files written and a summary printed.

use crate::cli::{ExportArgs, Format, RecordArgs, ReportArgs, SeedArgs, StackArgs, ViewArgs};
use scope_common::StackConfig;
use crate::sink::{CaptureSink, MemorySink, Sink};
use crate::{failure::usage, formats, launch, output, privileges, process, recorder};
use anyhow::{Context, Result};
use scope_model::{Launch, Recording, Symbols, Timeline, WorkerRule, capture};
use crate::stopping;
use std::path::{Path, PathBuf};

/// The `raw::poll` instances to probe in `binary` (read and attached
/// there; `shown` in messages); else why not (tasks off, or no tokio
/// symbols: said once).
pub(crate) fn poll_points(stacks: &StackArgs, debug_files: &[std::path::PathBuf], binary: &Path, shown: &Path) -> Result<recorder::PollProbes, String> {
    if stacks.no_tasks {
        return Err("--no-tasks".into());
    }
    find_poll_points(debug_files, binary, shown)
}

/// The probe points in `binary` (read there; `shown` in messages), or why
/// there are none (said once). `debug_files` may hold its DWARF.
pub(crate) fn find_poll_points(debug_files: &[std::path::PathBuf], binary: &Path, shown: &Path) -> Result<recorder::PollProbes, String> {
    let data = std::fs::read(binary).map_err(|e| e.to_string());
    // Where Tokio keeps the current task id; its offset from DWARF if any.
    let roots = [std::path::PathBuf::from(scope_stacks::debug_file::DEFAULT_DEBUG_ROOT)];
    let debug = scope_stacks::debug_file::locate(binary, debug_files, &roots).and_then(|p| std::fs::read(p).ok());
    let context = data.as_ref().ok().and_then(|d| scope_stacks::task_context::context_tls_with(d, debug.as_deref()));
    let points = data.and_then(|data| scope_stacks::probe_points::tokio_probe_points(&data));
    let offsets = |v: &[scope_stacks::probe_points::ProbePoint]| v.iter().map(|p| p.file_offset).collect();
    match points {
        Ok(points) if !points.polls.is_empty() => Ok(recorder::PollProbes {
            binary: binary.to_path_buf(),
            polls: offsets(&points.polls),
            id_offsets: scope_stacks::task_layout::id_offsets(binary, &offsets(&points.polls)),
            spawns: offsets(&points.spawns),
            wakes: offsets(&points.wakes),
            worker_runs: offsets(&points.worker_runs),
            take_cores: offsets(&points.take_cores),
            parks: points.parks.iter().map(|p| p.file_offset..p.file_offset + p.size).collect(),
            context,
        }),
        Ok(_) => {
            // Stripped: the task vtables have a shape of their own (see
            // scope_stacks::task_kinds); their poll slots are the instances.
            let polls = scope_stacks::task_kinds::poll_instances_by_shape(binary);
            if polls.is_empty() {
                say!(
                    "runtime-scope: no tokio::runtime::task::raw::poll in {} (not a Tokio program, or stripped without PIE relocations): recording threads only",
                    shown.display()
                );
                return Err(format!("no tokio symbols in {}", shown.display()));
            }
            say!(
                "runtime-scope: {} has no tokio symbols (stripped): probing the {} task poll functions its task vtables list; \
                 no spawn or wake arrows, kinds named by where they are spawned",
                shown.display(),
                polls.len()
            );
            Ok(recorder::PollProbes {
                binary: binary.to_path_buf(),
                id_offsets: scope_stacks::task_layout::id_offsets(binary, &polls),
                polls,
                spawns: Vec::new(),
                wakes: Vec::new(),
                worker_runs: Vec::new(),
                take_cores: Vec::new(),
                parks: Vec::new(),
                // No symbol locates Tokio's CONTEXT in a stripped binary.
                context: None,
            })
        }
        Err(e) => {
            say!("runtime-scope: cannot read {} for tokio symbols ({e}): recording threads only", shown.display());
            Err(format!("{} unreadable", shown.display()))
        }
    }
}

pub(crate) fn settings(view: &ViewArgs, stacks: &StackArgs, duration_s: Option<u64>) -> recorder::Settings {
    let cpus = cpu_count();
    recorder::Settings {
        polls: Err("not looked for".into()),
        program: None,
        stacks: StackConfig {
            stack_bytes: if stacks.no_stacks { 0 } else { stacks.stack_size },
            _pad: 0,
            blocked_bytes_per_sec: stacks.stack_budget / cpus,
            blocked_stack_bytes: if stacks.no_stacks { 0 } else { stacks.blocked_stack_size.min(stacks.stack_size) },
            _pad2: 0,
        },
        task_id_field: None,
        tier: stacks.polls,
        budget_pct: stacks.overhead_budget,
        frequency: if stacks.no_stacks { 0 } else { stacks.frequency },
        duration_ns: duration_s.map(|s| s * 1_000_000_000),
        live: !view.no_live,
        long_poll_ns: (view.long_poll * 1e6) as u64,
        quiet: false,
        detach_after_exit: false,
        held_due_ns: crate::held::DUE_NS,
        rule: WorkerRule::with_extra(&view.worker_prefixes),
        release: None,
        launch: None,
        child: None,
    }
}

fn cpu_count() -> u64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u64)
}

/// Names for every frame the timeline shows (reads the binaries, checks build-ids).
fn symbols_of(recording: &Recording, timeline: &Timeline, debug_files: &[std::path::PathBuf]) -> Symbols {
    let frames = timeline.frames();
    if frames.is_empty() {
        return Symbols::default();
    }
    let modules = recording.all_modules();
    let started = std::time::Instant::now();
    say!("runtime-scope: symbolizing {} addresses in {} modules…", frames.len(), modules.len());
    // Debuginfo of 100+ MB takes seconds to index: say which file is being read.
    const BIG_MODULE: u64 = 50 << 20;
    let naming = scope_stacks::task_kinds::NamingOptions { debug_files: debug_files.to_vec(), ..Default::default() };
    // Modules this process still holds (the images the target ran) are read
    // from those; others from their recorded path, if the build-id agrees.
    let symbols = scope_stacks::symbolize::symbolize_reporting(&modules, frames, &naming, &crate::images::live_path, |module, file, addresses| {
        let size = std::fs::metadata(file).map_or(0, |m| m.len());
        if size >= BIG_MODULE {
            say!("runtime-scope:   {addresses} addresses in {} ({} MB)…", module.path, size >> 20);
        }
    });
    if started.elapsed().as_secs() >= 1 {
        say!("runtime-scope: symbolized in {:.1} s", started.elapsed().as_secs_f64());
    }
    symbols
}

/// The timeline and its symbols; threads the worker-loop probes did not
/// see are told by what they polled, which needs the symbols.
pub(crate) fn analyse(recording: &Recording, rule: &WorkerRule, debug_files: &[std::path::PathBuf]) -> (Timeline, Symbols) {
    let timeline = Timeline::build(recording, rule);
    name_and_classify(recording, timeline, debug_files)
}

/// A capture read for the end phase: the recording without its events (the
/// timeline was built from them as they streamed in) and how many it kept.
pub(crate) struct Analysed {
    pub recording: Recording,
    pub timeline: Timeline,
    pub symbols: Symbols,
    pub events: u64,
}

/// As [`analyse`], from a capture file read twice (`capture::replay`): its
/// events, ~4× the file's size once decoded, are never all in memory.
fn analyse_capture(path: &Path, rule: &WorkerRule, debug_files: &[std::path::PathBuf]) -> Result<Analysed> {
    let indexed = capture::index(std::io::BufReader::new(open_capture(path)?)).with_context(|| path.display().to_string())?;
    for warning in &indexed.loaded.warnings {
        say!("runtime-scope: warning: {}: {warning}", path.display());
    }
    let mut events = capture::replay(std::io::BufReader::new(open_capture(path)?), &indexed).with_context(|| path.display().to_string())?;
    let timeline = Timeline::build_from(&indexed.loaded.recording, &mut events, rule);
    for warning in events.warnings() {
        say!("runtime-scope: warning: {}: {warning}", path.display());
    }
    let kept = events.kept();
    let recording = indexed.loaded.recording;
    let (timeline, symbols) = name_and_classify(&recording, timeline, debug_files);
    Ok(Analysed { recording, timeline, symbols, events: kept })
}

fn name_and_classify(recording: &Recording, mut timeline: Timeline, debug_files: &[std::path::PathBuf]) -> (Timeline, Symbols) {
    check_debug_files(recording, debug_files);
    let symbols = symbols_of(recording, &timeline, debug_files);
    scope_export::tasks::classify_threads(&mut timeline, &symbols);
    if timeline.workers().next().is_none() {
        say!(
            "runtime-scope: warning: no Tokio worker threads found in {} (none polled a task or entered a \
             worker loop, none named tokio-rt-worker / tokio-runtime-w); all threads were recorded. Custom names: --workers PREFIX",
            recording.command
        );
    }
    (timeline, symbols)
}

/// Says when a `--debug-file` belongs to none of the recorded binaries (it
/// is then not used: its names could be another build's).
fn check_debug_files(recording: &Recording, debug_files: &[std::path::PathBuf]) {
    let modules = recording.all_modules();
    for debug in debug_files {
        let fits = modules.iter().any(|m| scope_stacks::debug_file::check(Path::new(&m.path), debug).is_ok());
        if !fits {
            let why = scope_stacks::debug_file::check(Path::new(&recording.executable), debug).err().unwrap_or_default();
            say!("runtime-scope: warning: --debug-file {} matches no recorded binary ({why}); not used", debug.display());
        }
    }
}

/// The prototype's CLI: record into memory, optionally write a Chrome trace.
pub fn seed(args: SeedArgs) -> Result<()> {
    let pid = args.pid.context("--pid is required")?;
    if args.trace {
        output::check_writable(&args.trace_output)?;
    }
    if let Some(path) = &args.save_recording {
        output::check_writable(path)?;
        if args.trace {
            output::check_distinct(path, &args.trace_output, "the --trace-output")?;
        }
    }
    let mut target = process::Target::open(pid, args.target.clone())?;
    privileges::check()?;
    let session = stopping::install()?;
    let mut settings = settings(&args.view, &args.stacks, Some(args.duration));
    settings.polls = match &args.target {
        Some(path) => poll_points(&args.stacks, &args.view.debug_files, path, path),
        None => poll_points(&args.stacks, &args.view.debug_files, &target.image(), &target.executable),
    };
    settings.program = Some(target.image());
    let rule = settings.rule.clone();
    let mut sink = MemorySink::default();
    recorder::record(&mut target, settings, &session.stop, &mut sink)?;
    session.finishing(args.trace.then(|| (args.trace_output.clone(), output::temp_path(&args.trace_output))), None);
    let mut recording = sink.into_recording()?;
    let (timeline, symbols) = analyse(&recording, &rule, &args.view.debug_files);
    if let Some(path) = &args.save_recording {
        output::write_atomically(path, |out| serde_json::to_writer(out, &recording).map_err(std::io::Error::other))?;
        say!("Recording saved to {}.", path.display());
    }
    release_events(&mut recording);
    print_summary(&timeline, &symbols, &scope_export::insights::build(&timeline, &symbols, insight_options(args.view.long_poll)), To::Stderr)?;
    if args.trace {
        let written = formats::write(&args.trace_output, Format::Chrome, &recording, &timeline, &symbols)?;
        say!("{written}. {}", formats::how_to_open(Format::Chrome, &args.trace_output));
    }
    Ok(())
}

fn report_launch(recording: &Recording) {
    if let Some(Launch { argv, exit_status: Some(code) }) = &recording.launch {
        let how = match *code {
            0 => "exited normally".to_string(),
            c if c > 128 => format!("was killed by signal {} (exit status {c})", c - 128),
            c => format!("exited with status {c}"),
        };
        say!("runtime-scope: {} {how}", argv.join(" "));
    }
}

/// The target: a running process (`-p`, its image read as it runs, or the
/// file given by `--target`), or a program started held under the profiler
/// (`-- CMD`); fills in what `settings` needs for it.
pub(crate) fn open_target(
    pid: Option<u32>,
    command: &[String],
    given: Option<PathBuf>,
    stacks: &StackArgs,
    debug_files: &[PathBuf],
    settings: &mut recorder::Settings,
) -> Result<process::Target> {
    if command.is_empty() {
        let pid = pid.context("-p PID or -- CMD is required")?;
        let target = process::Target::open(pid, given.clone())?;
        settings.polls = match &given {
            Some(path) => poll_points(stacks, debug_files, path, path),
            None => poll_points(stacks, debug_files, &target.image(), &target.executable),
        };
        settings.program = Some(target.image());
        return Ok(target);
    }
    // Probes go on the program's file before it runs (uprobes are per file).
    let program = launch::resolve(&command[0])?;
    settings.polls = poll_points(stacks, debug_files, &program, &program);
    settings.program = Some(program);
    let held = launch::spawn_held(command)?;
    let target = process::Target::open(held.child.id(), None)?;
    settings.release = Some(held.release);
    settings.launch = Some(Launch { argv: command.to_vec(), exit_status: None });
    settings.child = Some(held.child);
    Ok(target)
}

/// `record`: stream a capture, then convert it (record first, convert later).
/// Returns the exit code: a launched program's own, as `time` and `strace` do.
pub fn record(args: RecordArgs) -> Result<i32> {
    let format = formats::choose(&args.output, args.format)?;
    output::check_writable(&args.output)?;
    if let Some(path) = &args.capture {
        output::check_writable(path)?;
        output::check_distinct(&args.output, path, "the --capture file")?;
    }
    let capture_path = match (format, &args.capture) {
        (Format::Capture, _) => args.output.clone(),
        (_, Some(path)) => path.clone(),
        (_, None) => output::capture_temp(&args.output),
    };
    privileges::check()?;
    // Before a program is started: a signal from now on stops cleanly.
    let session = stopping::install()?;
    let mut settings = settings(&args.view, &args.stacks, args.duration);
    let rule = settings.rule.clone();
    let mut target = open_target(args.pid, &args.command, args.target.clone(), &args.stacks, &args.view.debug_files, &mut settings)?;
    let mut sink = CaptureSink::create(&capture_path)?;
    recorder::record(&mut target, settings, &session.stop, &mut sink as &mut dyn Sink)?;
    let converting = format != Format::Capture;
    session.finishing(
        converting.then(|| (args.output.clone(), output::temp_path(&args.output))),
        Some((sink.path().to_path_buf(), args.capture.is_none() && converting)),
    );
    let Analysed { recording, timeline, symbols, events } = analyse_capture(sink.path(), &rule, &args.view.debug_files)?;
    report_launch(&recording);
    print_summary(&timeline, &symbols, &scope_export::insights::build(&timeline, &symbols, insight_options(args.view.long_poll)), To::Stderr)?;
    if format == Format::Capture {
        let size = std::fs::metadata(sink.path()).map(|m| m.len()).unwrap_or(0);
        sink.deliver()?;
        say!(
            "Capture written to {} ({} events, {:.1} MB). {}",
            args.output.display(),
            events,
            size as f64 / 1e6,
            formats::how_to_open(format, &args.output)
        );
        return Ok(launch_exit_code(&recording));
    }
    let written = match formats::write(&args.output, format, &recording, &timeline, &symbols) {
        Ok(written) => written,
        Err(e) => {
            // Disk full, say: the recording itself is safe; say where.
            let kept = if args.capture.is_none() { output::keep_visible(sink.path()) } else { sink.path().to_path_buf() };
            return Err(e.context(format!(
                "the capture is kept in {}; convert it later with `runtime-scope export {} -o FILE`",
                kept.display(),
                kept.display()
            )));
        }
    };
    if args.capture.is_none() {
        let _ = std::fs::remove_file(sink.path());
    } else {
        sink.deliver()?;
        say!("Capture kept in {}.", capture_path.display());
    }
    say!("{written}. {}", formats::how_to_open(format, &args.output));
    Ok(launch_exit_code(&recording))
}

/// The traces are written from the timeline alone: the raw events (~60
/// bytes each, hundreds of MB on a busy minute) go before the export's own
/// memory is taken.
fn release_events(recording: &mut Recording) {
    recording.events = Vec::new();
}

fn launch_exit_code(recording: &Recording) -> i32 {
    recording.launch.as_ref().and_then(|l| l.exit_status).unwrap_or(0)
}

fn open_capture(path: &Path) -> Result<std::fs::File> {
    match std::fs::File::open(path) {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => usage(format!("{}: no such capture file", path.display())),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The whole capture, events and all (a copy of it is being written).
fn read_capture(path: &Path) -> Result<capture::Loaded> {
    // Decoded as read: the file's bytes are never held whole beside its events.
    let loaded = capture::read_from(std::io::BufReader::new(open_capture(path)?)).with_context(|| path.display().to_string())?;
    for warning in &loaded.warnings {
        say!("runtime-scope: warning: {}: {warning}", path.display());
    }
    Ok(loaded)
}

/// `export`: capture → Perfetto / Chrome (or a clean copy of the capture).
pub fn export(args: ExportArgs) -> Result<()> {
    let format = formats::choose(&args.output, args.format)?;
    output::check_writable(&args.output)?;
    output::check_distinct(&args.output, &args.capture, "the capture being read")?;
    let rule = WorkerRule::with_extra(&args.worker_prefixes);
    let (recording, timeline, symbols) = if format == Format::Capture {
        let loaded = read_capture(&args.capture)?;
        let (timeline, symbols) = analyse(&loaded.recording, &rule, &args.debug_files);
        (loaded.recording, timeline, symbols)
    } else {
        let Analysed { recording, timeline, symbols, .. } = analyse_capture(&args.capture, &rule, &args.debug_files)?;
        (recording, timeline, symbols)
    };
    // No summary here to carry them: frames left unnamed are said now.
    for warning in &symbols.warnings {
        say!("runtime-scope: warning: {warning}");
    }
    let written = formats::write(&args.output, format, &recording, &timeline, &symbols)?;
    say!("{written}. {}", formats::how_to_open(format, &args.output));
    Ok(())
}

/// `report`: the end-of-run summary of a capture, or its JSON. Exit status 3
/// when `--fail-over` finds a longer poll.
pub fn report(args: ReportArgs) -> Result<i32> {
    let Analysed { recording, timeline, symbols, .. } = analyse_capture(&args.capture, &WorkerRule::with_extra(&args.worker_prefixes), &args.debug_files)?;
    let insights = scope_export::insights::build(&timeline, &symbols, insight_options(args.long_poll));
    // What `report` was asked for goes to stdout (a closed pipe ends it quietly).
    if args.json {
        let mut text = serde_json::to_string_pretty(&insights)?;
        text.push('\n');
        crate::say::out(&text)?;
    } else {
        report_launch(&recording);
        print_summary(&timeline, &symbols, &insights, To::Stdout)?;
    }
    let Some(limit) = args.fail_over else { return Ok(0) };
    let worst = insights.longest_poll_ms.unwrap_or(0.0);
    if worst > limit {
        say!("runtime-scope: a poll took {worst:.1} ms, over the --fail-over limit of {limit} ms");
        return Ok(3);
    }
    // Without poll probes: a worker blocked this long inside a poll.
    let blocked = insights.long_polls.iter().filter(|g| !g.exact).map(|g| g.max_ms).fold(0.0, f64::max);
    if blocked > limit {
        say!("runtime-scope: a poll took at least {blocked:.1} ms (blocked inside it), over the --fail-over limit of {limit} ms");
        return Ok(3);
    }
    // A quiet program is not a failure; a capture that could not see tasks
    // cannot pass a gate on them.
    match (insights.data.polls || insights.data.task_ids, insights.data.task_probes) {
        (true, _) => {}
        (false, Some(true)) => say!("runtime-scope: --fail-over: no task was polled in the window (task probes were on): nothing over the limit"),
        (false, _) => {
            say!("runtime-scope: --fail-over: the capture has no task polls to check (recorded without task probes)");
            return Ok(3);
        }
    }
    Ok(0)
}

pub(crate) fn insight_options(long_poll_ms: f64) -> scope_export::insights::Options {
    scope_export::insights::Options { long_poll_ns: (long_poll_ms * 1e6) as u64 }
}

/// Where a summary goes: stdout when it is what the command was asked for
/// (`report`), else stderr with our other messages (stdout belongs to a
/// launched program).
#[derive(Clone, Copy)]
enum To {
    Stdout,
    Stderr,
}

/// Colours only on a terminal, and never with NO_COLOR set.
fn print_summary(timeline: &Timeline, symbols: &scope_model::Symbols, insights: &scope_export::insights::Insights, to: To) -> Result<()> {
    use std::io::IsTerminal;
    let terminal = match to {
        To::Stdout => std::io::stdout().is_terminal(),
        To::Stderr => std::io::stderr().is_terminal(),
    };
    let color = terminal && std::env::var_os("NO_COLOR").is_none();
    let text = scope_export::summary::render_with(timeline, symbols, insights, color);
    match to {
        To::Stdout => crate::say::out(&text)?,
        To::Stderr => crate::say::text(&text),
    }
    Ok(())
}
