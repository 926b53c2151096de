//! Test harness: real `laundry-node` processes on loopback, each with its own data dir and
//! log file. Nodes are killed with SIGKILL (`Child::kill`), never asked nicely, unless a
//! test says otherwise. Every wait is bounded and fails with what it was waiting for.

#![allow(dead_code)]

use laundry_client::{pb, Client, ClientConfig};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Cluster tests share two cores: run them one at a time so elections are not starved.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The admin token every test node is started with.
pub const TOKEN: &str = "test-admin-token-0123456789";

pub struct TestNode {
    pub id: u64,
    pub client_addr: String,
    pub peer_addr: String,
    pub admin_addr: String,
    /// Started with `--initial-members` (a founding member) or without (joins later).
    pub founding: bool,
    pub data_dir: PathBuf,
    child: Option<Child>,
}

pub struct TestCluster {
    pub nodes: Vec<TestNode>,
    /// The nodes' TLS files; `None`: `--plaintext`.
    pub tls: Option<TlsFiles>,
    /// What clients of a TLS cluster trust.
    pub client_tls: Option<laundry_client::ClientTls>,
    dir: tempfile::TempDir,
    extra_args: Vec<String>,
    members: String,
}

use laundry_testkit::node::{node_args, NodeAddrs, Security};
use laundry_testkit::ports::free_port;

/// TLS files of a cluster started with TLS: certificate, key, CA.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl TestCluster {
    pub fn start(n: u64, extra_args: &[&str]) -> Self {
        let mut c = Self::unstarted(n, extra_args);
        for i in 0..c.nodes.len() {
            c.spawn(i);
        }
        c
    }

    /// Nodes with addresses and data dirs, none running yet (for restore tests).
    pub fn unstarted(n: u64, extra_args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let nodes: Vec<TestNode> = (1..=n)
            .map(|id| TestNode {
                id,
                client_addr: format!("127.0.0.1:{}", free_port()),
                peer_addr: format!("127.0.0.1:{}", free_port()),
                admin_addr: format!("127.0.0.1:{}", free_port()),
                founding: true,
                data_dir: dir.path().join(format!("node-{id}")),
                child: None,
            })
            .collect();
        let members = laundry_testkit::node::members(
            &nodes
                .iter()
                .map(|n| NodeAddrs {
                    id: n.id,
                    client: n.client_addr.clone(),
                    peer: n.peer_addr.clone(),
                    admin: n.admin_addr.clone(),
                })
                .collect::<Vec<_>>(),
        );
        TestCluster {
            nodes,
            tls: None,
            client_tls: None,
            dir,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            members,
        }
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Runs `laundry-node restore` for node `i`; returns whether it succeeded and its output.
    pub fn restore(&self, i: usize, archive: &std::path::Path) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_laundry-node"))
            .args(["restore", "--from", archive.to_str().unwrap()])
            .args(["--data-dir", self.nodes[i].data_dir.to_str().unwrap()])
            .args(["--members", &self.members])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    pub fn spawn(&mut self, i: usize) {
        assert!(
            self.nodes[i].child.is_none(),
            "node {} already running",
            self.nodes[i].id
        );
        let log = self
            .dir
            .path()
            .join(format!("node-{}.log", self.nodes[i].id));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let n = &self.nodes[i];
        let addrs = NodeAddrs {
            id: n.id,
            client: n.client_addr.clone(),
            peer: n.peer_addr.clone(),
            admin: n.admin_addr.clone(),
        };
        let security = match &self.tls {
            None => Security::Plaintext,
            Some(t) => Security::Tls {
                cert: &t.cert,
                key: &t.key,
                ca: &t.ca,
            },
        };
        let members = n.founding.then_some(self.members.as_str());
        let child = Command::new(env!("CARGO_BIN_EXE_laundry-node"))
            .args(node_args(&addrs, &n.data_dir, &security, members))
            .args(["--admin-token", TOKEN])
            .args(&self.extra_args)
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn laundry-node");
        self.nodes[i].child = Some(child);
    }

    /// Starts one more node with no initial members: it waits to be added as a learner.
    pub fn add_node(&mut self) -> usize {
        let id = self.nodes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
        self.nodes.push(TestNode {
            id,
            client_addr: format!("127.0.0.1:{}", free_port()),
            peer_addr: format!("127.0.0.1:{}", free_port()),
            admin_addr: format!("127.0.0.1:{}", free_port()),
            founding: false,
            data_dir: self.dir.path().join(format!("node-{id}")),
            child: None,
        });
        let i = self.nodes.len() - 1;
        self.spawn(i);
        i
    }

    /// An admin client over every node's admin port, with the token.
    pub fn admin(&self) -> laundry_client::AdminClient {
        let eps = self.nodes.iter().map(|n| n.admin_addr.clone()).collect();
        let admin = laundry_client::AdminClient::new(eps, Some(TOKEN.to_string()));
        match &self.client_tls {
            Some(t) => admin.with_tls(t).unwrap(),
            None => admin,
        }
    }

    /// SIGKILL: no shutdown path runs, exactly like a crash.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGSTOP (`stop`) or SIGCONT node `i`: a process that freezes with its sockets open,
    /// like a long pause or a stalled VM.
    pub fn pause(&self, i: usize, stop: bool) {
        let pid = self.nodes[i].child.as_ref().expect("node running").id();
        let signal = if stop { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// A client of node `i` alone that waits up to `timeout_ms` for one answer and neither
    /// retries nor follows leader hints: what that node itself says.
    pub fn client_of_patient(&self, i: usize, timeout_ms: u64) -> Client {
        let cfg = ClientConfig {
            max_attempts: 1,
            attempt_timeout_ms: timeout_ms,
            total_timeout_ms: timeout_ms,
            coalesce_writes: false,
            tls: self.client_tls.clone(),
            ..ClientConfig::default()
        };
        Client::new(&[self.nodes[i].client_addr.clone()], cfg).unwrap()
    }

    pub fn wipe(&mut self, i: usize) {
        assert!(self.nodes[i].child.is_none());
        std::fs::remove_dir_all(&self.nodes[i].data_dir).unwrap();
    }

    pub fn index_of(&self, id: u64) -> usize {
        self.nodes.iter().position(|n| n.id == id).unwrap()
    }

    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].child.is_some())
            .collect()
    }

    /// A client over every node, in node order (so it usually starts at a follower).
    pub fn client(&self) -> Client {
        let eps: Vec<String> = self.nodes.iter().map(|n| n.client_addr.clone()).collect();
        let cfg = ClientConfig {
            tls: self.client_tls.clone(),
            ..ClientConfig::default()
        };
        Client::new(&eps, cfg).unwrap()
    }

    /// A client over every node that sends one call per write (no coalescing), for tests
    /// of the per-method surface.
    pub fn client_per_call(&self) -> Client {
        let eps: Vec<String> = self.nodes.iter().map(|n| n.client_addr.clone()).collect();
        let cfg = ClientConfig {
            tls: self.client_tls.clone(),
            coalesce_writes: false,
            ..ClientConfig::default()
        };
        Client::new(&eps, cfg).unwrap()
    }

    /// A client bound to one node, for stale reads of that replica.
    pub fn client_of(&self, i: usize) -> Client {
        let cfg = ClientConfig {
            max_attempts: 1,
            tls: self.client_tls.clone(),
            ..ClientConfig::default()
        };
        Client::new(&[self.nodes[i].client_addr.clone()], cfg).unwrap()
    }

    pub async fn status(&self, i: usize) -> Option<pb::NodeStatusResponse> {
        self.client_of(i)
            .node_status(&self.nodes[i].client_addr)
            .await
            .ok()
    }

    /// Waits until every running node names the same leader, which is itself running.
    pub async fn wait_leader(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let mut leaders = Vec::new();
            for i in self.running() {
                leaders.push(self.status(i).await.map(|s| s.leader_id).unwrap_or(0));
            }
            let l = leaders[0];
            if l != 0
                && leaders.iter().all(|x| *x == l)
                && self.running().contains(&self.index_of(l))
            {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader within {timeout:?}: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every running node has applied the same index with the same state
    /// digest, and returns that status.
    pub async fn wait_converged(&self, timeout: Duration) -> Vec<pb::NodeStatusResponse> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut all = Vec::new();
            for i in self.running() {
                if let Some(s) = self.status(i).await {
                    all.push(s);
                }
            }
            if all.len() == self.running().len()
                && all.iter().all(|s| {
                    s.applied_index == all[0].applied_index && s.state_digest == all[0].state_digest
                })
                && all[0].applied_index > 0
            {
                return all;
            }
            let view: Vec<_> = all
                .iter()
                .map(|s| (s.node_id, s.applied_index, s.state_digest))
                .collect();
            assert!(
                Instant::now() < deadline,
                "replicas did not converge within {timeout:?}: {view:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        if std::thread::panicking() {
            // Keep the logs of a failed test where a human can read them.
            let keep = std::env::temp_dir().join(format!("laundry-failed-{}", std::process::id()));
            let _ = std::fs::rename(self.dir.path(), &keep);
            eprintln!("node logs kept in {}", keep.display());
        }
    }
}

