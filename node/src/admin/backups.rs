//! `POST /backup` writes a verified archive of this node's state to the backup directory;
//! it first confirms leadership with a quorum (read index), so the backup holds every write
//! acknowledged before the call. `GET /backups` lists the archives with their manifests.

use super::error::AdminError;
use super::AdminState;
use crate::backup;
use crate::storage::Engine;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use openraft::error::{CheckIsLeaderError, RaftError};
use serde_json::{json, Value};
use std::sync::Arc;

pub async fn backup<E: Engine>(
    State(state): State<Arc<AdminState<E>>>,
) -> Result<Json<Value>, AdminError> {
    match state.raft.ensure_linearizable().await {
        Ok(_) => {}
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
            return Err(AdminError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: "not the leader; backups are taken on the leader".into(),
                leader: f.leader_id.map(|id| (id, f.leader_node)),
            })
        }
        Err(e) => {
            return Err(AdminError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                e.to_string(),
            ))
        }
    }
    let body = state
        .sm
        .snapshot_body()
        .await
        .map_err(|e| AdminError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let (dir, name, node, retain) = (
        state.backup_dir.clone(),
        state.cluster_name.clone(),
        state.node_id,
        state.backup_retain,
    );
    let now = crate::server::inventory::now_ms();
    let (path, manifest) =
        tokio::task::spawn_blocking(move || backup::write(&dir, &name, node, &body, now, retain))
            .await
            .map_err(|e| AdminError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(|e| AdminError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    tracing::info!(path = %path.display(), last_index = manifest.last_index, "backup written and verified");
    Ok(Json(
        json!({ "path": path.display().to_string(), "manifest": manifest }),
    ))
}

pub async fn list<E: Engine>(
    State(state): State<Arc<AdminState<E>>>,
) -> Result<Json<Value>, AdminError> {
    let dir = state.backup_dir.clone();
    let rows = tokio::task::spawn_blocking(move || -> Result<Vec<Value>, backup::BackupError> {
        let mut rows = Vec::new();
        for path in backup::list(&dir)? {
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let row = match backup::read_manifest(&path) {
                Ok(m) => json!({ "path": path.display().to_string(), "bytes": size, "last_index": m.last_index,
                    "last_term": m.last_term, "created_ms": m.created_ms, "movements": m.movements, "sha256": m.sha256 }),
                Err(e) => json!({ "path": path.display().to_string(), "bytes": size, "error": e.to_string() }),
            };
            rows.push(row);
        }
        Ok(rows)
    })
    .await
    .map_err(|e| AdminError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| AdminError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(
        json!({ "backup_dir": state.backup_dir.display().to_string(), "backups": rows }),
    ))
}
