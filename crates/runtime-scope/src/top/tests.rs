//! Screens rendered from a recording into ratatui's TestBackend.

use super::state::{SortBy, TopState};
use super::ui::{self, Chrome};
use ratatui::crossterm::event::KeyCode;
use ratatui::{Terminal, backend::TestBackend};
use scope_model::{Event, Frame, ResolvedFrame, Symbols, WorkerRule};

const MS: u64 = 1_000_000;

fn f(offset: u64) -> Frame {
    Frame { module: 0, offset }
}

/// A dashboard over 2 s begun on a server whose workers are `tids`.
fn begun(tids: &[u32]) -> TopState {
    let mut s = TopState::new(2_000 * MS, 10 * MS, WorkerRule::default());
    let threads = tids
        .iter()
        .map(|&tid| scope_model::ThreadInfo { tid, name: "tokio-rt-worker".into(), cpu_ns_at_start: None, cpu_ns_at_stop: None })
        .collect();
    s.begin(scope_model::capture::Start {
        tool_version: "test".into(),
        clock: "CLOCK_MONOTONIC".into(),
        pid: 7,
        command: "server".into(),
        executable: "/bin/server".into(),
        start_ns: 0,
        threads,
        modules: Vec::new(),
        probes: Vec::new(),
        launch: None,
    });
    s
}

/// Two workers over 2 s: worker 0 runs a 30 ms CPU-heavy poll every 500 ms
/// and short polls; worker 1 blocks 40 ms in a sleep inside a poll.
fn state() -> TopState {
    let mut s = begun(&[10, 11]);
    let mut ev = Vec::new();
    let switch = |ts, prev: u32, next: u32, state: u64| Event::Switch { ts, cpu: 0, prev_tid: prev, next_tid: next, prev_state: state, prev_ours: prev != 0, next_ours: next != 0, cpu_lost: 0 };
    for i in 0..4u64 {
        let t = i * 500 * MS;
        // worker 0: parked, then a 30 ms heavy poll, then a short one.
        ev.push(switch(t + 100 * MS, 0, 10, 0));
        ev.push(Event::PollStart { ts: t + 100 * MS, tid: 10, task: 0xa0, poll_fn: f(0x100) });
        ev.push(Event::Stack { ts: t + 115 * MS, cpu: 0, tid: 10, reason: scope_model::StackReason::Sample, frames: vec![f(0x10), f(0x90)].into(), complete: true });
        ev.push(Event::PollEnd { ts: t + 130 * MS, tid: 10 });
        for j in 0..3 {
            ev.push(Event::PollStart { ts: t + 131 * MS + j * 300_000, tid: 10, task: 0xb0 + i, poll_fn: f(0x200) });
            ev.push(Event::PollEnd { ts: t + 131 * MS + j * 300_000 + 200_000, tid: 10 });
        }
        ev.push(switch(t + 133 * MS, 10, 0, 1));
        // worker 1: a poll that sleeps 40 ms.
        ev.push(switch(t + 300 * MS, 0, 11, 0));
        ev.push(Event::PollStart { ts: t + 300 * MS, tid: 11, task: 0xc0, poll_fn: f(0x300) });
        ev.push(switch(t + 301 * MS, 11, 0, 1));
        ev.push(Event::Stack { ts: t + 301 * MS, cpu: 0, tid: 11, reason: scope_model::StackReason::Blocked, frames: vec![f(0x20), f(0x21), f(0x90)].into(), complete: true });
        ev.push(switch(t + 341 * MS, 0, 11, 0));
        ev.push(Event::PollEnd { ts: t + 342 * MS, tid: 11 });
        ev.push(switch(t + 343 * MS, 11, 0, 1));
    }
    s.feed(ev);
    let mut symbols = Symbols::default();
    let name = |n: &str| vec![ResolvedFrame { function: n.into(), file: None, line: None, inlined: false }];
    for (o, n) in [
        (0x10, "server::crunch_numbers"),
        (0x20, "std::thread::sleep"),
        (0x21, "server::load_config"),
        (0x90, "start_thread"),
        (0x100, "tokio::runtime::task::raw::poll::<server::cruncher::{{closure}}, S>"),
        (0x200, "tokio::runtime::task::raw::poll::<server::request::{{closure}}, S>"),
        (0x300, "tokio::runtime::task::raw::poll::<server::reloader::{{closure}}, S>"),
    ] {
        symbols.frames.insert(f(o), name(n));
    }
    s.set_symbols(symbols);
    s
}

