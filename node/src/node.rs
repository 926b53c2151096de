//! Assembles a store node: opens storage, starts Raft, serves the client and peer ports,
//! bootstraps a new cluster when asked to, and proposes reservation expiry while leading.

use crate::admin::AdminState;
use crate::config::NodeConfig;
use crate::metrics::Metrics;
use crate::raft::log_store::LogStore;
use crate::raft::network::{peer_channel, NetworkFactory};
use crate::raft::state_machine::StateMachine;
use crate::raft::{NodeId, Raft};
use crate::server::inventory::{propose_expiry, InventoryApi};
use crate::server::metered::MeteredLayer;
use crate::server::peer::PeerApi;
use crate::server::proposer::Proposer;
use crate::server::read_index::ReadBatcher;
use crate::storage::SledEngine;
use crate::tls::{Tls, TlsListener};
use anyhow::Context;
use laundry_proto::raft::raft_service_client::RaftServiceClient;
use laundry_proto::raft::raft_service_server::RaftServiceServer;
use laundry_proto::raft::PeerStatusRequest;
use laundry_proto::v1::inventory_service_server::InventoryServiceServer;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::wrappers::TcpListenerStream;

/// Largest gRPC message accepted: snapshots travel in chunks well below this.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// How often the leader checks for reservations past their deadline.
const EXPIRY_TICK_MS: u64 = 250;
/// How often the operations applied since the last snapshot are compared with the limit.
const SNAPSHOT_TRIGGER_TICK_MS: u64 = 1_000;

