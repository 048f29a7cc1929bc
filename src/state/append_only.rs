//! `--state-file`: the append-only log of writes. Each batch of writes is appended (write(2),
//! into the page cache) before its replies go out, so a SIGKILL of the primary loses nothing
//! acknowledged; a thread fsyncs the file every second, so a machine crash loses at most about
//! a second. At start the log is replayed and then compacted into one command per key (a
//! `SELECT` before each database's keys); it is compacted again whenever it has doubled (and
//! passed 64 MiB) since. Commands are logged with a `SELECT` whenever the database changes.
//!
//! One primary at a time: the file is locked (`flock`, exclusive) from before it is read until
//! the store closes, so a second primary given the same `--state-file` is refused at start
//! instead of compacting the file away under the first one, which would go on appending to an
//! unlinked inode and lose every write after. Compaction locks the file it writes before
//! renaming it into place, so the path is locked throughout.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::commands::{self, ReplayError};
use super::db::{Now, Value};
use super::request::{ProtocolError, RequestParser, MAX_BULK};
use super::store::{encode_command, Store, DATABASES};

const FSYNC_EVERY: Duration = Duration::from_secs(1);
const REWRITE_MIN_SIZE: u64 = 64 * 1024 * 1024;
/// Items per command when a collection is written out by compaction.
const ITEMS_PER_COMMAND: usize = 512;

/// Why the state file cannot be used: it is unreadable, damaged, or cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot open {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot truncate {}: {source}", path.display())]
    Truncate { path: PathBuf, source: io::Error },
    #[error("cannot start the fsync thread: {0}")]
    Thread(#[source] io::Error),
    /// Another process (a second herdsman) holds the file's lock.
    #[error(
        "{} is in use by another process (another herdsman's store, most likely: `herdsman ls` \
         lists the clusters); two stores writing one file would lose each other's writes: stop \
         the other cluster, or give this one a --state-file of its own",
        path.display()
    )]
    InUse { path: PathBuf },
    /// Not the protocol the store writes, at `offset`.
    #[error(
        "{} is damaged at byte {offset}: {}; to start anyway, move the file aside (the store \
         starts empty) or truncate it to {offset} bytes (keeping what comes before)",
        path.display(),
        reason.0
    )]
    Damaged {
        path: PathBuf,
        offset: u64,
        reason: ProtocolError,
    },
    /// A command the store does not have, at `offset`.
    #[error(
        "{} is damaged at byte {offset}: {source}; move the file aside to start with an empty \
         store",
        path.display()
    )]
    UnknownCommand {
        path: PathBuf,
        offset: u64,
        source: ReplayError,
    },
}

/// The open log.
#[derive(Debug)]
pub struct AppendOnly {
    path: PathBuf,
    file: Arc<Mutex<File>>,
    /// The file at `path`, locked (see the module's doc): held, never written through.
    _lock: File,
    size: u64,
    /// Size right after the last compaction.
    base_size: u64,
    stop_sync: Option<mpsc::Sender<()>>,
    sync_thread: Option<thread::JoinHandle<()>>,
}

/// What replaying found, for the primary to report.
#[derive(Debug, Default)]
pub struct Loaded {
    pub commands: u64,
    /// Bytes of an incomplete last write that were cut off.
    pub truncated: Option<u64>,
}

