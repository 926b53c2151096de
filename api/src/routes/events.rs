//! `GET /v1/movements/stream`: the ledger as Server-Sent Events, history from a revision and
//! then live movements. Each event's id is `<revision>-<seq>`; a client that reconnects
//! with `Last-Event-ID` resumes right after it, without gaps or repeats (the client crate's
//! watch reconnects to the store the same way underneath). Open streams are bounded.

use crate::extract::Query;
use crate::model::{Consistency, Movement, StreamParams};
use crate::problem::{Problem, ProblemBody};
use crate::AppState;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use laundry_client::pb;
use std::convert::Infallible;
use std::time::Duration;
use tokio_stream::StreamExt;

/// Parses a `Last-Event-ID` of the form `<revision>-<seq>`.
pub fn parse_event_id(v: &str) -> Option<(u64, u32)> {
    let (r, s) = v.trim().split_once('-')?;
    Some((r.parse().ok()?, s.parse().ok()?))
}

/// Releases the stream's slot and gauge when the client goes away.
struct Slot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

#[utoipa::path(get, path = "/v1/movements/stream", tag = "movements",
    params(StreamParams, ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id (`<revision>-<seq>`)")),
    responses(
        (status = 200, description = "text/event-stream of `movement` events (data: a Movement); an `error` event ends the stream", content_type = "text/event-stream", body = String),
        (status = "4XX", description = "Bad parameters or Last-Event-ID", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable, or too many open streams", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn stream(
    State(s): State<AppState>,
    Query(q): Query<StreamParams>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let resume = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(v.to_str().ok().and_then(parse_event_id).ok_or_else(|| {
            Problem::invalid_header(
                "Last-Event-ID: expected <revision>-<seq>, as sent in event ids",
            )
        })?),
    };
    let from = match resume {
        Some((revision, _)) => revision,
        None => crate::model::revision_param("from_revision", q.from_revision)?,
    };
    let item = q.item.unwrap_or_default();
    let location = q.location.unwrap_or_default();
    // Let the store judge the filters now, so a bad one is a 400 and not a broken stream.
    s.client
        .list_movements(pb::ListMovementsRequest {
            from_revision: from,
            item: item.clone(),
            location: location.clone(),
            page_size: 1,
            page_token: String::new(),
            read: Consistency::Stale.to_pb(),
        })
        .await?;
    let permit = s.streams.clone().try_acquire_owned().map_err(|_| {
        Problem::unavailable(format!(
            "{} event streams open, the most this instance serves",
            s.config.max_event_streams
        ))
    })?;
    s.metrics.event_streams.inc();
    let slot = Slot {
        _permit: permit,
        gauge: s.metrics.event_streams.clone(),
    };
    let events = s
        .client
        .watch(from, &item, &location)
        .filter(move |m| match (m, resume) {
            (Ok(m), Some(after)) => (m.revision, m.seq) > after,
            _ => true,
        })
        .map(move |m| {
            let _slot = &slot; // lives as long as the stream
            Ok::<Event, Infallible>(match m {
                Ok(m) => {
                    let id = format!("{}-{}", m.revision, m.seq);
                    Event::default()
                        .id(id)
                        .event("movement")
                        .json_data(Movement::from(m))
                        .unwrap_or_else(|e| Event::default().event("error").data(e.to_string()))
                }
                Err(e) => Event::default().event("error").data(e.to_string()),
            })
        });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_millis(s.config.sse_keepalive_ms)))
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_round_trip() {
        assert_eq!(parse_event_id("12-3"), Some((12, 3)));
        assert_eq!(parse_event_id(" 12-0 "), Some((12, 0)));
        for bad in ["", "12", "-3", "12-", "a-1", "1-b", "1-2-3", "-1-2"] {
            assert_eq!(parse_event_id(bad), None, "{bad}");
        }
    }
}
