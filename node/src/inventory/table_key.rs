//! The idempotency table's key: an idempotency key with its first bytes held inline.
//!
//! Why: the table holds one key per keyed write for 24 h (10^5 and more under load), and a
//! search compares the wanted key with a few dozen others. As `String`s, each comparison
//! followed a pointer to a cold heap block: `memcmp` alone was 9.6 % of a follower's CPU at
//! 64 clients, and gone from the profile with this key (perf, benches/RESULTS.md). The
//! inline head decides almost every comparison inside the map's own node. The whole key is
//! shared (`Arc<str>`), so copying a map node (the persistent map copies on write after a
//! snapshot shared it) and the by-time index allocate nothing for it.
//!
//! Order: by the head (the first `HEAD_BYTES` bytes, zero-padded), then by the whole key.
//! A total order consistent with equality for any strings; for keys without NUL bytes
//! (every valid id) it is exactly `str` order, so records list in the order they did.

use std::cmp::Ordering;
use std::sync::Arc;

/// Bytes compared inline, as three big-endian words (integer comparisons, no `memcmp`
/// call); a client's generated key (`c-`, 12 hex digits of time in ms, 20 random ones)
/// holds 40 random bits in its head, so keys of the same millisecond differ there too.
const HEAD_BYTES: usize = 24;
const HEAD_WORDS: usize = HEAD_BYTES / 8;

#[derive(Clone)]
pub struct TableKey {
    head: [u64; HEAD_WORDS],
    key: Arc<str>,
}

impl TableKey {
    pub fn new(key: &str) -> Self {
        let mut bytes = [0u8; HEAD_BYTES];
        let n = key.len().min(HEAD_BYTES);
        bytes[..n].copy_from_slice(&key.as_bytes()[..n]);
        let mut head = [0u64; HEAD_WORDS];
        for (word, chunk) in head.iter_mut().zip(bytes.chunks_exact(8)) {
            // Big-endian: comparing the words compares the bytes in order.
            *word = u64::from_be_bytes(chunk.try_into().expect("chunks of 8"));
        }
        TableKey {
            head,
            key: Arc::from(key),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.key
    }
}

impl Ord for TableKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.head
            .cmp(&other.head)
            .then_with(|| self.key.cmp(&other.key))
    }
}

impl PartialOrd for TableKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for TableKey {
    fn eq(&self, other: &Self) -> bool {
        self.head == other.head && self.key == other.key
    }
}

impl Eq for TableKey {}

impl std::fmt::Debug for TableKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keys_shorter_and_longer_than_the_head_order_as_strings() {
        let keys = [
            "",
            "a",
            "ab",
            "abc",
            "c-00000000000000000000000",
            "c-0000000000000000000000",
            "c-00000000000000000000000000000001",
            "c-00000000000000000000000000000000",
            "c-0000000000000000000000z",
            "z",
        ];
        for a in keys {
            for b in keys {
                let (ka, kb) = (TableKey::new(a), TableKey::new(b));
                assert_eq!(ka.cmp(&kb), a.cmp(b), "{a:?} vs {b:?}");
                assert_eq!(ka == kb, a == b);
            }
        }
    }

    proptest! {
        /// Any two NUL-free keys (ids never hold NUL) compare as their strings do,
        /// whether they differ inside the head, past it, or only in length.
        #[test]
        fn order_is_str_order(
            prefix in "[a-z0-9-]{0,30}",
            a in "[a-z0-9._:-]{0,12}",
            b in "[a-z0-9._:-]{0,12}",
        ) {
            let (a, b) = (format!("{prefix}{a}"), format!("{prefix}{b}"));
            prop_assert_eq!(TableKey::new(&a).cmp(&TableKey::new(&b)), a.cmp(&b));
            prop_assert_eq!(TableKey::new(&a) == TableKey::new(&b), a == b);
        }
    }
}
