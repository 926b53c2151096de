//! The HTTP resources, one file each, and the helpers they share: turning a store write
//! into a response (idempotency headers, ETag) and a store read header into headers.

pub mod batches;
pub mod events;
pub mod items;
pub mod locations;
pub mod movements;
pub mod ops;
pub mod reservations;
pub mod stock;

use crate::extract::{etag, IdempotencyKey, IfMatch};
use crate::model::WriteResult;
use crate::problem::Problem;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use laundry_client::pb;

pub const APPLIED_INDEX_HEADER: &str = "x-laundry-applied-index";
pub const NODE_ID_HEADER: &str = "x-laundry-node-id";
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// Puts the caller's idempotency key (or a fresh one) into the request's options and
/// returns it, so the response can name the key a retry must reuse.
pub fn with_key(options: &mut Option<pb::WriteOptions>, key: IdempotencyKey) -> String {
    let key = key.0.unwrap_or_else(laundry_client::new_idempotency_key);
    options.get_or_insert_with(Default::default).idempotency_key = key.clone();
    key
}

/// Adds a stock-revision condition from `If-Match` (on `item` at `location`).
pub fn if_match_stock(
    options: &mut Option<pb::WriteOptions>,
    if_match: IfMatch,
    item: &str,
    location: &str,
) -> Result<(), Problem> {
    let revision = match if_match {
        IfMatch::Absent => return Ok(()),
        IfMatch::Revision(r) => r,
        IfMatch::NeverMatches => return Err(weak_tag()),
    };
    options
        .get_or_insert_with(Default::default)
        .conditions
        .push(pb::Condition {
            item: item.to_string(),
            location: location.to_string(),
            expect: Some(pb::condition::Expect::StockRevision(revision)),
        });
    Ok(())
}

pub fn weak_tag() -> Problem {
    Problem::new(
        StatusCode::PRECONDITION_FAILED,
        "precondition-failed",
        "Precondition failed",
        "If-Match with a weak entity tag never matches (strong comparison)",
    )
}

/// The response to a write: the result, the idempotency key used, whether it was a replay,
/// and extra headers (ETag, Location).
pub fn written(
    status: StatusCode,
    key: &str,
    w: pb::WriteResponse,
    extra: &[(header::HeaderName, String)],
) -> Response {
    let replayed = w.replayed;
    let mut resp = (status, Json(WriteResult::from(w))).into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(key) {
        h.insert("idempotency-key", v);
    }
    if replayed {
        h.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    for (name, value) in extra {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name.clone(), v);
        }
    }
    resp
}

/// Which node answered a read and at what applied index.
pub fn read_headers(header: Option<&pb::ReadHeader>) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Some(rh) = header {
        h.insert(APPLIED_INDEX_HEADER, HeaderValue::from(rh.applied_index));
        h.insert(NODE_ID_HEADER, HeaderValue::from(rh.node_id));
    }
    h
}

pub fn etag_header(revision: u64) -> (header::HeaderName, String) {
    (header::ETAG, etag(revision))
}

/// A read's headers plus the ETag of the revision it returned.
pub fn read_headers_with_etag(header: Option<&pb::ReadHeader>, revision: u64) -> HeaderMap {
    let mut h = read_headers(header);
    // `"<digits>"` is always a valid header value.
    if let Ok(v) = HeaderValue::from_str(&etag(revision)) {
        h.insert(header::ETAG, v);
    }
    h
}