/// Runs the node until `shutdown` completes.
pub async fn run(
    cfg: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("create data dir {}", cfg.data_dir.display()))?;
    let engine = Arc::new(
        SledEngine::open(&cfg.data_dir.join("db"))
            .with_context(|| format!("open storage in {}", cfg.data_dir.display()))?,
    );
    let tls = match &cfg.tls {
        Some(files) => Some(Arc::new(Tls::load(files).context("load TLS material")?)),
        None => {
            tracing::warn!(
                "running without TLS (--plaintext): traffic on all ports is unencrypted"
            );
            None
        }
    };
    let metrics = Arc::new(Metrics::new());
    let sm = StateMachine::open(engine.clone(), &cfg.data_dir, metrics.clone())
        .await
        .context("open state machine")?;
    sm.set_snapshot_write_mb_per_s(cfg.snapshot_write_mb_per_s);
    let log = LogStore::open(&cfg.data_dir, engine.as_ref(), metrics.clone())
        .context("open the Raft log")?;
    let raft_config = openraft::Config {
        cluster_name: cfg.cluster_name.clone(),
        heartbeat_interval: cfg.heartbeat_ms,
        election_timeout_min: cfg.election_min_ms,
        election_timeout_max: cfg.election_max_ms,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_logs),
        max_in_snapshot_log_to_keep: cfg.keep_logs,
        install_snapshot_timeout: 10_000,
        ..Default::default()
    }
    .validate()
    .context("raft config")?;
    let raft = Raft::new(
        cfg.id,
        Arc::new(raft_config),
        NetworkFactory {
            tls: tls.clone(),
            metrics: Some(metrics.clone()),
        },
        log,
        sm.clone(),
    )
    .await
    .context("start raft")?;

    // Bind both ports before reporting ready, so a taken port fails the start loudly.
    let peer_listener = tokio::net::TcpListener::bind(cfg.peer_addr)
        .await
        .with_context(|| format!("bind peer port {}", cfg.peer_addr))?;
    let client_listener = tokio::net::TcpListener::bind(cfg.client_addr)
        .await
        .with_context(|| format!("bind client port {}", cfg.client_addr))?;
    let admin_listener = tokio::net::TcpListener::bind(cfg.admin_addr)
        .await
        .with_context(|| format!("bind admin port {}", cfg.admin_addr))?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let peer = RaftServiceServer::new(PeerApi {
        node_id: cfg.id,
        raft: raft.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    // TLS on the peer port is completed by `peer_stream`, which serves the peer stream
    // itself and hands every other connection to this gRPC server.
    let peer_incoming = crate::server::peer_stream::start(
        peer_listener,
        tls.clone(),
        raft.clone(),
        stop_rx.clone(),
    );
    let peer_server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(peer)
            .serve_with_incoming_shutdown(peer_incoming, stopped(stop_rx.clone())),
    );

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<InventoryServiceServer<InventoryApi<SledEngine>>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(laundry_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("reflection service")?;
    let api = Arc::new(InventoryApi {
        node_id: cfg.id,
        raft: raft.clone(),
        sm: sm.clone(),
        metrics: metrics.clone(),
        proposer: Proposer::start(raft.clone(), metrics.clone()),
        reads: ReadBatcher::start(raft.clone(), metrics.clone()),
        fault: cfg.test_fault,
    });
    if let Some(f) = cfg.test_fault {
        tracing::warn!(fault = ?f, "UNSAFE TEST FAULT ENABLED: this node breaks its guarantees on purpose");
    }
    let mut client_builder = tonic::transport::Server::builder();
    if let Some(t) = &tls {
        client_builder = client_builder
            .tls_config(t.client_port())
            .context("client port TLS")?;
    }
    let client_server = tokio::spawn(
        client_builder
            .layer(MeteredLayer {
                metrics: metrics.clone(),
            })
            .add_service(health)
            .add_service(reflection)
            .add_service(InventoryServiceServer::from_arc(api.clone()))
            .serve_with_incoming_shutdown(nodelay(client_listener), stopped(stop_rx.clone())),
    );

    let admin_state = Arc::new(AdminState {
        node_id: cfg.id,
        raft: raft.clone(),
        sm: sm.clone(),
        metrics: metrics.clone(),
        token: cfg.admin_token.clone(),
        election_max_ms: cfg.election_max_ms,
        cluster_name: cfg.cluster_name.clone(),
        backup_dir: cfg.backup_dir.clone(),
        backup_retain: cfg.backup_retain,
        tls: tls.clone(),
    });
    let admin_server = {
        let stop = stopped(stop_rx.clone());
        let router = crate::admin::router(admin_state);
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                Some(t) => {
                    let listener = TlsListener {
                        tcp: admin_listener,
                        acceptor: t.admin_acceptor(),
                    };
                    axum::serve(listener, router)
                        .with_graceful_shutdown(stop)
                        .await
                }
                None => {
                    axum::serve(admin_listener, router)
                        .with_graceful_shutdown(stop)
                        .await
                }
            }
        })
    };

    if !cfg.initial_members.is_empty() {
        bootstrap(&raft, &cfg, tls.as_deref()).await?;
    }

    // Count leader changes as this node observes them. The server metrics channel changes
    // only with vote, role, leader or membership; the full `RaftMetrics` channel is sent on
    // every step of the log, which woke a watcher on it thousands of times a second.
    let leader_watch = {
        let mut rx = raft.server_metrics();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut last = rx.borrow().current_leader;
            while rx.changed().await.is_ok() {
                let now = rx.borrow().current_leader;
                if now != last && now.is_some() {
                    metrics.leader_changes.inc();
                }
                last = now;
            }
        })
    };

    // openraft's policy counts entries; an entry holds one operation or thousands, so the
    // operations applied since the last snapshot are watched too (what a start re-applies).
    let snapshot_trigger = {
        let sm = sm.clone();
        let raft = raft.clone();
        let stop = stop_rx.clone();
        let limit_ops = cfg.snapshot_ops;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(SNAPSHOT_TRIGGER_TICK_MS));
            // Logged once per crossing of the limit: while openraft is still building the
            // previous snapshot the count stays above it and the trigger repeats each tick.
            let mut logged = false;
            while !*stop.borrow() {
                tick.tick().await;
                let ops = sm.ops_since_snapshot();
                if ops < limit_ops {
                    logged = false;
                    continue;
                }
                if !logged {
                    tracing::info!(ops, limit_ops, "snapshot by operation count");
                    logged = true;
                }
                // Ignored by openraft while a build runs; the count resets when one copies.
                let _ = raft.trigger().snapshot().await;
            }
        })
    };

    let expiry = {
        let api = api.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(EXPIRY_TICK_MS));
            while !*stop.borrow() {
                tick.tick().await;
                propose_expiry(&api).await;
            }
        })
    };

    tracing::info!(id = cfg.id, client = %cfg.client_addr, peer = %cfg.peer_addr, admin = %cfg.admin_addr, data = %cfg.data_dir.display(), "node ready");
    // A Raft core that stopped (storage error, bug) cannot serve again: exit non-zero so the
    // supervisor restarts the process, instead of lingering as a node that answers nothing.
    // The core sets `running_state` to its error and then ends, which closes the server
    // metrics channel: waiting on that channel (changed only by elections and membership)
    // costs nothing per write.
    let mut server_metrics = raft.server_metrics();
    let all_metrics = raft.metrics();
    let fatal = async move {
        while server_metrics.changed().await.is_ok() {}
        // Bound to a name so the metrics guard is dropped before `all_metrics` is.
        let ended = match &all_metrics.borrow().running_state {
            Err(e) => e.to_string(),
            Ok(()) => "the raft core ended".to_string(),
        };
        ended
    };
    let failure = tokio::select! {
        _ = shutdown => None,
        reason = fatal => Some(reason),
    };
    tracing::info!(id = cfg.id, ?failure, "shutting down");
    let _ = stop_tx.send(true);
    let _ = raft.shutdown().await;
    expiry.abort();
    snapshot_trigger.abort();
    leader_watch.abort();
    let _ = peer_server.await;
    let _ = client_server.await;
    let _ = admin_server.await;
    // Best effort: every acknowledged write was already fsynced by the log store.
    let _ = crate::storage::Engine::flush(engine.as_ref()).await;
    match failure {
        None => Ok(()),
        Some(reason) => Err(anyhow::anyhow!("raft stopped: {reason}")),
    }
}

