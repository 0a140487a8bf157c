//! Draws a [`View`]: worker lanes scrolling in time, the task table, the
//! latest long polls and a status line. No I/O: tests render it into a
//! `TestBackend`.

use super::state::{Cell, SortBy, View};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Row, Table, TableState, Wrap};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Focus {
    Tasks,
    LongPolls,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Popup {
    Help,
    Details,
}

/// What the screen shows besides the model: keys and the profiler itself.
pub struct Chrome {
    pub paused: bool,
    pub sort: SortBy,
    pub profiler_cpu_pct: f64,
    pub ui_skipped: u64,
    pub focus: Focus,
    /// Selected row in the focused list.
    pub selected: usize,
    pub popup: Option<Popup>,
    /// `w` was pressed: a snapshot is to be written.
    pub snapshot_asked: bool,
    /// What became of the last snapshot.
    pub snapshot_note: Option<String>,
}

impl Chrome {
    pub fn new() -> Self {
        Chrome {
            paused: false,
            sort: SortBy::Busy,
            profiler_cpu_pct: 0.0,
            ui_skipped: 0,
            focus: Focus::Tasks,
            selected: 0,
            popup: None,
            snapshot_asked: false,
            snapshot_note: None,
        }
    }

    /// Keeps the selection on a row that exists.
    pub fn clamp(&mut self, v: &View) {
        let rows = match self.focus {
            Focus::Tasks => v.tasks.len(),
            Focus::LongPolls => v.long_polls.len(),
        };
        self.selected = self.selected.min(rows.saturating_sub(1));
    }
}

pub const HELP: &str = "\
q          quit (the capture, with --record, is kept)
p, space   pause the display; recording goes on
s          sort tasks: busy → polls/s → longest
tab        switch between the task table and the long polls
j/k, ↓/↑   move the selection
enter      details of the selected task or long poll
w          write a snapshot of the last --window seconds (--snapshot)
esc        close this window
?          this help

Lanes: █ busy  ▓ blocked inside a task's poll  ░ runnable (waiting for a CPU)  · idle";

/// Columns left of a lane: its name.
pub const LANE_LABEL: usize = 24;

fn cell(c: Cell) -> Span<'static> {
    match c {
        Cell::Busy => Span::styled("█", Style::new().fg(Color::Green)),
        Cell::BlockedInPoll => Span::styled("▓", Style::new().fg(Color::Red)),
        Cell::Preempted => Span::styled("░", Style::new().fg(Color::Magenta)),
        Cell::Idle => Span::styled("·", Style::new().fg(Color::DarkGray)),
    }
}

/// Lane width for a terminal this wide (inside the borders).
pub fn lane_columns(width: u16) -> usize {
    (width as usize).saturating_sub(LANE_LABEL + 2 + 1).max(10)
}

fn lanes(v: &View, area: Rect, f: &mut Frame) {
    let mut lines: Vec<Line> = Vec::new();
    for lane in &v.lanes {
        let mut label = format!("{} {:>3.0}%", lane.name, lane.busy_pct);
        label.truncate(LANE_LABEL - 1);
        let mut spans = vec![Span::raw(format!("{label:<LANE_LABEL$}"))];
        spans.extend(lane.cells.iter().map(|&c| cell(c)));
        lines.push(Line::from(spans));
        let running = lane.running.as_deref().map_or(String::new(), |k| format!("polling {k}"));
        lines.push(Line::from(Span::styled(format!("{:LANE_LABEL$}{running}", ""), Style::new().fg(Color::Cyan))));
    }
    if v.lanes.is_empty() {
        lines.push(Line::from("no Tokio workers seen yet"));
    }
    let title = format!(" workers: last {:.0} s  █ busy  ▓ blocked in a poll  ░ runnable  · idle ", v.window_s);
    f.render_widget(Paragraph::new(lines).block(Block::new().borders(Borders::ALL).title(title)), area);
}

fn tasks(v: &View, chrome: &Chrome, area: Rect, f: &mut Frame) {
    let header = Row::new(["task kind", "polls/s", "busy %", "longest", "last seen"]).style(Style::new().add_modifier(Modifier::BOLD));
    let rows = v.tasks.iter().map(|t| {
        Row::new([
            t.kind.clone(),
            format!("{:.1}", t.polls_per_s),
            format!("{:.1}", t.busy_pct),
            format!("{:.1} ms", t.longest_ms),
            if t.last_seen_s < 0.05 { "now".to_string() } else { format!("{:.1} s ago", t.last_seen_s) },
        ])
    });
    let widths = [Constraint::Fill(1), Constraint::Length(9), Constraint::Length(7), Constraint::Length(10), Constraint::Length(10)];
    let title = format!(" tasks (sorted by {}; s: sort) ", chrome.sort.label());
    let mut block = Block::new().borders(Borders::ALL).title(title);
    let mut state = TableState::default();
    if chrome.focus == Focus::Tasks {
        block = block.border_style(Style::new().fg(Color::Cyan));
        state.select(Some(chrome.selected));
    }
    let table = Table::new(rows, widths).header(header).block(block).row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    f.render_stateful_widget(table, area, &mut state);
}

