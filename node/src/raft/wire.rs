//! The peer stream: openraft's three RPCs as length-prefixed frames on one TCP (or mutual
//! TLS) connection per caller, on the same peer port as the gRPC transport.
//!
//! Why: a unary gRPC call costs a trip through tower's buffer task, HTTP/2 stream set-up,
//! HPACK headers and the h2 connection task on both sides. Peer gRPC was about 30 % of each
//! node's CPU at the 64-client peak (perf, benches/RESULTS.md). openraft sends one request
//! at a time per target and waits for its reply, so a plain request/reply stream on a
//! dedicated connection needs no multiplexing: the caller writes a frame and reads one.
//!
//! Protocol:
//! - The dialer opens with `MAGIC`; a node that speaks this protocol answers `MAGIC`. A
//!   node of an earlier release answers with its HTTP/2 settings frame (or closes on the
//!   bytes, a broken HTTP/2 preface), and the dialer goes back to gRPC for that peer
//!   (`network`), so a rolling upgrade works. Silence is not an answer: the dialer takes
//!   it for a stalled peer and tries again.
//! - Request: `[u32 LE: 1 + payload length][u8 kind][payload]`; the payload is the
//!   openraft request in the codec's binary format.
//! - Reply: `[u32 LE: 1 + payload length][u8 status][payload]`: `REPLY_OK` with the
//!   JSON-encoded `Result` openraft's handler returned, or `REPLY_REFUSED` with the reason
//!   a request could not be decoded (UTF-8).
//! - Frames are bounded by `MAX_FRAME_BYTES`; a larger length, an unknown kind or a short
//!   read closes the connection. Nothing a peer sends can panic the node.

use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// First bytes of a peer-stream connection, in both directions. An HTTP/2 connection
/// begins `PRI * HT`, so the two are told apart by the first 8 bytes.
pub const MAGIC: [u8; 8] = *b"LLRAFT01";

/// Largest frame payload either side accepts: the gRPC transport's message limit.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// Anything a peer connection runs over: TCP, or TLS on TCP.
pub trait PeerIo: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static> PeerIo for T {}

/// Bytes before a frame's payload: length and tag.
const HEADER_BYTES: usize = 5;

/// Which openraft RPC a request frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Append = 1,
    Vote = 2,
    Snapshot = 3,
}

impl Kind {
    pub fn from_tag(tag: u8) -> Option<Kind> {
        match tag {
            1 => Some(Kind::Append),
            2 => Some(Kind::Vote),
            3 => Some(Kind::Snapshot),
            _ => None,
        }
    }
}

/// Reply tag: the payload is the handler's result.
pub const REPLY_OK: u8 = 0;
/// Reply tag: the request was not decodable; the payload says why.
pub const REPLY_REFUSED: u8 = 1;

/// Writes one frame with a single write call (header and payload in one buffer, so one
/// TCP segment with nodelay on, not two).
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    tag: u8,
    payload: &[u8],
) -> io::Result<()> {
    if payload.len() > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "frame of {} bytes exceeds the {MAX_FRAME_BYTES}-byte limit",
                payload.len()
            ),
        ));
    }
    let mut buf = Vec::with_capacity(HEADER_BYTES + payload.len());
    // The limit above keeps the length well inside u32.
    buf.extend_from_slice(&((payload.len() + 1) as u32).to_le_bytes());
    buf.push(tag);
    buf.extend_from_slice(payload);
    w.write_all(&buf).await?;
    w.flush().await
}

/// Reads one frame: its tag and payload. A length beyond `MAX_FRAME_BYTES` is refused
/// before anything is allocated for it.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<(u8, Vec<u8>)> {
    let mut header = [0u8; HEADER_BYTES];
    r.read_exact(&mut header).await?;
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    if len == 0 || len - 1 > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame length {len} outside 1..={}", MAX_FRAME_BYTES + 1),
        ));
    }
    let mut payload = vec![0u8; len - 1];
    r.read_exact(&mut payload).await?;
    Ok((header[4], payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_back_to_back() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        write_frame(&mut a, Kind::Vote as u8, b"first")
            .await
            .unwrap();
        write_frame(&mut a, REPLY_OK, b"").await.unwrap();
        assert_eq!(
            read_frame(&mut b).await.unwrap(),
            (Kind::Vote as u8, b"first".to_vec())
        );
        assert_eq!(read_frame(&mut b).await.unwrap(), (REPLY_OK, Vec::new()));
    }

    #[tokio::test]
    async fn oversized_and_empty_lengths_are_refused() {
        for len in [0u32, (MAX_FRAME_BYTES + 2) as u32, u32::MAX] {
            let (mut a, mut b) = tokio::io::duplex(64);
            let mut bytes = len.to_le_bytes().to_vec();
            bytes.push(1);
            a.write_all(&bytes).await.unwrap();
            let err = read_frame(&mut b).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "length {len}");
        }
    }

    #[tokio::test]
    async fn a_short_frame_is_an_error_not_a_hang() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let mut bytes = 10u32.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[1, 2, 3]);
        a.write_all(&bytes).await.unwrap();
        drop(a);
        let err = read_frame(&mut b).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn kinds_round_trip_and_unknown_tags_are_none() {
        for k in [Kind::Append, Kind::Vote, Kind::Snapshot] {
            assert_eq!(Kind::from_tag(k as u8), Some(k));
        }
        assert_eq!(Kind::from_tag(0), None);
        assert_eq!(Kind::from_tag(4), None);
    }

    #[test]
    fn magic_differs_from_the_http2_preface() {
        assert_ne!(&MAGIC[..], &b"PRI * HTTP/2.0"[..8]);
    }
}
