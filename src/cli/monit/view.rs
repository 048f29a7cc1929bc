//! Draws a [`Model`] (ratatui): from the top, the cluster line, the phase and last-action line,
//! the worker table, each worker's CPU and memory sparklines, the selected slot's log tail and
//! the help line. Heights are worked out here, not by the layout solver, so that a short
//! terminal loses the lower panes first and never panics.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Sparkline, Table};
use ratatui::Frame;

use super::model::{fit, Model, Outcome};
use crate::cli::commands::{megabytes, short_duration};
use crate::control::protocol::{LogLine, SlotStatus};

pub const HELP: &str = "↑/↓ j select  r reload  + scale up  - scale down  k restart slot  q quit";
/// The help line where [`HELP`] does not fit.
pub const SHORT_HELP: &str = "↑↓j select r reload +/- scale k restart q quit";

/// The worker table's columns: a selection mark, then what `herdsman status` shows.
const COLUMNS: [(&str, u16); 11] = [
    ("", 1),
    ("SLOT", 4),
    ("PID", 7),
    ("GEN", 3),
    ("STATE", 9),
    ("UPTIME", 8),
    ("RESTARTS", 8),
    ("CPU", 6),
    ("MEMORY", 9),
    ("CONNS", 5),
    ("LAST EXIT", 0),
];
/// The index of `CONNS` in [`COLUMNS`]: shown only where the primary counts connections (some
/// row has them) and the table has room for every column at its width, so that it never
/// narrows the pid.
const CONNS: usize = 9;

/// Width of a history line's label (`  1    4121 `) and of each figure after a sparkline.
const LABEL: u16 = 12;
const CPU_FIGURE: u16 = 8;
const RSS_FIGURE: u16 = 10;

pub fn draw(frame: &mut Frame, model: &Model) {
    let area = frame.area();
    let rows = model.status.as_ref().map_or(0, |status| status.slots.len());
    let workers = model.status.as_ref().map_or(0, |status| {
        status.slots.iter().filter(|row| row.pid.is_some()).count()
    });
    // Title, phase line and help line first; then the table, the history, the log.
    let fixed = 3.min(area.height);
    let mut left = area.height - fixed;
    let mut take = |wanted: u16| {
        let got = wanted.min(left);
        left -= got;
        got
    };
    let table = take(rows as u16 + 3);
    let history = take(workers as u16 + 2);
    let log = take(u16::MAX);
    let [title, phase, table_area, history_area, log_area, help] = Layout::vertical([
        Constraint::Length(1.min(area.height)),
        Constraint::Length(u16::from(area.height >= 3)),
        Constraint::Length(table),
        Constraint::Length(history),
        Constraint::Length(log),
        Constraint::Length(u16::from(area.height >= 2)),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(title_line(model)), title);
    frame.render_widget(Paragraph::new(phase_line(model)), phase);
    draw_table(frame, model, table_area);
    draw_history(frame, model, history_area);
    draw_log(frame, model, log_area);
    let help_text = match help.width as usize >= HELP.chars().count() {
        true => HELP,
        false => SHORT_HELP,
    };
    frame.render_widget(
        Paragraph::new(help_text).style(Style::new().add_modifier(Modifier::REVERSED)),
        help,
    );
}

/// `api  pid 4100  127.0.0.1:8000  balance reuseport  generation 2  reloads 1  up 4m 1s`.
fn title_line(model: &Model) -> String {
    match &model.status {
        None => format!("{}  (waiting for the first status)", model.name),
        Some(status) => format!(
            "{}  pid {}  {}  balance {}  generation {}  reloads {}  up {}",
            status.name,
            status.pid,
            status.address,
            status.balance,
            status.generation,
            status.reloads,
            short_duration(status.uptime_ms)
        ),
    }
}

/// `phase running  last action: reload: done — …` (and why the last poll failed, if it did).
fn phase_line(model: &Model) -> Line<'static> {
    let mut text = format!(
        "phase {}  last action: {}",
        model.phase(),
        model.action_line()
    );
    if let Some(notice) = &model.notice {
        text.push_str(&format!("  ({notice})"));
    }
    let style = match model.action.as_ref().map(|action| &action.outcome) {
        Some(Outcome::Failed(_)) => Style::new().add_modifier(Modifier::BOLD),
        _ => Style::new(),
    };
    Line::styled(text, style)
}

/// One row's cells, as `herdsman status` prints them.
pub fn cells(row: &SlotStatus, selected: bool) -> [String; 11] {
    let dash = || "-".to_string();
    [
        if selected { ">" } else { " " }.to_string(),
        row.slot.to_string(),
        row.pid.map_or_else(dash, |pid| pid.to_string()),
        row.generation
            .map_or_else(dash, |generation| generation.to_string()),
        row.state.clone(),
        row.uptime_ms.map_or_else(dash, short_duration),
        row.restarts.to_string(),
        row.cpu_percent
            .map_or_else(dash, |cpu| format!("{cpu:.1}%")),
        row.rss_bytes.map_or_else(dash, megabytes),
        // Open connections, where the primary holds or counts them (proxy, least-conn).
        row.connections
            .map_or_else(dash, |connections| connections.to_string()),
        row.last_exit
            .as_ref()
            .map_or_else(dash, |exit| exit.reason.clone()),
    ]
}

