//! Request extractors that refuse bad input with a problem document instead of axum's
//! plain-text rejections: JSON bodies (content type, size, shape), path and query
//! parameters, and the `Idempotency-Key` and `If-Match` headers.

use crate::problem::Problem;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

/// Longest idempotency key accepted (the store's id limit).
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 128;

/// A JSON request body. Requires `Content-Type: application/json` (or `+json`); the size
/// limit is the router's `DefaultBodyLimit`.
pub struct Body<T>(pub T);

/// A JSON body that may be absent (no bytes at all): `T::default()` then.
pub struct OptionalBody<T>(pub T);

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| {
            let m = m.trim().to_ascii_lowercase();
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        })
        .unwrap_or(false)
}

/// The body's bytes (the router's size limit applies) and whether it was declared JSON.
async fn bytes<S: Send + Sync>(req: Request, state: &S) -> Result<(bool, Bytes), Problem> {
    let json = is_json(req.headers());
    let body = Bytes::from_request(req, state).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Request body too large",
                r.body_text(),
            )
        } else {
            Problem::invalid_body(r.body_text())
        }
    })?;
    Ok((json, body))
}

fn parse<T: DeserializeOwned>(json: bool, body: &[u8]) -> Result<T, Problem> {
    if !json {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "the body must be JSON: send Content-Type: application/json",
        ));
    }
    serde_json::from_slice(body).map_err(|e| Problem::invalid_body(e.to_string()))
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let (json, body) = bytes(req, state).await?;
        parse(json, &body).map(Body)
    }
}

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let (json, body) = bytes(req, state).await?;
        if body.is_empty() {
            return Ok(OptionalBody(T::default()));
        }
        parse(json, &body).map(OptionalBody)
    }
}

/// Path parameters, refused as `invalid-parameter`.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|r| Problem::invalid_parameter(r.body_text()))
    }
}

/// Query parameters, refused as `invalid-parameter`.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|r| Problem::invalid_parameter(r.body_text()))
    }
}

/// The `Idempotency-Key` header: a retry with the same key returns the first result. When
/// absent the API makes one, so the store's own retries stay safe, but then only the API's
/// retries are covered, not the caller's.
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        let Some(v) = parts.headers.get("idempotency-key") else {
            return Ok(IdempotencyKey(None));
        };
        let key = v
            .to_str()
            .map_err(|_| Problem::invalid_header("Idempotency-Key must be visible ASCII"))?;
        let key = key.trim().trim_matches('"');
        if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
            return Err(Problem::invalid_header(format!(
                "Idempotency-Key must be 1..={MAX_IDEMPOTENCY_KEY_BYTES} bytes"
            )));
        }
        if !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/@".contains(&b))
        {
            return Err(Problem::invalid_header(
                "Idempotency-Key may hold ASCII letters, digits and - _ . : / @ only",
            ));
        }
        Ok(IdempotencyKey(Some(key.to_string())))
    }
}

/// `If-Match` with one strong entity tag `"<revision>"`, or `*` (any: no condition).
pub enum IfMatch {
    Absent,
    Revision(u64),
    /// A weak tag: never matches under the strong comparison If-Match requires.
    NeverMatches,
}

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        let Some(v) = parts.headers.get(header::IF_MATCH) else {
            return Ok(IfMatch::Absent);
        };
        let v = v
            .to_str()
            .map_err(|_| Problem::invalid_header("If-Match must be visible ASCII"))?
            .trim();
        parse_if_match(v)
    }
}

pub fn parse_if_match(v: &str) -> Result<IfMatch, Problem> {
    if v == "*" {
        return Ok(IfMatch::Absent);
    }
    if v.contains(',') {
        return Err(Problem::invalid_header(
            "If-Match: give one entity tag (a revision cannot equal two values)",
        ));
    }
    if v.starts_with("W/") {
        return Ok(IfMatch::NeverMatches);
    }
    let inner = v
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .ok_or_else(|| {
            Problem::invalid_header("If-Match: expected a quoted revision like \"42\"")
        })?;
    inner
        .parse::<u64>()
        .map(IfMatch::Revision)
        .map_err(|_| Problem::invalid_header("If-Match: the entity tag is not a revision"))
}

/// The ETag of a revision.
pub fn etag(revision: u64) -> String {
    format!("\"{revision}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_forms() {
        assert!(matches!(
            parse_if_match("\"42\""),
            Ok(IfMatch::Revision(42))
        ));
        assert!(matches!(parse_if_match("*"), Ok(IfMatch::Absent)));
        assert!(matches!(
            parse_if_match("W/\"42\""),
            Ok(IfMatch::NeverMatches)
        ));
        for bad in ["42", "\"x\"", "\"1\", \"2\"", "\"-1\"", "\"\""] {
            assert!(parse_if_match(bad).is_err(), "{bad}");
        }
        assert_eq!(etag(7), "\"7\"");
    }

    #[test]
    fn json_content_types() {
        let mut h = HeaderMap::new();
        assert!(!is_json(&h));
        for (ct, ok) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("application/merge-patch+json", true),
            ("text/plain", false),
            ("application/jsonx", false),
        ] {
            h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
            assert_eq!(is_json(&h), ok, "{ct}");
        }
    }
}
