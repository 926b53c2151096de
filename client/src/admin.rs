//! A client for the nodes' admin HTTP API: cluster status, membership, snapshot, leader
//! hand-off. HTTP/1.1 with `Connection: close` over tokio TCP: the admin API is small,
//! rarely called, and this keeps a full HTTP client stack out of every service binary.
//! Leader-only calls follow the `leader_admin_addr` a follower names in its 503 answer.
//! With a CA configured it speaks TLS (tokio-rustls) and verifies the node against it.

use crate::ClientError;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

/// Largest admin response read, so a misbehaving endpoint cannot exhaust memory.
const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;
/// Leader hints followed per call.
const MAX_REDIRECTS: usize = 3;

#[derive(Debug, Clone)]
pub struct AdminResponse {
    pub status: u16,
    pub body: String,
}

impl AdminResponse {
    pub fn json(&self) -> Result<Value, ClientError> {
        serde_json::from_str(&self.body).map_err(|e| ClientError::Server {
            code: tonic::Code::Internal,
            message: format!("admin response is not JSON: {e}"),
        })
    }
}

#[derive(Clone)]
pub struct AdminClient {
    pub endpoints: Vec<String>,
    pub token: Option<String>,
    pub timeout_ms: u64,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl AdminClient {
    pub fn new(endpoints: Vec<String>, token: Option<String>) -> Self {
        AdminClient {
            endpoints,
            token,
            timeout_ms: 65_000,
            tls: None,
        }
    }

    /// Speak TLS, trusting the CA in `tls`.
    pub fn with_tls(mut self, tls: &crate::ClientTls) -> Result<Self, ClientError> {
        let bad = |e: String| ClientError::Endpoint(format!("admin TLS: {e}"));
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&tls.ca_pem) {
            roots
                .add(cert.map_err(|e| bad(e.to_string()))?)
                .map_err(|e| bad(e.to_string()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        self.tls = Some(Arc::new(cfg));
        Ok(self)
    }

    /// One HTTP request to one endpoint.
    pub async fn request(
        &self,
        endpoint: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<AdminResponse, ClientError> {
        let unavailable = |e: String| ClientError::Unavailable {
            attempts: 1,
            last: format!("{endpoint}: {e}"),
        };
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {endpoint}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        if let Some(t) = &self.token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(&body);
        let fut = async {
            let tcp = tokio::net::TcpStream::connect(endpoint)
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            let raw = match &self.tls {
                None => exchange(tcp, req.as_bytes()).await,
                Some(cfg) => {
                    let host = endpoint
                        .rsplit_once(':')
                        .map(|(h, _)| h)
                        .unwrap_or(endpoint);
                    let name = ServerName::try_from(
                        host.trim_start_matches('[')
                            .trim_end_matches(']')
                            .to_string(),
                    )
                    .map_err(|e| unavailable(format!("TLS server name: {e}")))?;
                    let stream = tokio_rustls::TlsConnector::from(cfg.clone())
                        .connect(name, tcp)
                        .await
                        .map_err(|e| unavailable(format!("TLS: {e}")))?;
                    exchange(stream, req.as_bytes()).await
                }
            }
            .map_err(|e| unavailable(e.to_string()))?;
            if raw.len() > MAX_RESPONSE_BYTES {
                return Err(unavailable(format!(
                    "response over {MAX_RESPONSE_BYTES} bytes"
                )));
            }
            parse_response(&raw).ok_or_else(|| unavailable("malformed HTTP response".into()))
        };
        tokio::time::timeout(Duration::from_millis(self.timeout_ms), fut)
            .await
            .map_err(|_| unavailable(format!("no answer within {} ms", self.timeout_ms)))?
    }

    /// A request to the first endpoint that answers.
    pub async fn any(&self, method: &str, path: &str) -> Result<AdminResponse, ClientError> {
        let mut last = ClientError::Endpoint(String::new());
        for ep in &self.endpoints {
            match self.request(ep, method, path, None).await {
                Ok(r) => return Ok(r),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// A request that must reach the leader: tries each endpoint, following leader hints.
    pub async fn leader(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<AdminResponse, ClientError> {
        let mut last = ClientError::Endpoint(String::new());
        for ep in &self.endpoints {
            let mut target = ep.clone();
            for _ in 0..=MAX_REDIRECTS {
                let resp = match self.request(&target, method, path, body).await {
                    Ok(r) => r,
                    Err(e) => {
                        last = e;
                        break;
                    }
                };
                let hint = (resp.status == 503)
                    .then(|| resp.json().ok())
                    .flatten()
                    .and_then(|v| v["leader_admin_addr"].as_str().map(str::to_string))
                    .filter(|a| !a.is_empty() && *a != target);
                match hint {
                    Some(next) => target = next,
                    None if resp.status == 503 => {
                        last = ClientError::Unavailable {
                            attempts: 1,
                            last: resp.body.clone(),
                        };
                        break;
                    }
                    None => return Ok(resp),
                }
            }
        }
        Err(last)
    }
}

/// Writes the request and reads the whole response (the server closes the connection).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    req: &[u8],
) -> std::io::Result<Vec<u8>> {
    stream.write_all(req).await?;
    let mut raw = Vec::new();
    stream
        .take(MAX_RESPONSE_BYTES as u64 + 1)
        .read_to_end(&mut raw)
        .await?;
    Ok(raw)
}

fn parse_response(raw: &[u8]) -> Option<AdminResponse> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = lines.any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    let mut body = raw[split + 4..].to_vec();
    if chunked {
        body = dechunk(&body)?;
    }
    Some(AdminResponse {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses_and_rejects_garbage() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
        let r = parse_response(b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!((r.status, r.body.as_str()), (503, "abcde"));
        assert!(parse_response(b"garbage").is_none());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n")
                .is_none()
        );
    }
}
