//! `/metrics` (Prometheus exposition), `/cluster` (JSON: members, roles, leader, term,
//! indexes and per-follower lag as this node sees them), `/movements/recent` (this
//! replica's newest ledger entries) and `/` (the status page that renders the last two).

use super::AdminState;
use crate::metrics::PeerLabels;
use crate::storage::Engine;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;

pub async fn metrics<E: Engine>(State(state): State<Arc<AdminState<E>>>) -> impl IntoResponse {
    let m = state.raft.metrics().borrow().clone();
    let x = &state.metrics;
    x.term.set(m.current_term as i64);
    x.last_log_index.set(m.last_log_index.unwrap_or(0) as i64);
    x.applied_index
        .set(m.last_applied.map(|l| l.index).unwrap_or(0) as i64);
    x.snapshot_index
        .set(m.snapshot.map(|l| l.index).unwrap_or(0) as i64);
    x.is_leader
        .set((m.current_leader == Some(state.node_id)) as i64);
    x.storage_bytes.set(state.sm.size_on_disk() as i64);
    {
        let st = state.sm.read();
        x.open_reservations
            .set(st.inventory.open_reservations() as i64);
        x.clock_ms.set(st.inventory.clock_ms());
    }
    x.replication_lag.clear();
    if let Some(replication) = &m.replication {
        let last = m.last_log_index.unwrap_or(0);
        for (peer, matched) in replication.iter().filter(|(p, _)| **p != state.node_id) {
            let lag = last.saturating_sub(matched.map(|l| l.index).unwrap_or(0));
            x.replication_lag
                .get_or_create(&PeerLabels { peer: *peer })
                .set(lag as i64);
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        x.encode(),
    )
}

pub async fn cluster<E: Engine>(State(state): State<Arc<AdminState<E>>>) -> Json<Value> {
    let m = state.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: Vec<u64> = membership.voter_ids().collect();
    let last = m.last_log_index.unwrap_or(0);
    let members: Vec<Value> = membership
        .nodes()
        .map(|(id, node)| {
            let lag = m
                .replication
                .as_ref()
                .and_then(|r| r.get(id))
                .map(|matched| last.saturating_sub(matched.map(|l| l.index).unwrap_or(0)));
            json!({
                "id": id,
                "role": if voters.contains(id) { "voter" } else { "learner" },
                "peer_addr": node.peer_addr,
                "client_addr": node.client_addr,
                "admin_addr": node.admin_addr,
                "lag_entries": lag,
            })
        })
        .collect();
    Json(json!({
        "node_id": state.node_id,
        "state": format!("{:?}", m.state),
        "leader_id": m.current_leader,
        "term": m.current_term,
        "last_log_index": last,
        "applied_index": m.last_applied.map(|l| l.index).unwrap_or(0),
        "snapshot_index": m.snapshot.map(|l| l.index).unwrap_or(0),
        "purged_index": m.purged.map(|l| l.index).unwrap_or(0),
        "membership_log_index": m.membership_config.log_id().map(|l| l.index),
        "joint_config": membership.get_joint_config().len() > 1,
        "voters": voters,
        "learners": membership.learner_ids().collect::<Vec<_>>(),
        "members": members,
        "millis_since_quorum_ack": m.millis_since_quorum_ack,
    }))
}

/// The status page; see `page.html`.
pub async fn page() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("page.html"))
}

#[derive(serde::Deserialize)]
pub struct RecentQuery {
    pub limit: Option<usize>,
}

/// Most movements `/movements/recent` returns.
const MAX_RECENT: usize = 200;

pub async fn recent_movements<E: Engine>(
    State(state): State<Arc<AdminState<E>>>,
    axum::extract::Query(q): axum::extract::Query<RecentQuery>,
) -> Result<Json<Value>, super::error::AdminError> {
    let limit = q.limit.unwrap_or(20).clamp(1, MAX_RECENT);
    let movements = state.sm.recent_movements(limit).map_err(|e| {
        super::error::AdminError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    })?;
    let rows: Vec<Value> = movements
        .iter()
        .map(|m| {
            json!({ "revision": m.revision, "seq": m.seq, "kind": m.kind.as_str(), "item": m.item, "from": m.from,
                "to": m.to, "quantity": m.quantity, "reference": m.reference, "time_ms": m.time_ms, "reservation_id": m.reservation })
        })
        .collect();
    Ok(Json(json!({ "movements": rows })))
}