fn long_polls(v: &View, chrome: &Chrome, area: Rect, f: &mut Frame) {
    let focused = chrome.focus == Focus::LongPolls;
    let lines: Vec<Line> = v
        .long_polls
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let color = match l.cause.name() {
                "cpu" => Color::Yellow,
                "blocked" => Color::Red,
                _ => Color::Magenta,
            };
            let frames = if l.frames.is_empty() { l.site.clone() } else { l.frames.join(" ← ") };
            let line = Line::from(vec![
                Span::styled(format!("{:<9}", l.cause.name()), Style::new().fg(color)),
                Span::raw(format!(
                    "{:>5.1} s ago {:>7} ms  ",
                    v.now_ns.saturating_sub(l.end_ns) as f64 / 1e9,
                    format!("{}{:.1}", if l.upper_bound { "≤" } else { "" }, l.ms)
                )),
                Span::styled(frames, Style::new().fg(Color::Cyan)),
                Span::raw(format!("  [{} · {}]", l.kind, l.thread)),
            ]);
            if focused && i == chrome.selected { line.style(Style::new().add_modifier(Modifier::REVERSED)) } else { line }
        })
        .collect();
    let body = if lines.is_empty() { vec![Line::from("none yet")] } else { lines };
    // Keep the selected line in view.
    let inner = area.height.saturating_sub(2) as usize;
    let scroll = if focused { chrome.selected.saturating_sub(inner.saturating_sub(1)) } else { 0 };
    let mut block = Block::new().borders(Borders::ALL).title(" latest long polls (tab: select, enter: details) ");
    if focused {
        block = block.border_style(Style::new().fg(Color::Cyan));
    }
    f.render_widget(Paragraph::new(body).scroll((scroll as u16, 0)).block(block), area);
}

/// The selected task or long poll, in full.
fn details(v: &View, chrome: &Chrome) -> Vec<String> {
    match chrome.focus {
        Focus::Tasks => v.tasks.get(chrome.selected).map_or_else(Vec::new, |t| {
            vec![
                format!("task kind   {}", t.kind),
                format!("polls/s     {:.1}", t.polls_per_s),
                format!("busy        {:.2}% of the window (on-CPU inside its polls)", t.busy_pct),
                format!("longest     {:.2} ms", t.longest_ms),
                format!("last seen   {:.1} s ago", t.last_seen_s),
            ]
        }),
        Focus::LongPolls => v.long_polls.get(chrome.selected).map_or_else(Vec::new, |l| {
            let mut out = vec![
                format!(
                    "{} poll of {}{:.2} ms, {:.1} s ago",
                    l.cause.name(),
                    if l.upper_bound { "≤" } else { "" },
                    l.ms,
                    v.now_ns.saturating_sub(l.end_ns) as f64 / 1e9
                ),
                format!("task kind   {}", l.kind),
                format!("thread      {}", l.thread),
                format!("site        {}", l.site),
                String::new(),
            ];
            out.extend(l.frames.iter().enumerate().map(|(i, f)| format!("{:>3}  {f}", i)));
            out
        }),
    }
}

fn popup(f: &mut Frame, title: &str, lines: Vec<String>) {
    let area = f.area();
    let width = (area.width * 4 / 5).max(20).min(area.width);
    let height = (lines.len() as u16 + 2).clamp(3, area.height);
    let rect = Rect { x: (area.width - width) / 2, y: (area.height - height) / 2, width, height };
    f.render_widget(Clear, rect);
    let text: Vec<Line> = lines.into_iter().map(Line::from).collect();
    f.render_widget(Paragraph::new(text).wrap(Wrap { trim: false }).block(Block::new().borders(Borders::ALL).title(title.to_string())), rect);
}

fn status(v: &View, chrome: &Chrome) -> Line<'static> {
    let mut text = format!(
        " {}  {:.0} events/s  lost {}  profiler CPU {:.1}%",
        v.title, v.events_per_s, v.lost_events, chrome.profiler_cpu_pct
    );
    if chrome.ui_skipped > 0 {
        text.push_str(&format!("  (display skipped {} batches; recording kept them)", chrome.ui_skipped));
    }
    if chrome.paused {
        text.push_str("  PAUSED");
    }
    if let Some(note) = &chrome.snapshot_note {
        text.push_str(&format!("  {note}"));
    }
    text.push_str("   q quit · p pause · s sort · w snapshot · ? help");
    Line::from(Span::styled(text, Style::new().add_modifier(Modifier::REVERSED)))
}

pub fn draw(f: &mut Frame, v: &View, chrome: &Chrome) {
    let lanes_height = (v.lanes.len().max(1) * 2 + 2) as u16;
    let tasks_height = (v.tasks.len().clamp(1, 8) + 3) as u16;
    let [top, middle, bottom, last] = Layout::vertical([
        Constraint::Length(lanes_height),
        Constraint::Length(tasks_height),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(f.area());
    lanes(v, top, f);
    tasks(v, chrome, middle, f);
    long_polls(v, chrome, bottom, f);
    f.render_widget(Paragraph::new(status(v, chrome)), last);
    match chrome.popup {
        Some(Popup::Help) => popup(f, " keys (esc closes) ", HELP.lines().map(str::to_string).collect()),
        Some(Popup::Details) => popup(f, " details (esc closes) ", details(v, chrome)),
        None => {}
    }
}