impl AppendOnly {
    /// Replays `path` (if it exists) into `store`, compacts it, and opens it for appending.
    pub fn open(path: &Path, store: &mut Store) -> Result<(AppendOnly, Loaded), StateFileError> {
        let open_error = |source| StateFileError::Open {
            path: path.into(),
            source,
        };
        let existing = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(open_error)?;
        match existing.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(StateFileError::InUse { path: path.into() })
            }
            Err(fs::TryLockError::Error(source)) => return Err(open_error(source)),
        }
        let loaded = match fs::read(path) {
            Ok(contents) => replay(path, contents, store)?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => Loaded::default(),
            Err(source) => {
                return Err(StateFileError::Read {
                    path: path.into(),
                    source,
                })
            }
        };
        let (size, lock) = compact(path, store).map_err(|source| StateFileError::Write {
            path: path.into(),
            source,
        })?;
        drop(existing);
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(open_error)?;
        let file = Arc::new(Mutex::new(file));
        let (stop_sync, stopped) = mpsc::channel();
        let sync_thread = {
            let file = file.clone();
            thread::Builder::new()
                .name("herdsman-fsync".into())
                .spawn(move || sync_every_second(&file, &stopped))
                .map_err(StateFileError::Thread)?
        };
        Ok((
            AppendOnly {
                path: path.to_path_buf(),
                file,
                _lock: lock,
                size,
                base_size: size,
                stop_sync: Some(stop_sync),
                sync_thread: Some(sync_thread),
            },
            loaded,
        ))
    }

    /// Appends logged writes.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        file.write_all(bytes)?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Compacts the log if it has grown enough since the last time; whether it did.
    pub fn compact_if_grown(&mut self, store: &Store) -> io::Result<bool> {
        if self.size < REWRITE_MIN_SIZE || self.size < self.base_size.saturating_mul(2) {
            return Ok(false);
        }
        let (size, lock) = compact(&self.path, store)?;
        self._lock = lock;
        let file = OpenOptions::new().append(true).open(&self.path)?;
        *self
            .file
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = file;
        self.size = size;
        self.base_size = size;
        Ok(true)
    }

    /// Flushes to disk and stops the fsync thread.
    pub fn close(mut self) -> io::Result<()> {
        drop(self.stop_sync.take());
        if let Some(thread) = self.sync_thread.take() {
            let _ = thread.join();
        }
        let file = self
            .file
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        file.sync_data()
    }
}

fn sync_every_second(file: &Mutex<File>, stopped: &mpsc::Receiver<()>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(FSYNC_EVERY) {
        // fsync a duplicate of the descriptor, so appends are not held up while it runs.
        let copy = file
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .try_clone();
        if let Ok(copy) = copy {
            let _ = copy.sync_data();
        }
    }
}

/// Applies the logged commands to `store`. A transaction (`MULTI` … `EXEC`) applies whole or
/// not at all; an incomplete last write is cut off, damage before it is an error.
fn replay(path: &Path, contents: Vec<u8>, store: &mut Store) -> Result<Loaded, StateFileError> {
    let total = contents.len() as u64;
    let mut input = BytesMut::from(&contents[..]);
    drop(contents);
    let mut parser = RequestParser::new(MAX_BULK);
    let mut client = store.new_client(super::clients::Peer::default());
    let mut loaded = Loaded::default();
    let mut transaction: Option<Vec<Vec<Bytes>>> = None;
    // Offset just after the last command (or transaction) applied.
    let mut applied_to = 0u64;
    set_loading(store, true);
    loop {
        let before = total - input.len() as u64;
        let request = match bad_record(&input).map_or_else(|| parser.next(&mut input), Err) {
            Ok(Some(request)) => request.to_vec(),
            Ok(None) => break,
            Err(reason) => {
                set_loading(store, false);
                return Err(StateFileError::Damaged {
                    path: path.into(),
                    offset: before,
                    reason,
                });
            }
        };
        let after = total - input.len() as u64;
        let name = request[0].to_ascii_lowercase();
        match (name.as_slice(), &mut transaction) {
            (b"multi", None) => transaction = Some(Vec::new()),
            (b"exec", Some(_)) => {
                for command in transaction.take().unwrap_or_default() {
                    apply(path, store, &mut client, &command, before)?;
                    loaded.commands += 1;
                }
                applied_to = after;
            }
            (_, Some(queued)) => queued.push(request),
            (_, None) => {
                apply(path, store, &mut client, &request, before)?;
                loaded.commands += 1;
                applied_to = after;
            }
        }
    }
    set_loading(store, false);
    store.select(0);
    if applied_to < total {
        loaded.truncated = Some(total - applied_to);
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|source| StateFileError::Open {
                path: path.into(),
                source,
            })?;
        file.set_len(applied_to)
            .map_err(|source| StateFileError::Truncate {
                path: path.into(),
                source,
            })?;
    }
    for index in 0..DATABASES {
        store
            .db_at(index)
            .expire_due(Now(super::db::now_ms()), usize::MAX);
    }
    store.forget_expired();
    Ok(loaded)
}

