//! The keyspace: values by key, expiry to the millisecond, and an estimate of the memory used.
//!
//! Keys live in an insertion-ordered map so `SCAN` can walk it with a plain integer cursor:
//! removal swaps the last key into the hole, and `SCAN` walks from the end towards the start,
//! so a key present for the whole walk is never skipped (one moved by a removal may be returned
//! twice, which Redis allows too). Deadlines are kept in a sorted index beside the keys, so
//! expired keys are reclaimed from its front without scanning the keyspace.
//!
//! Laid out for memory (issue 14: a key within 1.5× of what Redis spends): a key and a string
//! value are `CompactBytes` (24 bytes, inline up to 22), every collection is boxed so a `Value`
//! is 24 bytes too, and a map slot (hash, key, entry with its deadline) is 72 bytes, with no
//! allocation for a small key and value.

use std::collections::{BTreeSet, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use indexmap::{IndexMap, IndexSet};

use super::compact::CompactBytes;
use super::notify;

/// Milliseconds since the Unix epoch, the clock every deadline uses (as Redis's `EXPIREAT`).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// A value, by type. Every collection is boxed so a value is as small as a string's
/// `CompactBytes` (24 bytes: its tag's spare values tell the other variants apart).
#[derive(Debug, Clone)]
pub enum Value {
    Str(CompactBytes),
    Hash(Box<IndexMap<Bytes, Bytes>>),
    // Boxed, though a `VecDeque` already keeps its items on the heap: unboxed, its 32 bytes
    // would make every value, strings included, 40.
    #[allow(clippy::box_collection)]
    List(Box<VecDeque<Bytes>>),
    Set(Box<IndexSet<Bytes>>),
    ZSet(Box<super::zset::ZSet>),
    Stream(Box<super::stream::Stream>),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::Hash(_) => "hash",
            Value::List(_) => "list",
            Value::Set(_) => "set",
            Value::ZSet(_) => "zset",
            Value::Stream(_) => "stream",
        }
    }

    /// The estimated bytes this value holds, beyond its entry.
    pub fn cost(&self) -> usize {
        match self {
            Value::Str(text) => text.len(),
            Value::Hash(hash) => hash.iter().map(|(f, v)| item_cost(f) + item_cost(v)).sum(),
            Value::List(list) => list.iter().map(|item| item_cost(item)).sum(),
            Value::Set(set) => set.iter().map(|item| item_cost(item)).sum(),
            Value::ZSet(zset) => zset.cost(),
            Value::Stream(stream) => stream.cost(),
        }
    }

    fn is_empty_collection(&self) -> bool {
        match self {
            Value::Str(_) => false,
            Value::Hash(hash) => hash.is_empty(),
            Value::List(list) => list.is_empty(),
            Value::Set(set) => set.is_empty(),
            Value::ZSet(zset) => zset.is_empty(),
            // An empty stream stays, as in Redis: it keeps its last ID.
            Value::Stream(_) => false,
        }
    }
}

/// Estimated bookkeeping bytes per key (map slot, entry, index) and per collection item; a key
/// costs about 72 bytes beyond its key's and value's bytes when both are inline (measured:
/// `ONLY=memory bench/state.sh`).
pub const ENTRY_OVERHEAD: usize = 72;
const ITEM_OVERHEAD: usize = 48;

/// What one collection item costs, for callers that add or remove items.
pub fn item_cost(item: &[u8]) -> usize {
    item.len() + ITEM_OVERHEAD
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub value: Value,
    /// Deadline in Unix milliseconds; `None` for a key that does not expire.
    pub expires_at: Option<i64>,
}

