//! Log output: the primary's own messages and its workers' stdout/stderr, forwarded line by line.
//!
//! Every line goes through one writer task, so lines from different workers never interleave
//! mid-line. Worker lines travel on a bounded channel: when the terminal or the log shipper reading
//! herdsman falls behind, the readers stop reading the workers' pipes and the workers block on
//! their own writes, as they would without herdsman, instead of herdsman buffering without end.
//! The primary's own messages travel on a channel of their own, bounded at [`PRIMARY_QUEUE`]
//! lines, that supervision never waits on: when it is full, a message is dropped and counted, and
//! once the writer has caught up it writes `N log lines dropped` in their place (also every
//! [`DROP_REPORT_EVERY`] while it stays behind).
//!
//! The writer also hands every line to the [`LogHub`], for `herdsman logs`.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::log_files::FileSink;
use super::log_hub::LogHub;
use crate::config::LogFormat;
use crate::domain::LogEntry;

/// A worker line longer than this is forwarded in pieces of this size.
const MAX_LINE: usize = 16 * 1024;
/// Worker lines waiting for the writer before readers pause.
const LINE_QUEUE: usize = 1024;
/// The primary's own lines waiting for the writer before new ones are dropped.
pub const PRIMARY_QUEUE: usize = 4096;
/// While the writer stays behind, how often it reports the lines dropped so far.
const DROP_REPORT_EVERY: Duration = Duration::from_secs(1);
/// Lines written per batch, between flushes.
const BATCH: usize = 256;
/// How many of a worker's last stderr lines are kept for crash reports.
pub const TAIL_LINES: usize = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Info,
    Warn,
    Error,
}

enum Record {
    Primary {
        time: SystemTime,
        level: Level,
        line: String,
    },
    Worker {
        time: SystemTime,
        slot: usize,
        pid: u32,
        stream: Stream,
        line: String,
    },
}

impl Record {
    /// The record as the hub keeps it, taking its line (it has been written already).
    fn into_entry(self, primary_pid: u32) -> LogEntry {
        match self {
            Record::Primary { time, line, .. } => LogEntry {
                time,
                slot: None,
                pid: primary_pid,
                stream: "herdsman",
                line,
            },
            Record::Worker {
                time,
                slot,
                pid,
                stream,
                line,
            } => LogEntry {
                time,
                slot: Some(slot),
                pid,
                stream: stream.as_str(),
                line,
            },
        }
    }

    fn warning(line: String) -> Record {
        Record::Primary {
            time: SystemTime::now(),
            level: Level::Warn,
            line,
        }
    }

    /// Where the record is written: a worker's stdout to stdout, everything else to stderr.
    fn target(&self) -> Stream {
        match self {
            Record::Worker { stream, .. } => *stream,
            Record::Primary { .. } => Stream::Stderr,
        }
    }
}

