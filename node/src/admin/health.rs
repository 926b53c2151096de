//! `/healthz`: the process serves HTTP. `/readyz`: a leader is known and this node has
//! applied to within `READY_MAX_APPLY_LAG` entries of its log, so it can serve reads.

use super::{AdminState, READY_MAX_APPLY_LAG};
use crate::storage::Engine;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn readyz<E: Engine>(
    State(state): State<Arc<AdminState<E>>>,
) -> (StatusCode, Json<Value>) {
    let m = state.raft.metrics().borrow().clone();
    let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
    let last = m.last_log_index.unwrap_or(0);
    let lag = last.saturating_sub(applied);
    let reason = if let Err(e) = &m.running_state {
        Some(format!("raft stopped: {e}"))
    } else if m.current_leader.is_none() {
        Some("no leader known".to_string())
    } else if lag > READY_MAX_APPLY_LAG {
        Some(format!(
            "applied index {applied} is {lag} entries behind the log"
        ))
    } else {
        None
    };
    let body = json!({ "ready": reason.is_none(), "reason": reason, "leader_id": m.current_leader, "applied_index": applied, "last_log_index": last });
    let code = if reason.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}
