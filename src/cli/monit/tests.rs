//! monit without a terminal: the model's keys, history and action line, and the layout drawn
//! on ratatui's `TestBackend`, cell by cell.

use ratatui::backend::TestBackend;
use ratatui::Terminal;

use super::model::{fit, Action, Key, Model, Order, HISTORY};
use super::view::{self, HELP, SHORT_HELP};
use crate::control::protocol::{ClusterStatus, LastExitStatus, LogLine, ScaleTarget, SlotStatus};

fn row(slot: usize, pid: u32, cpu: f64, rss: u64) -> SlotStatus {
    SlotStatus {
        slot,
        pid: Some(pid),
        generation: Some(2),
        state: "ready".into(),
        uptime_ms: Some(61_000),
        restarts: 0,
        restart_reasons: Default::default(),
        last_exit: None,
        cpu_percent: Some(cpu),
        rss_bytes: Some(rss),
        connections: None,
        accept_queue: None,
        last_replacement: None,
        replacements: Default::default(),
    }
}

/// Two workers; slot 2 restarted once after a SIGKILL.
fn status() -> ClusterStatus {
    let mut first = row(1, 4121, 12.5, 32 * 1_048_576);
    first.connections = Some(3);
    let mut second = row(2, 4122, 50.0, 16 * 1_048_576);
    second.uptime_ms = Some(5_400);
    second.restarts = 1;
    second.last_exit = Some(LastExitStatus {
        pid: 4120,
        reason: "was killed by SIGKILL".into(),
        code: None,
        signal: Some("SIGKILL".into()),
        at: "2026-12-03T08:50:00.000Z".into(),
    });
    ClusterStatus {
        name: "api".into(),
        pid: 4100,
        address: "127.0.0.1:8000".into(),
        balance: "reuseport".into(),
        sticky: "off".into(),
        proxy_protocol: "off".into(),
        state: "running".into(),
        degraded: false,
        workers: 2,
        generation: 2,
        reloads: 1,
        reloads_aborted: 0,
        uptime_ms: 241_000,
        command: vec!["./server".into()],
        slots: vec![first, second],
        shared_state: None,
        foreign_listeners: Vec::new(),
        also_serving: Vec::new(),
        accept_queue: None,
    }
}

fn log(slot: usize, pid: u32, line: &str) -> LogLine {
    LogLine {
        time: "2026-12-03T08:51:57.123Z".into(),
        slot: Some(slot),
        pid,
        stream: "stdout".into(),
        line: line.into(),
    }
}

/// The screen's lines, trailing blanks cut.
fn render(model: &Model, width: u16, height: u16) -> Vec<String> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|frame| view::draw(frame, model)).unwrap();
    let buffer = terminal.backend().buffer();
    (0..height)
        .map(|y| {
            let line: String = (0..width)
                .map(|x| buffer[(x, y)].symbol().to_string())
                .collect();
            line.trim_end().to_string()
        })
        .collect()
}

/// A model with the fixture's status and slot 1's log followed.
fn watching() -> Model {
    let mut model = Model::new("api");
    model.on_status(status());
    let follower = model.follow(model.wanted_log_slot().unwrap());
    model.on_log(follower, log(1, 4121, "GET / 200"));
    model.on_log(follower, log(1, 4121, "GET /users 200"));
    model
}

/// A line inside a bordered pane of a 120-column screen: `│content…padding│`.
fn boxed(content: &str) -> String {
    format!("│{content:<118}│")
}

