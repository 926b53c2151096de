//! A campaign: store nodes in namespaced hosts, a workload from the control side, nemeses
//! on a schedule (each fault healed before the next), the history and the fault intervals
//! recorded, then the checker's verdict and a recovery check. So far the `register`
//! workload; nemeses are in `nemesis.rs`.
//!
//! Register workload: key `kW-N` is the on-hand balance of item `reg` at location `kW-N`.
//! Each process is bound to one node for its reads, as Jepsen clients are: a read goes to
//! that node only (no leader hint followed), so every node's answer to a linearizable read
//! is exercised; a refusal (not the leader) is a definite `fail`. Writes go through the
//! client crate, which finds the leader.
//! Keys are independent and short-lived, Jepsen-style: window W (of `KEY_WINDOW`) uses its
//! own `keys` registers, so no key's history outgrows the checker however long the run.
//! A read is a linearizable `GetStock`; `cas(a, b)` is `Adjust(b - a)` conditioned on
//! on_hand == a. A refused condition is a definite `fail`; a timeout or unavailability is
//! `info` (it may or may not have applied: the client's idempotency key keeps its retries
//! from applying twice).

use crate::history::{Event, EventType, F};
use crate::hosts::Hosts;
use crate::nemesis::{self, Fault};
use laundry_client::{pb, Client, ClientConfig, ClientError};
use laundry_proto::v1::inventory_service_client::InventoryServiceClient;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long one set of registers is used before the workload moves to fresh ones.
pub const KEY_WINDOW: Duration = Duration::from_secs(5);

fn key_name(window: u64, k: u64) -> String {
    format!("k{window}-{k}")
}

pub struct Config {
    pub nodes: usize,
    pub processes: usize,
    pub keys: usize,
    pub duration: Duration,
    /// One nemesis cycle: healthy for half of it, the fault for the other half.
    pub nemesis_period: Duration,
    /// The schedule: steps taken in turn, each one fault or several applied together.
    pub faults: Vec<Vec<Fault>>,
    /// After the last heal, a write must succeed within this.
    pub recovery_bound: Duration,
    pub node_bin: PathBuf,
    /// Extra node arguments (the test-only `--unsafe-test-fault`).
    pub node_args: Vec<String>,
    pub results: PathBuf,
}

/// A fault's interval (one schedule step, possibly several faults together), for
/// results.json and the plot.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FaultInterval {
    pub faults: Vec<Fault>,
    /// The nodes it targeted (1-based ids) or, for partitions, what each node heard.
    pub detail: String,
    pub start_ns: u64,
    pub end_ns: u64,
}

/// What a campaign produced.
pub struct Outcome {
    pub events: Vec<Event>,
    pub faults: Vec<FaultInterval>,
    /// Time from the last heal to the first acknowledged write.
    pub recovery: Result<Duration, String>,
}

pub struct Cluster {
    pub hosts: Hosts,
    children: Vec<Option<Child>>,
    node_bin: PathBuf,
    node_args: Vec<String>,
    /// Per-node libfaketime timestamp files, when clock faults are on.
    clock_files: Option<Vec<PathBuf>>,
    results: PathBuf,
    members: String,
    /// The nodes' `RUST_LOG`: `LAUNDRY_JEPSEN_NODE_LOG` when set (to trace a failure),
    /// else info with openraft's warnings.
    node_log: String,
}

/// The nodes' admin token (membership changes need one).
pub const ADMIN_TOKEN: &str = "jepsen-admin-token-not-a-secret";

/// Node `i`'s id and addresses: its host's address, the standard ports.
fn node_addrs(hosts: &Hosts, i: usize) -> laundry_testkit::node::NodeAddrs {
    laundry_testkit::node::NodeAddrs {
        id: i as u64 + 1,
        client: addr(hosts, i, 7401),
        peer: addr(hosts, i, 7501),
        admin: addr(hosts, i, 7601),
    }
}

fn addr(hosts: &Hosts, i: usize, port: u16) -> String {
    format!("{}:{port}", hosts.hosts[i].addr)
}

