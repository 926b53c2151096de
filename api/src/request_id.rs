//! Request ids: every request gets one (the caller's `x-request-id` when it is a sane token,
//! otherwise a fresh one), echoed in the response header, carried by the tracing span of
//! the request, and put into problem bodies through a task-local, so a user's error report
//! leads straight to the log lines.

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use std::time::Instant;
use tracing::Instrument;

pub const HEADER: &str = "x-request-id";
/// Longest caller-supplied id kept; longer ones are replaced, not truncated.
const MAX_ID_BYTES: usize = 128;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being handled, when called inside one.
pub fn current() -> Option<String> {
    REQUEST_ID.try_with(|id| id.clone()).ok()
}

fn acceptable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

fn fresh() -> String {
    use rand::Rng;
    let n: u64 = rand::thread_rng().gen();
    format!("req-{n:016x}")
}

pub async fn middleware(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| acceptable(s))
        .map(str::to_string)
        .unwrap_or_else(fresh);
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    let span = tracing::info_span!("request", id = %id, %method, %route);
    let started = Instant::now();
    let mut resp = REQUEST_ID
        .scope(id.clone(), next.run(req).instrument(span.clone()))
        .await;
    let status = resp.status().as_u16();
    span.in_scope(|| {
        let ms = started.elapsed().as_secs_f64() * 1e3;
        if status >= 500 {
            tracing::warn!(status, ms, "request failed");
        } else {
            tracing::info!(status, ms, "request");
        }
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(HEADER, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sane_ids_are_kept() {
        assert!(acceptable("abc-123_x.y:z"));
        assert!(!acceptable(""));
        assert!(!acceptable("has space"));
        assert!(!acceptable("new\nline"));
        assert!(!acceptable(&"a".repeat(MAX_ID_BYTES + 1)));
        let f = fresh();
        assert!(acceptable(&f) && f.starts_with("req-"));
    }
}
