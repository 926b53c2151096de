//! The inventory workload: client processes run receive, ship, transfer, reserve, commit
//! and release against a few items and warehouses, under the same nemeses as the register
//! workload. Every mutation carries an idempotency key that is also its `reference`, so
//! the ledger says which operations applied and how often. An operation whose outcome is
//! unknown (the client crate's retries ran out) is retried once more by the process with
//! the same key, the way an application would; it is acknowledged only if a retry says so.
//!
//! After the run heals and the replicas converge, every node's state is read from that
//! node alone (stale reads: its own applied state) and handed to the inventory checker:
//! conservation, bounds, ledger replay, at-most-once keys, reservations ended once, every
//! acknowledged write present, identical replicas.
//!
//! Watchers run alongside from the start: each follows the whole ledger with the client
//! crate's resumable watch (preferring a different node, reconnecting through kills and
//! partitions); at the end each must have seen exactly the final ledger, once, in order.

use crate::campaign::{self, Cluster, Config, FaultInterval};
use crate::history::{Event, EventType, F};
use crate::inventory::{Ack, Movement, Replica};
use crate::watch::{self, WatchViolation};
use laundry_client::{pb, Client, ClientError};
use laundry_proto::v1::inventory_service_client::InventoryServiceClient;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ITEMS: [&str; 2] = ["sku-a", "sku-b"];
const WAREHOUSES: [&str; 3] = ["wh-0", "wh-1", "wh-2"];
/// Reservations expire after this, so some end by the replicated expiry command.
const RESERVATION_TTL_MS: u64 = 3_000;
/// Most open reservations a process keeps (a bound on its bookkeeping).
const MAX_OPEN_PER_PROCESS: usize = 16;
/// Longest the end-of-run convergence and state reads may take.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Page size of the ledger read; pages read per replica are bounded by the run's length.
const PAGE: u32 = 1_000;
/// Concurrent watchers, each preferring a different node.
const WATCHERS: usize = 2;
/// How long watchers may take to catch up with the final ledger after the run.
const WATCH_CATCH_UP: Duration = Duration::from_secs(30);

/// The ledger positions a watcher received, shared with the task filling it.
type Seen = Arc<Mutex<Vec<(u64, u32)>>>;

/// Attempts at reading a quiescent, converged state (reservation expiry may still be
/// applying when the run ends).
const READ_ATTEMPTS: usize = 20;

/// What one watcher saw.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WatchReport {
    pub watcher: usize,
    pub received: usize,
    /// `None`: exactly the ledger, once, in order.
    pub violation: Option<WatchViolation>,
}

pub struct InventoryOutcome {
    pub events: Vec<Event>,
    pub acks: Vec<Ack>,
    pub replicas: Vec<Replica>,
    pub faults: Vec<FaultInterval>,
    pub recovery: Result<Duration, String>,
    pub watchers: Vec<WatchReport>,
}

enum Outcome {
    Ok(pb::WriteResponse),
    Refused,
    Unknown,
}

async fn attempt(client: &Client, op: &Op) -> Outcome {
    let r = match op.clone() {
        Op::Receive(r) => client.receive(r).await,
        Op::Ship(r) => client.ship(r).await,
        Op::Transfer(r) => client.transfer(r).await,
        Op::Reserve(r) => client.reserve(r).await,
        Op::Commit(r) => client.commit_reservation(r).await,
        Op::Release(r) => client.release_reservation(r).await,
    };
    match r {
        Ok(w) => Outcome::Ok(w),
        Err(ClientError::Unavailable { .. }) | Err(ClientError::Server { .. }) => Outcome::Unknown,
        Err(_) => Outcome::Refused,
    }
}

#[derive(Clone)]
enum Op {
    Receive(pb::ReceiveRequest),
    Ship(pb::ShipRequest),
    Transfer(pb::TransferRequest),
    Reserve(pb::ReserveRequest),
    Commit(pb::CommitReservationRequest),
    Release(pb::ReleaseReservationRequest),
}