fn set_loading(store: &mut Store, loading: bool) {
    for index in 0..DATABASES {
        store.db_at(index).loading = loading;
    }
}

/// The file holds only what the store wrote: RESP arrays of one argument or more. What the
/// parser skips or accepts from a client (an empty or negative `*N`, a blank or inline line) is
/// damage in the file, as it is to Redis's loader. `None` also when the record is incomplete:
/// the parser then finds it cut off.
fn bad_record(input: &[u8]) -> Option<ProtocolError> {
    /// Longer than any count line the store writes (`*` and a 64-bit count).
    const COUNT_LINE: usize = 24;
    if *input.first()? != b'*' {
        return Some(ProtocolError(format!(
            "expected '*', got '{}'",
            input[0].escape_ascii()
        )));
    }
    let head = &input[..input.len().min(COUNT_LINE)];
    let count = match head.iter().position(|&byte| byte == b'\r') {
        Some(end) => super::number::parse_i64(&input[1..end]),
        None if head.len() < COUNT_LINE => return None,
        None => None,
    };
    match count {
        Some(count) if count >= 1 => None,
        _ => Some(ProtocolError("invalid multibulk length".into())),
    }
}

fn apply(
    path: &Path,
    store: &mut Store,
    client: &mut super::store::Client,
    command: &[Bytes],
    offset: u64,
) -> Result<(), StateFileError> {
    match commands::replay(store, client, command) {
        Ok(()) => Ok(()),
        Err(source @ ReplayError::UnknownCommand { .. }) => Err(StateFileError::UnknownCommand {
            path: path.into(),
            offset,
            source,
        }),
        // A command that failed when it was logged fails the same way now: nothing to apply.
        Err(ReplayError::Failed { .. }) => Ok(()),
    }
}