#[test]
fn a_status_renders_its_rows_sparklines_log_and_help() {
    let mut model = watching();
    let Some(Order::Act { id, .. }) = model.on_key(Key::Char('r')) else {
        panic!("r is a reload")
    };
    model.on_done(id, true, "reloaded 2 workers".into());
    let screen = render(&model, 120, 40);
    let bottom = format!("└{}┘", "─".repeat(118));
    let top = |title: &str| format!("┌{title}{}┐", "─".repeat(118 - title.chars().count()));
    // The cluster line, the phase and last-action line, the table with the selection mark.
    let expected = [
        "api  pid 4100  127.0.0.1:8000  balance reuseport  generation 2  reloads 1  up 4m 1s"
            .to_string(),
        "phase running  last action: reload: done — reloaded 2 workers".to_string(),
        top(" Workers: 2 of 2 "),
        boxed("  SLOT PID     GEN STATE     UPTIME   RESTARTS CPU    MEMORY    CONNS LAST EXIT"),
        boxed("> 1    4121    2   ready     1m 1s    0        12.5%  32.0 MB   3     -"),
        boxed(
            "  2    4122    2   ready     5s       1        50.0%  16.0 MB   -     was killed by SIGKILL",
        ),
        bottom.clone(),
        top(" CPU (scale 100%) and memory (scale 32.0 MB), last 10 min "),
    ];
    assert_eq!(screen[..8], expected, "{screen:#?}");
    // One sample each, on a common scale: 12.5% and 50% of 100%, 32 MB and 16 MB of 32 MB.
    let spark = (118 - 12 - 8 - 10) / 2;
    let history = |label: &str, cpu_bar: char, cpu: &str, rss_bar: char, rss: &str| {
        boxed(&format!(
            "{label}{cpu_bar}{:width$} {cpu:>6} {rss_bar}{:width$} {rss:>9}",
            "",
            "",
            width = spark - 1
        ))
    };
    assert_eq!(
        screen[8],
        history("  1    4121 ", '▁', "12.5%", '█', "32.0 MB")
    );
    assert_eq!(
        screen[9],
        history("  2    4122 ", '▄', "50.0%", '▄', "16.0 MB")
    );
    assert_eq!(screen[10], bottom);
    // The selected slot's log, oldest first, then blank to the pane's end; the help line.
    assert_eq!(screen[11], top(" Log: slot 1 "));
    assert_eq!(screen[12], boxed("08:51:57.123 [1:4121] GET / 200"));
    assert_eq!(screen[13], boxed("08:51:57.123 [1:4121] GET /users 200"));
    assert!(
        screen[14..38].iter().all(|line| *line == boxed("")),
        "{screen:#?}"
    );
    assert_eq!(screen[38], bottom);
    assert_eq!(screen[39], HELP);

    // Where the primary counts no connections (reuseport, shared), there is no CONNS column.
    let mut status = status();
    for row in &mut status.slots {
        row.connections = None;
    }
    model.on_status(status);
    let screen = render(&model, 120, 40);
    assert_eq!(
        screen[3],
        boxed("  SLOT PID     GEN STATE     UPTIME   RESTARTS CPU    MEMORY    LAST EXIT")
    );
}

#[test]
fn narrow_and_short_terminals_render_without_panic() {
    let mut model = Model::new("api");
    for (width, height) in [(60, 15), (1, 1)] {
        let screen = render(&model, width, height);
        assert_eq!(screen.len(), height as usize);
    }
    model = watching();
    for _ in 0..HISTORY + 5 {
        model.on_status(status());
    }
    for (width, height) in [
        (60, 15),
        (40, 10),
        (20, 5),
        (10, 3),
        (1, 1),
        (200, 2),
        (3, 60),
    ] {
        let screen = render(&model, width, height);
        assert_eq!(screen.len(), height as usize);
    }
    // 60x15: the table comes whole (columns narrowed), the log pane gets what is left, and the
    // short help line is last.
    let screen = render(&model, 60, 15);
    let expected = [
        "│  SLOT PID  GEN STATE    UPTIME   RESTARTS CPU    MEMORY  │",
        "│> 1    4121 2   ready    1m 1s    0        12.5%  32.0 MB │",
        "│  2    4122 2   ready    5s       1        50.0%  16.0 MB │",
    ];
    assert_eq!(screen[3..6], expected, "{screen:#?}");
    assert!(screen[11].starts_with("┌ Log: slot 1 ─"), "{screen:#?}");
    assert_eq!(
        screen[12],
        format!("│{:<58}│", "08:51:57.123 [1:4121] GET /users 200")
    );
    assert_eq!(screen[14], SHORT_HELP);
}

