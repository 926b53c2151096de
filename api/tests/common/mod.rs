//! Test harness: a real 3-node store (laundry-node processes on loopback) and a real
//! laundry-api process in front of it, plus a minimal HTTP/1.1 client over TCP so tests
//! see exactly the bytes a web client would, malformed requests included.

#![allow(dead_code)]

use laundry_testkit::node::{node_args, NodeAddrs, Security};
use laundry_testkit::ports::free_port;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Tests in one binary share the machine's two cores: run them one at a time.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The laundry-node binary next to laundry-api (built by `cargo test --workspace`; built
/// here when a test runs alone with `-p laundry-api`).
fn node_bin() -> PathBuf {
    let api = PathBuf::from(env!("CARGO_BIN_EXE_laundry-api"));
    let node = api.with_file_name("laundry-node");
    if !node.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "laundry-node", "--bin", "laundry-node"]);
        if api.to_string_lossy().contains("/release/") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build -p laundry-node");
        assert!(status.success(), "cargo build -p laundry-node failed");
    }
    node
}

pub struct Node {
    pub id: u64,
    pub client_addr: String,
    child: Option<Child>,
}

pub struct Stack {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<Node>,
    pub api_addr: String,
    api: Option<Child>,
}

/// TLS material for a stack: nodes serve with `cert`/`key` (signed by the CA in `ca`); the
/// API verifies the nodes against `api_ca` (the same CA, or a wrong one in a negative test).
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub api_ca: PathBuf,
}

impl Stack {
    /// Three founding nodes and one API process; returns once the API reports ready.
    pub fn start() -> Stack {
        let stack = Self::start_with(None);
        stack.wait_ready();
        stack
    }