/// Sends log lines to the writer task. Cheap to clone.
#[derive(Clone)]
pub struct Logger {
    primary: mpsc::Sender<Record>,
    /// The primary's lines dropped since the writer last reported them.
    dropped: Arc<AtomicU64>,
    workers: mpsc::Sender<Record>,
    /// With `--log-dir`: asks the file thread to open its files again by name.
    reopen: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// Owns the writer task; [`LogWriter::finish`] waits until every line sent so far is written.
pub struct LogWriter {
    task: JoinHandle<()>,
}

/// Starts the writer task on the current runtime; it keeps recent lines in `hub`, and hands
/// them to `files` (`--log-dir`) when given.
pub fn start(format: LogFormat, hub: Arc<LogHub>, files: Option<FileSink>) -> (Logger, LogWriter) {
    let (primary_tx, primary_rx) = mpsc::channel(PRIMARY_QUEUE);
    let (workers_tx, workers_rx) = mpsc::channel(LINE_QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    let formatter = Formatter {
        format,
        colour_stdout: wants_colour(std::io::stdout().is_terminal()),
        colour_stderr: wants_colour(std::io::stderr().is_terminal()),
        primary_pid: std::process::id(),
    };
    let queues = Queues {
        primary: primary_rx,
        workers: workers_rx,
        dropped: dropped.clone(),
    };
    let reopen = files.as_ref().map(FileSink::reopen_flag);
    let task = tokio::spawn(write_loop(formatter, queues, hub, files));
    (
        Logger {
            primary: primary_tx,
            dropped,
            workers: workers_tx,
            reopen,
        },
        LogWriter { task },
    )
}

fn wants_colour(terminal: bool) -> bool {
    terminal && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
}

impl LogWriter {
    /// Waits for every line already sent to be written. Every [`Logger`] clone must be dropped
    /// first (the writer ends when its channels close).
    pub async fn finish(self) {
        let _ = self.task.await;
    }
}

impl Logger {
    /// `--log-dir`'s files are opened again by name before the next lines (a reload).
    pub fn reopen_files(&self) {
        if let Some(reopen) = &self.reopen {
            reopen.store(true, Ordering::Relaxed);
        }
    }

    pub fn info(&self, line: impl Into<String>) {
        self.primary(Level::Info, line.into());
    }

    pub fn warn(&self, line: impl Into<String>) {
        self.primary(Level::Warn, line.into());
    }

    pub fn error(&self, line: impl Into<String>) {
        self.primary(Level::Error, line.into());
    }

    fn primary(&self, level: Level, line: String) {
        let record = Record::Primary {
            time: SystemTime::now(),
            level,
            line,
        };
        match self.primary.try_send(record) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // The writer only goes away when the primary shuts its logging down.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Forwards `pipe` line by line until EOF, keeping the last lines in `tail` when given.
    pub fn forward<R>(
        &self,
        pipe: R,
        slot: usize,
        pid: u32,
        stream: Stream,
        tail: Option<Tail>,
    ) -> JoinHandle<()>
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        let sender = self.workers.clone();
        tokio::spawn(async move {
            let mut lines = LineReader::new(pipe);
            while let Some(line) = lines.next_line().await {
                if let Some(tail) = &tail {
                    tail.push(&line);
                }
                let record = Record::Worker {
                    time: SystemTime::now(),
                    slot,
                    pid,
                    stream,
                    line,
                };
                if sender.send(record).await.is_err() {
                    break;
                }
            }
        })
    }
}

/// The last [`TAIL_LINES`] lines a worker wrote to stderr.
#[derive(Clone, Default)]
pub struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    fn push(&self, line: &str) {
        let mut lines = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if lines.len() == TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(line.to_string());
    }

    pub fn lines(&self) -> Vec<String> {
        let lines = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        lines.iter().cloned().collect()
    }
}

/// Splits a byte stream into lines (without the `\n` or `\r\n`), cutting over-long lines.
struct LineReader<R> {
    pipe: R,
    buffer: Vec<u8>,
    eof: bool,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    fn new(pipe: R) -> Self {
        LineReader {
            pipe,
            buffer: Vec::with_capacity(1024),
            eof: false,
        }
    }

    async fn next_line(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buffer.iter().position(|&byte| byte == b'\n') {
                let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Some(String::from_utf8_lossy(&line).into_owned());
            }
            if self.buffer.len() >= MAX_LINE || (self.eof && !self.buffer.is_empty()) {
                let cut = self.buffer.len().min(MAX_LINE);
                let piece: Vec<u8> = self.buffer.drain(..cut).collect();
                return Some(String::from_utf8_lossy(&piece).into_owned());
            }
            if self.eof {
                return None;
            }
            let mut chunk = [0u8; 8192];
            match self.pipe.read(&mut chunk).await {
                Ok(0) | Err(_) => self.eof = true,
                Ok(read) => self.buffer.extend_from_slice(&chunk[..read]),
            }
        }
    }
}

struct Formatter {
    format: LogFormat,
    colour_stdout: bool,
    colour_stderr: bool,
    primary_pid: u32,
}

/// One colour per slot, cycling, so that neighbouring workers are told apart at a glance.
const SLOT_COLOURS: [&str; 6] = ["36", "32", "33", "35", "34", "91"];

/// A line as `--log-format json` writes it (and, without a level, as the log files do).
#[derive(Serialize)]
pub(super) struct JsonLine<'a> {
    pub time: String,
    pub slot: Option<usize>,
    pub pid: u32,
    pub stream: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<Level>,
    pub line: &'a str,
}

