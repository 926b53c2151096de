//! Checksummed value frames: `[crc32 of body: u32 LE][body]`, body being JSON. Every value
//! the node writes goes through here, so a flipped bit on disk becomes a precise error
//! naming the key instead of a silently wrong balance.

use super::StoreError;
use serde::{de::DeserializeOwned, Serialize};

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    let body = serde_json::to_vec(value).map_err(|e| StoreError::Encode(e.to_string()))?;
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

pub fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        key: super::keys::display(key),
        reason,
    };
    if bytes.len() < 4 {
        return Err(corrupt(format!(
            "{} bytes is shorter than the checksum",
            bytes.len()
        )));
    }
    let (sum, body) = bytes.split_at(4);
    let expected = u32::from_le_bytes([sum[0], sum[1], sum[2], sum[3]]);
    let actual = crc32fast::hash(body);
    if expected != actual {
        return Err(corrupt(format!(
            "checksum mismatch: stored {expected:08x}, computed {actual:08x}"
        )));
    }
    serde_json::from_slice(body).map_err(|e| corrupt(format!("undecodable: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_single_bit_flip_is_caught() {
        let bytes = encode(&("stock", 42i64)).unwrap();
        assert_eq!(
            decode::<(String, i64)>(b"k", &bytes).unwrap(),
            ("stock".to_string(), 42)
        );
        for i in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(
                decode::<(String, i64)>(b"k", &bad).is_err(),
                "flip of bit {i} went unnoticed"
            );
        }
        assert!(matches!(
            decode::<u8>(b"k", &[1, 2]),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
