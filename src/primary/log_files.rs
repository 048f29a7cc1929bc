//! `--log-dir`: every log line also written to files, PM2's `~/.pm2/logs` habit, rotated by size.
//!
//! One file per slot and stream and one for herdsman's own lines:
//! `DIR/NAME-SLOT.out.log`, `DIR/NAME-SLOT.err.log`, `DIR/NAME.herdsman.log`, each line
//! timestamped as `herdsman logs` prints it (`--log-format json`: as `herdsman logs --json`).
//! A file that a line would grow past `--log-max-size` is rotated first (`F` → `F.1` → … →
//! `F.N`, `N` = `--log-keep`, the oldest dropped), so a file never passes the size unless one
//! line alone does. Files are opened for appending: a restart continues them, and logrotate's
//! `copytruncate` works as is; `herdsman reload` (SIGHUP) opens them again by name, for
//! logrotate's `create` (its `postrotate` sends the HUP).
//!
//! The files are written by a thread of their own, fed by a bounded queue the log writer task
//! never waits on: when the disk is slow or full, lines are dropped and counted, and the log
//! writer reports them (`log_dropped_report`), so a stuck disk never holds up the cluster.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::logs::JsonLine;
use crate::config::{LogFiles, LogFormat};
use crate::domain::LogEntry;

/// Lines waiting for the file thread before new ones are dropped.
pub const FILE_QUEUE: usize = 8192;
/// Lines written per batch, between the writes of each file's buffer.
const BATCH: usize = 1024;

/// `--log-dir` cannot be used.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot write log files to {}: {source}; give --log-dir a directory herdsman may create \
     and write, or leave it out",
    dir.display()
)]
pub struct LogDirError {
    pub dir: PathBuf,
    #[source]
    pub source: io::Error,
}

/// The sending side of the file thread, held by the log writer task.
pub struct FileSink {
    queue: Option<SyncSender<LogEntry>>,
    state: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// What the file thread and the log writer both see.
struct Shared {
    dir: PathBuf,
    /// Lines not written since the last report: the queue was full, or a write failed.
    dropped: AtomicU64,
    /// The last write error, for the report.
    error: Mutex<Option<String>>,
    /// Set by `herdsman reload` (and SIGHUP): close the files, open them again by name.
    reopen: Arc<AtomicBool>,
    /// Wakes the log writer when a write failed: no line may come to wake it for the report.
    failures: tokio::sync::Notify,
}

impl FileSink {
    /// Creates the directory if missing, opens the herdsman file (so an unwritable directory
    /// fails at start-up), and starts the thread.
    pub fn open(
        dir: &Path,
        rotation: &LogFiles,
        name: &str,
        format: LogFormat,
    ) -> Result<FileSink, LogDirError> {
        let fail = |source| LogDirError {
            dir: dir.to_path_buf(),
            source,
        };
        if dir.exists() && !dir.is_dir() {
            return Err(fail(io::Error::other("it is not a directory")));
        }
        std::fs::create_dir_all(dir).map_err(fail)?;
        let mut files = Files {
            dir: dir.to_path_buf(),
            max_size: rotation.max_size,
            keep: rotation.keep,
            name: name.to_string(),
            format,
            open: HashMap::new(),
        };
        files.file(None, "herdsman").map_err(fail)?;
        let state = Arc::new(Shared {
            dir: dir.to_path_buf(),
            dropped: AtomicU64::new(0),
            error: Mutex::new(None),
            reopen: Arc::new(AtomicBool::new(false)),
            failures: tokio::sync::Notify::new(),
        });
        let (queue, lines) = sync_channel(FILE_QUEUE);
        let thread_state = state.clone();
        let thread = std::thread::Builder::new()
            .name("herdsman-log-files".into())
            .spawn(move || write_files(files, lines, &thread_state))
            .map_err(fail)?;
        Ok(FileSink {
            queue: Some(queue),
            state,
            thread: Some(thread),
        })
    }