impl Formatter {
    /// Appends `record`, formatted, to `out`.
    fn format(&self, record: &Record, out: &mut String) {
        match record {
            Record::Primary { time, level, line } => match self.format {
                LogFormat::Text if self.colour_stderr => {
                    let colour = match level {
                        Level::Info => "1",
                        Level::Warn => "1;33",
                        Level::Error => "1;31",
                    };
                    out.push_str(&format!("\x1b[{colour}mherdsman:\x1b[0m {line}\n"));
                }
                LogFormat::Text => out.push_str(&format!("herdsman: {line}\n")),
                LogFormat::Json => self.json(
                    out,
                    *time,
                    None,
                    self.primary_pid,
                    "herdsman",
                    Some(*level),
                    line,
                ),
            },
            Record::Worker {
                time,
                slot,
                pid,
                stream,
                line,
            } => {
                let colour = match stream {
                    Stream::Stdout => self.colour_stdout,
                    Stream::Stderr => self.colour_stderr,
                };
                match self.format {
                    LogFormat::Text if colour => {
                        let code = SLOT_COLOURS[(slot - 1) % SLOT_COLOURS.len()];
                        out.push_str(&format!("\x1b[{code}m[{slot}:{pid}]\x1b[0m {line}\n"));
                    }
                    LogFormat::Text => out.push_str(&format!("[{slot}:{pid}] {line}\n")),
                    LogFormat::Json => {
                        self.json(out, *time, Some(*slot), *pid, stream.as_str(), None, line);
                    }
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn json(
        &self,
        out: &mut String,
        time: SystemTime,
        slot: Option<usize>,
        pid: u32,
        stream: &str,
        level: Option<Level>,
        line: &str,
    ) {
        let time = humantime::format_rfc3339_millis(time).to_string();
        let record = JsonLine {
            time,
            slot,
            pid,
            stream,
            level,
            line,
        };
        // Serialising plain strings and numbers cannot fail.
        out.push_str(&serde_json::to_string(&record).unwrap_or_default());
        out.push('\n');
    }
}

/// What the writer reads: the primary's lines, the workers' lines, and the count of the
/// primary's lines dropped because their queue was full.
struct Queues {
    primary: mpsc::Receiver<Record>,
    workers: mpsc::Receiver<Record>,
    dropped: Arc<AtomicU64>,
}

impl Queues {
    /// The line that stands for the primary's lines dropped since the last report, if any.
    fn drop_report(&self) -> Option<Record> {
        let count = self.dropped.swap(0, Ordering::Relaxed);
        let lines = if count == 1 { "line" } else { "lines" };
        (count > 0).then(|| Record::Primary {
            time: SystemTime::now(),
            level: Level::Warn,
            line: format!(
                "{count} log {lines} dropped: herdsman's output was not read fast enough, and \
                 {PRIMARY_QUEUE} of its own lines were already waiting"
            ),
        })
    }
}

async fn write_loop(
    formatter: Formatter,
    mut queues: Queues,
    hub: Arc<LogHub>,
    files: Option<FileSink>,
) {
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let (mut out, mut err) = (String::new(), String::new());
    let (mut primary_open, mut workers_open) = (true, true);
    let mut last_report = tokio::time::Instant::now();
    while primary_open || workers_open {
        let dropping = queues.dropped.load(Ordering::Relaxed) > 0
            || files.as_ref().is_some_and(FileSink::has_dropped);
        let first = tokio::select! {
            biased;
            record = queues.primary.recv(), if primary_open => record.or_else(|| { primary_open = false; None }),
            record = queues.workers.recv(), if workers_open => record.or_else(|| { workers_open = false; None }),
            // Lines were dropped and nothing else comes: the writer has caught up.
            () = tokio::time::sleep(DROP_REPORT_EVERY), if dropping => queues.drop_report()
                .or_else(|| files.as_ref().and_then(FileSink::dropped_report).map(Record::warning)),
            // The file thread dropped lines after the last ones came: the report is due.
            () = file_write_failed(files.as_ref()), if !dropping => None,
        };
        let Some(first) = first else { continue };
        let mut batch = vec![first];
        let mut caught_up = false;
        while batch.len() < BATCH {
            match queues
                .primary
                .try_recv()
                .or_else(|_| queues.workers.try_recv())
            {
                Ok(record) => batch.push(record),
                Err(_) => {
                    caught_up = true;
                    break;
                }
            }
        }
        if caught_up || last_report.elapsed() >= DROP_REPORT_EVERY {
            let not_written = files.as_ref().and_then(FileSink::dropped_report);
            let reports = [queues.drop_report(), not_written.map(Record::warning)];
            for report in reports.into_iter().flatten() {
                batch.push(report);
                last_report = tokio::time::Instant::now();
            }
        }
        for record in batch {
            let buffer = match record.target() {
                Stream::Stdout => &mut out,
                Stream::Stderr => &mut err,
            };
            formatter.format(&record, buffer);
            let entry = record.into_entry(formatter.primary_pid);
            if let Some(files) = &files {
                files.send(&entry);
            }
            hub.push(entry);
        }
        // Write errors (a closed terminal, a dead pipe) must not stop supervision: drop the lines.
        if !out.is_empty() {
            let _ = stdout.write_all(out.as_bytes()).await;
            let _ = stdout.flush().await;
            out.clear();
        }
        if !err.is_empty() {
            let _ = stderr.write_all(err.as_bytes()).await;
            let _ = stderr.flush().await;
            err.clear();
        }
    }
    // Lines dropped just before the end are reported too.
    if let Some(report) = queues.drop_report() {
        formatter.format(&report, &mut err);
        let _ = stderr.write_all(err.as_bytes()).await;
        let _ = stderr.flush().await;
    }
    if let Some(files) = files {
        let _ = tokio::task::spawn_blocking(move || files.finish()).await;
    }
}

/// Returns once the file thread failed a write; never without files.
async fn file_write_failed(files: Option<&FileSink>) {
    match files {
        Some(files) => files.write_failed().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[path = "logs_tests.rs"]
mod tests;