/// Writes the store as one command per key to a temporary file and renames it over `path`,
/// locked first. Returns the new size, and the file, which holds the lock.
fn compact(path: &Path, store: &Store) -> io::Result<(u64, File)> {
    let temporary = path.with_extension(format!("rewrite-{}", std::process::id()));
    let mut out = Vec::new();
    let mut file = io::BufWriter::new(File::create(&temporary)?);
    let mut size = 0u64;
    let now = Now(super::db::now_ms());
    let mut selected = 0;
    for (index, key, entry) in store
        .databases()
        .flat_map(|(index, db)| db.iter(now).map(move |(key, entry)| (index, key, entry)))
    {
        if index != selected {
            encode_command(&mut out, &[&b"SELECT"[..], index.to_string().as_bytes()]);
            selected = index;
        }
        match &entry.value {
            Value::Str(text) => match entry.expires_at {
                Some(at) => encode_command(
                    &mut out,
                    &[&b"SET"[..], key, text, b"PXAT", at.to_string().as_bytes()],
                ),
                None => encode_command(&mut out, &[&b"SET"[..], key, text]),
            },
            Value::List(list) => {
                let items: Vec<&[u8]> = list.iter().map(|item| item.as_ref()).collect();
                write_chunks(&mut out, b"RPUSH", key, &items);
            }
            Value::Set(set) => {
                let items: Vec<&[u8]> = set.iter().map(|item| item.as_ref()).collect();
                write_chunks(&mut out, b"SADD", key, &items);
            }
            Value::ZSet(zset) => {
                let scores: Vec<(String, &[u8])> = zset
                    .iter()
                    .map(|(member, score)| (super::number::format_double(score), member.as_bytes()))
                    .collect();
                let items: Vec<&[u8]> = scores
                    .iter()
                    .flat_map(|(score, member)| [score.as_bytes(), member])
                    .collect();
                write_chunks(&mut out, b"ZADD", key, &items);
            }
            Value::Stream(stream) => {
                for (id, fields) in stream.iter() {
                    let id = id.text();
                    let mut command: Vec<&[u8]> = vec![b"XADD", key, &id];
                    command.extend(fields.iter().map(|field| field.as_ref()));
                    encode_command(&mut out, &command);
                }
                let last = stream.last_id.text();
                match stream.newest() {
                    // An empty stream: made by an entry at its last ID, trimmed away.
                    None => encode_command(
                        &mut out,
                        &[&b"XADD"[..], key, b"MAXLEN", b"0", &last, b"", b""],
                    ),
                    Some(newest) if newest != stream.last_id => {
                        encode_command(&mut out, &[&b"XSETID"[..], key, &last])
                    }
                    Some(_) => {}
                }
            }
            Value::Hash(hash) => {
                let items: Vec<&[u8]> = hash
                    .iter()
                    .flat_map(|(field, value)| [field.as_ref(), value.as_ref()])
                    .collect();
                write_chunks(&mut out, b"HSET", key, &items);
            }
        }
        if let (Some(at), false) = (entry.expires_at, matches!(entry.value, Value::Str(_))) {
            encode_command(
                &mut out,
                &[&b"PEXPIREAT"[..], key, at.to_string().as_bytes()],
            );
        }
        if out.len() > 64 * 1024 {
            file.write_all(&out)?;
            size += out.len() as u64;
            out.clear();
        }
    }
    // Appends after this run in database 0.
    if selected != 0 {
        encode_command(&mut out, &[&b"SELECT"[..], b"0"]);
    }
    file.write_all(&out)?;
    size += out.len() as u64;
    let file = file.into_inner().map_err(|error| error.into_error())?;
    file.sync_all()?;
    // Nobody else has opened the temporary file, so the lock cannot be held elsewhere.
    file.try_lock().map_err(io::Error::from)?;
    fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    Ok((size, file))
}

fn write_chunks(out: &mut Vec<u8>, command: &[u8], key: &[u8], items: &[&[u8]]) {
    let per_command = if command == b"HSET" || command == b"ZADD" {
        ITEMS_PER_COMMAND * 2
    } else {
        ITEMS_PER_COMMAND
    };
    for chunk in items.chunks(per_command) {
        let mut args: Vec<&[u8]> = Vec::with_capacity(chunk.len() + 2);
        args.push(command);
        args.push(key);
        args.extend_from_slice(chunk);
        encode_command(out, &args);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replayed(name: &str, contents: &[u8]) -> (PathBuf, Result<u64, StateFileError>) {
        let dir = std::env::temp_dir().join(format!("herdsman-aof-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.aof");
        fs::write(&path, contents).unwrap();
        let mut store = Store::new(None);
        let result = AppendOnly::open(&path, &mut store).map(|(_, loaded)| loaded.commands);
        (path, result)
    }

    #[test]
    fn an_unknown_command_is_damage_and_a_failing_one_is_skipped() {
        // A failing command (INCR of a non-number) fails as it did when logged: skipped.
        let (path, result) = replayed(
            "failing",
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n",
        );
        assert_eq!(result.unwrap(), 2);
        let _ = fs::remove_dir_all(path.parent().unwrap());
        // An unknown one, after a good one, stops the start at its offset.
        let (path, result) = replayed(
            "unknown",
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*1\r\n$7\r\nNOTACMD\r\n",
        );
        let error = result.unwrap_err();
        let StateFileError::UnknownCommand { offset, source, .. } = &error else {
            panic!("{error:?}");
        };
        assert_eq!(*offset, 27);
        assert_eq!(
            *source,
            ReplayError::UnknownCommand {
                name: "NOTACMD".into()
            }
        );
        assert_eq!(
            error.to_string(),
            format!(
                "{} is damaged at byte 27: unknown command 'NOTACMD'; move the file aside to \
                 start with an empty store",
                path.display()
            )
        );
        let _ = fs::remove_dir_all(path.parent().unwrap());
    }
}
