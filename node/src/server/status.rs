//! Mapping of domain and Raft errors to gRPC statuses, including the leader hint a
//! follower attaches so clients can go straight to the leader.

use crate::inventory::{DomainError, ErrorClass};
use crate::raft::{NodeId, NodeInfo};
use laundry_proto::{LEADER_ADDR_KEY, LEADER_ID_KEY, REASON_KEY};
use tonic::{Code, Status};

pub fn domain(e: DomainError) -> Status {
    let code = match e.class() {
        ErrorClass::InvalidArgument => Code::InvalidArgument,
        ErrorClass::NotFound => Code::NotFound,
        ErrorClass::AlreadyExists => Code::AlreadyExists,
        ErrorClass::FailedPrecondition => Code::FailedPrecondition,
        ErrorClass::ResourceExhausted => Code::ResourceExhausted,
    };
    let mut status = Status::new(code, e.to_string());
    status.metadata_mut().insert(
        REASON_KEY,
        tonic::metadata::MetadataValue::from_static(e.reason()),
    );
    status
}

/// UNAVAILABLE with the leader's id and client address when known.
pub fn not_leader(leader_id: Option<NodeId>, leader: Option<NodeInfo>) -> Status {
    let msg = match (&leader_id, &leader) {
        (Some(id), Some(n)) => format!("not the leader; leader is node {id} at {}", n.client_addr),
        _ => "not the leader; no leader known yet (election in progress?)".to_string(),
    };
    let mut status = Status::unavailable(msg);
    if let (Some(id), Some(n)) = (leader_id, leader) {
        if let (Ok(id), Ok(addr)) = (id.to_string().parse(), n.client_addr.parse()) {
            status.metadata_mut().insert(LEADER_ID_KEY, id);
            status.metadata_mut().insert(LEADER_ADDR_KEY, addr);
        }
    }
    status
}

pub fn invalid(field: &str, reason: impl std::fmt::Display) -> Status {
    let mut status = Status::invalid_argument(format!("invalid {field}: {reason}"));
    status.metadata_mut().insert(
        REASON_KEY,
        tonic::metadata::MetadataValue::from_static("invalid"),
    );
    status
}

/// Whether `status` refuses one write on its own (the rules, validation), as opposed to a
/// failure of the node or of leadership that a retry elsewhere may cure.
pub fn is_refusal(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::FailedPrecondition
            | Code::ResourceExhausted
    )
}

/// A refusal as one write's outcome in a `WriteMany` answer: the status a lone call would
/// have returned, reason trailer included.
pub fn refusal(status: &Status) -> laundry_proto::v1::WriteRefusal {
    laundry_proto::v1::WriteRefusal {
        code: status.code() as i32,
        message: status.message().to_string(),
        reason: status
            .metadata()
            .get(REASON_KEY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
    }
}
