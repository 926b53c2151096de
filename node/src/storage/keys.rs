//! The key layout of the one keyspace. Fixed-width big-endian integers keep log entries and
//! movements in numeric order under the engine's byte order.
//!
//! | prefix | key                          | value                                  |
//! |--------|------------------------------|----------------------------------------|
//! | `l`    | `l` + index (u64 BE)         | a Raft log entry                        |
//! | `m`    | `m/vote`, `m/committed`, `m/purged` | Raft metadata                   |
//! | `a`    | `a/checkpoint`               | log id of the snapshot file holding the state |
//! | `a`    | `a/applied`                  | (earlier releases) applied id and membership |
//! | `s`    | `s` + record key             | (earlier releases) an inventory record  |
//! | `a`    | `a/installing`, `a/ledger-in-files` | an install under way; the ledger moved out |
//! | `v`    | `v` + revision (u64 BE) + seq (u32 BE) | (earlier releases) a ledger chunk |

use crate::inventory::Key;

pub const LOG_START: &[u8] = b"l";
pub const LOG_END: &[u8] = b"m";
pub const VOTE: &[u8] = b"m/vote";
pub const COMMITTED: &[u8] = b"m/committed";
pub const PURGED: &[u8] = b"m/purged";
pub const APPLIED: &[u8] = b"a/applied";
/// The log id of the snapshot file that holds the state (the log after it holds the rest).
pub const CHECKPOINT: &[u8] = b"a/checkpoint";
pub const STATE_START: &[u8] = b"s";
pub const STATE_END: &[u8] = b"t";
pub const MOVEMENT_START: &[u8] = b"v";
pub const MOVEMENT_END: &[u8] = b"w";

pub fn log(index: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(b'l');
    k.extend_from_slice(&index.to_be_bytes());
    k
}

pub fn log_index(key: &[u8]) -> Option<u64> {
    let rest: [u8; 8] = key.strip_prefix(b"l")?.try_into().ok()?;
    Some(u64::from_be_bytes(rest))
}

pub fn movement(revision: u64, seq: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(13);
    k.push(b'v');
    k.extend_from_slice(&revision.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Ids never contain NUL (validated at the edge), so it separates the parts of a key.
pub fn state(key: &Key) -> Vec<u8> {
    let (tag, parts): (&[u8], Vec<&str>) = match key {
        Key::Item(id) => (b"si", vec![id]),
        Key::Location(id) => (b"sl", vec![id]),
        Key::Stock(item, loc) => (b"ss", vec![item, loc]),
        Key::Reservation(id) => (b"sr", vec![id]),
        Key::Idempotency(k) => (b"sk", vec![k]),
        Key::Clock => (b"sc", vec![]),
    };
    let mut out = tag.to_vec();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(0);
        }
        out.extend_from_slice(p.as_bytes());
    }
    out
}

/// A printable form of a key for error messages.
pub fn display(key: &[u8]) -> String {
    key.iter()
        .map(|b| {
            if b.is_ascii_graphic() {
                (*b as char).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect()
}
