//! Operational endpoints: liveness, readiness (a store leader answers a linearizable read),
//! Prometheus metrics and the OpenAPI document.

use crate::problem::{Problem, ProblemBody};
use crate::AppState;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use laundry_client::pb;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

#[utoipa::path(get, path = "/healthz", tag = "ops",
    responses((status = 200, description = "The process serves HTTP", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses(
        (status = 200, description = "A store leader answered a linearizable read", body = Health),
        (status = 503, description = "No store leader reachable within the readiness timeout", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn readyz(State(s): State<AppState>) -> Result<Json<Health>, Problem> {
    s.ready_client
        .list_locations(pb::ListLocationsRequest {
            page_size: 1,
            page_token: String::new(),
            read: None, // linearizable: only a leader confirmed by a quorum answers
        })
        .await
        .map_err(|e| Problem::unavailable(format!("store not ready: {e}")))?;
    Ok(Json(Health { status: "ready" }))
}

#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text exposition (OpenMetrics)", content_type = "application/openmetrics-text", body = String)))]
pub async fn metrics(State(s): State<AppState>) -> Response {
    let mut resp = s.metrics.encode().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

#[utoipa::path(get, path = "/openapi.json", tag = "ops",
    responses((status = 200, description = "This document", content_type = "application/json", body = Object)))]
pub async fn openapi(State(s): State<AppState>) -> Response {
    let mut resp = s.openapi_json.as_ref().clone().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Unknown paths.
pub async fn not_found() -> Problem {
    Problem::not_found("no such resource; see /openapi.json")
}

pub async fn method_not_allowed() -> Problem {
    Problem::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        "this resource does not support that method; see /openapi.json",
    )
}
