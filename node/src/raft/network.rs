//! openraft's network: per target, the peer stream (`wire`) on a connection of its own, or
//! the gRPC peer transport (one lazily connected tonic channel) for a peer that does not
//! speak the stream (an earlier release). Transport failures become `Unreachable`, so
//! openraft backs off instead of spinning on a dead peer, except a call that only ran past
//! its deadline, which is retried at once; errors the peer's Raft returned come back as
//! `RemoteError`.
//!
//! openraft drops a call that outlives its deadline (an append gets one heartbeat
//! interval), so a call may stop anywhere. The stream's connection is therefore opened by a
//! task of its own (a cancelled call does not abort a TLS handshake), and a connection whose
//! request was sent but whose reply was never read is closed, not reused.

use super::wire::{self, Kind, PeerIo};
use super::{codec, NodeId, NodeInfo, TypeConfig};
use crate::metrics::{Metrics, PeerCallLabels, PeerCallOutcome, PeerLabels, PeerTransport};
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
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

/// How long to wait for a TCP connection to a peer.
pub const PEER_CONNECT_TIMEOUT_MS: u64 = 500;
/// How long a peer has, once connected, to finish TLS and answer the stream's greeting.
pub const STREAM_HELLO_TIMEOUT_MS: u64 = 2_000;
/// How long a peer that does not speak the stream (it answered the greeting in another
/// protocol, or refused a stream request) is called over gRPC before the stream is tried
/// again (it may have been upgraded meanwhile).
pub const STREAM_RETRY_MS: u64 = 30_000;

/// Dials peers: plain text, or mutual TLS when the node has TLS material.
#[derive(Clone, Default)]
pub struct NetworkFactory {
    pub tls: Option<Arc<Tls>>,
    /// Where calls and stream connections are counted; `None` counts nothing.
    pub metrics: Option<Arc<Metrics>>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerClient {
        PeerClient::new(target, node, self.tls.as_deref(), self.metrics.clone())
    }
}

pub struct PeerClient {
    target: NodeId,
    peer_addr: String,
    connector: Option<tokio_rustls::TlsConnector>,
    stream: Stream,
    /// `None` when the peer address does not parse; every call then reports it.
    client: Result<RaftServiceClient<Channel>, String>,
    /// How gRPC requests to this peer are encoded: JSON until its replies say it reads
    /// binary. The stream always sends binary (every node that speaks it reads binary).
    format: codec::Format,
    metrics: Option<Arc<Metrics>>,
}

/// Where the peer stream to one target stands.
enum Stream {
    /// No connection; the next call opens one.
    Closed,
    /// Being opened by its own task.
    Opening(JoinHandle<Result<Box<dyn PeerIo>, OpenError>>),
    Open(OpenStream),
    /// The peer does not speak the stream (see `STREAM_RETRY_MS`): gRPC until this instant.
    Grpc {
        until: Instant,
    },
}

struct OpenStream {
    io: BufReader<Box<dyn PeerIo>>,
    /// A request went out and its reply has not been read: set before the write, cleared
    /// after the read. Still set at the next call means that call was cancelled midway.
    awaiting_reply: bool,
    /// An exchange has completed on this connection; a failure on a used connection (the
    /// peer restarted since) is retried once on a new one.
    used: bool,
}

#[derive(Debug)]
enum OpenError {
    /// No connection, or TLS refused: the peer is down or misconfigured.
    Unreachable(String),
    /// Connected, but the peer answered the greeting with other bytes or closed: an
    /// earlier release.
    NotSpoken(String),
}

/// How a call over the stream failed.
enum StreamFailure {
    /// Use gRPC for this call (and for `STREAM_RETRY_MS`).
    UseGrpc,
    Unreachable(String),
    /// Past the call's deadline.
    Slow(String),
}

