//! Membership and maintenance: add a learner, promote it, remove a member, hand leadership
//! off, trigger a snapshot. All go through Raft on the leader; a follower answers 503 with
//! the leader's id and admin address.
//!
//! Leader hand-off: openraft 0.9 has no leadership-transfer call, so the closest safe
//! equivalent is used: the leader stops campaigning and asks the most caught-up voter (or
//! the one named) to start an election now, through the peer transport. The candidate's
//! higher term makes the old leader step down; Raft's vote rules keep it safe whoever wins.

use super::error::AdminError;
use super::AdminState;
use crate::raft::network::peer_channel;
use crate::raft::{NodeId, NodeInfo};
use crate::storage::Engine;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use laundry_proto::raft::raft_service_client::RaftServiceClient;
use laundry_proto::raft::CampaignRequest;
use openraft::ChangeMembers;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// How long adding a learner may take, catch-up included.
const ADD_LEARNER_TIMEOUT_MS: u64 = 60_000;
const SNAPSHOT_TIMEOUT_MS: u64 = 60_000;
/// How long a promotion or removal may take (two entries: the joint configuration, then
/// the new one). Bounded because openraft 0.9 never answers an entry that a leader appended,
/// was deposed, and then saw covered by a snapshot (see `server::proposer`); such a change
/// may still apply, which the answer says.
const CHANGE_MEMBERSHIP_TIMEOUT_MS: u64 = 30_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddLearner {
    pub id: NodeId,
    pub peer_addr: String,
    pub client_addr: String,
    #[serde(default)]
    pub admin_addr: String,
}

type Reply = Result<Json<Value>, AdminError>;

fn not_leader<E: Engine>(state: &AdminState<E>) -> AdminError {
    let m = state.raft.metrics().borrow().clone();
    let leader = m
        .current_leader
        .map(|id| (id, m.membership_config.membership().get_node(&id).cloned()));
    AdminError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: "not the leader".into(),
        leader,
    }
}

/// The membership as this node has applied it.
fn membership<E: Engine>(state: &AdminState<E>) -> openraft::Membership<NodeId, NodeInfo> {
    state
        .raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .clone()
}

fn require_member(
    membership: &openraft::Membership<NodeId, NodeInfo>,
    id: NodeId,
    hint: &str,
) -> Result<(), AdminError> {
    match membership.get_node(&id) {
        Some(_) => Ok(()),
        None => Err(AdminError::new(
            StatusCode::NOT_FOUND,
            format!("node {id} is not a member{hint}"),
        )),
    }
}

fn require_leader<E: Engine>(state: &AdminState<E>) -> Result<(), AdminError> {
    if state.raft.metrics().borrow().current_leader == Some(state.node_id) {
        Ok(())
    } else {
        Err(not_leader(state))
    }
}

pub async fn add_learner<E: Engine>(
    State(state): State<Arc<AdminState<E>>>,
    body: Result<Json<AddLearner>, axum::extract::rejection::JsonRejection>,
) -> Reply {
    let Json(req) = body.map_err(|e| AdminError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    if req.id == 0 || req.peer_addr.is_empty() || req.client_addr.is_empty() {
        return Err(AdminError::new(
            StatusCode::BAD_REQUEST,
            "id > 0, peer_addr and client_addr are required",
        ));
    }
    require_leader(&state)?;
    if state
        .raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .get_node(&req.id)
        .is_some()
    {
        return Err(AdminError::new(
            StatusCode::CONFLICT,
            format!("node {} is already a member", req.id),
        ));
    }
    let node = NodeInfo {
        peer_addr: req.peer_addr,
        client_addr: req.client_addr,
        admin_addr: req.admin_addr,
    };
    let added = tokio::time::timeout(
        Duration::from_millis(ADD_LEARNER_TIMEOUT_MS),
        state.raft.add_learner(req.id, node, true),
    )
    .await
    .map_err(|_| {
        AdminError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "adding the learner did not finish within 60 s: it may have been added and still be catching up; check GET /cluster before retrying",
        )
    })??;
    tracing::info!(learner = req.id, "added learner");
    Ok(Json(
        json!({ "added_learner": req.id, "log_index": added.log_id.index }),
    ))
}

pub async fn promote<E: Engine>(
    State(state): State<Arc<AdminState<E>>>,
    Path(id): Path<NodeId>,
) -> Reply {
    require_leader(&state)?;
    let membership = membership(&state);
    require_member(&membership, id, "; add it as a learner first")?;
    if membership.voter_ids().any(|v| v == id) {
        return Err(AdminError::new(
            StatusCode::CONFLICT,
            format!("node {id} is already a voter"),
        ));
    }
    let changes = ChangeMembers::AddVoterIds(BTreeSet::from([id]));
    let resp = change_membership(&state, changes, "promoting the learner").await?;
    tracing::info!(voter = id, "promoted learner");
    Ok(Json(
        json!({ "promoted": id, "log_index": resp.log_id.index }),
    ))
}

