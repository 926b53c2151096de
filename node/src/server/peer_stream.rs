//! The peer port's listener: accepts each connection, completes mutual TLS when the node
//! has TLS material, and reads the first 8 bytes. `wire::MAGIC` means the peer stream, which
//! this module serves; anything else is handed, with those bytes put back, to the gRPC
//! server (`peer`): earlier releases, the start-up `PeerStatus` probe and the leader
//! hand-off's `Campaign` use it.
//!
//! Bounds: at most `MAX_PEER_STREAMS` connections are being told apart or served as streams
//! at once (a further connection is closed at accept); the first bytes must come within
//! `SNIFF_TIMEOUT_MS`; a stream that sends no request for `STREAM_IDLE_MS` is closed.

use crate::raft::wire::{self, Kind, PeerIo};
use crate::raft::Raft;
use crate::tls::Tls;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Most peer connections being told apart or served as streams at once. A cluster of seven
/// opens two per peer (replication, a vote round); the rest is headroom.
pub const MAX_PEER_STREAMS: usize = 64;
/// How long a new connection has to finish TLS and send its first 8 bytes.
pub const SNIFF_TIMEOUT_MS: u64 = 5_000;
/// A peer stream idle this long is closed; a live leader sends a heartbeat far more often.
pub const STREAM_IDLE_MS: u64 = 60_000;
/// gRPC connections waiting for the gRPC server to take them.
const GRPC_QUEUE: usize = 16;

/// A gRPC connection whose first bytes were read to tell it apart: they are read again
/// first, then the connection itself.
pub struct Sniffed {
    io: Box<dyn PeerIo>,
    prefix: [u8; wire::MAGIC.len()],
    prefix_pos: usize,
    info: TcpConnectInfo,
}

impl AsyncRead for Sniffed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.prefix_pos < this.prefix.len() {
            let rest = &this.prefix[this.prefix_pos..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.prefix_pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Sniffed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl Connected for Sniffed {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.info.clone()
    }
}

/// Starts accepting on `listener`. Returns the connections for the gRPC server; the stream
/// ends once `stop` turns true.
pub fn start(
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    raft: Raft,
    stop: watch::Receiver<bool>,
) -> impl tokio_stream::Stream<Item = io::Result<Sniffed>> {
    let (grpc_tx, grpc_rx) = mpsc::channel(GRPC_QUEUE);
    tokio::spawn(accept_loop(listener, tls, raft, grpc_tx, stop));
    tokio_stream::wrappers::ReceiverStream::new(grpc_rx)
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    raft: Raft,
    grpc_tx: mpsc::Sender<io::Result<Sniffed>>,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(MAX_PEER_STREAMS));
    let acceptor = tls.as_ref().map(|t| t.peer_acceptor());
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (tcp, remote) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "peer accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%remote, limit = MAX_PEER_STREAMS, "too many peer connections; closing");
            continue;
        };
        let (acceptor, raft, grpc_tx, stop) = (
            acceptor.clone(),
            raft.clone(),
            grpc_tx.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let sniffed = tokio::time::timeout(
                Duration::from_millis(SNIFF_TIMEOUT_MS),
                sniff(tcp, acceptor),
            )
            .await;
            match sniffed {
                Ok(Ok(Protocol::Stream(io))) => serve_stream(io, raft, stop).await,
                Ok(Ok(Protocol::Grpc(conn))) => {
                    drop(permit);
                    let _ = grpc_tx.send(Ok(conn)).await;
                    return;
                }
                Ok(Err(e)) => tracing::debug!(%remote, error = %e, "peer connection dropped"),
                Err(_) => tracing::debug!(%remote, "peer connection sent nothing in time"),
            }
            drop(permit);
        });
    }
}

enum Protocol {
    Stream(Box<dyn PeerIo>),
    Grpc(Sniffed),
}

async fn sniff(
    tcp: TcpStream,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
) -> io::Result<Protocol> {
    tcp.set_nodelay(true)?;
    let info = tcp.connect_info();
    let mut io: Box<dyn PeerIo> = match acceptor {
        Some(a) => Box::new(a.accept(tcp).await?),
        None => Box::new(tcp),
    };
    let mut prefix = [0u8; wire::MAGIC.len()];
    io.read_exact(&mut prefix).await?;
    if prefix == wire::MAGIC {
        io.write_all(&wire::MAGIC).await?;
        io.flush().await?;
        return Ok(Protocol::Stream(io));
    }
    Ok(Protocol::Grpc(Sniffed {
        io,
        prefix,
        prefix_pos: 0,
        info,
    }))
}

/// Serves one peer stream: a request, its reply, the next request. Ends on the peer's
/// close, a broken frame, idleness or the node's stop.
async fn serve_stream(io: Box<dyn PeerIo>, raft: Raft, mut stop: watch::Receiver<bool>) {
    let mut io = BufReader::new(io);
    loop {
        let idle = Duration::from_millis(STREAM_IDLE_MS);
        let frame = tokio::select! {
            f = tokio::time::timeout(idle, wire::read_frame(&mut io)) => f,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (tag, payload) = match frame {
            Ok(Ok(f)) => f,
            // A bad frame is worth a warning; a peer that went away (it closed, restarted or
            // was killed) is routine, and each replication retry would repeat it.
            Ok(Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
                tracing::warn!(error = %e, "peer stream closed: bad frame");
                return;
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "peer stream closed by the peer");
                return;
            }
            Err(_) => {
                tracing::debug!("peer stream idle; closing");
                return;
            }
        };
        let Some(kind) = Kind::from_tag(tag) else {
            tracing::warn!(tag, "peer stream closed: unknown request kind");
            return;
        };
        let (status, body) = match super::peer::answer(&raft, kind, &payload).await {
            Ok(bytes) => (wire::REPLY_OK, bytes),
            Err(e) => (wire::REPLY_REFUSED, e.reason().as_bytes().to_vec()),
        };
        if let Err(e) = wire::write_frame(&mut io, status, &body).await {
            tracing::debug!(error = %e, "peer stream closed while replying");
            return;
        }
    }
}
