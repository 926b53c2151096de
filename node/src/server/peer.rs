//! The gRPC Raft transport on the peer port. Nodes of this release replicate over the peer
//! stream (`peer_stream`) and come here only for a peer without it. Decodes openraft
//! messages, hands them to the local Raft, encodes the result. Undecodable input is
//! INVALID_ARGUMENT, never a panic. Requests are read in either codec format; replies say
//! so (`codec::READS_BINARY_HEADER`).

use crate::raft::{codec, Raft};
use laundry_proto::raft::raft_service_server::RaftService;
use laundry_proto::raft::{
    CampaignRequest, CampaignResponse, PeerStatusRequest, PeerStatusResponse, RaftPayload,
};
use tonic::{Request, Response, Status};

pub struct PeerApi {
    pub node_id: u64,
    pub raft: Raft,
}

fn decode<T: serde::de::DeserializeOwned>(r: Request<RaftPayload>) -> Result<T, Status> {
    codec::from_bytes(&r.into_inner().data).map_err(Status::invalid_argument)
}

/// Replies in JSON, which every release reads (replies are small), and tells the caller
/// that this node reads binary requests.
fn encode<T: serde::Serialize>(v: &T) -> Result<Response<RaftPayload>, Status> {
    let data = codec::to_bytes(v, codec::Format::Json).map_err(Status::internal)?;
    let mut response = Response::new(RaftPayload { data });
    response.metadata_mut().insert(
        codec::READS_BINARY_HEADER,
        tonic::metadata::MetadataValue::from_static(codec::READS_BINARY_VALUE),
    );
    Ok(response)
}

#[tonic::async_trait]
impl RaftService for PeerApi {
    async fn append_entries(
        &self,
        r: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        encode(&self.raft.append_entries(decode(r)?).await)
    }

    async fn vote(&self, r: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        encode(&self.raft.vote(decode(r)?).await)
    }

    async fn install_snapshot(
        &self,
        r: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        encode(&self.raft.install_snapshot(decode(r)?).await)
    }

    async fn peer_status(
        &self,
        _r: Request<PeerStatusRequest>,
    ) -> Result<Response<PeerStatusResponse>, Status> {
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(PeerStatusResponse {
            node_id: self.node_id,
            initialized,
        }))
    }

    async fn campaign(
        &self,
        _r: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        tracing::info!("asked to campaign (leader hand-off)");
        self.raft
            .trigger()
            .elect()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(CampaignResponse {}))
    }
}
