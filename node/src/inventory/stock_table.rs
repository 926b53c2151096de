//! The stock levels of the inventory: `item → location → level`, with item and location
//! ids interned (one shared `Arc<str>` per id, not two owned `String`s per level).
//!
//! Why: a node holds every level in memory. Keyed by `(String, String)` a level cost about
//! 190 bytes and every lookup built two `String`s; at a million levels that was most of the
//! node's heap (benches/RESULTS.md, "A million stock levels"). Nested maps keyed by interned
//! ids cost a fraction of that and are looked up by `&str` without allocating.
//!
//! A snapshot takes a `copy`: one flat list of `(item, location, level)` with the ids
//! shared, 56 bytes a level, instead of a record per level with two owned `String`s. At a
//! million levels those records held apply for ~200 ms under the state lock and took
//! ~380 MB more for the length of each build (benches/RESULTS.md, eleventh session).
//! Tried and not kept: persistent maps (`imbl`, shared in O(1)) cost 27–256 MB more all
//! the time at a million levels (a map node per item); a clone of the nested maps costs
//! a whole leaf node per item when items have one location each.
//!
//! Invariant: no inner map is empty (a removed last level removes its item), so two tables
//! holding the same levels are equal however they got there (rollback included).

use super::model::StockLevel;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

type Levels = BTreeMap<Arc<str>, BTreeMap<Arc<str>, StockLevel>>;

#[derive(Debug, Clone, Default)]
pub struct StockTable {
    levels: Levels,
    /// Every id used as a key, once. Ids are never deleted (items and locations are not),
    /// so this grows only with the number of ids.
    names: BTreeSet<Arc<str>>,
}

impl PartialEq for StockTable {
    fn eq(&self, other: &Self) -> bool {
        self.levels == other.levels // the interner is a cache, not state
    }
}
impl Eq for StockTable {}

impl StockTable {
    fn intern(&mut self, id: &str) -> Arc<str> {
        if let Some(name) = self.names.get(id) {
            return name.clone();
        }
        let name: Arc<str> = Arc::from(id);
        self.names.insert(name.clone());
        name
    }

    pub fn get(&self, item: &str, location: &str) -> Option<StockLevel> {
        self.levels.get(item)?.get(location).copied()
    }

    /// Sets the level, returning the one it replaced.
    pub fn insert(&mut self, item: &str, location: &str, level: StockLevel) -> Option<StockLevel> {
        let location = self.intern(location);
        let by_location = match self.levels.get_mut(item) {
            Some(m) => m,
            None => {
                let item = self.intern(item);
                self.levels.entry(item).or_default()
            }
        };
        by_location.insert(location, level)
    }

    /// Removes the level, returning it.
    pub fn remove(&mut self, item: &str, location: &str) -> Option<StockLevel> {
        let by_location = self.levels.get_mut(item)?;
        let old = by_location.remove(location);
        if by_location.is_empty() {
            self.levels.remove(item);
        }
        debug_assert!(self.levels.values().all(|m| !m.is_empty()));
        old
    }

    /// Every level, in (item, location) order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, StockLevel)> + '_ {
        self.levels.iter().flat_map(|(item, by_location)| {
            by_location
                .iter()
                .map(move |(location, level)| (&**item, &**location, *level))
        })
    }

    /// The levels of one item, in location order.
    pub fn of_item(&self, item: &str) -> impl Iterator<Item = (&str, StockLevel)> + '_ {
        self.levels
            .get(item)
            .into_iter()
            .flat_map(|m| m.iter().map(|(l, s)| (&**l, *s)))
    }

    pub fn len(&self) -> usize {
        self.levels.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    /// The levels as they are now, in (item, location) order, the ids shared (a
    /// reference count each).
    pub fn copy(&self) -> StockCopy {
        let mut levels = Vec::with_capacity(self.len());
        for (item, by_location) in &self.levels {
            for (location, level) in by_location {
                levels.push((item.clone(), location.clone(), *level));
            }
        }
        StockCopy { levels }
    }
}