/// The one database (Redis's db 0).
#[derive(Debug, Default)]
pub struct Db {
    keys: IndexMap<CompactBytes, Entry>,
    deadlines: BTreeSet<(i64, CompactBytes)>,
    used_memory: usize,
    /// While replaying the append-only file nothing expires (as in Redis), so each logged write
    /// applies to the state it was applied to; keys past their deadline go afterwards.
    pub loading: bool,
    /// Keys removed because they expired, for the append-only file to log as `DEL`.
    pub expired: Vec<Bytes>,
    /// Some client `WATCH`es a key here: record the keys that change in `touched`.
    pub tracking: bool,
    pub touched: Vec<Bytes>,
    /// The keyspace events this database records itself (`notify::NEW`, `notify::EXPIRED`),
    /// and those it recorded, for the store to publish in order (see `notify`).
    pub recording: u32,
    pub noted: Vec<(&'static str, Bytes)>,
}

/// The clock a command runs at: one reading per command, as Redis takes one per command.
#[derive(Debug, Clone, Copy)]
pub struct Now(pub i64);

impl Db {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn expiring(&self) -> usize {
        self.deadlines.len()
    }

    pub fn used_memory(&self) -> usize {
        self.used_memory
    }

    /// Where `key` is, if it is there and not past its deadline (one hash lookup; a key found
    /// expired is removed on the way).
    fn find(&mut self, key: &[u8], now: Now) -> Option<usize> {
        let index = self.keys.get_index_of(key)?;
        let expired = self.keys[index]
            .expires_at
            .is_some_and(|at| at <= now.0 && !self.loading);
        if expired {
            if let Some((key, _)) = self.remove_entry(key) {
                self.note_expired(&key);
                self.expired.push(key.to_bytes());
            }
            return None;
        }
        Some(index)
    }

    pub fn get(&mut self, key: &[u8], now: Now) -> Option<&Entry> {
        let index = self.find(key, now)?;
        Some(&self.keys[index])
    }

    /// The entry, to change it: counts as a change for `WATCH` (the command's dispatcher
    /// forgets it if the command reports that it changed nothing).
    pub fn get_mut(&mut self, key: &[u8], now: Now) -> Option<&mut Entry> {
        let index = self.find(key, now)?;
        self.touch(key);
        Some(&mut self.keys[index])
    }

    fn touch(&mut self, key: &[u8]) {
        if self.tracking {
            self.touched.push(Bytes::copy_from_slice(key));
        }
    }

    /// Whether `key` holds a value that is past its deadline but not yet removed.
    pub fn is_stale(&self, key: &[u8], now: Now) -> bool {
        self.keys
            .get(key)
            .and_then(|entry| entry.expires_at)
            .is_some_and(|at| at <= now.0)
    }

    /// Whether `key` holds a live value (without removing it if it expired).
    pub fn is_live(&self, key: &[u8], now: Now) -> bool {
        self.keys
            .get(key)
            .is_some_and(|entry| entry.expires_at.is_none_or(|at| at > now.0))
    }

    /// The key at position `index` (below [`Db::len`]), expired or not.
    pub fn key_at(&self, index: usize) -> &CompactBytes {
        self.keys.get_index(index).expect("index below len").0
    }

    pub fn contains(&mut self, key: &[u8], now: Now) -> bool {
        self.get(key, now).is_some()
    }

    /// Stores `value` at `key`, replacing any value; the deadline is `expires_at`.
    pub fn set(&mut self, key: &[u8], value: Value, expires_at: Option<i64>) {
        self.touch(key);
        match self.keys.get_index_of(key) {
            Some(index) => self.overwrite(index, value, Some(expires_at)),
            None => self.insert_new(key, value, expires_at),
        }
    }

    /// Replaces the value at `key`, keeping its deadline (or stores it, if there is no such
    /// key).
    pub fn replace_value(&mut self, key: &[u8], value: Value) {
        self.touch(key);
        match self.keys.get_index_of(key) {
            Some(index) => self.overwrite(index, value, None),
            None => self.insert_new(key, value, None),
        }
    }

    fn insert_new(&mut self, key: &[u8], value: Value, expires_at: Option<i64>) {
        if self.recording & notify::NEW != 0 && !self.loading {
            self.noted.push(("new", Bytes::copy_from_slice(key)));
        }
        let key = CompactBytes::new(key);
        self.used_memory += ENTRY_OVERHEAD + key.len() + value.cost();
        if let Some(at) = expires_at {
            self.deadlines.insert((at, key.clone()));
        }
        self.keys.insert(key, Entry { value, expires_at });
    }

