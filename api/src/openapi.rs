//! The OpenAPI 3 document, generated at compile time from the handlers' `#[utoipa::path]`
//! attributes and the `ToSchema` types of `model`, and served at `/openapi.json`.

use crate::routes::*;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Laundry List API",
        description = "Inventory as a ledger, over a Raft-replicated store. Every mutation \
            takes an Idempotency-Key header (retries apply once); conditional writes take \
            If-Match with the revision ETag; errors are application/problem+json with a \
            stable `type` (/problems/<slug>)."
    ),
    paths(
        items::create, items::list, items::get, items::update,
        locations::create, locations::list,
        stock::list, stock::get,
        movements::list, movements::receive, movements::ship, movements::adjust,
        movements::transfer, events::stream,
        reservations::create, reservations::get, reservations::commit, reservations::release,
        batches::post,
        ops::healthz, ops::readyz, ops::metrics, ops::openapi,
    ),
    components(schemas(
        crate::problem::ProblemBody,
        crate::model::WriteResult,
        crate::model::Consistency
    )),
    tags(
        (name = "items"), (name = "locations"), (name = "stock"), (name = "movements"),
        (name = "reservations"), (name = "batches"), (name = "ops"),
    )
)]
pub struct ApiDoc;

/// The document as JSON.
pub fn json() -> Result<String, serde_json::Error> {
    ApiDoc::openapi().to_json()
}
