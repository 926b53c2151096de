//! The stock levels of the inventory: `item → location → level`, with item and location
//! ids interned (one shared `Arc<str>` per id, not two owned `String`s per level).
//!
//! Why: a node holds every level in memory. Keyed by `(String, String)` a level cost about
//! 190 bytes and every lookup built two `String`s; at a million levels that was most of the
//! node's heap (benches/RESULTS.md, "A million stock levels"). Nested maps keyed by interned
//! ids cost a fraction of that and are looked up by `&str` without allocating.
//!
//! A snapshot takes a `copy`: flat arrays of balances, 28 bytes a level, with each item
//! and location id shared once, instead of a record per level with two owned `String`s.
//! At a million levels those records held apply for ~200 ms under the state lock and took
//! ~380 MB more for the length of each build (benches/RESULTS.md, eleventh session); a
//! shared pair of ids per level (56 bytes) was still most of a build's peak (fourteenth).
//! Tried and not kept: persistent maps (`imbl`, shared in O(1)) cost 27–256 MB more all
//! the time at a million levels (a map node per item); a clone of the nested maps costs
//! a whole leaf node per item when items have one location each.
//!
//! Invariant: no inner map is empty (a removed last level removes its item), so two tables
//! holding the same levels are equal however they got there (rollback included).

use super::model::StockLevel;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
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

    /// The levels as they are now, in (item, location) order: each item id shared once,
    /// each location id once per distinct location, and per level only its balance and a
    /// location number (28 bytes a level, where a shared pair of ids beside each level
    /// took 56: at a million levels the build's copy was most of its peak, and the
    /// reference counts took most of the time the state lock was held).
    pub fn copy(&self) -> StockCopy {
        let count = self.len();
        // A limit, not an expectation: the copy numbers levels and locations in u32.
        assert!(
            count < u32::MAX as usize,
            "{count} stock levels do not fit a snapshot copy"
        );
        let mut copy = StockCopy {
            items: Vec::with_capacity(self.levels.len()),
            locations: Vec::new(),
            level_locations: Vec::with_capacity(count),
            levels: Vec::with_capacity(count),
        };
        // Interned ids make one pointer per location; a location that is not interned
        // only costs a second entry of the same name, never a wrong one.
        let mut numbers: HashMap<*const u8, u32, BuildHasherDefault<PointerHasher>> =
            HashMap::default();
        for (item, by_location) in &self.levels {
            for (location, level) in by_location {
                let number = *numbers.entry(location.as_ptr()).or_insert_with(|| {
                    copy.locations.push(location.clone());
                    (copy.locations.len() - 1) as u32
                });
                copy.level_locations.push(number);
                copy.levels.push(*level);
            }
            copy.items.push((item.clone(), copy.levels.len() as u32));
        }
        debug_assert_eq!(copy.levels.len(), count);
        copy
    }
}

/// Hashes a pointer by one multiplication (Fibonacci hashing): the copy looks a location
/// up once per level, and SipHash's flood resistance buys nothing for our own pointers.
#[derive(Default)]
struct PointerHasher(u64);

impl Hasher for PointerHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A read-only copy of the levels for a snapshot, taken by [`StockTable::copy`].
#[derive(Debug, Clone)]
pub struct StockCopy {
    /// Each item with the end (exclusive) of its run in `levels`, in item order.
    items: Vec<(Arc<str>, u32)>,
    /// The distinct locations, numbered by their place here.
    locations: Vec<Arc<str>>,
    /// Per level, its location's number; beside `levels`, index for index.
    level_locations: Vec<u32>,
    levels: Vec<StockLevel>,
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
        let mut start = 0;
        self.items.iter().flat_map(move |(item, end)| {
            let run = start..*end as usize;
            start = *end as usize;
            run.map(move |i| {
                let location = &self.locations[self.level_locations[i] as usize];
                (&**item, &**location, self.levels[i])
            })
        })
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

    proptest::proptest! {
        /// A copy walks exactly the levels the table does, in the same order, whatever
        /// mix of items, locations and removals made them (items with no location in
        /// common, locations first met late, emptied items).
        #[test]
        fn a_copy_iterates_as_the_table_does(
            ops in proptest::collection::vec((0u8..40, 0u8..12, -3i64..50, proptest::bool::ANY), 0..300)
        ) {
            let mut t = StockTable::default();
            for (item, location, on_hand, remove) in ops {
                let (item, location) = (format!("i{item}"), format!("l{location}"));
                if remove {
                    t.remove(&item, &location);
                } else {
                    t.insert(&item, &location, level(on_hand));
                }
            }
            let copy = t.copy();
            proptest::prop_assert_eq!(copy.len(), t.len());
            let copied: Vec<_> = copy.iter().collect();
            let table: Vec<_> = t.iter().collect();
            proptest::prop_assert_eq!(copied, table);
        }
    }
}
