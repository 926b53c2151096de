//! `POST /v1/batches`: several operations applied atomically, all or none, under one
//! idempotency key and one set of conditions.

use super::{with_key, written};
use crate::extract::{Body, IdempotencyKey};
use crate::model::{self, Batch};
use crate::problem::{Problem, ProblemBody};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use laundry_client::pb;

#[utoipa::path(post, path = "/v1/batches", tag = "batches",
    params(("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key apply once")),
    request_body = Batch,
    responses(
        (status = 200, description = "Every operation applied", body = model::WriteResult),
        (status = "4XX", description = "One operation was refused (its index is in the detail); nothing changed", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable; retry with the same key", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn post(
    State(s): State<AppState>,
    key: IdempotencyKey,
    Body(b): Body<Batch>,
) -> Result<Response, Problem> {
    let conditions = model::conditions(&b.conditions)?;
    let operations = b
        .operations
        .into_iter()
        .enumerate()
        .map(|(i, op)| op.into_pb(i))
        .collect::<Result<Vec<_>, Problem>>()?;
    let mut req = pb::BatchRequest {
        options: Some(pb::WriteOptions {
            idempotency_key: String::new(),
            conditions,
        }),
        operations,
    };
    let key = with_key(&mut req.options, key);
    Ok(written(
        StatusCode::OK,
        &key,
        s.client.batch(req).await?,
        &[],
    ))
}
