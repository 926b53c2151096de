//! The gRPC Raft transport on the peer port. Nodes of this release replicate over the peer
//! stream (`peer_stream`) and come here only for a peer without it. `answer`, shared by
//! both transports, decodes an openraft message, hands it to the local Raft and encodes the
//! result. Undecodable input is INVALID_ARGUMENT here (a refusal frame on the stream), never
//! a panic. Requests are read in either codec format; replies say so
//! (`codec::READS_BINARY_HEADER`).

use crate::raft::wire::Kind;
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

/// Why a peer's request got no answer from the local Raft.
#[derive(Debug)]
pub enum Unanswered {
    /// The request did not decode: the peer sent something this node cannot read.
    Undecodable(String),
    /// Raft's result did not encode (a bug, not the peer's doing).
    Unencodable(String),
}

impl Unanswered {
    pub fn reason(&self) -> &str {
        match self {
            Unanswered::Undecodable(r) | Unanswered::Unencodable(r) => r,
        }
    }
}

/// Decodes a request of `kind` (either codec format), hands it to the local Raft and
/// encodes what it returned as JSON, which every release reads (replies are small). Both
/// transports answer through here: this gRPC service and the peer stream.
pub async fn answer(raft: &Raft, kind: Kind, payload: &[u8]) -> Result<Vec<u8>, Unanswered> {
    fn encode<T: serde::Serialize>(result: &T) -> Result<Vec<u8>, Unanswered> {
        codec::to_bytes(result, codec::Format::Json).map_err(Unanswered::Unencodable)
    }
    let undecodable = Unanswered::Undecodable;
    match kind {
        Kind::Append => {
            let req = codec::from_bytes(payload).map_err(undecodable)?;
            encode(&raft.append_entries(req).await)
        }
        Kind::Vote => {
            let req = codec::from_bytes(payload).map_err(undecodable)?;
            encode(&raft.vote(req).await)
        }
        Kind::Snapshot => {
            let req = codec::from_bytes(payload).map_err(undecodable)?;
            encode(&raft.install_snapshot(req).await)
        }
    }
}

impl PeerApi {
    /// A gRPC reply: the answer, and metadata telling the caller this node reads binary.
    async fn reply(
        &self,
        kind: Kind,
        r: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let data = answer(&self.raft, kind, &r.into_inner().data)
            .await
            .map_err(|e| match e {
                Unanswered::Undecodable(m) => Status::invalid_argument(m),
                Unanswered::Unencodable(m) => Status::internal(m),
            })?;
        let mut response = Response::new(RaftPayload { data });
        response.metadata_mut().insert(
            codec::READS_BINARY_HEADER,
            tonic::metadata::MetadataValue::from_static(codec::READS_BINARY_VALUE),
        );
        Ok(response)
    }
}

#[tonic::async_trait]
impl RaftService for PeerApi {
    async fn append_entries(
        &self,
        r: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.reply(Kind::Append, r).await
    }

    async fn vote(&self, r: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.reply(Kind::Vote, r).await
    }

    async fn install_snapshot(
        &self,
        r: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.reply(Kind::Snapshot, r).await
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
