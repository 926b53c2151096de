//! Generated gRPC code for Laundry List: the public `laundry.v1` inventory API and the
//! internal `laundry.raft.v1` transport. Built from `proto/*.proto` by `build.rs`.

pub mod v1 {
    tonic::include_proto!("laundry.v1");
}

pub mod raft {
    tonic::include_proto!("laundry.raft.v1");
}

/// Encoded `FileDescriptorSet` of both packages, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("laundry_descriptor");

/// Trailer keys of the leader hint on a follower's UNAVAILABLE answer.
pub const LEADER_ID_KEY: &str = "x-laundry-leader-id";
pub const LEADER_ADDR_KEY: &str = "x-laundry-leader-addr";
/// Trailer key of the stable reason of a refusal (`insufficient_stock`, `item_not_found`...),
/// next to the status code, so clients can tell refusals of one code apart without parsing
/// the message.
pub const REASON_KEY: &str = "x-laundry-reason";
