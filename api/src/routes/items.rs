//! `/v1/items`: create, list, read (with ETag) and update (with If-Match) items.

use super::{etag_header, read_headers, read_headers_with_etag, weak_tag, with_key, written};
use crate::extract::{Body, IdempotencyKey, IfMatch, Path, Query};
use crate::model::{self, CreateItem, Item, ItemPage, ItemPatch, PageParams, ReadParams};
use crate::problem::{Problem, ProblemBody};
use crate::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use laundry_client::pb;

#[utoipa::path(post, path = "/v1/items", tag = "items",
    params(("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key apply once")),
    request_body = CreateItem,
    responses(
        (status = 201, description = "Created (or the replay of the first result)", body = model::WriteResult,
            headers(("ETag" = String), ("Location" = String), ("Idempotency-Key" = String))),
        (status = "4XX", description = "Refused; nothing changed", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "No store leader reachable; retry with the same key", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn create(
    State(s): State<AppState>,
    key: IdempotencyKey,
    Body(body): Body<CreateItem>,
) -> Result<Response, Problem> {
    let mut req = body.into_pb();
    let key = with_key(&mut req.options, key);
    let location = format!("/v1/items/{}", req.id);
    let w = s.client.create_item(req).await?;
    let revision = w.revision;
    Ok(written(
        StatusCode::CREATED,
        &key,
        w,
        &[etag_header(revision), (header::LOCATION, location)],
    ))
}

#[utoipa::path(get, path = "/v1/items", tag = "items", params(PageParams),
    responses(
        (status = 200, description = "One page, ordered by id", body = ItemPage),
        (status = "4XX", description = "Bad parameters", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn list(
    State(s): State<AppState>,
    Query(q): Query<PageParams>,
) -> Result<Response, Problem> {
    let r = s
        .client
        .list_items(pb::ListItemsRequest {
            page_size: q.limit()?,
            page_token: q.cursor.clone().unwrap_or_default(),
            read: q.consistency.unwrap_or_default().to_pb(),
        })
        .await?;
    let page = ItemPage {
        items: r.items.into_iter().map(Item::from).collect(),
        next_cursor: model::cursor(r.next_page_token),
    };
    Ok((read_headers(r.header.as_ref()), Json(page)).into_response())
}

#[utoipa::path(get, path = "/v1/items/{id}", tag = "items",
    params(("id" = String, Path, description = "Item id", pattern = r"^[A-Za-z0-9._:/@-]{1,128}$", max_length = 128), ReadParams),
    responses(
        (status = 200, description = "The item", body = Item, headers(("ETag" = String))),
        (status = "4XX", description = "Unknown item or bad parameters", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn get(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ReadParams>,
) -> Result<Response, Problem> {
    let r = s
        .client
        .get_item(pb::GetItemRequest {
            id: id.clone(),
            read: q.consistency.unwrap_or_default().to_pb(),
        })
        .await?;
    let item = r
        .item
        .ok_or_else(|| Problem::not_found(format!("item {id:?}")))?;
    let headers = read_headers_with_etag(r.header.as_ref(), item.revision);
    Ok((headers, Json(Item::from(item))).into_response())
}

#[utoipa::path(patch, path = "/v1/items/{id}", tag = "items",
    params(
        ("id" = String, Path, description = "Item id", pattern = r"^[A-Za-z0-9._:/@-]{1,128}$", max_length = 128),
        ("If-Match" = Option<String>, Header, description = "Apply only at this revision (the ETag)"),
        ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key apply once"),
    ),
    request_body = ItemPatch,
    responses(
        (status = 200, description = "Updated", body = model::WriteResult, headers(("ETag" = String))),
        (status = 412, description = "The item changed since the ETag", body = ProblemBody, content_type = "application/problem+json"),
        (status = "4XX", description = "Refused; nothing changed", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn update(
    State(s): State<AppState>,
    Path(id): Path<String>,
    if_match: IfMatch,
    key: IdempotencyKey,
    Body(patch): Body<ItemPatch>,
) -> Result<Response, Problem> {
    let expected = match if_match {
        IfMatch::Absent => 0,
        IfMatch::Revision(0) => {
            return Err(Problem::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition-failed",
                "Precondition failed",
                "no item is ever at revision 0",
            ))
        }
        IfMatch::Revision(r) => r,
        IfMatch::NeverMatches => return Err(weak_tag()),
    };
    let mut req = patch.into_pb(id, expected);
    let key = with_key(&mut req.options, key);
    let w = s.client.update_item(req).await?;
    let revision = w.revision;
    Ok(written(StatusCode::OK, &key, w, &[etag_header(revision)]))
}
