//! Configuration of `laundry-api`, from environment variables (the way a Kubernetes
//! Deployment sets it) or the equivalent flags. The store connection is TLS unless
//! `LAUNDRY_API_STORE_PLAINTEXT=true` says otherwise, mirroring the node's own rule.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "laundry-api",
    version,
    about = "Stateless REST/JSON front of a Laundry List cluster"
)]
pub struct Config {
    /// Address to serve HTTP on.
    #[arg(long, env = "LAUNDRY_API_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Store nodes' client endpoints (host:port), comma-separated; any subset will do, the
    /// client finds the leader.
    #[arg(
        long,
        env = "LAUNDRY_API_STORE_ENDPOINTS",
        value_delimiter = ',',
        required = true
    )]
    pub store_endpoints: Vec<String>,
    /// CA certificate (PEM) that signed the store nodes' certificates.
    #[arg(long, env = "LAUNDRY_API_STORE_CA")]
    pub store_ca: Option<PathBuf>,
    /// Client certificate and key (PEM) for stores that require mutual TLS.
    #[arg(long, env = "LAUNDRY_API_STORE_CERT", requires = "store_key")]
    pub store_cert: Option<PathBuf>,
    #[arg(long, env = "LAUNDRY_API_STORE_KEY", requires = "store_cert")]
    pub store_key: Option<PathBuf>,
    /// Talk to the store without TLS (development only).
    #[arg(long, env = "LAUNDRY_API_STORE_PLAINTEXT", default_value_t = false)]
    pub store_plaintext: bool,
    /// Deadline of one attempt against a store node.
    #[arg(long, env = "LAUNDRY_API_ATTEMPT_TIMEOUT_MS", default_value_t = 2_000)]
    pub attempt_timeout_ms: u64,
    /// Deadline of one API request's store call, retries (leader changes) included.
    #[arg(long, env = "LAUNDRY_API_REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_timeout_ms: u64,
    /// How long /readyz waits for a store leader.
    #[arg(long, env = "LAUNDRY_API_READY_TIMEOUT_MS", default_value_t = 2_000)]
    pub ready_timeout_ms: u64,
    /// Largest request body accepted (413 above).
    #[arg(long, env = "LAUNDRY_API_MAX_BODY_BYTES", default_value_t = 256 * 1024)]
    pub max_body_bytes: usize,
    /// Most server-sent event streams open at once (503 above).
    #[arg(long, env = "LAUNDRY_API_MAX_EVENT_STREAMS", default_value_t = 1_024)]
    pub max_event_streams: usize,
    /// Keep-alive comment interval on event streams, so proxies keep them open.
    #[arg(long, env = "LAUNDRY_API_SSE_KEEPALIVE_MS", default_value_t = 15_000)]
    pub sse_keepalive_ms: u64,
}

/// Why a configuration cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no TLS to the store configured: set LAUNDRY_API_STORE_CA (or --store-ca), or LAUNDRY_API_STORE_PLAINTEXT=true for development")]
    NoTls,
    #[error("LAUNDRY_API_STORE_CA and LAUNDRY_API_STORE_PLAINTEXT both set: choose one")]
    TlsAndPlaintext,
    #[error("{what} must be {rule} (got {value})")]
    OutOfRange {
        what: &'static str,
        rule: &'static str,
        value: u64,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("generating the OpenAPI document: {0}")]
    OpenApi(#[from] serde_json::Error),
    #[error("store client: {0}")]
    Client(#[from] laundry_client::ClientError),
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        match (&self.store_ca, self.store_plaintext) {
            (None, false) => return Err(ConfigError::NoTls),
            (Some(_), true) => return Err(ConfigError::TlsAndPlaintext),
            _ => {}
        }
        let range = |what, value: u64, lo: u64, hi: u64, rule| {
            if (lo..=hi).contains(&value) {
                Ok(())
            } else {
                Err(ConfigError::OutOfRange { what, rule, value })
            }
        };
        range(
            "attempt timeout",
            self.attempt_timeout_ms,
            10,
            600_000,
            "10..=600000 ms",
        )?;
        range(
            "request timeout",
            self.request_timeout_ms,
            10,
            600_000,
            "10..=600000 ms",
        )?;
        range(
            "ready timeout",
            self.ready_timeout_ms,
            10,
            600_000,
            "10..=600000 ms",
        )?;
        range(
            "max body",
            self.max_body_bytes as u64,
            1_024,
            64 << 20,
            "1 KiB..=64 MiB",
        )?;
        range(
            "max event streams",
            self.max_event_streams as u64,
            1,
            1 << 20,
            "1..=1048576",
        )?;
        range(
            "SSE keep-alive",
            self.sse_keepalive_ms,
            100,
            3_600_000,
            "100..=3600000 ms",
        )?;
        Ok(())
    }

    /// The store TLS settings: `None` for plain text.
    pub fn store_tls(&self) -> Result<Option<laundry_client::ClientTls>, ConfigError> {
        let Some(ca) = &self.store_ca else {
            return Ok(None);
        };
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|source| ConfigError::Read {
                path: p.clone(),
                source,
            })
        };
        let identity = match (&self.store_cert, &self.store_key) {
            (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
            _ => None,
        };
        Ok(Some(laundry_client::ClientTls {
            ca_pem: read(ca)?,
            identity,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("laundry-api").chain(args.iter().copied()))
    }

    #[test]
    fn tls_or_explicit_plaintext_and_bounded_values() {
        let c = parse(&["--store-endpoints", "a:1,b:2"]).unwrap();
        assert_eq!(c.store_endpoints, vec!["a:1", "b:2"]);
        assert!(matches!(c.validate(), Err(ConfigError::NoTls)));
        let c = parse(&["--store-endpoints", "a:1", "--store-plaintext"]).unwrap();
        c.validate().unwrap();
        let c = parse(&[
            "--store-endpoints",
            "a:1",
            "--store-plaintext",
            "--store-ca",
            "/x",
        ])
        .unwrap();
        assert!(matches!(c.validate(), Err(ConfigError::TlsAndPlaintext)));
        let c = parse(&[
            "--store-endpoints",
            "a:1",
            "--store-plaintext",
            "--max-body-bytes",
            "10",
        ])
        .unwrap();
        assert!(matches!(c.validate(), Err(ConfigError::OutOfRange { .. })));
        assert!(parse(&[]).is_err(), "store endpoints are required");
    }
}