pub async fn remove<E: Engine>(
    State(state): State<Arc<AdminState<E>>>,
    Path(id): Path<NodeId>,
) -> Reply {
    require_leader(&state)?;
    let membership = membership(&state);
    require_member(&membership, id, "")?;
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let change = if voters.contains(&id) {
        if voters.len() == 1 {
            return Err(AdminError::new(
                StatusCode::CONFLICT,
                "cannot remove the last voter",
            ));
        }
        ChangeMembers::RemoveVoters(BTreeSet::from([id]))
    } else {
        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    };
    let resp = change_membership(&state, change, "removing the member").await?;
    tracing::info!(removed = id, "removed member");
    Ok(Json(
        json!({ "removed": id, "log_index": resp.log_id.index }),
    ))
}

/// `Raft::change_membership`, bounded by `CHANGE_MEMBERSHIP_TIMEOUT_MS`.
async fn change_membership<E: Engine>(
    state: &AdminState<E>,
    changes: ChangeMembers<NodeId, NodeInfo>,
    what: &str,
) -> Result<openraft::raft::ClientWriteResponse<crate::raft::TypeConfig>, AdminError> {
    let changed = tokio::time::timeout(
        Duration::from_millis(CHANGE_MEMBERSHIP_TIMEOUT_MS),
        state.raft.change_membership(changes, false),
    )
    .await
    .map_err(|_| {
        AdminError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "{what} got no answer within {CHANGE_MEMBERSHIP_TIMEOUT_MS} ms: it may still \
                 apply; check GET /cluster before retrying"
            ),
        )
    })?;
    Ok(changed?)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Handoff {
    /// The voter to hand off to; the most caught-up other voter when absent.
    pub to: Option<NodeId>,
}

pub async fn handoff<E: Engine>(
    State(state): State<Arc<AdminState<E>>>,
    body: Option<Json<Handoff>>,
) -> Reply {
    require_leader(&state)?;
    let m = state.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership().clone();
    let others: Vec<NodeId> = membership
        .voter_ids()
        .filter(|v| *v != state.node_id)
        .collect();
    let target = match body.and_then(|b| b.0.to) {
        Some(t) if others.contains(&t) => t,
        Some(t) => {
            return Err(AdminError::new(
                StatusCode::BAD_REQUEST,
                format!("node {t} is not another voter"),
            ))
        }
        None => {
            let matched = |id: &NodeId| {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(id).copied().flatten())
                    .map(|l| l.index)
                    .unwrap_or(0)
            };
            *others.iter().max_by_key(|id| matched(id)).ok_or_else(|| {
                AdminError::new(StatusCode::CONFLICT, "no other voter to hand leadership to")
            })?
        }
    };
    let node = membership.get_node(&target).cloned().unwrap_or_default();
    state.raft.runtime_config().elect(false);
    let result = async {
        let channel = peer_channel(&node.peer_addr, state.tls.as_deref())
            .map_err(|e| AdminError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
        let mut req = tonic::Request::new(CampaignRequest {});
        req.set_timeout(Duration::from_secs(2));
        RaftServiceClient::new(channel)
            .campaign(req)
            .await
            .map_err(|s| {
                AdminError::new(
                    StatusCode::BAD_GATEWAY,
                    format!("node {target} refused to campaign: {}", s.message()),
                )
            })?;
        let wait_ms = (state.election_max_ms * 5).max(3_000);
        let mut metrics = state.raft.metrics();
        let changed = tokio::time::timeout(Duration::from_millis(wait_ms), async {
            loop {
                let leader = metrics.borrow().current_leader;
                if let Some(l) = leader.filter(|l| *l != state.node_id) {
                    return Ok(l);
                }
                if metrics.changed().await.is_err() {
                    return Err(());
                }
            }
        })
        .await;
        match changed {
            Ok(Ok(l)) => Ok(l),
            _ => Err(AdminError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "leadership did not move in time; this node may still lead",
            )),
        }
    }
    .await;
    state.raft.runtime_config().elect(true);
    let new_leader = result?;
    tracing::info!(
        from = state.node_id,
        to = new_leader,
        "leadership handed off"
    );
    Ok(Json(
        json!({ "previous_leader": state.node_id, "leader": new_leader }),
    ))
}

pub async fn snapshot<E: Engine>(State(state): State<Arc<AdminState<E>>>) -> Reply {
    let target = state
        .raft
        .metrics()
        .borrow()
        .last_applied
        .map(|l| l.index)
        .unwrap_or(0);
    state
        .raft
        .trigger()
        .snapshot()
        .await
        .map_err(|e| AdminError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let mut metrics = state.raft.metrics();
    let done = tokio::time::timeout(Duration::from_millis(SNAPSHOT_TIMEOUT_MS), async {
        loop {
            let index = metrics.borrow().snapshot.map(|l| l.index).unwrap_or(0);
            if index >= target {
                return Some(index);
            }
            if metrics.changed().await.is_err() {
                return None;
            }
        }
    })
    .await;
    match done {
        Ok(Some(index)) => Ok(Json(json!({ "snapshot_index": index }))),
        _ => Err(AdminError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "snapshot did not complete in time",
        )),
    }
}
