//! `/v1/reservations`: two-phase holds. Reserve (201), read, then commit or release; an
//! open reservation past its deadline is expired by the store.

use super::{if_match_stock, read_headers, with_key, written};
use crate::extract::{Body, IdempotencyKey, IfMatch, OptionalBody, Path, Query};
use crate::model::{
    self, CommitReservation, CreateReservation, ReadParams, ReleaseReservation, Reservation,
};
use crate::problem::{Problem, ProblemBody};
use crate::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use laundry_client::pb;

#[utoipa::path(post, path = "/v1/reservations", tag = "reservations",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key apply once"),
        ("If-Match" = Option<String>, Header, description = "Reserve only if the stock level is at this revision"),
    ),
    request_body = CreateReservation,
    responses(
        (status = 201, description = "Reserved; the id is in reservation_ids and Location", body = model::WriteResult, headers(("Location" = String), ("Idempotency-Key" = String))),
        (status = 409, description = "Insufficient available stock, or the id exists", body = ProblemBody, content_type = "application/problem+json"),
        (status = "4XX", description = "Refused; nothing changed", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable; retry with the same key", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn create(
    State(s): State<AppState>,
    key: IdempotencyKey,
    if_match: IfMatch,
    Body(b): Body<CreateReservation>,
) -> Result<Response, Problem> {
    let conditions = model::conditions(&b.conditions)?;
    let (item, location) = (b.item.clone(), b.location.clone());
    let mut req = model::reservation_pb(b, conditions);
    if_match_stock(&mut req.options, if_match, &item, &location)?;
    let key = with_key(&mut req.options, key);
    let w = s.client.reserve(req).await?;
    let extra: Vec<_> = w
        .reservation_ids
        .first()
        .map(|id| (header::LOCATION, format!("/v1/reservations/{id}")))
        .into_iter()
        .collect();
    Ok(written(StatusCode::CREATED, &key, w, &extra))
}

#[utoipa::path(get, path = "/v1/reservations/{id}", tag = "reservations",
    params(("id" = String, Path, description = "Reservation id", pattern = r"^[A-Za-z0-9._:/@-]{1,128}$", max_length = 128), ReadParams),
    responses(
        (status = 200, description = "The reservation, open or ended", body = Reservation),
        (status = "4XX", description = "Unknown reservation or bad parameters", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn get(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ReadParams>,
) -> Result<Response, Problem> {
    let r = s
        .client
        .get_reservation(pb::GetReservationRequest {
            id: id.clone(),
            read: q.consistency.unwrap_or_default().to_pb(),
        })
        .await?;
    let res = r
        .reservation
        .ok_or_else(|| Problem::not_found(format!("reservation {id:?}")))?;
    Ok((
        read_headers(r.header.as_ref()),
        Json(Reservation::from(res)),
    )
        .into_response())
}

#[utoipa::path(post, path = "/v1/reservations/{id}/commit", tag = "reservations",
    params(
        ("id" = String, Path, description = "Reservation id", pattern = r"^[A-Za-z0-9._:/@-]{1,128}$", max_length = 128),
        ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key apply once"),
    ),
    request_body(content = Option<CommitReservation>, description = "Optional; an empty body commits to `customer`"),
    responses(
        (status = 200, description = "Committed: the held stock left for the destination", body = model::WriteResult),
        (status = 409, description = "The reservation already ended or expired", body = ProblemBody, content_type = "application/problem+json"),
        (status = "4XX", description = "Refused; nothing changed", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable; retry with the same key", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn commit(
    State(s): State<AppState>,
    Path(id): Path<String>,
    key: IdempotencyKey,
    OptionalBody(b): OptionalBody<CommitReservation>,
) -> Result<Response, Problem> {
    let mut req = pb::CommitReservationRequest {
        options: None,
        reservation_id: id,
        to: b.to,
        reason: b.reason,
    };
    let key = with_key(&mut req.options, key);
    let w = s.client.commit_reservation(req).await?;
    Ok(written(StatusCode::OK, &key, w, &[]))
}

#[utoipa::path(post, path = "/v1/reservations/{id}/release", tag = "reservations",
    params(
        ("id" = String, Path, description = "Reservation id", pattern = r"^[A-Za-z0-9._:/@-]{1,128}$", max_length = 128),
        ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key apply once"),
    ),
    request_body(content = Option<ReleaseReservation>, description = "Optional"),
    responses(
        (status = 200, description = "Released: the held stock is available again", body = model::WriteResult),
        (status = 409, description = "The reservation already ended or expired", body = ProblemBody, content_type = "application/problem+json"),
        (status = "4XX", description = "Refused; nothing changed", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable; retry with the same key", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn release(
    State(s): State<AppState>,
    Path(id): Path<String>,
    key: IdempotencyKey,
    OptionalBody(b): OptionalBody<ReleaseReservation>,
) -> Result<Response, Problem> {
    let mut req = pb::ReleaseReservationRequest {
        options: None,
        reservation_id: id,
        reason: b.reason,
    };
    let key = with_key(&mut req.options, key);
    let w = s.client.release_reservation(req).await?;
    Ok(written(StatusCode::OK, &key, w, &[]))
}
