//! The operations surface: health and readiness, Prometheus metrics that parse, cluster
//! status, the admin token, membership changes under write load, and leader hand-off.

mod common;

use common::*;
use laundry_client::{pb, AdminClient, Client};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ELECTION: Duration = Duration::from_secs(15);

/// Checks the text exposition format line by line: every sample belongs to a declared
/// family, names and labels are well formed, values parse, histogram buckets are
/// cumulative, and the OpenMetrics `# EOF` terminator ends the text.
fn check_exposition(text: &str) -> Result<usize, String> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = 0;
    let mut last_bucket: Option<(String, f64)> = None;
    let lines: Vec<&str> = text.lines().collect();
    if lines.last() != Some(&"# EOF") {
        return Err("missing # EOF terminator".into());
    }
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !n.starts_with(|c: char| c.is_ascii_digit())
    };
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest
                .split_once(' ')
                .ok_or(format!("bad TYPE line: {line}"))?;
            if ![
                "counter",
                "gauge",
                "histogram",
                "summary",
                "unknown",
                "info",
                "stateset",
                "gaugehistogram",
            ]
            .contains(&ty)
            {
                return Err(format!("unknown type in: {line}"));
            }
            types.insert(name.to_string(), ty.to_string());
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            return Err(format!("unexpected line: {line:?}"));
        }
        let (series, value) = line.rsplit_once(' ').ok_or(format!("no value: {line}"))?;
        let value: f64 = value.parse().map_err(|_| format!("bad value: {line}"))?;
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (
                n,
                Some(
                    rest.strip_suffix('}')
                        .ok_or(format!("unclosed labels: {line}"))?,
                ),
            ),
            None => (series, None),
        };
        if !name_ok(name) {
            return Err(format!("bad metric name: {line}"));
        }
        if let Some(labels) = labels {
            for pair in labels.split(',').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').ok_or(format!("bad label: {line}"))?;
                if !(name_ok(k) && v.starts_with('"') && v.ends_with('"') && v.len() >= 2) {
                    return Err(format!("bad label {pair:?} in: {line}"));
                }
            }
        }
        let family = ["_total", "_bucket", "_count", "_sum", "_created"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| types.contains_key(*f)))
            .unwrap_or(name);
        if !types.contains_key(family) {
            return Err(format!("sample of undeclared family: {line}"));
        }
        if name.ends_with("_bucket") {
            let others: Vec<&str> = labels
                .unwrap_or("")
                .split(',')
                .filter(|p| !p.starts_with("le="))
                .collect();
            let key = format!("{family}{{{}}}", others.join(","));
            if let Some((k, prev)) = &last_bucket {
                if *k == key && value < *prev {
                    return Err(format!("histogram buckets not cumulative at: {line}"));
                }
            }
            last_bucket = Some((key, value));
        }
        samples += 1;
    }
    Ok(samples)
}