/// The setup most tests start from: item `sku` and warehouse `w1`.
pub async fn seed(c: &Client) {
    c.create_item(item("sku")).await.unwrap();
    c.create_location(warehouse("w1")).await.unwrap();
}

pub fn item(id: &str) -> pb::CreateItemRequest {
    pb::CreateItemRequest {
        id: id.into(),
        name: format!("Item {id}"),
        unit: "each".into(),
        ..Default::default()
    }
}

pub fn warehouse(id: &str) -> pb::CreateLocationRequest {
    pb::CreateLocationRequest {
        id: id.into(),
        name: id.into(),
        kind: pb::LocationKind::Warehouse as i32,
        ..Default::default()
    }
}

pub fn receive(item: &str, loc: &str, q: i64) -> pb::ReceiveRequest {
    pb::ReceiveRequest {
        item: item.into(),
        location: loc.into(),
        quantity: q,
        ..Default::default()
    }
}

pub async fn on_hand(c: &Client, item: &str, loc: &str, stale: bool) -> i64 {
    let read = stale.then_some(pb::ReadOptions {
        consistency: pb::Consistency::Stale as i32,
    });
    let r = c
        .get_stock(pb::GetStockRequest {
            item: item.into(),
            location: loc.into(),
            read,
        })
        .await
        .unwrap();
    r.levels[0].on_hand
}
