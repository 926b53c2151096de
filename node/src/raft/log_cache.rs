//! The newest log entries, decoded, in memory. Every appended entry is read back soon after:
//! by the replication stream of each follower and by the state machine when it commits. The
//! segment files hold them as JSON, and decoding them again was 8 % of the leader's CPU
//! (RESULTS.md); this cache answers those reads instead.
//!
//! Invariant: the cached entries have consecutive indexes, and each one is the entry the log
//! holds at its index. `LogStore` keeps it so: appends extend the cache only when they are
//! contiguous with it (anything else restarts it), a truncate drops the cached entries at
//! and above its index, a purge those at and below its index, and a failed append empties
//! it. A read the cache cannot answer whole goes to the files.

use super::TypeConfig;
use openraft::Entry;
use std::collections::VecDeque;

/// Most entries kept: a few seconds of entries at peak, enough for followers a little
/// behind and for the apply that trails the append.
pub const MAX_ENTRIES: usize = 1024;
/// Most bytes kept, counted as the entries' encoded (binary) size; decoded, an entry takes
/// a few times that, so this bounds the cache to tens of MiB even when entries are large
/// batches (at 64 clients an entry encodes to ~3 KiB: the entry bound is the one that acts).
pub const MAX_BYTES: usize = 8 * 1024 * 1024;

#[derive(Default)]
pub struct LogCache {
    /// Entries with consecutive indexes from `entries[0].log_id.index`.
    entries: VecDeque<(Entry<TypeConfig>, usize)>,
    bytes: usize,
}

impl LogCache {
    fn first(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    /// The index after the last cached entry.
    fn end(&self) -> Option<u64> {
        self.entries.back().map(|(e, _)| e.log_id.index + 1)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Adds entries just written to the log, each with its encoded size. Entries that do not
    /// follow the cached ones replace them: after a restart, a purge or a truncate the cache
    /// starts again from what is appended.
    pub fn extend(&mut self, appended: impl IntoIterator<Item = (Entry<TypeConfig>, usize)>) {
        for (entry, size) in appended {
            if self.end() != Some(entry.log_id.index) {
                self.clear();
            }
            self.bytes += size;
            self.entries.push_back((entry, size));
            while self.entries.len() > MAX_ENTRIES
                || (self.bytes > MAX_BYTES && self.entries.len() > 1)
            {
                let (_, dropped) = self.entries.pop_front().expect("more than one entry");
                self.bytes -= dropped;
            }
        }
        debug_assert!(self.entries.len() <= MAX_ENTRIES);
        debug_assert!(self
            .entries
            .iter()
            .zip(self.entries.iter().skip(1))
            .all(|((a, _), (b, _))| a.log_id.index + 1 == b.log_id.index));
    }

    /// Forgets the entries at and above `index` (the log is truncated there).
    pub fn truncate_from(&mut self, index: u64) {
        while self.end().is_some_and(|end| end > index) {
            let (_, size) = self.entries.pop_back().expect("not empty");
            self.bytes -= size;
        }
    }

    /// Forgets the entries at and below `index` (the log is purged to there).
    pub fn purge_to(&mut self, index: u64) {
        while self.first().is_some_and(|first| first <= index) {
            let (_, size) = self.entries.pop_front().expect("not empty");
            self.bytes -= size;
        }
    }

    /// The cached entries of `[start, end)`, at most `limit`, when the cache holds `start`;
    /// `None` when it does not (the caller reads the files). The answer may stop short of
    /// `end` where the cache ends: the caller reads the rest from the files.
    pub fn read(&self, start: u64, end: u64, limit: usize) -> Option<Vec<Entry<TypeConfig>>> {
        let first = self.first()?;
        let cached_end = self.end()?;
        if start < first || start >= cached_end {
            return None;
        }
        let from = (start - first) as usize;
        let to = (end.min(cached_end) - first) as usize;
        let to = to.min(from.saturating_add(limit));
        Some(
            self.entries
                .range(from..to)
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry at `index` counted as 100 bytes.
    fn entry(index: u64) -> (Entry<TypeConfig>, usize) {
        (crate::raft::log_store::tests::entry(1, index), 100)
    }

    fn indexes(got: Option<Vec<Entry<TypeConfig>>>) -> Option<Vec<u64>> {
        got.map(|v| v.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn reads_what_it_holds_and_declines_what_it_does_not() {
        let mut cache = LogCache::default();
        assert_eq!(indexes(cache.read(1, 5, 10)), None);
        cache.extend((5..=9).map(entry));
        assert_eq!(indexes(cache.read(5, 10, 100)), Some(vec![5, 6, 7, 8, 9]));
        assert_eq!(indexes(cache.read(7, 9, 100)), Some(vec![7, 8]));
        assert_eq!(indexes(cache.read(6, 100, 2)), Some(vec![6, 7]));
        assert_eq!(
            indexes(cache.read(8, 100, 100)),
            Some(vec![8, 9]),
            "stops at its end"
        );
        assert_eq!(indexes(cache.read(4, 8, 100)), None, "4 is not held");
        assert_eq!(indexes(cache.read(10, 12, 100)), None, "past its end");
        assert_eq!(indexes(cache.read(6, 6, 100)), Some(vec![]), "empty range");
    }

    #[test]
    fn a_gap_restarts_it_and_truncate_and_purge_drop_their_side() {
        let mut cache = LogCache::default();
        cache.extend((1..=10).map(entry));
        cache.extend((20..=21).map(entry));
        assert_eq!(cache.len(), 2, "not contiguous: started again");
        assert_eq!(indexes(cache.read(20, 30, 10)), Some(vec![20, 21]));

        cache.extend((22..=30).map(entry));
        cache.truncate_from(25);
        assert_eq!(indexes(cache.read(20, 40, 100)), Some((20..25).collect()));
        cache.extend((25..=26).map(entry));
        assert_eq!(indexes(cache.read(24, 40, 100)), Some(vec![24, 25, 26]));
        cache.purge_to(22);
        assert_eq!(indexes(cache.read(22, 40, 100)), None);
        assert_eq!(indexes(cache.read(23, 40, 100)), Some(vec![23, 24, 25, 26]));
        assert_eq!(cache.bytes, 4 * 100);
        cache.truncate_from(0);
        assert!(cache.is_empty());
        assert_eq!(cache.bytes, 0);
    }

    #[test]
    fn it_keeps_within_its_bounds() {
        let mut cache = LogCache::default();
        cache.extend((1..=(MAX_ENTRIES as u64 + 10)).map(entry));
        assert_eq!(cache.len(), MAX_ENTRIES);
        assert_eq!(cache.first(), Some(11), "the oldest went first");

        let mut cache = LogCache::default();
        let big = MAX_BYTES / 3 + 1;
        cache.extend((1..=4).map(|i| (entry(i).0, big)));
        assert_eq!(cache.len(), 2);
        assert!(cache.bytes <= MAX_BYTES);
        // One entry over the byte bound alone is still kept: it is the newest.
        cache.extend([(entry(5).0, MAX_BYTES + 1)]);
        assert_eq!(cache.len(), 1);
    }
}