/// Connects to `addr`, completes TLS when `connector` is given, and exchanges the greeting.
async fn open_stream(
    addr: String,
    connector: Option<tokio_rustls::TlsConnector>,
) -> Result<Box<dyn PeerIo>, OpenError> {
    let tcp = tokio::time::timeout(
        Duration::from_millis(PEER_CONNECT_TIMEOUT_MS),
        tokio::net::TcpStream::connect(&addr),
    )
    .await
    .map_err(|_| OpenError::Unreachable(format!("connect to {addr}: timed out")))?
    .map_err(|e| OpenError::Unreachable(format!("connect to {addr}: {e}")))?;
    tcp.set_nodelay(true)
        .map_err(|e| OpenError::Unreachable(format!("{addr}: set nodelay: {e}")))?;
    let hello = async {
        let mut io: Box<dyn PeerIo> = match connector {
            Some(c) => {
                let name = tokio_rustls::rustls::pki_types::ServerName::try_from(
                    host_of(&addr).to_string(),
                )
                .map_err(|e| OpenError::Unreachable(format!("{addr}: TLS name: {e}")))?;
                Box::new(
                    c.connect(name, tcp)
                        .await
                        .map_err(|e| OpenError::Unreachable(format!("{addr}: TLS: {e}")))?,
                )
            }
            None => Box::new(tcp),
        };
        let greet = async {
            io.write_all(&wire::MAGIC).await?;
            io.flush().await?;
            let mut answer = [0u8; wire::MAGIC.len()];
            io.read_exact(&mut answer).await?;
            Ok::<_, std::io::Error>(answer)
        };
        match greet.await {
            Ok(answer) if answer == wire::MAGIC => Ok(io),
            Ok(_) => Err(OpenError::NotSpoken(format!(
                "{addr}: answered another protocol"
            ))),
            Err(e) => Err(OpenError::NotSpoken(format!("{addr}: greeting: {e}"))),
        }
    };
    // Silence is not an answer: an earlier release answers at once (its HTTP/2 server sends
    // its settings, or closes on the greeting), so a peer that says nothing in time is
    // stalled (paused, overloaded) and is tried again, not taken for an earlier release.
    // Taking it for one sent gRPC requests into a frozen peer's socket, to be acted on when
    // it woke (seen in `tests/cluster.rs`).
    tokio::time::timeout(Duration::from_millis(STREAM_HELLO_TIMEOUT_MS), hello)
        .await
        .map_err(|_| {
            OpenError::Unreachable(format!(
                "{addr}: no greeting within {STREAM_HELLO_TIMEOUT_MS} ms (stalled?)"
            ))
        })?
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

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Msg(String);

impl PeerClient {
    fn new(
        target: NodeId,
        node: &NodeInfo,
        tls: Option<&Tls>,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        let client = peer_channel(&node.peer_addr, tls)
            .map(|ch| RaftServiceClient::new(ch).max_decoding_message_size(64 * 1024 * 1024));
        PeerClient {
            target,
            peer_addr: node.peer_addr.clone(),
            connector: tls.map(|t| t.peer_connector()),
            stream: Stream::Closed,
            client,
            format: codec::Format::Json,
            metrics,
        }
    }

    /// The peer did not speak the stream lately: call it over gRPC for now.
    fn on_grpc(&self) -> bool {
        matches!(self.stream, Stream::Grpc { until } if Instant::now() < until)
    }

    /// Calls this peer over gRPC for `STREAM_RETRY_MS`, then tries the stream again.
    fn use_grpc_for_a_while(&mut self) {
        self.stream = Stream::Grpc {
            until: Instant::now() + Duration::from_millis(STREAM_RETRY_MS),
        };
    }

    /// One request and its reply over the peer stream, opening the connection if needed.
    /// `Ok` is the reply's payload.
    async fn call_stream(
        &mut self,
        rpc: Kind,
        data: &[u8],
        deadline: Duration,
    ) -> Result<Vec<u8>, StreamFailure> {
        // Two rounds at most: a used connection that fails is replaced once.
        for _round in 0..2 {
            if self.on_grpc() {
                return Err(StreamFailure::UseGrpc);
            }
            match &mut self.stream {
                // `Grpc` here: its pause is over, so the stream is tried again.
                Stream::Grpc { .. } | Stream::Closed => {
                    let open = open_stream(self.peer_addr.clone(), self.connector.clone());
                    self.stream = Stream::Opening(tokio::spawn(open));
                }
                Stream::Open(s) if s.awaiting_reply => {
                    // The call that sent on it was cancelled: its reply may still come.
                    self.stream = Stream::Closed;
                    continue;
                }
                Stream::Open(_) | Stream::Opening(_) => {}
            }
            if let Stream::Opening(task) = &mut self.stream {
                // Awaiting a handle by reference: a cancelled call leaves it to the next.
                let opened = task.await;
                match opened {
                    Ok(Ok(io)) => {
                        if let Some(m) = &self.metrics {
                            let peer = PeerLabels { peer: self.target };
                            m.peer_stream_connects.get_or_create(&peer).inc();
                        }
                        self.stream = Stream::Open(OpenStream {
                            io: BufReader::new(io),
                            awaiting_reply: false,
                            used: false,
                        })
                    }
                    Ok(Err(OpenError::NotSpoken(why))) => {
                        tracing::info!(
                            peer = self.target,
                            %why,
                            "peer does not speak the peer stream; using gRPC"
                        );
                        self.use_grpc_for_a_while();
                        return Err(StreamFailure::UseGrpc);
                    }
                    Ok(Err(OpenError::Unreachable(why))) => {
                        self.stream = Stream::Closed;
                        return Err(StreamFailure::Unreachable(why));
                    }
                    Err(e) => {
                        self.stream = Stream::Closed;
                        return Err(StreamFailure::Unreachable(format!("opening: {e}")));
                    }
                }
            }
            let Stream::Open(s) = &mut self.stream else {
                unreachable!("the stream was opened above");
            };
            s.awaiting_reply = true;
            let exchange = async {
                wire::write_frame(&mut s.io, rpc as u8, data).await?;
                wire::read_frame(&mut s.io).await
            };
            let result = tokio::time::timeout(deadline, exchange).await;
            let used = s.used;
            match result {
                Ok(Ok((wire::REPLY_OK, payload))) => {
                    s.awaiting_reply = false;
                    s.used = true;
                    return Ok(payload);
                }
                Ok(Ok((wire::REPLY_REFUSED, reason))) => {
                    s.awaiting_reply = false;
                    tracing::warn!(
                        peer = self.target,
                        reason = %String::from_utf8_lossy(&reason),
                        "peer refused a stream request; using gRPC"
                    );
                    self.use_grpc_for_a_while();
                    return Err(StreamFailure::UseGrpc);
                }
                Ok(Ok((tag, _))) => {
                    self.stream = Stream::Closed;
                    return Err(StreamFailure::Unreachable(format!(
                        "unknown reply tag {tag}"
                    )));
                }
                Ok(Err(e)) => {
                    self.stream = Stream::Closed;
                    if used {
                        tracing::debug!(
                            peer = self.target,
                            error = %e,
                            "peer stream broke; reconnecting"
                        );
                        continue;
                    }
                    return Err(StreamFailure::Unreachable(e.to_string()));
                }
                Err(_) => {
                    self.stream = Stream::Closed;
                    return Err(StreamFailure::Slow(format!(
                        "no reply within {} ms",
                        deadline.as_millis()
                    )));
                }
            }
        }
        Err(StreamFailure::Unreachable(
            "the connection broke twice in one call".into(),
        ))
    }

    /// One RPC, counted in `peer_calls` by the transport it went over and what came back.
    async fn call<Req, Resp, E>(
        &mut self,
        rpc: Kind,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let (transport, result) = match self.try_stream(rpc, req, option).await {
            Some(result) => (PeerTransport::Stream, result),
            None => (PeerTransport::Grpc, self.call_grpc(rpc, req, option).await),
        };
        if let Some(m) = &self.metrics {
            let outcome = match &result {
                Ok(_) | Err(RPCError::RemoteError(_)) => PeerCallOutcome::Answered,
                Err(RPCError::Unreachable(_)) => PeerCallOutcome::Unreachable,
                Err(_) => PeerCallOutcome::Failed,
            };
            let labels = PeerCallLabels {
                peer: self.target,
                transport,
                outcome,
            };
            m.peer_calls.get_or_create(&labels).inc();
        }
        result
    }

    /// The RPC over the peer stream; `None` when this peer is to be called over gRPC.
    // The error type is openraft's, fixed by `RaftNetwork` (see `decode_reply`).
    #[allow(clippy::type_complexity)]
    async fn try_stream<Req, Resp, E>(
        &mut self,
        rpc: Kind,
        req: &Req,
        option: &RPCOption,
    ) -> Option<Result<Resp, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        if self.on_grpc() {
            return None;
        }
        let data = match codec::to_bytes(req, codec::Format::Binary) {
            Ok(data) => data,
            Err(e) => return Some(Err(RPCError::Network(NetworkError::new(&Msg(e))))),
        };
        let target = self.target;
        let msg = |why: String| Msg(format!("peer {target}: {why}"));
        match self.call_stream(rpc, &data, option.hard_ttl()).await {
            Ok(payload) => Some(self.decode_reply(&payload)),
            Err(StreamFailure::UseGrpc) => None,
            Err(StreamFailure::Unreachable(why)) => {
                Some(Err(RPCError::Unreachable(Unreachable::new(&msg(why)))))
            }
            // As a gRPC deadline (`call_grpc`): retried at once, not backed off.
            Err(StreamFailure::Slow(why)) => {
                Some(Err(RPCError::Network(NetworkError::new(&msg(why)))))
            }
        }
    }

    /// The RPC over gRPC, for a peer without the peer stream.
    // The error type is openraft's, fixed by `RaftNetwork` (see `decode_reply`).
    #[allow(clippy::result_large_err)]
    async fn call_grpc<Req, Resp, E>(
        &mut self,
        rpc: Kind,
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
            Kind::Append => client.append_entries(request).await,
            Kind::Vote => client.vote(request).await,
            Kind::Snapshot => client.install_snapshot(request).await,
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
        self.decode_reply(&reply.into_inner().data)
    }

    // The error type is openraft's, fixed by `RaftNetwork`; boxing it here would only move
    // the copy to the caller.
    #[allow(clippy::result_large_err)]
    fn decode_reply<Resp, E>(
        &self,
        payload: &[u8],
    ) -> Result<Resp, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let result: Result<Resp, RaftError<NodeId, E>> =
            codec::from_bytes(payload).map_err(|e| {
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
        self.call(Kind::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(Kind::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.call(Kind::Vote, &rpc, &option).await
    }
}

#[cfg(test)]
mod tests {
    //! The stream client against fake peers on loopback (real TCP): each fake speaks the
    //! wire protocol and answers a vote with the vote it was sent, so a reply that went to
    //! the wrong call is seen.
    use super::*;
    use openraft::Vote;
    use tokio::net::TcpListener;

    /// How a fake peer behaves.
    #[derive(Clone, Copy)]
    struct Fake {
        /// Answer the greeting with other bytes and close (an earlier release).
        foreign: bool,
        /// Read the greeting and say nothing (a frozen peer).
        silent: bool,
        /// Hold the first reply this long.
        first_reply_delay_ms: u64,
        /// Close each connection after this many replies.
        replies_per_connection: usize,
    }

    const PLAIN: Fake = Fake {
        foreign: false,
        silent: false,
        first_reply_delay_ms: 0,
        replies_per_connection: usize::MAX,
    };

    async fn fake_peer(fake: Fake) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let mut first = true;
            // Bounded: the tests open a handful of connections.
            for _ in 0..16 {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let mut hello = [0u8; 8];
                if conn.read_exact(&mut hello).await.is_err() {
                    continue;
                }
                if fake.foreign {
                    let _ = conn.write_all(b"\x00\x00\x12\x04\x00\x00\x00\x00").await;
                    continue;
                }
                if fake.silent {
                    // Keep the connection open and unanswered until the test ends.
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        drop(conn);
                    });
                    continue;
                }
                conn.write_all(&wire::MAGIC).await.unwrap();
                for _ in 0..fake.replies_per_connection {
                    let Ok((_, payload)) = wire::read_frame(&mut conn).await else {
                        break;
                    };
                    let req: VoteRequest<NodeId> = codec::from_bytes(&payload).unwrap();
                    if first {
                        first = false;
                        tokio::time::sleep(Duration::from_millis(fake.first_reply_delay_ms)).await;
                    }
                    let reply: Result<VoteResponse<NodeId>, RaftError<NodeId>> =
                        Ok(VoteResponse::new(req.vote, None, true));
                    let bytes = codec::to_bytes(&reply, codec::Format::Json).unwrap();
                    if wire::write_frame(&mut conn, wire::REPLY_OK, &bytes)
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        });
        addr
    }

    fn client(addr: &str) -> PeerClient {
        let node = NodeInfo {
            peer_addr: addr.to_string(),
            ..Default::default()
        };
        PeerClient::new(2, &node, None, Some(Arc::new(Metrics::new())))
    }

    /// Calls `c` counted over `transport` with `outcome`.
    fn counted(c: &PeerClient, transport: PeerTransport, outcome: PeerCallOutcome) -> u64 {
        let labels = PeerCallLabels {
            peer: 2,
            transport,
            outcome,
        };
        c.metrics
            .as_ref()
            .unwrap()
            .peer_calls
            .get_or_create(&labels)
            .get()
    }

    /// Calls `c` counted over `transport`, whatever came of them.
    fn counted_over(c: &PeerClient, transport: PeerTransport) -> u64 {
        use PeerCallOutcome::*;
        [Answered, Unreachable, Failed]
            .into_iter()
            .map(|o| counted(c, transport, o))
            .sum()
    }

    /// Calls `c` counted as answered over the stream.
    fn answered(c: &PeerClient) -> u64 {
        counted(c, PeerTransport::Stream, PeerCallOutcome::Answered)
    }

    fn connects(c: &PeerClient) -> u64 {
        let peer = PeerLabels { peer: 2 };
        let m = c.metrics.as_ref().unwrap();
        m.peer_stream_connects.get_or_create(&peer).get()
    }

    async fn vote(c: &mut PeerClient, term: u64) -> Result<u64, String> {
        let req = VoteRequest::new(Vote::new(term, 1), None);
        c.vote(req, RPCOption::new(Duration::from_secs(5)))
            .await
            .map(|r| r.vote.leader_id().term)
            .map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn a_cancelled_call_does_not_hand_its_reply_to_the_next() {
        let addr = fake_peer(Fake {
            first_reply_delay_ms: 300,
            ..PLAIN
        })
        .await;
        let mut c = client(&addr);
        // openraft drops a call at its deadline; so does this timeout.
        let cancelled = tokio::time::timeout(Duration::from_millis(100), vote(&mut c, 1)).await;
        assert!(cancelled.is_err(), "the first reply was held 300 ms");
        assert_eq!(vote(&mut c, 2).await, Ok(2));
        assert_eq!(vote(&mut c, 3).await, Ok(3));
        // The cancelled call is not counted; its connection was replaced.
        assert_eq!(answered(&c), 2);
        assert_eq!(connects(&c), 2);
    }

    #[tokio::test]
    async fn a_connection_the_peer_closed_is_replaced_within_the_call() {
        let addr = fake_peer(Fake {
            replies_per_connection: 1,
            ..PLAIN
        })
        .await;
        let mut c = client(&addr);
        for term in 1..=3 {
            assert_eq!(vote(&mut c, term).await, Ok(term));
        }
        assert_eq!(answered(&c), 3);
        assert_eq!(connects(&c), 3);
    }

    #[tokio::test]
    async fn a_peer_that_answers_the_greeting_in_another_protocol_is_called_over_grpc() {
        let addr = fake_peer(Fake {
            foreign: true,
            ..PLAIN
        })
        .await;
        let mut c = client(&addr);
        // The fake speaks no gRPC either, so the call fails, but by way of gRPC.
        assert!(vote(&mut c, 1).await.is_err());
        assert!(
            matches!(c.stream, Stream::Grpc { until } if until > Instant::now()),
            "the client should have gone over to gRPC"
        );
        assert_eq!(counted_over(&c, PeerTransport::Grpc), 1);
        assert_eq!(counted_over(&c, PeerTransport::Stream), 0);
        assert_eq!(connects(&c), 0);
    }

    /// A vote with a 5 s deadline that must fail as `Unreachable`.
    async fn vote_unreachable(c: &mut PeerClient) {
        let req = VoteRequest::new(Vote::new(1, 1), None);
        let err = c
            .vote(req, RPCOption::new(Duration::from_secs(5)))
            .await
            .unwrap_err();
        assert!(matches!(err, RPCError::Unreachable(_)), "{err}");
    }

    #[tokio::test]
    async fn a_peer_that_says_nothing_is_unreachable_not_an_earlier_release() {
        let addr = fake_peer(Fake {
            silent: true,
            ..PLAIN
        })
        .await;
        let mut c = client(&addr);
        vote_unreachable(&mut c).await;
        assert!(
            matches!(c.stream, Stream::Closed),
            "a silent peer must not send the client over to gRPC"
        );
        assert_eq!(counted_over(&c, PeerTransport::Grpc), 0);
        let unreachable = PeerCallOutcome::Unreachable;
        assert_eq!(counted(&c, PeerTransport::Stream, unreachable), 1);
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_and_tried_again_next_call() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let mut c = client(&addr);
        vote_unreachable(&mut c).await;
        assert!(matches!(c.stream, Stream::Closed));
        let unreachable = PeerCallOutcome::Unreachable;
        assert_eq!(counted(&c, PeerTransport::Stream, unreachable), 1);
    }
}