fn screen(sort: SortBy) -> String {
    let mut chrome = Chrome::new();
    chrome.sort = sort;
    screen_with(chrome, &[])
}

/// The screen after pressing `keys`.
fn screen_with(mut chrome: Chrome, keys: &[KeyCode]) -> String {
    let mut s = state();
    let backend = TestBackend::new(110, 30);
    let mut terminal = Terminal::new(backend).unwrap();
    let view = s.view(2_000 * MS, ui::lane_columns(110), chrome.sort).expect("a view once started");
    chrome.profiler_cpu_pct = 1.5;
    for &k in keys {
        assert!(!super::keys::apply(&mut chrome, k, false), "{k:?} must not quit");
        chrome.clamp(&view);
    }
    terminal.draw(|f| ui::draw(f, &view, &chrome)).unwrap();
    let buffer = terminal.backend().buffer().clone();
    (0..buffer.area.height)
        .map(|y| (0..buffer.area.width).map(|x| buffer[(x, y)].symbol().to_string()).collect::<String>().trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn dashboard_shows_lanes_tasks_and_long_polls() {
    let text = screen(SortBy::Busy);
    assert!(text.contains("worker 0 (tid 10)") && text.contains("worker 1 (tid 11)"), "{text}");
    assert!(text.contains("server::cruncher") && text.contains("server::request"), "{text}");
    assert!(text.contains("blocked") && text.contains("std::thread::sleep ← server::load_config"), "{text}");
    assert!(text.contains("cpu") && text.contains("server::crunch_numbers"), "{text}");
    assert!(text.contains('█') && text.contains('▓'), "busy and blocked-in-poll cells: {text}");
    insta::assert_snapshot!("top_busy", text);
}

#[test]
fn sorting_by_poll_rate_puts_the_chatty_kind_first() {
    let first_row = |text: &str| text.lines().skip_while(|l| !l.contains("task kind")).nth(1).unwrap_or_default().to_string();
    let by_busy = screen(SortBy::Busy);
    assert!(first_row(&by_busy).contains("server::cruncher"), "{by_busy}");
    let by_rate = screen(SortBy::PollRate);
    assert!(by_rate.contains("sorted by polls/s"), "{by_rate}");
    assert!(first_row(&by_rate).contains("server::request"), "three polls per cycle: {by_rate}");
    let by_longest = screen(SortBy::Longest);
    assert!(first_row(&by_longest).contains("server::reloader"), "{by_longest}");
}

#[test]
fn keys_select_a_long_poll_and_show_its_details_then_help() {
    // tab to the long polls, down to the second (a CPU-heavy one), enter.
    let text = screen_with(Chrome::new(), &[KeyCode::Tab, KeyCode::Char('j'), KeyCode::Enter]);
    assert!(text.contains("details (esc closes)"), "{text}");
    assert!(text.contains("cpu poll of 30.00 ms"), "the selected long poll in full: {text}");
    assert!(text.contains("server::crunch_numbers (1 samples)"), "{text}");
    insta::assert_snapshot!("top_details", text);
    // Far past the end: the selection stays on the last row.
    let many = vec![KeyCode::Down; 100];
    let text = screen_with(Chrome::new(), &[&[KeyCode::Tab][..], &many, &[KeyCode::Enter]].concat());
    assert!(text.contains("blocked poll of 42.00 ms") || text.contains("cpu poll of 30.00 ms"), "{text}");
    let text = screen_with(Chrome::new(), &[KeyCode::Char('?')]);
    assert!(text.contains("keys (esc closes)") && text.contains("enter      details"), "{text}");
    let text = screen_with(Chrome::new(), &[KeyCode::Char('?'), KeyCode::Esc]);
    assert!(!text.contains("keys (esc closes)"), "esc closes the popup, never quits: {text}");
    let mut chrome = Chrome::new();
    assert!(super::keys::apply(&mut chrome, KeyCode::Char('q'), false));
    assert!(super::keys::apply(&mut chrome, KeyCode::Char('c'), true), "ctrl-c quits (raw mode eats SIGINT)");
}

#[test]
fn a_tiny_terminal_still_draws() {
    let mut s = state();
    for (w, h) in [(20, 6), (60, 12), (200, 60)] {
        let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
        let view = s.view(2_000 * MS, ui::lane_columns(w), SortBy::Busy).unwrap();
        let mut chrome = Chrome::new();
        chrome.popup = Some(ui::Popup::Help);
        terminal.draw(|f| ui::draw(f, &view, &chrome)).unwrap();
    }
}

/// The checked-in capture of a real demo run (the exports' fixture), fed
/// batch by batch as the recorder would.
#[test]
fn a_real_recording_fed_in_batches_shows_both_worker_lanes() {
    let rec: scope_model::Recording =
        serde_json::from_str(include_str!("../../../scope-export/tests/fixtures/demo-recording.json")).unwrap();
    let mut s = TopState::new(10_000 * MS, 10 * MS, WorkerRule::default());
    s.begin(scope_model::capture::Start::of(&rec));
    for batch in rec.events.chunks(7) {
        s.feed(batch.to_vec());
    }
    let view = s.view(rec.end_ns, 80, SortBy::Busy).unwrap();
    let names: Vec<&str> = view.lanes.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["worker 0 (tid 4243)", "worker 1 (tid 4244)"]);
    assert!(view.lanes.iter().all(|l| l.cells.len() == 80));
    // Worker 0 woke every 5 ms for a few µs (0.3% busy in the summary).
    assert!(view.lanes[0].busy_pct > 0.1 && view.lanes[0].busy_pct < 1.0, "{}", view.lanes[0].busy_pct);
    assert!(view.events_per_s > 0.0 && view.lost_events == 0);
    let mut terminal = Terminal::new(TestBackend::new(110, 24)).unwrap();
    terminal.draw(|f| ui::draw(f, &view, &Chrome::new())).unwrap();
    let text: String = terminal.backend().buffer().content().iter().map(|c| c.symbol()).collect();
    assert!(text.contains("worker 1 (tid 4244)") && text.contains("demo-app (pid 4242)"));
}

/// Without poll returns (`--polls starts`) a poll ends where its worker is
/// next seen outside it, also in a window that began long after the
/// returns went off: the dashboard lists such a long poll, marked.
#[test]
fn a_poll_without_its_return_is_a_long_poll_in_a_later_window() {
    let mut s = begun(&[10]);
    let parked = Event::Switch { ts: 3_040 * MS, cpu: 0, prev_tid: 10, next_tid: 0, prev_state: 1, prev_ours: true, next_ours: false, cpu_lost: 0 };
    s.feed(vec![Event::PollReturnsOff { ts: 0 }]);
    s.feed(vec![
        Event::TaskId { ts: 3_000 * MS, tid: 10, task: 0xa, id: 7 },
        Event::PollStart { ts: 3_000 * MS, tid: 10, task: 0xa, poll_fn: f(0x100) },
        Event::TaskAt { ts: 3_040 * MS, tid: 10, id: 1 },
        parked,
    ]);
    let view = s.view(3_500 * MS, 80, SortBy::Busy).unwrap();
    let long: Vec<(f64, bool)> = view.long_polls.iter().map(|l| (l.ms, l.upper_bound)).collect();
    assert_eq!(long, vec![(40.0, true)]);
}