    /// Replaces the entry at `index` in place (the key keeps its place and its allocation);
    /// `deadline` is the new deadline, or `None` to keep the current one.
    fn overwrite(&mut self, index: usize, value: Value, deadline: Option<Option<i64>>) {
        let (key, entry) = self
            .keys
            .get_index_mut(index)
            .expect("the index was just looked up");
        self.used_memory = (self.used_memory + value.cost()).saturating_sub(entry.value.cost());
        entry.value = value;
        if let Some(expires_at) = deadline {
            move_deadline(&mut self.deadlines, key, entry, expires_at);
        }
    }

    fn note_expired(&mut self, key: &[u8]) {
        if self.recording & notify::EXPIRED != 0 {
            self.noted.push(("expired", Bytes::copy_from_slice(key)));
        }
    }

    /// Removes `key`; its entry if it was there (expired or not).
    pub fn remove(&mut self, key: &[u8], now: Now) -> Option<Entry> {
        self.find(key, now)?;
        self.remove_entry(key).map(|(_, entry)| entry)
    }

    fn remove_entry(&mut self, key: &[u8]) -> Option<(CompactBytes, Entry)> {
        let (key, entry) = self.keys.swap_remove_entry(key)?;
        if self.tracking {
            self.touched.push(key.to_bytes());
        }
        if let Some(at) = entry.expires_at {
            self.deadlines.remove(&(at, key.clone()));
        }
        self.used_memory = self
            .used_memory
            .saturating_sub(ENTRY_OVERHEAD + key.len() + entry.value.cost());
        Some((key, entry))
    }

    /// Sets or clears the deadline of an existing key; false if there is no such key.
    pub fn set_expiry(&mut self, key: &[u8], expires_at: Option<i64>) -> bool {
        let Some((_, stored_key, entry)) = self.keys.get_full_mut(key) else {
            return false;
        };
        if self.tracking {
            self.touched.push(stored_key.to_bytes());
        }
        move_deadline(&mut self.deadlines, stored_key, entry, expires_at);
        true
    }

    /// Accounts for bytes added to a collection that only grew.
    pub fn grew(&mut self, added: usize) {
        self.used_memory += added;
    }

    /// Accounts for items added to (positive) or removed from (negative) a collection, and
    /// removes the key if that left its collection empty (Redis never keeps an empty one).
    pub fn adjust(&mut self, key: &[u8], added: usize, removed: usize) {
        self.used_memory = (self.used_memory + added).saturating_sub(removed);
        if self
            .keys
            .get(key)
            .is_some_and(|entry| entry.value.is_empty_collection())
        {
            self.remove_entry(key);
        }
    }

    /// Removes every key (the caller tells `WATCH`ers: see `Store::touch_all_watched`).
    pub fn clear(&mut self) {
        self.keys = IndexMap::new();
        self.deadlines = BTreeSet::new();
        self.used_memory = 0;
    }

    /// Reclaims keys whose deadline has passed, at most `limit` of them; how many it removed.
    pub fn expire_due(&mut self, now: Now, limit: usize) -> usize {
        let mut removed = 0;
        while removed < limit {
            let Some((at, key)) = self.deadlines.first().cloned() else {
                break;
            };
            if at > now.0 {
                break;
            }
            if let Some((key, _)) = self.remove_entry(&key) {
                self.note_expired(&key);
                self.expired.push(key.to_bytes());
            }
            removed += 1;
        }
        removed
    }

    /// One step of `SCAN`: live keys from position `cursor` down, about `count` of them, and the
    /// cursor to continue from (0 when done). Cursor 0 starts at the end.
    pub fn scan(
        &self,
        cursor: u64,
        count: usize,
        now: Now,
        mut keep: impl FnMut(&[u8], &Entry) -> bool,
    ) -> (u64, Vec<Bytes>) {
        let mut position = if cursor == 0 || cursor as usize > self.keys.len() {
            self.keys.len()
        } else {
            cursor as usize
        };
        let mut found = Vec::new();
        let mut visited = 0;
        while position > 0 && visited < count {
            position -= 1;
            visited += 1;
            let (key, entry) = self.keys.get_index(position).expect("position is in range");
            let live = entry.expires_at.is_none_or(|at| at > now.0) || self.loading;
            if live && keep(key, entry) {
                found.push(key.to_bytes());
            }
        }
        (position as u64, found)
    }