#[test]
fn the_exposition_checker_can_fail() {
    assert!(check_exposition("# TYPE a counter\na_total 1\n# EOF").is_ok());
    assert!(
        check_exposition("# TYPE a counter\na_total 1\n").is_err(),
        "no EOF"
    );
    assert!(check_exposition("b 1\n# EOF").is_err(), "undeclared");
    assert!(
        check_exposition("# TYPE a gauge\na x\n# EOF").is_err(),
        "bad value"
    );
    assert!(
        check_exposition("# TYPE a gauge\na{k=v} 1\n# EOF").is_err(),
        "unquoted label"
    );
    assert!(
        check_exposition("# TYPE h histogram\nh_bucket{le=\"1\"} 5\nh_bucket{le=\"2\"} 3\n# EOF")
            .is_err(),
        "not cumulative"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_metrics_cluster_and_the_admin_token() {
    let _serial = SERIAL.lock().await;
    let cluster = TestCluster::start(3, &[]);
    let leader = cluster.wait_leader(ELECTION).await;
    // One call per write, so the per-method request counter sees Receive and Ship.
    let client = cluster.client_per_call();
    seed(&client).await;
    client.receive(receive("sku", "w1", 3)).await.unwrap();
    let _ = client
        .ship(pb::ShipRequest {
            item: "sku".into(),
            location: "w1".into(),
            quantity: 99,
            ..Default::default()
        })
        .await;
    let admin = cluster.admin();
    let leader_ep = cluster.nodes[cluster.index_of(leader)].admin_addr.clone();

    assert_eq!(
        admin
            .request(&leader_ep, "GET", "/healthz", None)
            .await
            .unwrap()
            .status,
        200
    );
    let ready = admin
        .request(&leader_ep, "GET", "/readyz", None)
        .await
        .unwrap();
    assert_eq!(ready.status, 200, "{}", ready.body);

    let metrics = admin
        .request(&leader_ep, "GET", "/metrics", None)
        .await
        .unwrap();
    assert_eq!(metrics.status, 200);
    let samples =
        check_exposition(&metrics.body).unwrap_or_else(|e| panic!("{e}\n{}", metrics.body));
    assert!(samples > 20, "{samples} samples");
    for needle in [
        "laundry_raft_term ",
        "laundry_raft_is_leader 1",
        "laundry_log_fsync_seconds_count",
        "laundry_proposal_seconds_bucket",
        "laundry_grpc_requests_total{method=\"Receive\",code=\"OK\"} 1",
        "laundry_grpc_requests_total{method=\"Ship\",code=\"FAILED_PRECONDITION\"} 1",
        // One Receive and one Ship, each timed once.
        "laundry_grpc_request_seconds_count{method=\"Receive\"} 1",
        "laundry_grpc_request_seconds_count{method=\"Ship\"} 1",
        "laundry_replication_lag_entries{peer=",
        "laundry_storage_bytes ",
        // Replication goes over the peer stream; nothing needed gRPC.
        "transport=\"Stream\",outcome=\"Answered\"}",
        "laundry_peer_stream_connects_total{peer=",
    ] {
        assert!(
            metrics.body.contains(needle),
            "missing {needle:?} in\n{}",
            metrics.body
        );
    }
    assert!(
        !metrics.body.contains("transport=\"Grpc\""),
        "a peer of the same release was called over gRPC:\n{}",
        metrics.body
    );

    let status = admin
        .request(&leader_ep, "GET", "/cluster", None)
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(status["leader_id"], json!(leader));
    assert_eq!(status["voters"].as_array().unwrap().len(), 3);
    assert_eq!(status["members"].as_array().unwrap().len(), 3);

    // Mutating calls: refused without the token and with a wrong one, accepted with it.
    let anonymous = AdminClient::new(vec![leader_ep.clone()], None);
    assert_eq!(
        anonymous
            .request(&leader_ep, "POST", "/snapshot", None)
            .await
            .unwrap()
            .status,
        401
    );
    let wrong = AdminClient::new(
        vec![leader_ep.clone()],
        Some("not-the-right-token-at-all".into()),
    );
    assert_eq!(
        wrong
            .request(&leader_ep, "POST", "/snapshot", None)
            .await
            .unwrap()
            .status,
        401
    );
    assert_eq!(
        anonymous
            .request(&leader_ep, "DELETE", "/members/2", None)
            .await
            .unwrap()
            .status,
        401
    );
    let snap = admin
        .request(&leader_ep, "POST", "/snapshot", None)
        .await
        .unwrap();
    assert_eq!(snap.status, 200, "{}", snap.body);
    assert!(snap.json().unwrap()["snapshot_index"].as_u64().unwrap() > 0);
    let after = cluster.status(cluster.index_of(leader)).await.unwrap();
    assert!(after.snapshot_index > 0);
}

/// Writes in a loop until told to stop; counts what was acknowledged.
fn writer(
    client: Client,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicI64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            if client.receive(receive("sku", "w1", 1)).await.is_ok() {
                acked.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_and_hand_off_under_write_load_lose_nothing() {
    let _serial = SERIAL.lock().await;
    let mut cluster = TestCluster::start(3, &[]);
    cluster.wait_leader(ELECTION).await;
    let client = cluster.client();
    seed(&client).await;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicI64::new(0));
    let load = writer(client.clone(), stop.clone(), acked.clone());

    // Add node 4 as a learner, promote it, remove node 2: through whichever node leads.
    let new = cluster.add_node();
    let n4 = &cluster.nodes[new];
    let admin = cluster.admin();
    let body = json!({ "id": n4.id, "peer_addr": n4.peer_addr, "client_addr": n4.client_addr, "admin_addr": n4.admin_addr });
    let added = admin.leader("POST", "/members", Some(&body)).await.unwrap();
    assert_eq!(added.status, 200, "{}", added.body);
    let promoted = admin
        .leader("POST", &format!("/members/{}/promote", n4.id), None)
        .await
        .unwrap();
    assert_eq!(promoted.status, 200, "{}", promoted.body);
    let again = admin
        .leader("POST", &format!("/members/{}/promote", n4.id), None)
        .await
        .unwrap();
    assert_eq!(
        again.status, 409,
        "promoting a voter twice is a conflict: {}",
        again.body
    );
    let removed = admin.leader("DELETE", "/members/2", None).await.unwrap();
    assert_eq!(removed.status, 200, "{}", removed.body);
    let unknown = admin.leader("DELETE", "/members/99", None).await.unwrap();
    assert_eq!(unknown.status, 404);

    // Hand leadership off while writes continue.
    let status = admin.any("GET", "/cluster").await.unwrap().json().unwrap();
    let before = status["leader_id"].as_u64().unwrap();
    let handoff = admin.leader("POST", "/leader/handoff", None).await.unwrap();
    assert_eq!(handoff.status, 200, "{}", handoff.body);
    let after = handoff.json().unwrap()["leader"].as_u64().unwrap();
    assert_ne!(after, before);

    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let acknowledged = acked.load(Ordering::Relaxed);
    assert!(
        acknowledged > 0,
        "the writer made progress during the changes"
    );

    // Node 2 is out; the rest converge and hold every acknowledged write. A write whose
    // acknowledgement was lost may still have applied, so on_hand may exceed the count,
    // never fall below it.
    cluster.kill(cluster.index_of(2));
    let statuses = cluster.wait_converged(Duration::from_secs(20)).await;
    let voters: Vec<u64> = statuses[0].voters.clone();
    assert_eq!(voters, vec![1, 3, 4]);
    let total = on_hand(&client, "sku", "w1", false).await;
    assert!(
        total >= acknowledged,
        "lost writes: {total} on hand < {acknowledged} acknowledged"
    );
    let mut moved = 0i64;
    let mut token = String::new();
    loop {
        let page = client
            .list_movements(pb::ListMovementsRequest {
                item: "sku".into(),
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap();
        moved += page.movements.iter().map(|m| m.quantity).sum::<i64>();
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(moved, total, "the ledger explains the balance");
}