/// Accepted connections with Nagle's algorithm off: gRPC writes headers, data and trailers
/// separately, and Nagle holding the later small writes for the peer's delayed ACK adds
/// ~40 ms to a response.
fn nodelay(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok(conn)
    })
}

/// Initializes a new cluster from `initial_members` on the member with the lowest id, unless
/// this node already holds Raft state or any peer reports that it does (the cluster exists;
/// this node was wiped or replaced and will be caught up by the leader instead).
async fn bootstrap(raft: &Raft, cfg: &NodeConfig, tls: Option<&Tls>) -> anyhow::Result<()> {
    if raft.is_initialized().await? {
        return Ok(());
    }
    let lowest: NodeId = *cfg
        .initial_members
        .keys()
        .next()
        .expect("non-empty members");
    if lowest != cfg.id {
        tracing::info!(
            bootstrapper = lowest,
            "waiting for the cluster to be bootstrapped"
        );
        return Ok(());
    }
    for (id, node) in cfg.initial_members.iter().filter(|(id, _)| **id != cfg.id) {
        let Ok(channel) = peer_channel(&node.peer_addr, tls) else {
            continue;
        };
        let mut client = RaftServiceClient::new(channel);
        let mut req = tonic::Request::new(PeerStatusRequest {});
        req.set_timeout(Duration::from_millis(1_000));
        if let Ok(status) = client.peer_status(req).await {
            if status.into_inner().initialized {
                tracing::warn!(peer = id, "a peer already holds cluster state; not bootstrapping, waiting to be caught up");
                return Ok(());
            }
        }
    }
    match raft.initialize(cfg.initial_members.clone()).await {
        Ok(()) => {
            tracing::info!(members = ?cfg.initial_members.keys().collect::<Vec<_>>(), "bootstrapped a new cluster")
        }
        Err(e) => tracing::warn!(error = %e, "bootstrap skipped"),
    }
    Ok(())
}
