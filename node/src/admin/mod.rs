//! The admin HTTP API (axum) on its own port: liveness, readiness, Prometheus metrics,
//! cluster status, membership, snapshot and leader hand-off. Mutating calls need the bearer
//! token (`auth`); with no token configured they are refused, never open.
//!
//! - `health`: `/healthz`, `/readyz`
//! - `status`: `/metrics`, `/cluster`, `/movements/recent`, and `/` (the status page)
//! - `membership`: `/members…`, `/leader/handoff`, `/snapshot`
//! - `backups`: `/backup`, `/backups`
//! - `auth`: the bearer-token check
//! - `error`: the JSON error body and its status codes

mod auth;
mod backups;
mod error;
mod health;
mod membership;
mod status;

use crate::metrics::Metrics;
use crate::raft::state_machine::StateMachine;
use crate::raft::{NodeId, Raft};
use crate::storage::Engine;
use axum::routing::{delete, get, post};
use axum::Router;
use std::sync::Arc;

/// Readiness: a follower this many entries behind its own log is not ready.
pub const READY_MAX_APPLY_LAG: u64 = 1_000;

pub struct AdminState<E: Engine> {
    pub node_id: NodeId,
    pub raft: Raft,
    pub sm: StateMachine<E>,
    pub metrics: Arc<Metrics>,
    pub token: Option<String>,
    pub election_max_ms: u64,
    pub cluster_name: String,
    pub backup_dir: std::path::PathBuf,
    pub backup_retain: usize,
    /// For dialing peers (leader hand-off) over mutual TLS.
    pub tls: Option<Arc<crate::tls::Tls>>,
}

pub fn router<E: Engine>(state: Arc<AdminState<E>>) -> Router {
    let mutating = Router::new()
        .route("/members", post(membership::add_learner::<E>))
        .route("/members/{id}/promote", post(membership::promote::<E>))
        .route("/members/{id}", delete(membership::remove::<E>))
        .route("/leader/handoff", post(membership::handoff::<E>))
        .route("/snapshot", post(membership::snapshot::<E>))
        .route("/backup", post(backups::backup::<E>))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token::<E>,
        ));
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz::<E>))
        .route("/metrics", get(status::metrics::<E>))
        .route("/", get(status::page))
        .route("/cluster", get(status::cluster::<E>))
        .route("/movements/recent", get(status::recent_movements::<E>))
        .route("/backups", get(backups::list::<E>))
        .merge(mutating)
        .with_state(state)
}
