//! `/v1/items/{id}/stock`: stock levels of an item, all locations or one (with ETag, the
//! level's revision, which `If-Match` on receipts, shipments, adjustments, transfers and
//! reservations checks).

use super::{read_headers, read_headers_with_etag};
use crate::extract::{Path, Query};
use crate::model::{ReadParams, StockLevel, StockLevels};
use crate::problem::{Problem, ProblemBody};
use crate::AppState;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use laundry_client::pb;

#[utoipa::path(get, path = "/v1/items/{id}/stock", tag = "stock",
    params(("id" = String, Path, description = "Item id", pattern = r"^[A-Za-z0-9._:/@-]{1,128}$", max_length = 128), ReadParams),
    responses(
        (status = 200, description = "Every location that ever held the item", body = StockLevels),
        (status = "4XX", description = "Unknown item or bad parameters", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn list(
    State(s): State<AppState>,
    Path(item): Path<String>,
    Query(q): Query<ReadParams>,
) -> Result<Response, Problem> {
    let r = s
        .client
        .get_stock(pb::GetStockRequest {
            item,
            location: String::new(),
            read: q.consistency.unwrap_or_default().to_pb(),
        })
        .await?;
    let body = StockLevels {
        levels: r.levels.into_iter().map(StockLevel::from).collect(),
    };
    Ok((read_headers(r.header.as_ref()), Json(body)).into_response())
}

#[utoipa::path(get, path = "/v1/items/{id}/stock/{location}", tag = "stock",
    params(("id" = String, Path, description = "Item id", pattern = r"^[A-Za-z0-9._:/@-]{1,128}$", max_length = 128), ("location" = String, Path, description = "Location id", pattern = r"^[A-Za-z0-9._:/@-]{1,128}$", max_length = 128), ReadParams),
    responses(
        (status = 200, description = "The level (zero if never held)", body = StockLevel, headers(("ETag" = String))),
        (status = "4XX", description = "Unknown item or location, or bad parameters", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn get(
    State(s): State<AppState>,
    Path((item, location)): Path<(String, String)>,
    Query(q): Query<ReadParams>,
) -> Result<Response, Problem> {
    let r = s
        .client
        .get_stock(pb::GetStockRequest {
            item: item.clone(),
            location: location.clone(),
            read: q.consistency.unwrap_or_default().to_pb(),
        })
        .await?;
    let level = r.levels.into_iter().next().unwrap_or(pb::StockLevel {
        item,
        location,
        ..Default::default()
    });
    let headers = read_headers_with_etag(r.header.as_ref(), level.revision);
    Ok((headers, Json(StockLevel::from(level))).into_response())
}