impl Op {
    fn f(&self) -> F {
        match self {
            Op::Receive(_) => F::Receive,
            Op::Ship(_) => F::Ship,
            Op::Transfer(_) => F::Transfer,
            Op::Reserve(_) => F::Reserve,
            Op::Commit(_) => F::Commit,
            Op::Release(_) => F::Release,
        }
    }
}

fn options(key: &str) -> Option<pb::WriteOptions> {
    Some(pb::WriteOptions {
        idempotency_key: key.to_string(),
        conditions: Vec::new(),
    })
}

async fn setup(client: &Client) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for item in ITEMS {
        loop {
            let r = client
                .create_item(pb::CreateItemRequest {
                    id: item.into(),
                    name: item.into(),
                    unit: "each".into(),
                    ..Default::default()
                })
                .await;
            if matches!(r, Ok(_) | Err(ClientError::AlreadyExists(_))) {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("cluster never became writable: {r:?}"));
            }
        }
    }
    for wh in WAREHOUSES {
        let r = client
            .create_location(pb::CreateLocationRequest {
                id: wh.into(),
                name: wh.into(),
                kind: pb::LocationKind::Warehouse as i32,
                options: None,
            })
            .await;
        if !matches!(r, Ok(_) | Err(ClientError::AlreadyExists(_))) {
            return Err(format!("setup: {r:?}"));
        }
    }
    Ok(())
}

