//! Draws a [`View`]: worker lanes scrolling in time, the task table, the
//! latest long polls and a status line. No I/O: tests render it into a
//! `TestBackend`.

use super::state::{Cell, SortBy, View};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table};

/// What the screen shows besides the model: keys and the profiler itself.
pub struct Chrome {
    pub paused: bool,
    pub sort: SortBy,
    pub profiler_cpu_pct: f64,
    pub ui_skipped: u64,
}

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
    let title = format!(" workers: last {:.0} s  █ busy  ▓ blocked in a poll  ░ preempted  · idle ", v.window_s);
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
    f.render_widget(Table::new(rows, widths).header(header).block(Block::new().borders(Borders::ALL).title(title)), area);
}

fn long_polls(v: &View, area: Rect, f: &mut Frame) {
    let lines: Vec<Line> = v
        .long_polls
        .iter()
        .map(|l| {
            let color = match l.cause.name() {
                "cpu" => Color::Yellow,
                "blocked" => Color::Red,
                _ => Color::Magenta,
            };
            let frames = if l.frames.is_empty() { l.site.clone() } else { l.frames.join(" ← ") };
            Line::from(vec![
                Span::styled(format!("{:<9}", l.cause.name()), Style::new().fg(color)),
                Span::raw(format!("{:>5.1} s ago {:>7.1} ms  ", v.now_ns.saturating_sub(l.end_ns) as f64 / 1e9, l.ms)),
                Span::styled(frames, Style::new().fg(Color::Cyan)),
                Span::raw(format!("  [{} · {}]", l.kind, l.thread)),
            ])
        })
        .collect();
    let body = if lines.is_empty() { vec![Line::from("none yet")] } else { lines };
    f.render_widget(Paragraph::new(body).block(Block::new().borders(Borders::ALL).title(" latest long polls ")), area);
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
    text.push_str("   q quit · p pause · s sort");
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
    long_polls(v, bottom, f);
    f.render_widget(Paragraph::new(status(v, chrome)), last);
}
