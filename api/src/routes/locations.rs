//! `/v1/locations`: create and list locations (the virtual supplier, customer and
//! adjustment locations are built in).

use super::{read_headers, with_key, written};
use crate::extract::{Body, IdempotencyKey, Query};
use crate::model::{self, CreateLocation, Location, LocationPage, PageParams};
use crate::problem::{Problem, ProblemBody};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use laundry_client::pb;

#[utoipa::path(post, path = "/v1/locations", tag = "locations",
    params(("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key apply once")),
    request_body = CreateLocation,
    responses(
        (status = 201, description = "Created", body = model::WriteResult, headers(("Idempotency-Key" = String))),
        (status = "4XX", description = "Refused; nothing changed", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn create(
    State(s): State<AppState>,
    key: IdempotencyKey,
    Body(body): Body<CreateLocation>,
) -> Result<Response, Problem> {
    let mut req = body.into_pb();
    let key = with_key(&mut req.options, key);
    let w = s.client.create_location(req).await?;
    Ok(written(StatusCode::CREATED, &key, w, &[]))
}

#[utoipa::path(get, path = "/v1/locations", tag = "locations", params(PageParams),
    responses(
        (status = 200, description = "One page, ordered by id", body = LocationPage),
        (status = "4XX", description = "Bad parameters", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn list(
    State(s): State<AppState>,
    Query(q): Query<PageParams>,
) -> Result<Response, Problem> {
    let r = s
        .client
        .list_locations(pb::ListLocationsRequest {
            page_size: q.limit()?,
            page_token: q.cursor.clone().unwrap_or_default(),
            read: q.consistency.unwrap_or_default().to_pb(),
        })
        .await?;
    let page = LocationPage {
        locations: r.locations.into_iter().map(Location::from).collect(),
        next_cursor: model::cursor(r.next_page_token),
    };
    Ok((read_headers(r.header.as_ref()), Json(page)).into_response())
}