    /// Like `start`, with TLS between the API and the store when given; does not wait for
    /// readiness (a misconfigured API never becomes ready).
    pub fn start_with(tls: Option<&TlsFiles>) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let addrs: Vec<NodeAddrs> = (1..=3)
            .map(|id| NodeAddrs {
                id,
                client: format!("127.0.0.1:{}", free_port()),
                peer: format!("127.0.0.1:{}", free_port()),
                admin: format!("127.0.0.1:{}", free_port()),
            })
            .collect();
        let members = laundry_testkit::node::members(&addrs);
        let bin = node_bin();
        let security = match tls {
            None => Security::Plaintext,
            Some(t) => Security::Tls {
                cert: &t.cert,
                key: &t.key,
                ca: &t.ca,
            },
        };
        let nodes = addrs
            .iter()
            .map(|a| {
                let log =
                    std::fs::File::create(dir.path().join(format!("node-{}.log", a.id))).unwrap();
                let data_dir = dir.path().join(format!("node-{}", a.id));
                let child = Command::new(&bin)
                    .args(node_args(a, &data_dir, &security, Some(&members)))
                    .env("RUST_LOG", "warn")
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .expect("spawn laundry-node");
                Node {
                    id: a.id,
                    client_addr: a.client.clone(),
                    child: Some(child),
                }
            })
            .collect::<Vec<_>>();
        let api_addr = format!("127.0.0.1:{}", free_port());
        let endpoints = nodes
            .iter()
            .map(|n| n.client_addr.clone())
            .collect::<Vec<_>>()
            .join(",");
        let log = std::fs::File::create(dir.path().join("api.log")).unwrap();
        let mut api = Command::new(env!("CARGO_BIN_EXE_laundry-api"));
        match tls {
            None => api.env("LAUNDRY_API_STORE_PLAINTEXT", "true"),
            Some(t) => api.env("LAUNDRY_API_STORE_CA", &t.api_ca),
        };
        let api = api
            .env("LAUNDRY_API_LISTEN", &api_addr)
            .env("LAUNDRY_API_STORE_ENDPOINTS", &endpoints)
            .env("LAUNDRY_API_REQUEST_TIMEOUT_MS", "15000")
            .env("LAUNDRY_API_SSE_KEEPALIVE_MS", "500")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn laundry-api");
        Stack {
            dir,
            nodes,
            api_addr,
            api: Some(api),
        }
    }

    /// Waits (30 s at most) until the API answers /readyz with 200.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.try_request("GET", "/readyz", &[], None) {
                if r.status == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "API not ready within 30 s:\n{}",
                self.api_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn store_client(&self) -> laundry_client::Client {
        let eps: Vec<String> = self.nodes.iter().map(|n| n.client_addr.clone()).collect();
        laundry_client::Client::new(&eps, laundry_client::ClientConfig::default()).unwrap()
    }

    /// Each running node's (applied index, digest) once all agree; panics after 20 s.
    pub async fn converged_digest(&self) -> u64 {
        let c = self.store_client();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut seen = Vec::new();
            for n in self.nodes.iter().filter(|n| n.child.is_some()) {
                if let Ok(s) = c.node_status(&n.client_addr).await {
                    seen.push((s.applied_index, s.state_digest));
                }
            }
            let running = self.nodes.iter().filter(|n| n.child.is_some()).count();
            if seen.len() == running && seen.windows(2).all(|w| w[0] == w[1]) {
                return seen[0].1;
            }
            assert!(
                Instant::now() < deadline,
                "replicas did not converge: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The leader's index in `nodes`, waiting up to 15 s for one.
    pub async fn leader(&self) -> usize {
        let c = self.store_client();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            for (i, n) in self.nodes.iter().enumerate() {
                if n.child.is_none() {
                    continue;
                }
                if let Ok(s) = c.node_status(&n.client_addr).await {
                    if s.leader_id == n.id {
                        return i;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no leader within 15 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, like a crash.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn connect(&self) -> std::io::Result<TcpStream> {
        let s = TcpStream::connect(&self.api_addr)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(s)
    }

    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> std::io::Result<Resp> {
        let mut s = self.connect()?;
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            req.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
        req.push_str("\r\n");
        if let Some(b) = body {
            req.push_str(b);
        }
        s.write_all(req.as_bytes())?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        parse_response(&raw)
            .ok_or_else(|| std::io::Error::other(format!("malformed response: {raw:?}")))
    }

    /// One request; panics on a transport error.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Resp {
        self.try_request(method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// POST or PATCH a JSON body.
    pub fn send_json(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &serde_json::Value,
    ) -> Resp {
        let mut h = vec![("Content-Type", "application/json")];
        h.extend_from_slice(headers);
        self.request(method, path, &h, Some(&body.to_string()))
    }

    /// Opens an event stream and returns the socket after the response head.
    pub fn open_stream(&self, path: &str, last_event_id: Option<&str>) -> EventStream {
        let mut s = self.connect().unwrap();
        // HTTP/1.0: the body comes unframed (no chunked encoding) until the server closes.
        let mut req = format!("GET {path} HTTP/1.0\r\nHost: test\r\nAccept: text/event-stream\r\n");
        if let Some(id) = last_event_id {
            req.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        EventStream {
            socket: s,
            buf: Vec::new(),
            head_done: false,
            status: 0,
        }
    }

    pub fn api_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("api.log")).unwrap_or_default()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(mut a) = self.api.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    /// Asserts a problem document of this status and type slug; returns it.
    pub fn problem(&self, status: u16, slug: &str) -> serde_json::Value {
        assert_eq!(self.status, status, "body: {}", self.body);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{}",
            self.body
        );
        let p = self.json();
        assert_eq!(p["type"], format!("/problems/{slug}"), "{p}");
        assert_eq!(p["status"], status);
        assert!(!p["detail"].as_str().unwrap_or("").is_empty(), "{p}");
        assert_eq!(
            p["request_id"].as_str(),
            self.header("x-request-id"),
            "the problem names the request"
        );
        p
    }
}

fn parse_head(head: &str) -> (u16, Vec<(String, String)>) {
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers)
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&body[..line_end]).ok()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

fn parse_response(raw: &[u8]) -> Option<Resp> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let (status, headers) = parse_head(std::str::from_utf8(&raw[..split]).ok()?);
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body)?;
    }
    Some(Resp {
        status,
        headers,
        body: String::from_utf8(body).ok()?,
    })
}

/// An open server-sent event stream, read incrementally.
pub struct EventStream {
    socket: TcpStream,
    buf: Vec<u8>,
    head_done: bool,
    pub status: u16,
}

#[derive(Debug, Clone)]
pub struct Sse {
    pub id: String,
    pub event: String,
    pub data: String,
}

impl EventStream {
    /// The next event (keep-alive comments skipped), or None after `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Option<Sse> {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.head_done {
                if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&self.buf[..p]).to_string();
                    self.status = parse_head(&head).0;
                    self.buf.drain(..p + 4);
                    self.head_done = true;
                }
            }
            if self.head_done {
                if let Some(p) = self.buf.windows(2).position(|w| w == b"\n\n") {
                    let block = String::from_utf8_lossy(&self.buf[..p]).to_string();
                    self.buf.drain(..p + 2);
                    let mut ev = Sse {
                        id: String::new(),
                        event: String::new(),
                        data: String::new(),
                    };
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("id:") {
                            ev.id = v.trim().to_string();
                        } else if let Some(v) = line.strip_prefix("event:") {
                            ev.event = v.trim().to_string();
                        } else if let Some(v) = line.strip_prefix("data:") {
                            ev.data.push_str(v.trim());
                        }
                    }
                    if !ev.event.is_empty() {
                        return Some(ev);
                    }
                    continue; // a comment (keep-alive)
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            let mut chunk = [0u8; 8192];
            match self.socket.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return None,
            }
        }
    }
}
