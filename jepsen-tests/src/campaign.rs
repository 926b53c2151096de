//! A campaign: store nodes in namespaced hosts, a workload from the control side, a nemesis
//! on a schedule, the history recorded, then the checker's verdict. So far the `register`
//! workload and the kill nemesis.
//!
//! Register workload: key `kN` is the on-hand balance of item `reg` at location `kN`.
//! A read is a linearizable `GetStock`; `cas(a, b)` is `Adjust(b - a)` conditioned on
//! on_hand == a. A refused condition is a definite `fail`; a timeout or unavailability is
//! `info` (it may or may not have applied: the client's idempotency key keeps its retries
//! from applying twice).

use crate::history::{Event, EventType, F};
use crate::hosts::Hosts;
use laundry_client::{pb, Client, ClientConfig, ClientError};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Config {
    pub nodes: usize,
    pub processes: usize,
    pub keys: usize,
    pub duration: Duration,
    /// Time between nemesis actions (kill the leader, restart it after half the period).
    pub nemesis_period: Duration,
    pub node_bin: PathBuf,
    pub results: PathBuf,
}

pub struct Cluster {
    pub hosts: Hosts,
    children: Vec<Option<Child>>,
    node_bin: PathBuf,
    results: PathBuf,
    members: String,
}

fn addr(hosts: &Hosts, i: usize, port: u16) -> String {
    format!("{}:{port}", hosts.hosts[i].addr)
}

impl Cluster {
    pub fn start(hosts: Hosts, node_bin: &Path, results: &Path) -> std::io::Result<Cluster> {
        let n = hosts.hosts.len();
        let members = (0..n)
            .map(|i| {
                format!(
                    "{}={}/{}/{}",
                    i + 1,
                    addr(&hosts, i, 7501),
                    addr(&hosts, i, 7401),
                    addr(&hosts, i, 7601)
                )
            })
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Cluster {
            hosts,
            children: (0..n).map(|_| None).collect(),
            node_bin: node_bin.to_path_buf(),
            results: results.to_path_buf(),
            members,
        };
        for i in 0..n {
            c.spawn(i)?;
        }
        Ok(c)
    }

    pub fn spawn(&mut self, i: usize) -> std::io::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.results.join(format!("node-{}.log", i + 1)))?;
        let child = self
            .hosts
            .command(i, self.node_bin.to_str().unwrap_or("laundry-node"))
            .args(["--id", &(i + 1).to_string()])
            .args([
                "--data-dir",
                self.results
                    .join(format!("data-{}", i + 1))
                    .to_str()
                    .unwrap_or("data"),
            ])
            .args([
                "--client-addr",
                &addr(&self.hosts, i, 7401),
                "--peer-addr",
                &addr(&self.hosts, i, 7501),
            ])
            .args([
                "--admin-addr",
                &addr(&self.hosts, i, 7601),
                "--plaintext",
                "--initial-members",
                &self.members,
            ])
            .args([
                "--heartbeat-ms",
                "50",
                "--election-min-ms",
                "300",
                "--election-max-ms",
                "600",
            ])
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.children[i] = Some(child);
        Ok(())
    }

    /// SIGKILL, like a crash. `ip netns exec` execs the node, so the child is the node.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn endpoints(&self) -> Vec<String> {
        (0..self.hosts.hosts.len())
            .map(|i| addr(&self.hosts, i, 7401))
            .collect()
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.children[i].is_some()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}

fn now_ns(t0: Instant) -> u64 {
    t0.elapsed().as_nanos() as u64
}

fn event(
    process: u64,
    kind: EventType,
    f: F,
    key: &str,
    value: serde_json::Value,
    t0: Instant,
) -> Event {
    Event {
        process,
        kind,
        f,
        key: key.to_string(),
        value,
        time_ns: now_ns(t0),
    }
}

