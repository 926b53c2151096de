//! The watch checker: a watcher must see every movement of the ledger once, in ledger
//! order, without gaps, across its reconnects. Given what a watcher received and the
//! final ledger (positions `(revision, seq)`), it finds the first place they part.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum WatchViolation {
    /// The watcher skipped ledger entries: it got `got` where `expected` was next.
    Gap {
        index: usize,
        expected: (u64, u32),
        got: (u64, u32),
    },
    /// The same entry twice, or an older one after a newer one.
    RepeatOrReorder {
        index: usize,
        previous: (u64, u32),
        got: (u64, u32),
    },
    /// An entry the ledger does not have at all.
    Unknown { index: usize, got: (u64, u32) },
    /// The watcher stopped short of the ledger's end.
    Incomplete { received: usize, ledger: usize },
}

/// Checks one watcher's stream against the ledger. `None` when it is exactly the ledger.
pub fn check(received: &[(u64, u32)], ledger: &[(u64, u32)]) -> Option<WatchViolation> {
    for (index, &got) in received.iter().enumerate() {
        if index > 0 && got <= received[index - 1] {
            return Some(WatchViolation::RepeatOrReorder {
                index,
                previous: received[index - 1],
                got,
            });
        }
        match ledger.get(index) {
            Some(&expected) if expected == got => {}
            Some(&expected) if ledger.binary_search(&got).is_ok() => {
                return Some(WatchViolation::Gap {
                    index,
                    expected,
                    got,
                })
            }
            _ => return Some(WatchViolation::Unknown { index, got }),
        }
    }
    (received.len() < ledger.len()).then_some(WatchViolation::Incomplete {
        received: received.len(),
        ledger: ledger.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEDGER: [(u64, u32); 5] = [(3, 0), (3, 1), (4, 0), (7, 0), (9, 0)];

    #[test]
    fn the_exact_ledger_passes() {
        assert_eq!(check(&LEDGER, &LEDGER), None);
    }

    #[test]
    fn every_planted_fault_is_named() {
        let gap = [(3, 0), (4, 0), (7, 0), (9, 0)];
        assert!(matches!(
            check(&gap, &LEDGER),
            Some(WatchViolation::Gap {
                index: 1,
                expected: (3, 1),
                got: (4, 0)
            })
        ));
        let repeat = [(3, 0), (3, 1), (3, 1), (4, 0), (7, 0), (9, 0)];
        assert!(matches!(
            check(&repeat, &LEDGER),
            Some(WatchViolation::RepeatOrReorder { index: 2, .. })
        ));
        let reorder = [(3, 0), (4, 0), (3, 1)];
        assert!(check(&reorder, &LEDGER).is_some());
        let unknown = [(3, 0), (3, 1), (5, 0)];
        assert!(matches!(
            check(&unknown, &LEDGER),
            Some(WatchViolation::Unknown { index: 2, .. })
        ));
        assert_eq!(
            check(&LEDGER[..3], &LEDGER),
            Some(WatchViolation::Incomplete {
                received: 3,
                ledger: 5
            })
        );
    }
}