    /// Queues a copy of `entry`; counts it dropped when the thread is that far behind.
    pub fn send(&self, entry: &LogEntry) {
        let Some(queue) = &self.queue else { return };
        match queue.try_send(entry.clone()) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.state.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The flag that has the thread open the files again by name before its next batch (after
    /// a `create` rotation by logrotate: the old files were moved away).
    pub fn reopen_flag(&self) -> Arc<AtomicBool> {
        self.state.reopen.clone()
    }

    /// Returns once a write failed (at once if one failed since the last call): lines were
    /// dropped that only a report can tell of.
    pub async fn write_failed(&self) {
        self.state.failures.notified().await;
    }

    /// Whether lines were not written since the last report.
    pub fn has_dropped(&self) -> bool {
        self.state.dropped.load(Ordering::Relaxed) > 0
    }

    /// The line reporting the lines not written since the last report, if any.
    pub fn dropped_report(&self) -> Option<String> {
        let count = self.state.dropped.swap(0, Ordering::Relaxed);
        if count == 0 {
            return None;
        }
        let error = self
            .state
            .error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        let why = match error {
            Some(error) => format!("writing failed: {error}"),
            None => format!("the disk did not keep up ({FILE_QUEUE} lines were waiting)"),
        };
        let lines = if count == 1 { "line" } else { "lines" };
        Some(format!(
            "{count} log {lines} not written to {}: {why}",
            self.state.dir.display()
        ))
    }

    /// Waits for every queued line to be written (blocking: call it off the runtime's thread
    /// or at the very end).
    pub fn finish(mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn write_files(mut files: Files, lines: Receiver<LogEntry>, state: &Shared) {
    let mut pending: HashMap<FileKey, String> = HashMap::new();
    while let Ok(first) = lines.recv() {
        if state.reopen.swap(false, Ordering::Relaxed) {
            files.open.clear();
        }
        let mut batch = vec![first];
        batch.extend(lines.try_iter().take(BATCH - 1));
        for entry in &batch {
            let key = (entry.slot, entry.stream);
            let mut line = String::new();
            files.format(entry, &mut line);
            let buffered = pending.entry(key).or_default();
            // Rotation happens between lines: write what is buffered for the file first.
            if files.would_rotate(key, buffered.len(), line.len()) {
                let text = std::mem::take(buffered);
                if let Err(error) = files.write(key, &text).and_then(|()| files.rotate(key)) {
                    failed(state, &error, text.lines().count());
                }
            }
            buffered.push_str(&line);
        }
        for (key, text) in pending.iter_mut() {
            if text.is_empty() {
                continue;
            }
            if let Err(error) = files.write(*key, text) {
                failed(state, &error, text.lines().count());
            }
            text.clear();
        }
    }
}

fn failed(state: &Shared, error: &io::Error, lines: usize) {
    state.dropped.fetch_add(lines as u64, Ordering::Relaxed);
    *state
        .error
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(error.to_string());
    state.failures.notify_one();
}

/// A file: a slot's stream (`stdout`, `stderr`), or herdsman's own (`None`, `herdsman`).
type FileKey = (Option<usize>, &'static str);

struct Files {
    dir: PathBuf,
    max_size: u64,
    keep: usize,
    name: String,
    format: LogFormat,
    open: HashMap<FileKey, OpenFile>,
}

struct OpenFile {
    file: File,
    /// Bytes in the file: its length when opened, plus what was written since.
    size: u64,
}

impl Files {
    fn path(&self, (slot, stream): FileKey) -> PathBuf {
        let file = match (slot, stream) {
            (Some(slot), "stderr") => format!("{}-{slot}.err.log", self.name),
            (Some(slot), _) => format!("{}-{slot}.out.log", self.name),
            (None, _) => format!("{}.herdsman.log", self.name),
        };
        self.dir.join(file)
    }

    fn file(&mut self, slot: Option<usize>, stream: &'static str) -> io::Result<&mut OpenFile> {
        let key = (slot, stream);
        if !self.open.contains_key(&key) {
            let file = open(&self.path(key))?;
            let size = file.metadata()?.len();
            self.open.insert(key, OpenFile { file, size });
        }
        Ok(self.open.get_mut(&key).expect("opened above"))
    }

    /// Whether appending `line` bytes after `buffered` bytes not yet written passes the size:
    /// a file with something in it is rotated first (an empty one takes even a line longer
    /// than the size).
    fn would_rotate(&mut self, key: FileKey, buffered: usize, line: usize) -> bool {
        let max = self.max_size;
        match self.file(key.0, key.1) {
            Ok(file) => {
                let before = file.size + buffered as u64;
                before > 0 && before + line as u64 > max
            }
            Err(_) => false,
        }
    }

    fn write(&mut self, key: FileKey, text: &str) -> io::Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        let file = self.file(key.0, key.1)?;
        file.file.write_all(text.as_bytes())?;
        file.size += text.len() as u64;
        Ok(())
    }

    /// `F.N-1` → `F.N` … `F` → `F.1`, then a new, empty `F`; with `--log-keep 0`, `F` emptied.
    fn rotate(&mut self, key: FileKey) -> io::Result<()> {
        let path = self.path(key);
        self.open.remove(&key);
        let keep = self.keep;
        if keep == 0 {
            File::create(&path)?;
        } else {
            for index in (1..keep).rev() {
                rename_if_present(&numbered(&path, index), &numbered(&path, index + 1))?;
            }
            std::fs::rename(&path, numbered(&path, 1))?;
        }
        let file = open(&path)?;
        let size = file.metadata()?.len();
        self.open.insert(key, OpenFile { file, size });
        Ok(())
    }

    fn format(&self, entry: &LogEntry, out: &mut String) {
        let time = humantime::format_rfc3339_millis(entry.time);
        match self.format {
            LogFormat::Text => match entry.slot {
                Some(slot) => {
                    out.push_str(&format!("{time} [{slot}:{}] {}\n", entry.pid, entry.line));
                }
                None => out.push_str(&format!("{time} herdsman: {}\n", entry.line)),
            },
            LogFormat::Json => {
                let line = JsonLine {
                    time: time.to_string(),
                    slot: entry.slot,
                    pid: entry.pid,
                    stream: entry.stream,
                    level: None,
                    line: &entry.line,
                };
                // Plain strings and numbers always serialise.
                out.push_str(&serde_json::to_string(&line).unwrap_or_default());
                out.push('\n');
            }
        }
    }
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn numbered(path: &Path, index: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{index}"));
    PathBuf::from(name)
}

fn rename_if_present(from: &Path, to: &Path) -> io::Result<()> {
    match std::fs::rename(from, to) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    fn entry(slot: Option<usize>, stream: &'static str, line: &str) -> LogEntry {
        LogEntry {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1500),
            slot,
            pid: 42,
            stream,
            line: line.into(),
        }
    }

    fn files(dir: &Path, max_size: u64, keep: usize) -> Files {
        Files {
            dir: dir.to_path_buf(),
            max_size,
            keep,
            name: "api".into(),
            format: LogFormat::Text,
            open: HashMap::new(),
        }
    }

    #[test]
    fn names_and_formats_lines_as_herdsman_logs_shows_them() {
        let files = files(Path::new("/logs"), 100, 1);
        assert_eq!(
            files.path((Some(2), "stderr")),
            Path::new("/logs/api-2.err.log")
        );
        assert_eq!(
            files.path((Some(2), "stdout")),
            Path::new("/logs/api-2.out.log")
        );
        assert_eq!(
            files.path((None, "herdsman")),
            Path::new("/logs/api.herdsman.log")
        );
        let mut text = String::new();
        files.format(&entry(Some(2), "stdout", "hello"), &mut text);
        files.format(&entry(None, "herdsman", "worker 2 ready"), &mut text);
        assert_eq!(
            text,
            "1970-01-01T00:00:01.500Z [2:42] hello\n\
             1970-01-01T00:00:01.500Z herdsman: worker 2 ready\n"
        );
        let json = Files {
            format: LogFormat::Json,
            ..files
        };
        let mut text = String::new();
        json.format(&entry(Some(1), "stderr", "oops"), &mut text);
        assert_eq!(
            text,
            "{\"time\":\"1970-01-01T00:00:01.500Z\",\"slot\":1,\"pid\":42,\"stream\":\"stderr\",\"line\":\"oops\"}\n"
        );
    }

    #[test]
    fn keep_zero_empties_the_file_instead_of_keeping_a_copy() {
        let dir = std::env::temp_dir().join(format!("herdsman-log-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut files = files(&dir, 10, 0);
        let key = (Some(1), "stdout");
        files.write(key, "0123456789").unwrap();
        assert!(files.would_rotate(key, 0, 1));
        files.rotate(key).unwrap();
        files.write(key, "abc").unwrap();
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["api-1.out.log"]);
        assert_eq!(
            std::fs::read_to_string(dir.join("api-1.out.log")).unwrap(),
            "abc"
        );
        // An empty file takes a line longer than the size; bytes not yet written count.
        assert!(!files.would_rotate((Some(2), "stdout"), 0, 11));
        assert!(files.would_rotate((Some(2), "stdout"), 5, 6));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