    /// Every live key and entry, in no particular order.
    pub fn iter(&self, now: Now) -> impl Iterator<Item = (&CompactBytes, &Entry)> {
        let loading = self.loading;
        self.keys
            .iter()
            .filter(move |(_, entry)| loading || entry.expires_at.is_none_or(|at| at > now.0))
    }
}

/// Gives `entry` (stored at `key`) the deadline `expires_at`, in the entry and in the index.
fn move_deadline(
    deadlines: &mut BTreeSet<(i64, CompactBytes)>,
    key: &CompactBytes,
    entry: &mut Entry,
    expires_at: Option<i64>,
) {
    if entry.expires_at == expires_at {
        return;
    }
    if let Some(old) = entry.expires_at {
        deadlines.remove(&(old, key.clone()));
    }
    if let Some(at) = expires_at {
        deadlines.insert((at, key.clone()));
    }
    entry.expires_at = expires_at;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(value: &str) -> Value {
        Value::Str(CompactBytes::new(value.as_bytes()))
    }

    #[test]
    fn scan_returns_every_key_present_throughout_while_keys_come_and_go() {
        let mut db = Db::default();
        for i in 0..100 {
            db.set(format!("k{i}").as_bytes(), text("v"), None);
        }
        let now = Now(0);
        let mut seen = std::collections::HashSet::new();
        let mut cursor = 0;
        let mut rounds = 0;
        loop {
            let (next, keys) = db.scan(cursor, 7, now, |_, _| true);
            seen.extend(keys);
            // Churn: delete one old key that was already returned, add a new one.
            db.remove(format!("k{rounds}").as_bytes(), now);
            db.set(format!("new{rounds}").as_bytes(), text("v"), None);
            rounds += 1;
            assert!(rounds < 100, "scan did not finish");
            if next == 0 {
                break;
            }
            cursor = next;
        }
        for i in rounds..100 {
            assert!(
                seen.contains(format!("k{i}").as_bytes()),
                "k{i} was skipped"
            );
        }
    }

    #[test]
    fn overwriting_in_place_keeps_the_deadline_index_and_memory_exact() {
        let mut db = Db::default();
        db.set(b"k", text("short"), Some(10));
        let first = db.used_memory();
        db.set(b"k", text("longer value"), Some(20));
        assert_eq!(db.used_memory(), first + 7);
        assert_eq!(db.expiring(), 1);
        db.replace_value(b"k", text("v"));
        assert_eq!(db.get(b"k", Now(15)).unwrap().expires_at, Some(20));
        db.set(b"k", text("v"), None);
        assert_eq!(db.expiring(), 0);
        assert_eq!(db.expire_due(Now(100), 10), 0);
        db.remove(b"k", Now(100));
        assert_eq!(db.used_memory(), 0);
    }

    #[test]
    fn expired_keys_are_reclaimed_from_the_deadline_index_and_memory_returns() {
        let mut db = Db::default();
        db.set(b"a", text("1"), Some(10));
        db.set(b"b", text("2"), Some(20));
        db.set(b"c", text("3"), None);
        let with_three = db.used_memory();
        assert_eq!(db.expire_due(Now(15), 100), 1);
        assert_eq!(db.expired, vec![Bytes::from("a")]);
        assert_eq!(db.len(), 2);
        assert!(db.get(b"b", Now(20)).is_none());
        assert_eq!(db.len(), 1);
        assert!(db.used_memory() < with_three);
        db.remove(b"c", Now(20));
        assert_eq!(db.used_memory(), 0);
        assert_eq!(db.expiring(), 0);
    }
}
