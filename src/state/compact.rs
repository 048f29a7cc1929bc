//! `CompactBytes`: the byte string the keyspace and sorted sets store keys, string values and
//! members in, 24 bytes with up to 22 of them inline (no allocation).
//!
//! Most keys and values are short (`user:1042`, `42`, a session id), and a `Bytes` costs a
//! 32-byte handle plus a heap allocation (glibc rounds even a 10-byte one to a 32-byte chunk),
//! which made a small key cost the store twice what it costs Redis (issue 14). Written here
//! rather than taken from a crate: `compact_str` and `smol_str` hold UTF-8 `str` only, and
//! `compact_bytes` (23 inline) is an `unsafe` union and a new dependency; a two-variant enum
//! reaches 24 bytes in safe code (a tag byte, then a length byte and 22 bytes inline, or a
//! `Box<[u8]>` at offset 8), and the spare values of that tag let `db::Value` wrap it without
//! growing.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

use bytes::Bytes;

/// The most bytes kept inline.
const INLINE: usize = 22;

#[derive(Clone)]
pub enum CompactBytes {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl CompactBytes {
    pub fn new(bytes: &[u8]) -> CompactBytes {
        if bytes.len() <= INLINE {
            let mut inline = [0; INLINE];
            inline[..bytes.len()].copy_from_slice(bytes);
            CompactBytes::Inline {
                len: bytes.len() as u8,
                bytes: inline,
            }
        } else {
            CompactBytes::Heap(bytes.into())
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            CompactBytes::Inline { len, bytes } => &bytes[..*len as usize],
            CompactBytes::Heap(bytes) => bytes,
        }
    }

    /// A `Bytes` copy, for replies and callers that keep the value past the command.
    pub fn to_bytes(&self) -> Bytes {
        Bytes::copy_from_slice(self.as_bytes())
    }
}

impl Default for CompactBytes {
    fn default() -> CompactBytes {
        CompactBytes::new(b"")
    }
}

impl std::ops::Deref for CompactBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// Looked up by `&[u8]` in maps: hashes and compares exactly as the slice does.
impl Borrow<[u8]> for CompactBytes {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Hash for CompactBytes {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state)
    }
}

impl PartialEq for CompactBytes {
    fn eq(&self, other: &CompactBytes) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for CompactBytes {}

impl PartialOrd for CompactBytes {
    fn partial_cmp(&self, other: &CompactBytes) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for CompactBytes {
    fn cmp(&self, other: &CompactBytes) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl std::fmt::Debug for CompactBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", Bytes::copy_from_slice(self.as_bytes()))
    }
}

/// Takes the vector's allocation when it is too long to keep inline (no copy).
impl From<Vec<u8>> for CompactBytes {
    fn from(bytes: Vec<u8>) -> CompactBytes {
        if bytes.len() <= INLINE {
            CompactBytes::new(&bytes)
        } else {
            CompactBytes::Heap(bytes.into_boxed_slice())
        }
    }
}

impl From<String> for CompactBytes {
    fn from(text: String) -> CompactBytes {
        CompactBytes::from(text.into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_24_bytes_and_a_value_around_it_is_too() {
        assert_eq!(std::mem::size_of::<CompactBytes>(), 24);
        assert_eq!(std::mem::size_of::<crate::state::db::Value>(), 24);
    }

    #[test]
    fn short_strings_are_inline_and_long_ones_are_not_and_both_read_back() {
        for len in [0, 1, INLINE, INLINE + 1, 100] {
            let bytes: Vec<u8> = (0..len as u8).collect();
            for stored in [CompactBytes::new(&bytes), CompactBytes::from(bytes.clone())] {
                assert_eq!(stored.as_bytes(), &bytes[..]);
                assert_eq!(
                    matches!(stored, CompactBytes::Inline { .. }),
                    len <= INLINE,
                    "length {len}"
                );
            }
        }
    }

    #[test]
    fn hashes_and_orders_as_the_slice_so_maps_find_it_by_slice() {
        let mut map = indexmap::IndexMap::new();
        map.insert(CompactBytes::new(b"key:1"), 1);
        map.insert(CompactBytes::new(&[b'x'; 40]), 2);
        assert_eq!(map.get(&b"key:1"[..]), Some(&1));
        assert_eq!(map.get(&[b'x'; 40][..]), Some(&2));
        assert!(CompactBytes::new(b"ab") < CompactBytes::new(&[b'b'; 30]));
    }
}
