//! A stream (`XADD`): entries ordered by ID, each a list of field-value pairs, and the last ID
//! ever given, which never goes back even when entries are deleted or trimmed.
//!
//! Entries live in a B-tree by ID, so appending, deleting and reading a range are O(log n).
//! Redis keeps entries in nodes of up to 100 (`stream-node-max-entries`) and trims with `~`
//! only whole nodes; each entry here remembers the node Redis would have put it in, so that an
//! approximate trim removes what Redis's would (Redis also closes a node at 4 KB, which is not
//! followed here: with large entries Redis may trim more, sooner, as `~` allows).

use std::collections::BTreeMap;

use bytes::Bytes;

/// Entries per node, as Redis's default `stream-node-max-entries`.
const NODE_ENTRIES: u64 = 100;

/// A stream entry's ID: milliseconds, then a sequence number within the millisecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    pub const MAX: StreamId = StreamId {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    /// The next ID up, if there is one.
    pub fn next(self) -> Option<StreamId> {
        match self.seq.checked_add(1) {
            Some(seq) => Some(StreamId { ms: self.ms, seq }),
            None => self.ms.checked_add(1).map(|ms| StreamId { ms, seq: 0 }),
        }
    }

    /// The next ID down, if there is one.
    pub fn previous(self) -> Option<StreamId> {
        match self.seq.checked_sub(1) {
            Some(seq) => Some(StreamId { ms: self.ms, seq }),
            None => self
                .ms
                .checked_sub(1)
                .map(|ms| StreamId { ms, seq: u64::MAX }),
        }
    }

    pub fn text(self) -> Bytes {
        Bytes::from(format!("{}-{}", self.ms, self.seq))
    }
}

/// What a trim keeps: the newest N entries, or those from an ID up.
#[derive(Debug, Clone, Copy)]
pub enum Trim {
    MaxLen(u64),
    MinId(StreamId),
}

#[derive(Debug, Clone)]
struct Entry {
    fields: Vec<Bytes>,
    /// The node Redis would keep this entry in.
    node: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Stream {
    entries: BTreeMap<StreamId, Entry>,
    pub last_id: StreamId,
    /// The node new entries go to, and how many it was given.
    tail_node: u64,
    tail_given: u64,
    /// The estimated bytes the entries hold.
    bytes: usize,
}

fn entry_cost(fields: &[Bytes]) -> usize {
    16 + fields
        .iter()
        .map(|item| super::db::item_cost(item))
        .sum::<usize>()
}

impl Stream {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Appends an entry under `id` (above `last_id`: the caller checked).
    pub fn append(&mut self, id: StreamId, fields: Vec<Bytes>) {
        let tail_alive = self
            .entries
            .last_key_value()
            .is_some_and(|(_, entry)| entry.node == self.tail_node);
        if !tail_alive || self.tail_given >= NODE_ENTRIES {
            self.tail_node += 1;
            self.tail_given = 0;
        }
        self.tail_given += 1;
        let node = self.tail_node;
        self.bytes += entry_cost(&fields);
        self.entries.insert(id, Entry { fields, node });
        self.last_id = id;
    }

    /// Deletes the entry `id`; whether it was there.
    pub fn delete(&mut self, id: StreamId) -> bool {
        self.remove(id)
    }

    fn remove(&mut self, id: StreamId) -> bool {
        match self.entries.remove(&id) {
            Some(entry) => {
                self.bytes -= entry_cost(&entry.fields);
                true
            }
            None => false,
        }
    }

    /// Removes entries from the oldest on, as `trim` says; with `approximate`, only whole
    /// nodes, at most `limit` entries (0: no limit). How many it removed.
    pub fn trim(&mut self, trim: Trim, approximate: bool, limit: u64) -> u64 {
        let mut removed = 0;
        while let Some((&first, entry)) = self.entries.first_key_value() {
            if let (Trim::MaxLen(max), true) = (trim, approximate) {
                if self.entries.len() as u64 <= max {
                    break;
                }
            }
            if !approximate {
                let over = match trim {
                    Trim::MaxLen(max) => self.entries.len() as u64 > max,
                    Trim::MinId(min) => first < min,
                };
                if !over {
                    break;
                }
                self.remove(first);
                removed += 1;
                continue;
            }
            let node = entry.node;
            let in_node: Vec<StreamId> = self
                .entries
                .iter()
                .take_while(|(_, entry)| entry.node == node)
                .map(|(id, _)| *id)
                .collect();
            let count = in_node.len() as u64;
            let newest = *in_node.last().expect("the node holds the first entry");
            // As Redis: a whole node goes if the stream keeps at least MAXLEN without it, or if
            // its newest entry is below MINID.
            let whole = match trim {
                Trim::MaxLen(max) => self.entries.len() as u64 - count >= max,
                Trim::MinId(min) => newest < min,
            };
            if !whole || (limit > 0 && removed + count > limit) {
                break;
            }
            for id in in_node {
                self.remove(id);
            }
            removed += count;
        }
        removed
    }

