//! `laundry-api`: the stateless REST/JSON front of a Laundry List cluster, the service the
//! Kubernetes API pods run. Every request maps onto one call of the client crate, which
//! finds the store leader and retries safely; the API adds HTTP's conventions on top:
//! `Idempotency-Key`, `ETag` / `If-Match`, problem+json errors, cursor pagination,
//! Server-Sent Events, request ids, Prometheus metrics and a generated OpenAPI document.
//! It holds no state of its own, so any number of replicas can run behind a Service.

pub mod config;
pub mod extract;
pub mod metrics;
pub mod model;
pub mod openapi;
pub mod problem;
pub mod request_id;
pub mod routes;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use config::{Config, ConfigError};
use laundry_client::{Client, ClientConfig};
use routes::*;
use std::sync::Arc;

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub client: Client,
    /// A client with the short readiness deadline.
    pub ready_client: Client,
    pub metrics: Arc<metrics::Metrics>,
    pub streams: Arc<tokio::sync::Semaphore>,
    pub openapi_json: Arc<String>,
    pub config: Arc<Config>,
}

impl AppState {
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        config.validate()?;
        let tls = config.store_tls()?;
        let client = Client::new(
            &config.store_endpoints,
            ClientConfig {
                attempt_timeout_ms: config.attempt_timeout_ms,
                total_timeout_ms: config.request_timeout_ms,
                tls: tls.clone(),
                ..ClientConfig::default()
            },
        )?;
        let ready_client = Client::new(
            &config.store_endpoints,
            ClientConfig {
                attempt_timeout_ms: config.ready_timeout_ms.min(config.attempt_timeout_ms),
                total_timeout_ms: config.ready_timeout_ms,
                tls,
                ..ClientConfig::default()
            },
        )?;
        let openapi_json = openapi::json()?;
        Ok(AppState {
            client,
            ready_client,
            metrics: Arc::new(metrics::Metrics::new()),
            streams: Arc::new(tokio::sync::Semaphore::new(config.max_event_streams)),
            openapi_json: Arc::new(openapi_json),
            config: Arc::new(config),
        })
    }
}

/// The whole HTTP surface. Layers, outermost first: request id and access log, metrics,
/// body size limit.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/items", get(items::list).post(items::create))
        .route("/v1/items/{id}", get(items::get).patch(items::update))
        .route("/v1/items/{id}/stock", get(stock::list))
        .route("/v1/items/{id}/stock/{location}", get(stock::get))
        .route(
            "/v1/locations",
            get(locations::list).post(locations::create),
        )
        .route("/v1/movements", get(movements::list))
        .route("/v1/movements/stream", get(events::stream))
        .route("/v1/receipts", post(movements::receive))
        .route("/v1/shipments", post(movements::ship))
        .route("/v1/adjustments", post(movements::adjust))
        .route("/v1/transfers", post(movements::transfer))
        .route("/v1/reservations", post(reservations::create))
        .route("/v1/reservations/{id}", get(reservations::get))
        .route("/v1/reservations/{id}/commit", post(reservations::commit))
        .route("/v1/reservations/{id}/release", post(reservations::release))
        .route("/v1/batches", post(batches::post))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            metrics::middleware,
        ))
        .layer(axum::middleware::from_fn(request_id::middleware))
        .with_state(state)
}
