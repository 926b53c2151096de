//! openraft's network over the gRPC peer transport: one lazily connected tonic channel per
//! target. Transport failures become `Unreachable`, so openraft backs off instead of
//! spinning on a dead peer, except a call that only ran past its deadline, which is
//! retried at once; errors the peer's Raft returned come back as `RemoteError`.

use super::codec;
use super::{NodeId, NodeInfo, TypeConfig};
use crate::tls::{host_of, Tls};
use laundry_proto::raft::raft_service_client::RaftServiceClient;
use laundry_proto::raft::RaftPayload;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{de::DeserializeOwned, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// How long to wait for a TCP connection to a peer.
pub const PEER_CONNECT_TIMEOUT_MS: u64 = 500;

/// Dials peers: plain text, or mutual TLS when the node has TLS material.
#[derive(Clone, Default)]
pub struct NetworkFactory {
    pub tls: Option<Arc<Tls>>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerClient {
        PeerClient::new(target, node, self.tls.as_deref())
    }
}

pub struct PeerClient {
    target: NodeId,
    /// `None` when the peer address does not parse; every call then reports it.
    client: Result<RaftServiceClient<Channel>, String>,
    /// How requests to this peer are encoded: JSON until its replies say it reads binary.
    format: codec::Format,
}

/// Connects lazily to a peer's Raft transport at `addr` (host:port), over mutual TLS when
/// `tls` is given.
pub fn peer_channel(addr: &str, tls: Option<&Tls>) -> Result<Channel, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|e| format!("bad peer address {addr:?}: {e}"))?;
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls.peer_client(host_of(addr)))
            .map_err(|e| format!("peer TLS for {addr}: {e}"))?;
    }
    let endpoint = endpoint
        .connect_timeout(Duration::from_millis(PEER_CONNECT_TIMEOUT_MS))
        .tcp_nodelay(true);
    Ok(endpoint.connect_lazy())
}

#[derive(Clone, Copy)]
enum Rpc {
    Append,
    Vote,
    Snapshot,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Msg(String);

impl PeerClient {
    fn new(target: NodeId, node: &NodeInfo, tls: Option<&Tls>) -> Self {
        let client = peer_channel(&node.peer_addr, tls)
            .map(|ch| RaftServiceClient::new(ch).max_decoding_message_size(64 * 1024 * 1024));
        PeerClient {
            target,
            client,
            format: codec::Format::Json,
        }
    }

    async fn call<Req, Resp, E>(
        &mut self,
        rpc: Rpc,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = match &mut self.client {
            Ok(c) => c,
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(&Msg(e.clone())))),
        };
        let data = codec::to_bytes(req, self.format)
            .map_err(|e| RPCError::Network(NetworkError::new(&Msg(e))))?;
        let mut request = tonic::Request::new(RaftPayload { data });
        request.set_timeout(option.hard_ttl());
        let reply = match rpc {
            Rpc::Append => client.append_entries(request).await,
            Rpc::Vote => client.vote(request).await,
            Rpc::Snapshot => client.install_snapshot(request).await,
        };
        let reply = reply.map_err(|status| {
            let msg = Msg(format!("peer {}: {}", self.target, status));
            if status.code() == tonic::Code::InvalidArgument && self.format != codec::Format::Json {
                // A peer that no longer reads binary (rolled back to an earlier release):
                // the retry goes as JSON.
                tracing::warn!(
                    peer = self.target,
                    "peer refused a binary request; sending JSON"
                );
                self.format = codec::Format::Json;
                return RPCError::Network(NetworkError::new(&msg));
            }
            match status.code() {
                // Slow, not gone: the call outlived its deadline (openraft gives an append
                // one heartbeat interval). openraft retries a `Network` error at once but
                // stops replicating to an `Unreachable` peer for a 500 ms backoff, which a
                // follower busy for 60 ms turned into a 500 ms write stall (measured).
                tonic::Code::Cancelled | tonic::Code::DeadlineExceeded => {
                    RPCError::Network(NetworkError::new(&msg))
                }
                _ => RPCError::Unreachable(Unreachable::new(&msg)),
            }
        })?;
        let format = match reply.metadata().get(codec::READS_BINARY_HEADER) {
            Some(v) if v == codec::READS_BINARY_VALUE => codec::Format::Binary,
            _ => codec::Format::Json,
        };
        if format != self.format {
            tracing::info!(peer = self.target, ?format, "peer request encoding");
            self.format = format;
        }
        let result: Result<Resp, RaftError<NodeId, E>> =
            codec::from_bytes(&reply.into_inner().data).map_err(|e| {
                RPCError::Network(NetworkError::new(&Msg(format!(
                    "peer {}: {e}",
                    self.target
                ))))
            })?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.call(Rpc::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(Rpc::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.call(Rpc::Vote, &rpc, &option).await
    }
}