/// A read-only copy of the levels for a snapshot, taken by [`StockTable::copy`].
#[derive(Debug, Clone)]
pub struct StockCopy {
    levels: Vec<(Arc<str>, Arc<str>, StockLevel)>,
}

impl StockCopy {
    pub fn len(&self) -> usize {
        self.levels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    /// Every level, in (item, location) order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, StockLevel)> + '_ {
        self.levels
            .iter()
            .map(|(item, location, level)| (&**item, &**location, *level))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(on_hand: i64) -> StockLevel {
        StockLevel {
            on_hand,
            reserved: 0,
            revision: 1,
        }
    }

    #[test]
    fn behaves_as_a_map_keyed_by_item_and_location() {
        let mut t = StockTable::default();
        assert!(t.is_empty());
        assert_eq!(t.insert("b", "w2", level(1)), None);
        assert_eq!(t.insert("a", "w1", level(2)), None);
        assert_eq!(t.insert("b", "w1", level(3)), None);
        assert_eq!(t.insert("b", "w1", level(4)), Some(level(3)));
        assert_eq!(t.get("b", "w1"), Some(level(4)));
        assert_eq!(t.get("b", "w9"), None);
        assert_eq!(t.get("z", "w1"), None);
        assert_eq!(t.len(), 3);
        let all: Vec<_> = t.iter().map(|(i, l, s)| (i, l, s.on_hand)).collect();
        assert_eq!(all, vec![("a", "w1", 2), ("b", "w1", 4), ("b", "w2", 1)]);
        let of_b: Vec<_> = t.of_item("b").map(|(l, s)| (l, s.on_hand)).collect();
        assert_eq!(of_b, vec![("w1", 4), ("w2", 1)]);
        assert_eq!(t.of_item("nope").count(), 0);
    }

    #[test]
    fn removing_the_last_level_of_an_item_leaves_a_table_equal_to_one_never_touched() {
        let mut t = StockTable::default();
        t.insert("a", "w1", level(1));
        let before = t.clone();
        t.insert("b", "w1", level(2));
        assert_ne!(t, before);
        assert_eq!(t.remove("b", "w1"), Some(level(2)));
        assert_eq!(t, before, "no empty inner map left behind");
        assert_eq!(t.remove("b", "w1"), None);
        assert_eq!(t.remove("a", "w1"), Some(level(1)));
        assert_eq!(t, StockTable::default());
    }

    #[test]
    fn ids_are_stored_once_however_many_levels_use_them() {
        let mut t = StockTable::default();
        for i in 0..100 {
            t.insert(&format!("sku-{i}"), "warehouse", level(i));
        }
        let locations: Vec<*const u8> = t
            .levels
            .values()
            .flat_map(|m| m.keys().map(|k| k.as_ptr()))
            .collect();
        assert!(
            locations.windows(2).all(|w| w[0] == w[1]),
            "one shared location id"
        );
        assert_eq!(t.names.len(), 101);
    }

    /// A copy keeps the levels as they were when taken, whatever the table does after.
    #[test]
    fn a_copy_keeps_the_levels_of_its_moment() {
        let mut t = StockTable::default();
        for i in 0..300 {
            t.insert(&format!("sku-{i:03}"), "w1", level(i));
        }
        let before: Vec<_> = t
            .iter()
            .map(|(i, l, s)| (i.to_owned(), l.to_owned(), s))
            .collect();
        let copy = t.copy();
        t.insert("sku-000", "w1", level(-1));
        t.insert("sku-150", "w2", level(7));
        t.remove("sku-299", "w1");
        let copied: Vec<_> = copy
            .iter()
            .map(|(i, l, s)| (i.to_owned(), l.to_owned(), s))
            .collect();
        assert_eq!(copied, before);
        assert_eq!(t.get("sku-000", "w1"), Some(level(-1)));
        assert_eq!(t.len(), 300);
    }
}