    /// Entries from `start` to `end` (inclusive), oldest first (newest first if `reverse`), at
    /// most `count` (0: all).
    pub fn range(
        &self,
        start: StreamId,
        end: StreamId,
        reverse: bool,
        count: usize,
    ) -> Vec<(StreamId, &[Bytes])> {
        if start > end {
            return Vec::new();
        }
        fn fields<'a>((id, entry): (&StreamId, &'a Entry)) -> (StreamId, &'a [Bytes]) {
            (*id, entry.fields.as_slice())
        }
        let range = self.entries.range(start..=end);
        let limit = if count == 0 { usize::MAX } else { count };
        if reverse {
            range.rev().take(limit).map(fields).collect()
        } else {
            range.take(limit).map(fields).collect()
        }
    }

    /// The newest entry's ID, if any.
    pub fn newest(&self) -> Option<StreamId> {
        self.entries.last_key_value().map(|(id, _)| *id)
    }

    /// Every entry, oldest first (for the append-only file's compaction).
    pub fn iter(&self) -> impl Iterator<Item = (StreamId, &[Bytes])> {
        self.entries
            .iter()
            .map(|(id, entry)| (*id, entry.fields.as_slice()))
    }

    /// The estimated bytes the entries hold.
    pub fn cost(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64) -> StreamId {
        StreamId { ms, seq: 0 }
    }

    fn stream_of(count: u64) -> Stream {
        let mut stream = Stream::default();
        for ms in 1..=count {
            stream.append(id(ms), vec![Bytes::from("f"), Bytes::from("v")]);
        }
        stream
    }

    #[test]
    fn approximate_trimming_removes_only_whole_nodes_of_100() {
        let mut stream = stream_of(250);
        // MAXLEN ~ 120: the first node (1–100) can go, the second cannot (130 left > 120).
        assert_eq!(stream.trim(Trim::MaxLen(120), true, 0), 100);
        assert_eq!(stream.len(), 150);
        assert_eq!(stream.trim(Trim::MaxLen(120), true, 0), 0);
        // Exactly: down to 120, from the oldest.
        assert_eq!(stream.trim(Trim::MaxLen(120), false, 0), 30);
        assert_eq!(stream.range(id(0), StreamId::MAX, false, 1)[0].0, id(131));
        // MINID ~ 240: the node 201–250 holds newer entries and stays; 131–200 goes.
        assert_eq!(stream.trim(Trim::MinId(id(240)), true, 0), 70);
        assert_eq!(stream.len(), 50);
        assert_eq!(stream.last_id, id(250));
    }

    #[test]
    fn a_stream_emptied_starts_a_new_node_and_keeps_its_last_id() {
        let mut stream = stream_of(150);
        assert_eq!(stream.trim(Trim::MaxLen(0), false, 0), 150);
        assert_eq!(stream.last_id, id(150));
        for ms in 151..=250 {
            stream.append(id(ms), vec![Bytes::from("f")]);
        }
        // 100 entries in one new node: MAXLEN ~ 0 removes them all at once, within a limit.
        assert_eq!(stream.trim(Trim::MaxLen(0), true, 99), 0);
        assert_eq!(stream.trim(Trim::MaxLen(0), true, 100), 100);
    }

    #[test]
    fn ids_step_across_the_millisecond_and_stop_at_the_ends() {
        let top = StreamId {
            ms: 7,
            seq: u64::MAX,
        };
        assert_eq!(top.next(), Some(StreamId { ms: 8, seq: 0 }));
        assert_eq!(StreamId { ms: 8, seq: 0 }.previous(), Some(top));
        assert_eq!(StreamId::MAX.next(), None);
        assert_eq!(StreamId::default().previous(), None);
    }
}
