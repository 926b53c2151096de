//! Admin API errors: a JSON body `{ "error": …, "leader_id"?, "leader_admin_addr"? }` with a
//! status code that says what to do (401/403 auth, 400 input, 404 unknown member,
//! 409 conflict, 503 not leader or no quorum, 500 anything else).

use crate::raft::{NodeId, NodeInfo};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use openraft::error::{ClientWriteError, RaftError};
use serde_json::json;

pub struct AdminError {
    pub status: StatusCode,
    pub message: String,
    pub leader: Option<(NodeId, Option<NodeInfo>)>,
}

impl AdminError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        AdminError {
            status,
            message: message.into(),
            leader: None,
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if let Some((id, node)) = self.leader {
            body["leader_id"] = json!(id);
            if let Some(n) = node {
                body["leader_admin_addr"] = json!(n.admin_addr);
            }
        }
        (self.status, Json(body)).into_response()
    }
}

impl From<RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>> for AdminError {
    fn from(e: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>) -> Self {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => AdminError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: "not the leader; send membership changes to the leader's admin port"
                    .into(),
                leader: f.leader_id.map(|id| (id, f.leader_node)),
            },
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                AdminError::new(StatusCode::CONFLICT, e.to_string())
            }
            RaftError::Fatal(e) => AdminError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("raft stopped: {e}"),
            ),
        }
    }
}
