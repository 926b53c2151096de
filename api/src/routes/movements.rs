//! The ledger: `GET /v1/movements` (history with cursor pagination) and the writes that
//! add to it: receipts, shipments, adjustments and transfers. `If-Match` on a write is the
//! ETag of the stock level it takes from (transfers: the source level).

use super::{if_match_stock, read_headers, with_key, written};
use crate::extract::{Body, IdempotencyKey, IfMatch, Query};
use crate::model::{
    self, Adjustment, Movement, MovementPage, MovementParams, Receipt, Shipment, Transfer,
};
use crate::problem::{Problem, ProblemBody};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use laundry_client::pb;

#[utoipa::path(get, path = "/v1/movements", tag = "movements", params(MovementParams),
    responses(
        (status = 200, description = "One page of the ledger, oldest first", body = MovementPage),
        (status = "4XX", description = "Bad parameters", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn list(
    State(s): State<AppState>,
    Query(q): Query<MovementParams>,
) -> Result<Response, Problem> {
    let r = s
        .client
        .list_movements(pb::ListMovementsRequest {
            from_revision: model::revision_param("from_revision", q.from_revision)?,
            item: q.item.unwrap_or_default(),
            location: q.location.unwrap_or_default(),
            page_size: model::page_limit(q.limit)?,
            page_token: q.cursor.unwrap_or_default(),
            read: q.consistency.unwrap_or_default().to_pb(),
        })
        .await?;
    let body = MovementPage {
        movements: r.movements.into_iter().map(Movement::from).collect(),
        next_cursor: model::cursor(r.next_page_token),
    };
    Ok((read_headers(r.header.as_ref()), Json(body)).into_response())
}

/// One handler per movement write; they differ only in body type, conversion, store call
/// and which stock level `If-Match` guards.
macro_rules! stock_write {
    ($name:ident, $path:literal, $body:ident, $what:literal, $to_pb:path, $call:ident,
     |$b:ident| $guarded:expr) => {
        #[utoipa::path(post, path = $path, tag = "movements",
            params(
                ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key apply once"),
                ("If-Match" = Option<String>, Header, description = "Apply only if the source stock level is at this revision (its ETag)"),
            ),
            request_body = $body,
            responses(
                (status = 200, description = $what, body = model::WriteResult, headers(("Idempotency-Key" = String))),
                (status = 409, description = "Refused by the rules (insufficient stock, wrong location kind...)", body = ProblemBody, content_type = "application/problem+json"),
                (status = 412, description = "A condition or If-Match did not hold", body = ProblemBody, content_type = "application/problem+json"),
                (status = "4XX", description = "Refused; nothing changed", body = ProblemBody, content_type = "application/problem+json"),
                (status = 503, description = "Store unavailable; retry with the same key", body = ProblemBody, content_type = "application/problem+json"),
            ))]
        pub async fn $name(
            State(s): State<AppState>,
            key: IdempotencyKey,
            if_match: IfMatch,
            Body($b): Body<$body>,
        ) -> Result<Response, Problem> {
            let conditions = model::conditions(&$b.conditions)?;
            let (item, location): (String, String) = $guarded;
            let mut req = $to_pb($b, conditions);
            if_match_stock(&mut req.options, if_match, &item, &location)?;
            let key = with_key(&mut req.options, key);
            Ok(written(StatusCode::OK, &key, s.client.$call(req).await?, &[]))
        }
    };
}

stock_write!(
    receive,
    "/v1/receipts",
    Receipt,
    "Stock received from a virtual source",
    model::receipt_pb,
    receive,
    |b| (b.item.clone(), b.location.clone())
);
stock_write!(
    ship,
    "/v1/shipments",
    Shipment,
    "Stock shipped to a virtual destination",
    model::shipment_pb,
    ship,
    |b| (b.item.clone(), b.location.clone())
);
stock_write!(
    adjust,
    "/v1/adjustments",
    Adjustment,
    "Stock adjusted against a virtual counterpart",
    model::adjustment_pb,
    adjust,
    |b| (b.item.clone(), b.location.clone())
);
stock_write!(
    transfer,
    "/v1/transfers",
    Transfer,
    "Stock moved between two locations",
    model::transfer_pb,
    transfer,
    |b| (b.item.clone(), b.from.clone())
);