fn draw_table(frame: &mut Frame, model: &Model, area: Rect) {
    let Some(status) = &model.status else {
        frame.render_widget(Block::bordered().title(" Workers "), area);
        return;
    };
    let counted = status.slots.iter().any(|row| row.connections.is_some());
    // Every column at its width, one space between, and the borders.
    let room = COLUMNS.iter().map(|(_, width)| width + 1).sum::<u16>() + 1;
    let shown: Vec<usize> = (0..COLUMNS.len())
        .filter(|&column| column != CONNS || (counted && area.width >= room))
        .collect();
    let header = Row::new(shown.iter().map(|&column| COLUMNS[column].0))
        .style(Style::new().add_modifier(Modifier::BOLD));
    let rows = status.slots.iter().map(|row| {
        let selected = model.selected == Some(row.slot);
        let style = match selected {
            true => Style::new().add_modifier(Modifier::REVERSED),
            false => Style::new(),
        };
        let cells = cells(row, selected);
        Row::new(shown.iter().map(|&column| cells[column].clone())).style(style)
    });
    let widths = shown.iter().map(|&column| match COLUMNS[column].1 {
        0 => Constraint::Fill(1),
        width => Constraint::Length(width),
    });
    let title = format!(" Workers: {} of {} ", status.slots.len(), status.workers);
    let table = Table::new(rows, widths)
        .header(header)
        .column_spacing(1)
        .block(Block::bordered().title(title));
    frame.render_widget(table, area);
}

/// A line per worker: slot and pid, CPU sparkline and the latest CPU, memory sparkline and the
/// latest RSS; one scale for every worker's CPU (at least 100%) and one for memory.
fn draw_history(frame: &mut Frame, model: &Model, area: Rect) {
    let (cpu_scale, rss_scale) = (model.cpu_scale(), model.rss_scale());
    let title = format!(
        " CPU (scale {:.0}%) and memory (scale {}), last 10 min ",
        cpu_scale as f64 / 10.0,
        megabytes(rss_scale)
    );
    let block = Block::bordered().title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(status) = &model.status else { return };
    let workers = status.slots.iter().filter_map(|row| Some((row, row.pid?)));
    for (line, (row, pid)) in workers.enumerate().take(inner.height as usize) {
        let Some(history) = model.history.get(&pid) else {
            continue;
        };
        let line_area = Rect {
            y: inner.y + line as u16,
            height: 1,
            ..inner
        };
        let spark = inner.width.saturating_sub(LABEL + CPU_FIGURE + RSS_FIGURE) / 2;
        let [label, cpu, cpu_now, rss, rss_now] = Layout::horizontal([
            Constraint::Length(LABEL),
            Constraint::Length(spark),
            Constraint::Length(CPU_FIGURE),
            Constraint::Length(spark),
            Constraint::Length(RSS_FIGURE),
        ])
        .areas(line_area);
        frame.render_widget(
            Paragraph::new(format!("{:>3} {:>7} ", row.slot, pid)),
            label,
        );
        let cpu_samples = fit(&history.cpu_tenths, spark as usize);
        frame.render_widget(Sparkline::default().data(&cpu_samples).max(cpu_scale), cpu);
        let cpu_text = history
            .cpu_tenths
            .back()
            .map_or_else(String::new, |tenths| {
                format!("{:.1}%", *tenths as f64 / 10.0)
            });
        frame.render_widget(Paragraph::new(format!(" {cpu_text:>6} ")), cpu_now);
        let rss_samples = fit(&history.rss_bytes, spark as usize);
        frame.render_widget(Sparkline::default().data(&rss_samples).max(rss_scale), rss);
        let rss_text = history
            .rss_bytes
            .back()
            .map_or_else(String::new, |bytes| megabytes(*bytes));
        frame.render_widget(Paragraph::new(format!(" {rss_text:>9}")), rss_now);
    }
}

fn draw_log(frame: &mut Frame, model: &Model, area: Rect) {
    let title = match model.log_slot {
        Some(slot) => format!(" Log: slot {slot} "),
        None => " Log ".to_string(),
    };
    let block = Block::bordered().title(title);
    let height = block.inner(area).height as usize;
    let mut lines: Vec<String> = model.logs.iter().map(log_text).collect();
    if let Some(reason) = &model.log_ended {
        lines.push(format!("(log follow ended: {reason})"));
    }
    let shown: Vec<Line> = lines
        .into_iter()
        .rev()
        .take(height)
        .rev()
        .map(Line::from)
        .collect();
    frame.render_widget(Paragraph::new(shown).block(block), area);
}

/// `08:51:57.123 [2:4121] line`: the time of day (UTC) of the RFC 3339 stamp.
fn log_text(line: &LogLine) -> String {
    let time = line.time.get(11..23).unwrap_or(&line.time);
    match line.slot {
        Some(slot) => format!("{time} [{slot}:{}] {}", line.pid, line.line),
        None => format!("{time} herdsman: {}", line.line),
    }
}
