//! Serialization of openraft messages on the peer transport. JSON through serde: openraft
//! derives serde for its types, so this stays correct across its message shapes; a binary
//! codec can replace it here alone. Decoding never panics: bad bytes are an error.

use serde::{de::DeserializeOwned, Serialize};

pub fn to_bytes<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    serde_json::to_vec(value).map_err(|e| format!("encode: {e}"))
}

pub fn from_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("decode: {e}"))
}