/// Runs the register workload with the kill nemesis; returns the history.
pub async fn run_register(cfg: &Config, cluster: &mut Cluster) -> Result<Vec<Event>, String> {
    let client_cfg = ClientConfig {
        attempt_timeout_ms: 1_000,
        total_timeout_ms: 4_000,
        max_attempts: 20,
        ..ClientConfig::default()
    };
    let client = Client::new(&cluster.endpoints(), client_cfg).map_err(|e| e.to_string())?;
    // Setup, retried while the cluster elects its first leader.
    let setup_deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let item = client
            .create_item(pb::CreateItemRequest {
                id: "reg".into(),
                name: "register".into(),
                unit: "u".into(),
                ..Default::default()
            })
            .await;
        if matches!(item, Ok(_) | Err(ClientError::AlreadyExists(_))) {
            break;
        }
        if Instant::now() > setup_deadline {
            return Err(format!("cluster never became writable: {item:?}"));
        }
    }
    for k in 0..cfg.keys {
        let r = client
            .create_location(pb::CreateLocationRequest {
                id: format!("k{k}"),
                name: format!("k{k}"),
                kind: pb::LocationKind::Warehouse as i32,
                options: None,
            })
            .await;
        if !matches!(r, Ok(_) | Err(ClientError::AlreadyExists(_))) {
            return Err(format!("setup: {r:?}"));
        }
    }
    let t0 = Instant::now();
    let history: Arc<Mutex<Vec<Event>>> = Arc::new(Mutex::new(Vec::new()));
    // Every register starts at 0: record it as a completed write before anything else.
    for k in 0..cfg.keys {
        let key = format!("k{k}");
        let mut h = history.lock().unwrap_or_else(|p| p.into_inner());
        h.push(event(
            1_000_000 + k as u64,
            EventType::Invoke,
            F::Write,
            &key,
            0.into(),
            t0,
        ));
        h.push(event(
            1_000_000 + k as u64,
            EventType::Ok,
            F::Write,
            &key,
            0.into(),
            t0,
        ));
    }
    let deadline = t0 + cfg.duration;
    let mut workers = Vec::new();
    for p in 0..cfg.processes as u64 {
        let (client, history, keys) = (client.clone(), history.clone(), cfg.keys);
        workers.push(tokio::spawn(async move {
            let mut rng = 0x2545_f491_4f6c_dd1du64.wrapping_mul(p + 7);
            let mut process = p;
            while Instant::now() < deadline {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let key = format!("k{}", rng % keys as u64);
                let record = |e: Event| history.lock().unwrap_or_else(|p| p.into_inner()).push(e);
                if rng >> 32 & 1 == 0 {
                    record(event(
                        process,
                        EventType::Invoke,
                        F::Read,
                        &key,
                        serde_json::Value::Null,
                        t0,
                    ));
                    let r = client
                        .get_stock(pb::GetStockRequest {
                            item: "reg".into(),
                            location: key.clone(),
                            read: None,
                        })
                        .await;
                    match r {
                        Ok(s) => record(event(
                            process,
                            EventType::Ok,
                            F::Read,
                            &key,
                            s.levels[0].on_hand.into(),
                            t0,
                        )),
                        Err(_) => record(event(
                            process,
                            EventType::Fail,
                            F::Read,
                            &key,
                            serde_json::Value::Null,
                            t0,
                        )),
                    }
                } else {
                    let from = (rng >> 40) as i64 % 5;
                    let to = (from + 1 + (rng >> 48) as i64 % 4) % 5;
                    let value = serde_json::json!([from, to]);
                    record(event(
                        process,
                        EventType::Invoke,
                        F::Cas,
                        &key,
                        value.clone(),
                        t0,
                    ));
                    let req = pb::AdjustRequest {
                        options: Some(pb::WriteOptions {
                            idempotency_key: String::new(),
                            conditions: vec![pb::Condition {
                                item: "reg".into(),
                                location: key.clone(),
                                expect: Some(pb::condition::Expect::OnHand(from)),
                            }],
                        }),
                        item: "reg".into(),
                        location: key.clone(),
                        delta: to - from,
                        reason: "cas".into(),
                        ..Default::default()
                    };
                    match client.adjust(req).await {
                        Ok(_) => record(event(process, EventType::Ok, F::Cas, &key, value, t0)),
                        Err(ClientError::FailedPrecondition(_)) => {
                            record(event(process, EventType::Fail, F::Cas, &key, value, t0))
                        }
                        Err(_) => {
                            record(event(process, EventType::Info, F::Cas, &key, value, t0));
                            // An indeterminate operation keeps its process busy forever
                            // (Jepsen's rule); continue as a fresh process.
                            process += 1_000;
                        }
                    }
                }
            }
        }));
    }
    // The nemesis: kill the leader, restart it half a period later.
    let mut kills = 0;
    while Instant::now() + cfg.nemesis_period < deadline {
        tokio::time::sleep(cfg.nemesis_period / 2).await;
        let mut leader = None;
        for (i, ep) in cluster.endpoints().iter().enumerate() {
            if cluster.is_running(i) {
                if let Ok(s) = client.node_status(ep).await {
                    leader = (s.leader_id > 0).then(|| s.leader_id as usize - 1);
                    break;
                }
            }
        }
        if let Some(l) = leader {
            cluster.kill(l);
            kills += 1;
            tokio::time::sleep(cfg.nemesis_period / 2).await;
            cluster.spawn(l).map_err(|e| e.to_string())?;
        }
    }
    for w in workers {
        w.await.map_err(|e| e.to_string())?;
    }
    let events = std::mem::take(&mut *history.lock().unwrap_or_else(|p| p.into_inner()));
    eprintln!("campaign: {} events, {kills} leader kills", events.len());
    Ok(events)
}