/// Runs the inventory workload under the configured nemeses and reads every replica.
pub async fn run(cfg: &Config, cluster: &mut Cluster) -> Result<InventoryOutcome, String> {
    let client =
        Client::new(&cluster.endpoints(), campaign::client_config()).map_err(|e| e.to_string())?;
    setup(&client).await?;
    let t0 = Instant::now();
    let deadline = t0 + cfg.duration;
    let history: Arc<Mutex<Vec<Event>>> = Arc::new(Mutex::new(Vec::new()));
    let acks: Arc<Mutex<Vec<Ack>>> = Arc::new(Mutex::new(Vec::new()));
    let (stop_watchers, stopped) = tokio::sync::watch::channel(false);
    let mut seen: Vec<Seen> = Vec::new();
    let mut watchers = Vec::new();
    for w in 0..WATCHERS {
        let mut endpoints = cluster.endpoints();
        let first = (w + 1) % endpoints.len();
        endpoints.rotate_left(first);
        let client =
            Client::new(&endpoints, campaign::client_config()).map_err(|e| e.to_string())?;
        let received = Arc::new(Mutex::new(Vec::new()));
        seen.push(received.clone());
        let mut stopped = stopped.clone();
        watchers.push(tokio::spawn(async move {
            use tokio_stream::StreamExt;
            let mut stream = Box::pin(client.watch(0, "", ""));
            loop {
                tokio::select! {
                    m = stream.next() => match m {
                        Some(Ok(m)) => received
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((m.revision, m.seq)),
                        // The stream gave up (retries exhausted) or ended: what it saw stands.
                        _ => return,
                    },
                    _ = stopped.changed() => return,
                }
            }
        }));
    }
    let mut workers = Vec::new();
    for p in 0..cfg.processes as u64 {
        let mut endpoints = cluster.endpoints();
        let first = p as usize % endpoints.len();
        endpoints.rotate_left(first);
        let client =
            Client::new(&endpoints, campaign::client_config()).map_err(|e| e.to_string())?;
        let (history, acks) = (history.clone(), acks.clone());
        workers.push(tokio::spawn(async move {
            let mut rng = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(p + 3);
            let mut next = || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            let mut open: Vec<String> = Vec::new();
            let mut n = 0u64;
            let process = p;
            while Instant::now() < deadline {
                n += 1;
                let key = format!("p{p}-{n}");
                let item = ITEMS[(next() % ITEMS.len() as u64) as usize].to_string();
                let wh = WAREHOUSES[(next() % WAREHOUSES.len() as u64) as usize].to_string();
                let other = WAREHOUSES[(next() % WAREHOUSES.len() as u64) as usize].to_string();
                let quantity = 1 + (next() % 5) as i64;
                let choice = next() % 10;
                let op = match choice {
                    0..=2 => Op::Receive(pb::ReceiveRequest {
                        options: options(&key),
                        item,
                        location: wh,
                        quantity,
                        reference: key.clone(),
                        ..Default::default()
                    }),
                    3 => Op::Ship(pb::ShipRequest {
                        options: options(&key),
                        item,
                        location: wh,
                        quantity,
                        reference: key.clone(),
                        ..Default::default()
                    }),
                    4 | 5 if wh != other => Op::Transfer(pb::TransferRequest {
                        options: options(&key),
                        item,
                        from: wh,
                        to: other,
                        quantity,
                        reference: key.clone(),
                        ..Default::default()
                    }),
                    6 | 7 if open.len() < MAX_OPEN_PER_PROCESS => Op::Reserve(pb::ReserveRequest {
                        options: options(&key),
                        reservation_id: format!("r-{key}"),
                        item,
                        location: wh,
                        quantity,
                        ttl_ms: RESERVATION_TTL_MS,
                        reference: key.clone(),
                    }),
                    8 if !open.is_empty() => Op::Commit(pb::CommitReservationRequest {
                        options: options(&key),
                        reservation_id: open.remove((next() % open.len() as u64) as usize),
                        ..Default::default()
                    }),
                    9 if !open.is_empty() => Op::Release(pb::ReleaseReservationRequest {
                        options: options(&key),
                        reservation_id: open.remove((next() % open.len() as u64) as usize),
                        ..Default::default()
                    }),
                    _ => continue,
                };
                let ends = match &op {
                    Op::Commit(r) => r.reservation_id.clone(),
                    Op::Release(r) => r.reservation_id.clone(),
                    _ => String::new(),
                };
                let value = serde_json::json!({ "key": key, "reservation": ends });
                let record = |e: Event| history.lock().unwrap_or_else(|p| p.into_inner()).push(e);
                record(campaign::event(
                    process,
                    EventType::Invoke,
                    op.f(),
                    &key,
                    value.clone(),
                    t0,
                ));
                // The process's own retry of an unknown outcome, same key (bounded: one).
                let mut outcome = attempt(&client, &op).await;
                if matches!(outcome, Outcome::Unknown) && Instant::now() < deadline {
                    outcome = attempt(&client, &op).await;
                }
                match outcome {
                    Outcome::Ok(w) => {
                        if let Op::Reserve(r) = &op {
                            open.push(r.reservation_id.clone());
                        }
                        acks.lock().unwrap_or_else(|p| p.into_inner()).push(Ack {
                            key: key.clone(),
                            revision: w.revision,
                            ends_reservation: ends,
                        });
                        record(campaign::event(
                            process,
                            EventType::Ok,
                            op.f(),
                            &key,
                            value,
                            t0,
                        ));
                    }
                    Outcome::Refused => record(campaign::event(
                        process,
                        EventType::Fail,
                        op.f(),
                        &key,
                        value,
                        t0,
                    )),
                    Outcome::Unknown => {
                        record(campaign::event(
                            process,
                            EventType::Info,
                            op.f(),
                            &key,
                            value,
                            t0,
                        ));
                    }
                }
            }
        }));
    }
    let faults = campaign::run_nemeses(cfg, cluster, &client, t0, deadline).await?;
    for w in workers {
        w.await.map_err(|e| e.to_string())?;
    }
    let recovery = campaign::check_recovery(cfg, cluster, &client).await?;
    let replicas = read_replicas(cluster).await?;
    let ledger: Vec<(u64, u32)> = replicas
        .first()
        .map(|r| r.movements.iter().map(|m| (m.revision, m.seq)).collect())
        .unwrap_or_default();
    let caught_up = Instant::now() + WATCH_CATCH_UP;
    while Instant::now() < caught_up
        && seen
            .iter()
            .any(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len() < ledger.len())
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_watchers.send(true);
    for w in watchers {
        w.await.map_err(|e| e.to_string())?;
    }
    let watchers = seen
        .iter()
        .enumerate()
        .map(|(watcher, s)| {
            let received = s.lock().unwrap_or_else(|p| p.into_inner());
            WatchReport {
                watcher,
                received: received.len(),
                violation: watch::check(&received, &ledger),
            }
        })
        .collect();
    let events = std::mem::take(&mut *history.lock().unwrap_or_else(|p| p.into_inner()));
    let acks = std::mem::take(&mut *acks.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(InventoryOutcome {
        events,
        acks,
        replicas,
        faults,
        recovery,
        watchers,
    })
}

fn kind_name(k: i32) -> String {
    pb::MovementKind::try_from(k)
        .map(|k| format!("{k:?}").to_lowercase())
        .unwrap_or_else(|_| format!("unknown-{k}"))
}

fn stale() -> Option<pb::ReadOptions> {
    Some(pb::ReadOptions {
        consistency: pb::Consistency::Stale as i32,
    })
}

/// Reads every node's state from that node alone, and retries until all of it comes from
/// one applied index on every node: the state is quiescent (open reservations may still be
/// expiring when the run ends, each expiry a new write) and the replicas have converged.
async fn read_replicas(cluster: &Cluster) -> Result<Vec<Replica>, String> {
    let endpoints = cluster.endpoints();
    // Let every open reservation pass its deadline and be expired first.
    tokio::time::sleep(Duration::from_millis(RESERVATION_TTL_MS + 1_000)).await;
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    let mut last = String::new();
    for _ in 0..READ_ATTEMPTS {
        let mut replicas = Vec::new();
        let mut applied = BTreeSet::new();
        for (i, ep) in endpoints.iter().enumerate() {
            match read_replica(i, ep).await {
                Ok((r, seen)) => {
                    replicas.push(r);
                    applied.extend(seen);
                }
                Err(e) => last = e,
            }
        }
        if replicas.len() == endpoints.len() && applied.len() == 1 {
            return Ok(replicas);
        }
        if !applied.is_empty() {
            last = format!("reads saw applied indexes {applied:?}");
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(format!("no quiescent, converged state to read: {last}"))
}

/// One node's locations, stock levels and ledger, with the applied indexes its answers
/// reported.
async fn read_replica(i: usize, ep: &str) -> Result<(Replica, BTreeSet<u64>), String> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{ep}"))
        .map_err(|e| e.to_string())?
        .connect_lazy();
    let mut node = InventoryServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let err = |s: tonic::Status| format!("node {}: {s}", i + 1);
    let mut applied = BTreeSet::new();
    let mut note = |h: Option<pb::ReadHeader>| {
        applied.insert(h.map(|h| h.applied_index).unwrap_or(0));
    };
    let r = node
        .list_locations(pb::ListLocationsRequest {
            page_size: 1_000,
            page_token: String::new(),
            read: stale(),
        })
        .await
        .map_err(err)?
        .into_inner();
    note(r.header);
    let real_locations = r
        .locations
        .iter()
        .filter(|l| l.kind != pb::LocationKind::Virtual as i32)
        .map(|l| l.id.clone())
        .collect();
    let mut balances = BTreeMap::new();
    for item in ITEMS {
        let r = node
            .get_stock(pb::GetStockRequest {
                item: item.into(),
                location: String::new(),
                read: stale(),
            })
            .await
            .map_err(err)?
            .into_inner();
        note(r.header);
        for l in r.levels {
            balances.insert((l.item, l.location), (l.on_hand, l.reserved));
        }
    }
    let mut movements = Vec::new();
    let mut token = String::new();
    loop {
        let page = node
            .list_movements(pb::ListMovementsRequest {
                page_size: PAGE,
                page_token: token.clone(),
                read: stale(),
                ..Default::default()
            })
            .await
            .map_err(err)?
            .into_inner();
        note(page.header);
        movements.extend(page.movements.into_iter().map(|m| Movement {
            revision: m.revision,
            seq: m.seq,
            kind: kind_name(m.kind),
            item: m.item,
            from: m.from,
            to: m.to,
            quantity: m.quantity,
            reference: m.reference,
            reservation: m.reservation_id,
        }));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let replica = Replica {
        node: i as u64 + 1,
        balances,
        real_locations,
        movements,
    };
    Ok((replica, applied))
}