impl Cluster {
    /// Starts a node in every host. With `faketime`, nodes run under libfaketime with a
    /// per-node wall-clock offset file (offset 0 until a clock fault writes it).
    pub fn start(
        hosts: Hosts,
        node_bin: &Path,
        node_args: &[String],
        results: &Path,
        faketime: bool,
    ) -> std::io::Result<Cluster> {
        let n = hosts.hosts.len();
        let members = laundry_testkit::node::members(
            &(0..n).map(|i| node_addrs(&hosts, i)).collect::<Vec<_>>(),
        );
        let mut c = Cluster {
            hosts,
            children: (0..n).map(|_| None).collect(),
            node_bin: node_bin.to_path_buf(),
            node_args: node_args.to_vec(),
            clock_files: None,
            results: results.to_path_buf(),
            members,
            node_log: std::env::var("LAUNDRY_JEPSEN_NODE_LOG")
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        };
        if faketime {
            let files: Vec<PathBuf> = (0..n)
                .map(|i| results.join(format!("clock-{}.rc", i + 1)))
                .collect();
            for f in &files {
                nemesis::set_clock_offset(f, 0).map_err(std::io::Error::other)?;
            }
            c.clock_files = Some(files);
        }
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
        let mut command = self
            .hosts
            .command(i, self.node_bin.to_str().unwrap_or("laundry-node"));
        if let Some(files) = &self.clock_files {
            command
                .env("LD_PRELOAD", nemesis::FAKETIME_LIB)
                .env("FAKETIME_TIMESTAMP_FILE", &files[i])
                .env("FAKETIME_CACHE_DURATION", "1")
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        let data_dir = self.results.join(format!("data-{}", i + 1));
        let child = command
            .args(laundry_testkit::node::node_args(
                &node_addrs(&self.hosts, i),
                &data_dir,
                &laundry_testkit::node::Security::Plaintext,
                Some(&self.members),
            ))
            .args(["--admin-token", ADMIN_TOKEN])
            .args(&self.node_args)
            .env("RUST_LOG", &self.node_log)
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

    /// SIGSTOP (`stop = true`) or SIGCONT the node: a process that freezes, like a long
    /// GC pause or a stalled VM.
    pub fn signal_pause(&self, i: usize, stop: bool) {
        if let Some(c) = &self.children[i] {
            let _ = std::process::Command::new("kill")
                .args([if stop { "-STOP" } else { "-CONT" }, &c.id().to_string()])
                .status();
        }
    }

    pub fn endpoints(&self) -> Vec<String> {
        (0..self.hosts.hosts.len())
            .map(|i| addr(&self.hosts, i, 7401))
            .collect()
    }

    /// Node `i`'s wall-clock offset file (clock faults on).
    pub fn clock_file(&self, i: usize) -> Option<&Path> {
        self.clock_files.as_ref().map(|f| f[i].as_path())
    }

    /// An admin client over every node's admin port.
    pub fn admin(&self) -> laundry_client::AdminClient {
        let eps = (0..self.hosts.hosts.len())
            .map(|i| addr(&self.hosts, i, 7601))
            .collect();
        laundry_client::AdminClient::new(eps, Some(ADMIN_TOKEN.to_string()))
    }

    /// Node `i`'s entry for an add-learner call.
    pub fn member_body(&self, i: usize) -> serde_json::Value {
        serde_json::json!({
            "id": i + 1,
            "peer_addr": addr(&self.hosts, i, 7501),
            "client_addr": addr(&self.hosts, i, 7401),
            "admin_addr": addr(&self.hosts, i, 7601),
        })
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.children[i].is_some()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = nemesis::heal(&self.hosts);
        for i in 0..self.children.len() {
            self.signal_pause(i, false);
            self.kill(i);
        }
    }
}

pub(crate) fn now_ns(t0: Instant) -> u64 {
    t0.elapsed().as_nanos() as u64
}

pub(crate) fn event(
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

pub(crate) fn client_config() -> ClientConfig {
    ClientConfig {
        attempt_timeout_ms: 1_000,
        total_timeout_ms: 4_000,
        max_attempts: 20,
        ..ClientConfig::default()
    }
}

/// The leader's index, as the first running node that answers says.
async fn find_leader(cluster: &Cluster, client: &Client) -> Option<usize> {
    for (i, ep) in cluster.endpoints().iter().enumerate() {
        if cluster.is_running(i) {
            if let Ok(s) = client.node_status(ep).await {
                if s.leader_id > 0 {
                    return Some(s.leader_id as usize - 1);
                }
            }
        }
    }
    None
}

/// The nemeses, in turn, until `deadline`: half a period healthy, half a period faulty,
/// then healed. Returns the fault intervals (times relative to `t0`).
pub async fn run_nemeses(
    cfg: &Config,
    cluster: &mut Cluster,
    client: &Client,
    t0: Instant,
    deadline: Instant,
) -> Result<Vec<FaultInterval>, String> {
    let n = cluster.hosts.hosts.len();
    let mut faults = Vec::new();
    let mut turn = 0usize;
    let mut rand = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    let mut removed: Option<usize> = None;
    let mut clock: Option<(usize, i64)> = None;
    while Instant::now() + cfg.nemesis_period < deadline && !cfg.faults.is_empty() {
        tokio::time::sleep(cfg.nemesis_period / 2).await;
        let step = cfg.faults[turn % cfg.faults.len()].clone();
        turn += 1;
        rand ^= rand << 13;
        rand ^= rand >> 7;
        rand ^= rand << 17;
        let Some(leader) = find_leader(cluster, client).await else {
            continue; // no leader known right now: skip this turn
        };
        let start_ns = now_ns(t0);
        let mut details = Vec::new();
        for &fault in &step {
            details.push(match fault {
                Fault::Kill => {
                    cluster.kill(leader);
                    format!("killed node {}", leader + 1)
                }
                Fault::Pause => {
                    cluster.signal_pause(leader, true);
                    format!("paused node {}", leader + 1)
                }
                Fault::ClockSkew | Fault::ClockStrobe => {
                    let file = cluster
                        .clock_file(leader)
                        .ok_or("clock faults need the nodes started under libfaketime")?;
                    let magnitude = 10 + (rand >> 8) as i64 % 50;
                    let offset = if rand & 1 == 0 { magnitude } else { -magnitude };
                    nemesis::set_clock_offset(file, offset)?;
                    clock = Some((leader, offset));
                    format!("node {} wall clock {offset:+} s", leader + 1)
                }
                Fault::Membership => {
                    let victim = (leader + 1 + (rand % (n as u64 - 1)) as usize) % n;
                    let r =
                        admin_call(cluster, "DELETE", &format!("/members/{}", victim + 1), None)
                            .await;
                    match r {
                        Ok(r) if r.status == 200 => {
                            removed = Some(victim);
                            format!("removed node {}", victim + 1)
                        }
                        other => format!("removing node {} failed: {other:?}", victim + 1),
                    }
                }
                partition => {
                    let views = nemesis::views(partition, n, leader, rand);
                    nemesis::partition(&cluster.hosts, &nemesis::grudge(&views))?;
                    views
                        .iter()
                        .enumerate()
                        .map(|(i, v)| {
                            let ids: Vec<String> = v.iter().map(|j| (j + 1).to_string()).collect();
                            format!("{} hears {}", i + 1, ids.join("+"))
                        })
                        .collect::<Vec<_>>()
                        .join("; ")
                }
            });
        }
        match (step.contains(&Fault::ClockStrobe), clock) {
            (true, Some((node, offset))) => {
                // Flip between the offset and true time every second (libfaketime re-reads
                // the file at most once a second).
                let until = Instant::now() + cfg.nemesis_period / 2;
                let mut on = false;
                while Instant::now() < until {
                    if let Some(file) = cluster.clock_file(node) {
                        nemesis::set_clock_offset(file, if on { offset } else { 0 })?;
                    }
                    on = !on;
                    tokio::time::sleep(Duration::from_secs(1).min(until - Instant::now())).await;
                }
            }
            _ => tokio::time::sleep(cfg.nemesis_period / 2).await,
        }
        // Heal in reverse order of application.
        for &fault in step.iter().rev() {
            match fault {
                Fault::Kill => cluster.spawn(leader).map_err(|e| e.to_string())?,
                Fault::Pause => cluster.signal_pause(leader, false),
                Fault::ClockSkew | Fault::ClockStrobe => {
                    if let Some((node, _)) = clock.take() {
                        if let Some(file) = cluster.clock_file(node) {
                            nemesis::set_clock_offset(file, 0)?;
                        }
                    }
                }
                Fault::Membership => {
                    if let Some(v) = removed.take() {
                        details.push(readd(cluster, v).await);
                    }
                }
                _ => nemesis::heal(&cluster.hosts)?,
            }
        }
        faults.push(FaultInterval {
            faults: step,
            detail: details.join("; "),
            start_ns,
            end_ns: now_ns(t0),
        });
    }
    Ok(faults)
}

/// Most tries of one membership call while no leader is known (elections after a kill).
const ADMIN_TRIES: usize = 20;

/// A leader-only admin call, retried (bounded) while the cluster has no leader to take it.
async fn admin_call(
    cluster: &Cluster,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<laundry_client::AdminResponse, String> {
    let admin = cluster.admin();
    let mut last = String::new();
    for _ in 0..ADMIN_TRIES {
        match admin.leader(method, path, body).await {
            Ok(r) if r.status != 503 => return Ok(r),
            Ok(r) => last = r.body,
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(format!("no leader took {method} {path}: {last}"))
}

/// Adds node `v` back as a learner (returns once it caught up) and promotes it to voter;
/// says how that went, for the fault's record.
async fn readd(cluster: &Cluster, v: usize) -> String {
    let added = admin_call(cluster, "POST", "/members", Some(&cluster.member_body(v))).await;
    if !matches!(&added, Ok(r) if r.status == 200) {
        return format!("re-adding failed: {added:?}");
    }
    match admin_call(
        cluster,
        "POST",
        &format!("/members/{}/promote", v + 1),
        None,
    )
    .await
    {
        Ok(r) if r.status == 200 => format!("re-added and promoted node {}", v + 1),
        other => format!("promoting failed: {other:?}"),
    }
}

/// Heals everything, then measures the time until the cluster acknowledges a write; an
/// error inside the result when it took longer than the bound.
pub async fn check_recovery(
    cfg: &Config,
    cluster: &Cluster,
    client: &Client,
) -> Result<Result<Duration, String>, String> {
    nemesis::heal(&cluster.hosts)?;
    let healed = Instant::now();
    let recovery = loop {
        // A real write that touches no register: a new location.
        let r = client
            .create_location(pb::CreateLocationRequest {
                id: format!("probe-{}", healed.elapsed().as_nanos()),
                name: "recovery probe".into(),
                kind: pb::LocationKind::Warehouse as i32,
                options: None,
            })
            .await;
        if r.is_ok() {
            let deadline = healed + cfg.recovery_bound;
            break match each_node_answers_writes(cluster, client, deadline).await {
                Ok(()) => Ok(healed.elapsed()),
                Err(e) => {
                    dump_diagnostics(cluster).await;
                    Err(e)
                }
            };
        }
        if healed.elapsed() > cfg.recovery_bound {
            dump_diagnostics(cluster).await;
            break Err(format!(
                "no write acknowledged within {:?} of healing: {r:?}",
                cfg.recovery_bound
            ));
        }
    };
    Ok(recovery)
}

/// Sends a write straight to each running node (no redirection) until it answers: applied
/// on the leader, or refused with the leader's address on a follower. Why: a node whose
/// write path hangs does not show in the cluster-wide probe, which the client steers to
/// the leader, yet every client that reaches that node waits out its timeout, and the node
/// is one election away from leading with it.
///
/// Only members are asked (per the leader): a node whose re-adding failed is outside the
/// cluster and knows no leader to name.
async fn each_node_answers_writes(
    cluster: &Cluster,
    client: &Client,
    deadline: Instant,
) -> Result<(), String> {
    /// One attempt's bound: far above a healthy answer, below the client's default.
    const ATTEMPT_MS: u64 = 1_000;
    let members = loop {
        let leader = find_leader(cluster, client).await;
        let view = match leader {
            Some(l) => client.node_status(&cluster.endpoints()[l]).await.ok(),
            None => None,
        };
        match view {
            Some(v) if v.leader_id == v.node_id => {
                break v.voters.into_iter().chain(v.learners).collect::<Vec<u64>>();
            }
            _ if Instant::now() >= deadline => {
                return Err("no leader told its members within the recovery bound".into());
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    for (i, endpoint) in cluster.endpoints().iter().enumerate() {
        if !cluster.is_running(i) || !members.contains(&(i as u64 + 1)) {
            continue;
        }
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_millis(ATTEMPT_MS))
            .connect_lazy();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let mut request = tonic::Request::new(pb::CreateLocationRequest {
                id: format!("node-probe-{}-{attempt}", i + 1),
                name: "per-node write probe".into(),
                kind: pb::LocationKind::Warehouse as i32,
                options: Some(pb::WriteOptions {
                    idempotency_key: format!("node-probe-{}-{attempt}", i + 1),
                    ..Default::default()
                }),
            });
            request.set_timeout(Duration::from_millis(ATTEMPT_MS));
            let answer = InventoryServiceClient::new(channel.clone())
                .create_location(request)
                .await;
            let last = match answer {
                Ok(_) => break,
                Err(s) if s.metadata().get(laundry_proto::LEADER_ADDR_KEY).is_some() => break,
                Err(s) => format!("{:?}: {}", s.code(), s.message()),
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "node {} answered no write (applied, or refused with the leader's \
                     address) within the recovery bound; {attempt} attempts, last: {last}",
                    i + 1
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Saves each running node's `/cluster` view and `/metrics` next to its log
/// (`node-N.diag.txt`), so a campaign that did not recover can be read afterwards: which
/// node leads, what it proposed, which peers it reaches.
async fn dump_diagnostics(cluster: &Cluster) {
    let admin = cluster.admin();
    for i in 0..cluster.hosts.hosts.len() {
        if !cluster.is_running(i) {
            continue;
        }
        let endpoint = addr(&cluster.hosts, i, 7601);
        let mut text = String::new();
        for path in ["/cluster", "/metrics"] {
            let answer = match admin.request(&endpoint, "GET", path, None).await {
                Ok(r) => format!("status {}\n{}", r.status, r.body),
                Err(e) => format!("no answer: {e}"),
            };
            text.push_str(&format!("== GET {path}\n{answer}\n"));
        }
        let file = cluster.results.join(format!("node-{}.diag.txt", i + 1));
        if let Err(e) = std::fs::write(&file, text) {
            eprintln!("laundry-jepsen: writing {}: {e}", file.display());
        }
    }
}

/// Runs the register workload under the configured nemeses; returns the history, the
/// fault intervals and the recovery time.
pub async fn run_register(cfg: &Config, cluster: &mut Cluster) -> Result<Outcome, String> {
    let client = Client::new(&cluster.endpoints(), client_config()).map_err(|e| e.to_string())?;
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
    let windows = cfg.duration.as_millis() as u64 / KEY_WINDOW.as_millis() as u64 + 1;
    let all_keys: Vec<String> = (0..windows)
        .flat_map(|w| (0..cfg.keys as u64).map(move |k| key_name(w, k)))
        .collect();
    for key in &all_keys {
        let r = client
            .create_location(pb::CreateLocationRequest {
                id: key.clone(),
                name: key.clone(),
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
    for (k, key) in all_keys.iter().enumerate() {
        let mut h = history.lock().unwrap_or_else(|p| p.into_inner());
        h.push(event(
            1_000_000 + k as u64,
            EventType::Invoke,
            F::Write,
            key,
            0.into(),
            t0,
        ));
        h.push(event(
            1_000_000 + k as u64,
            EventType::Ok,
            F::Write,
            key,
            0.into(),
            t0,
        ));
    }
    let deadline = t0 + cfg.duration;
    let mut workers = Vec::new();
    for p in 0..cfg.processes as u64 {
        // Each process has its own client, preferring a different node first, as separate
        // application servers would: a node cut off from the leader keeps getting asked.
        let mut endpoints = cluster.endpoints();
        let first = p as usize % endpoints.len();
        endpoints.rotate_left(first);
        let client = Client::new(&endpoints, client_config()).map_err(|e| e.to_string())?;
        let read_channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", endpoints[0]))
                .map_err(|e| e.to_string())?
                .connect_timeout(Duration::from_millis(500))
                .tcp_nodelay(true)
                .connect_lazy();
        let (history, keys) = (history.clone(), cfg.keys);
        workers.push(tokio::spawn(async move {
            let mut rng = 0x2545_f491_4f6c_dd1du64.wrapping_mul(p + 7);
            let mut process = p;
            while Instant::now() < deadline {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let window = t0.elapsed().as_millis() as u64 / KEY_WINDOW.as_millis() as u64;
                let key = key_name(window, rng % keys as u64);
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
                    let mut request = tonic::Request::new(pb::GetStockRequest {
                        item: "reg".into(),
                        location: key.clone(),
                        read: None, // linearizable
                    });
                    request.set_timeout(Duration::from_millis(1_000));
                    let r = InventoryServiceClient::new(read_channel.clone())
                        .get_stock(request)
                        .await
                        .map(|r| r.into_inner());
                    match r {
                        Ok(s) if !s.levels.is_empty() => record(event(
                            process,
                            EventType::Ok,
                            F::Read,
                            &key,
                            s.levels[0].on_hand.into(),
                            t0,
                        )),
                        _ => {
                            record(event(
                                process,
                                EventType::Fail,
                                F::Read,
                                &key,
                                serde_json::Value::Null,
                                t0,
                            ));
                            // Not this node's to answer (a follower): do not spin on it.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
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
    let faults = run_nemeses(cfg, cluster, &client, t0, deadline).await?;
    for w in workers {
        w.await.map_err(|e| e.to_string())?;
    }
    let recovery = check_recovery(cfg, cluster, &client).await?;
    let events = std::mem::take(&mut *history.lock().unwrap_or_else(|p| p.into_inner()));
    eprintln!(
        "campaign: {} events, {} faults, recovery {recovery:?}",
        events.len(),
        faults.len()
    );
    Ok(Outcome {
        events,
        faults,
        recovery,
    })
}
