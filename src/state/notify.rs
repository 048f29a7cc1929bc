//! Keyspace notifications, as Redis 7.0 sends them: with `notify-keyspace-events` set, a
//! command that changes a key publishes `__keyspace@DB__:KEY` → event and
//! `__keyevent@DB__:EVENT` → key through the ordinary pub/sub, at the point where Redis
//! publishes it. The commands call [`Store::notify`](super::store::Store::notify) with their
//! class and event name; the two events the keyspace itself causes (`expired`, found on access
//! or by the timer, and `new`, a key added) are recorded by the database as they happen and
//! published before the next event, so subscribers see them in Redis's order.

use super::store::{Store, DATABASES};

/// Event classes (Redis's `NOTIFY_*` bits) and the two kinds of channel.
pub const KEYSPACE: u32 = 1 << 0;
pub const KEYEVENT: u32 = 1 << 1;
pub const GENERIC: u32 = 1 << 2;
pub const STRING: u32 = 1 << 3;
pub const LIST: u32 = 1 << 4;
pub const SET: u32 = 1 << 5;
pub const HASH: u32 = 1 << 6;
pub const ZSET: u32 = 1 << 7;
pub const EXPIRED: u32 = 1 << 8;
pub const EVICTED: u32 = 1 << 9;
pub const STREAM: u32 = 1 << 10;
pub const KEY_MISS: u32 = 1 << 11;
pub const MODULE: u32 = 1 << 13;
pub const NEW: u32 = 1 << 14;
/// `A`: every class but key misses and new keys (as in Redis 7.0).
pub const ALL: u32 =
    GENERIC | STRING | LIST | SET | HASH | ZSET | EXPIRED | EVICTED | STREAM | MODULE;

/// The letters of `notify-keyspace-events` and their classes, in Redis's canonical order.
const LETTERS: &[(u8, u32)] = &[
    (b'g', GENERIC),
    (b'$', STRING),
    (b'l', LIST),
    (b's', SET),
    (b'h', HASH),
    (b'z', ZSET),
    (b'x', EXPIRED),
    (b'e', EVICTED),
    (b't', STREAM),
    (b'd', MODULE),
    (b'n', NEW),
];

/// Redis's error for a letter that names no class.
pub const INVALID_CLASS: &str = "Invalid event class character. Use 'Ag$lshzxeKEtmdn'.";

/// The classes a `notify-keyspace-events` value names; `None` for an unknown letter.
pub fn parse(classes: &[u8]) -> Option<u32> {
    classes.iter().try_fold(0, |flags, letter| {
        let class = match letter {
            b'A' => ALL,
            b'K' => KEYSPACE,
            b'E' => KEYEVENT,
            b'm' => KEY_MISS,
            _ => LETTERS.iter().find(|(l, _)| l == letter)?.1,
        };
        Some(flags | class)
    })
}

/// The value as `CONFIG GET` reports it: `A` for all the classes it covers, the others in
/// Redis's order, then `K`, `E` and `m`.
pub fn format(flags: u32) -> String {
    let mut text = String::new();
    if flags & ALL == ALL {
        text.push('A');
    } else {
        for (letter, class) in LETTERS {
            if flags & class != 0 {
                text.push(char::from(*letter));
            }
        }
    }
    for (letter, class) in [('K', KEYSPACE), ('E', KEYEVENT), ('m', KEY_MISS)] {
        if flags & class != 0 {
            text.push(letter);
        }
    }
    text
}

/// Which of the events the database records itself (`new`, `expired`) are wanted: none unless
/// some channel kind is on.
pub fn recorded(flags: u32) -> u32 {
    if flags & (KEYSPACE | KEYEVENT) == 0 {
        0
    } else {
        flags & (NEW | EXPIRED)
    }
}

/// The two channels of an event on `key` in database `db`.
pub fn channels(db: usize, event: &str, key: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut keyspace = format!("__keyspace@{db}__:").into_bytes();
    keyspace.extend_from_slice(key);
    let keyevent = format!("__keyevent@{db}__:{event}").into_bytes();
    (keyspace, keyevent)
}

impl Store {
    /// Takes a new `notify-keyspace-events` value (already parsed).
    pub fn set_notify_flags(&mut self, flags: u32) {
        self.notify_flags = flags;
        for index in 0..DATABASES {
            let db = self.db_at(index);
            db.recording = recorded(flags);
            db.noted.clear();
        }
    }

    /// Publishes `event` of `class` on `key` of database `db`, if that class is on (after what
    /// the databases recorded before it).
    pub fn notify(&mut self, class: u32, event: &str, key: &[u8], db: usize) {
        if self.notify_flags & class == 0 {
            return;
        }
        self.publish_noted();
        self.publish_event(event, key, db);
    }

    /// Publishes the `new` and `expired` events the databases recorded.
    pub fn publish_noted(&mut self) {
        if recorded(self.notify_flags) == 0 {
            return;
        }
        for index in 0..DATABASES {
            if self.db_at(index).noted.is_empty() {
                continue;
            }
            for (event, key) in std::mem::take(&mut self.db_at(index).noted) {
                self.publish_event(event, &key, index);
            }
        }
    }

    fn publish_event(&mut self, event: &str, key: &[u8], db: usize) {
        let (keyspace, keyevent) = channels(db, event, key);
        if self.notify_flags & KEYSPACE != 0 {
            self.pubsub.publish(&keyspace, event.as_bytes());
        }
        if self.notify_flags & KEYEVENT != 0 {
            self.pubsub.publish(&keyevent, key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_read_and_print_as_redis_does() {
        let cases: &[(&str, &str)] = &[
            ("", ""),
            ("KEA", "AKE"),
            ("xK", "xK"),
            ("Kx", "xK"),
            ("AKEmn", "AKEm"),
            ("gA", "A"),
            ("KEg$lshzxetd", "AKE"),
            ("zh$", "$hz"),
            ("nm", "nm"),
        ];
        for (given, shown) in cases {
            let flags = parse(given.as_bytes()).expect("valid letters");
            assert_eq!(format(flags), *shown, "{given}");
        }
        assert_eq!(parse(b"KEQ"), None);
        assert_eq!(parse(b"AKEn").map(|flags| flags & NEW), Some(NEW));
    }
}