#[test]
fn keys_select_slots_and_send_actions_for_the_selected_one() {
    let mut model = watching();
    assert_eq!(model.selected, Some(1));
    assert_eq!(model.on_key(Key::Down), None);
    assert_eq!(model.selected, Some(2));
    assert_eq!(model.wanted_log_slot(), Some(2));
    model.on_key(Key::Down);
    assert_eq!(
        model.selected,
        Some(2),
        "the selection stops at the last slot"
    );
    assert_eq!(
        model.on_key(Key::Char('k')),
        Some(Order::Act {
            id: 1,
            action: Action::Restart(2)
        })
    );
    model.on_key(Key::Up);
    model.on_key(Key::Up);
    assert_eq!(model.selected, Some(1));
    assert_eq!(
        model.on_key(Key::Char('+')),
        Some(Order::Act {
            id: 2,
            action: Action::Scale(ScaleTarget::Add(1))
        })
    );
    assert_eq!(
        model.on_key(Key::Char('-')),
        Some(Order::Act {
            id: 3,
            action: Action::Scale(ScaleTarget::Remove(1))
        })
    );
    for quit in [Key::Char('q'), Key::Esc, Key::CtrlC] {
        assert_eq!(model.on_key(quit), Some(Order::Quit));
    }
    assert_eq!(model.on_key(Key::Char('x')), None);
}

#[test]
fn the_action_line_follows_the_latest_action_only() {
    let mut model = watching();
    assert_eq!(model.action_line(), "none yet");
    let Some(Order::Act { id: first, .. }) = model.on_key(Key::Char('r')) else {
        panic!("r is a reload")
    };
    model.on_progress(first, "worker 1 (pid 4125) ready, generation 3".into());
    assert_eq!(
        model.action_line(),
        "reload: running — worker 1 (pid 4125) ready, generation 3"
    );
    let Some(Order::Act { id: second, .. }) = model.on_key(Key::Char('k')) else {
        panic!("k is a restart")
    };
    // The reload's end comes after the restart started: the line stays the restart's.
    model.on_done(first, true, "reloaded".into());
    assert_eq!(model.action_line(), "restart slot 1: running — sent");
    model.on_done(second, false, "a reload is running".into());
    assert_eq!(
        model.action_line(),
        "restart slot 1: failed — a reload is running"
    );
}

#[test]
fn scaling_below_one_worker_is_refused_without_asking() {
    let mut model = Model::new("api");
    let mut one = status();
    one.workers = 1;
    one.slots.truncate(1);
    model.on_status(one);
    assert_eq!(model.on_key(Key::Char('-')), None);
    assert!(
        model.action_line().starts_with("scale -1: failed — "),
        "{}",
        model.action_line()
    );
}

#[test]
fn history_keeps_ten_minutes_per_worker_and_forgets_replaced_ones() {
    let mut model = Model::new("api");
    for _ in 0..HISTORY + 10 {
        model.on_status(status());
    }
    assert_eq!(model.history[&4121].cpu_tenths.len(), HISTORY);
    assert_eq!(model.history[&4121].cpu_tenths.back(), Some(&125));
    assert_eq!(
        model.history[&4122].rss_bytes.back(),
        Some(&(16 * 1_048_576))
    );
    let mut replaced = status();
    replaced.slots[0].pid = Some(4130);
    model.on_status(replaced);
    assert!(!model.history.contains_key(&4121));
    assert_eq!(model.history[&4130].cpu_tenths.len(), 1);
    assert_eq!(model.cpu_scale(), 1000, "at least 100%");
}

#[test]
fn a_stale_followers_lines_are_dropped() {
    let mut model = watching();
    let old = model.log_follower;
    model.on_key(Key::Down);
    let new = model.follow(model.wanted_log_slot().unwrap());
    model.on_log(old, log(1, 4121, "late line of slot 1"));
    model.on_log(new, log(2, 4122, "slot 2 line"));
    let lines: Vec<&str> = model.logs.iter().map(|line| line.line.as_str()).collect();
    assert_eq!(lines, ["slot 2 line"]);
    assert_eq!(model.wanted_log_slot(), None);
}

#[test]
fn fit_keeps_every_sample_that_fits_and_the_peaks_of_the_rest() {
    let samples: std::collections::VecDeque<u64> = (1..=10).collect();
    assert_eq!(fit(&samples, 20), (1..=10).collect::<Vec<_>>());
    assert_eq!(fit(&samples, 5), [2, 4, 6, 8, 10]);
    // Buckets of 4 counted from the newest: [1, 2] [3..6] [7..10].
    assert_eq!(fit(&samples, 3), [2, 6, 10]);
    assert_eq!(fit(&samples, 0), Vec::<u64>::new());
}
