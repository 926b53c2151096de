//! `WriteMany` and the client's write coalescing, against three real node processes: each
//! write of a call is applied or refused on its own, answered in order, replayed under its
//! key; a bad call changes nothing; a follower refuses the whole call with a leader hint;
//! and concurrent writers through one client share calls without losing a write.

mod common;

use common::*;
use laundry_client::pb;
use laundry_proto::v1::inventory_service_client::InventoryServiceClient;
use laundry_proto::LEADER_ADDR_KEY;
use std::time::Duration;
use tonic::Code;

const ELECTION: Duration = Duration::from_secs(15);
const CONVERGE: Duration = Duration::from_secs(20);

fn keyed(key: &str) -> Option<pb::WriteOptions> {
    Some(pb::WriteOptions {
        idempotency_key: key.into(),
        ..Default::default()
    })
}

fn write(op: pb::operation::Op) -> pb::Operation {
    pb::Operation { op: Some(op) }
}

/// An adjustment of `sku` at `w1` with these options.
fn adjust_request(delta: i64, options: Option<pb::WriteOptions>) -> pb::AdjustRequest {
    pb::AdjustRequest {
        item: "sku".into(),
        location: "w1".into(),
        delta,
        reason: "count".into(),
        options,
        ..Default::default()
    }
}

fn adjust(key: &str, delta: i64) -> pb::Operation {
    write(pb::operation::Op::Adjust(adjust_request(delta, keyed(key))))
}

fn ship(key: &str, quantity: i64) -> pb::Operation {
    write(pb::operation::Op::Ship(pb::ShipRequest {
        item: "sku".into(),
        location: "w1".into(),
        quantity,
        options: keyed(key),
        ..Default::default()
    }))
}

fn applied(o: &pb::WriteOutcome) -> &pb::WriteResponse {
    match &o.result {
        Some(pb::write_outcome::Result::Applied(r)) => r,
        other => panic!("expected applied, got {other:?}"),
    }
}

fn refused(o: &pb::WriteOutcome) -> &pb::WriteRefusal {
    match &o.result {
        Some(pb::write_outcome::Result::Refused(r)) => r,
        other => panic!("expected refused, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_write_of_a_call_stands_alone_and_concurrent_writers_share_calls() {
    let _serial = SERIAL.lock().await;
    let cluster = TestCluster::start(3, &[]);
    let leader = cluster.wait_leader(ELECTION).await;
    let c = cluster.client();
    seed(&c).await;
    c.receive(receive("sku", "w1", 10)).await.unwrap();
    let leader_addr = cluster.nodes[cluster.index_of(leader)].client_addr.clone();
    let mut raw = InventoryServiceClient::connect(format!("http://{leader_addr}"))
        .await
        .unwrap();

    // Mixed outcomes, in order: a refusal by the rules, a missing key, an empty write and
    // a validation failure do not stop the writes around them.
    let call = pb::WriteManyRequest {
        writes: vec![
            adjust("wm-1", 5),
            ship("wm-2", 1_000),
            write(pb::operation::Op::Adjust(adjust_request(1, None))),
            pb::Operation { op: None },
            adjust("wm-5", 0),
            ship("wm-6", 3),
        ],
    };
    let first = raw.write_many(call.clone()).await.unwrap().into_inner();
    assert_eq!(first.outcomes.len(), 6);
    let r1 = applied(&first.outcomes[0]).clone();
    let r2 = refused(&first.outcomes[1]);
    assert_eq!(r2.code, Code::FailedPrecondition as i32);
    assert_eq!(r2.reason, "insufficient_stock");
    let r3 = refused(&first.outcomes[2]);
    assert_eq!(r3.code, Code::InvalidArgument as i32);
    assert!(r3.message.contains("idempotency_key"), "{}", r3.message);
    assert_eq!(
        refused(&first.outcomes[3]).code,
        Code::InvalidArgument as i32
    );
    assert_eq!(
        refused(&first.outcomes[4]).code,
        Code::InvalidArgument as i32
    );
    let r6 = applied(&first.outcomes[5]).clone();
    assert!(r6.revision > r1.revision, "answered in request order");
    assert!(!r1.replayed && !r6.replayed);
    assert_eq!(on_hand(&c, "sku", "w1", false).await, 10 + 5 - 3);

    // The same call again: the applied writes are replayed, nothing applies twice.
    let again = raw.write_many(call).await.unwrap().into_inner();
    let a1 = applied(&again.outcomes[0]);
    assert!(a1.replayed);
    assert_eq!(a1.revision, r1.revision);
    assert_eq!(applied(&again.outcomes[5]).revision, r6.revision);
    assert_eq!(on_hand(&c, "sku", "w1", false).await, 12);

    // Each write of both calls is counted on its own, by operation and outcome (a refusal
    // under a key is not stored, so the second call refuses those writes again).
    let leader_index = cluster.index_of(leader);
    for (labels, expected) in [
        (r#"op="adjust",outcome="Applied""#, 1),
        (r#"op="adjust",outcome="Replayed""#, 1),
        (r#"op="adjust",outcome="Refused""#, 4),
        (r#"op="ship",outcome="Applied""#, 1),
        (r#"op="ship",outcome="Replayed""#, 1),
        (r#"op="ship",outcome="Refused""#, 2),
        (r#"op="unknown",outcome="Refused""#, 2),
        (r#"op="receive",outcome="Applied""#, 1),
    ] {
        let needle = format!("laundry_writes_total{{{labels}}} ");
        assert_eq!(
            counter(&cluster, leader_index, &needle).await,
            expected,
            "{needle}"
        );
    }

    // A call that is bad as a whole is refused whole and changes nothing.
    let status = raw
        .write_many(pb::WriteManyRequest { writes: vec![] })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let too_many = pb::WriteManyRequest {
        writes: (0..1025).map(|i| adjust(&format!("big-{i}"), 1)).collect(),
    };
    let status = raw.write_many(too_many).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("1025"), "{}", status.message());
    assert_eq!(on_hand(&c, "sku", "w1", false).await, 12);

    // A follower refuses the whole call and names the leader.
    let follower = (0..3).find(|i| *i != cluster.index_of(leader)).unwrap();
    let mut at_follower =
        InventoryServiceClient::connect(format!("http://{}", cluster.nodes[follower].client_addr))
            .await
            .unwrap();
    let status = at_follower
        .write_many(pb::WriteManyRequest {
            writes: vec![adjust("wm-f", 1), ship("wm-g", 1)],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        status
            .metadata()
            .get(LEADER_ADDR_KEY)
            .and_then(|v| v.to_str().ok()),
        Some(leader_addr.as_str())
    );
    // Both writes fail with the call, the second without being awaited.
    for op in ["adjust", "ship"] {
        let needle = format!(r#"laundry_writes_total{{op="{op}",outcome="Failed"}} "#);
        assert_eq!(counter(&cluster, follower, &needle).await, 1, "{needle}");
    }

    // 64 writers through one coalescing client: every write applies once, in fewer calls.
    let calls_before = write_many_calls(&cluster, leader).await;
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let c = c.clone();
        writers.spawn(async move { c.adjust(adjust_request(1, None)).await });
    }
    let mut revisions = std::collections::BTreeSet::new();
    while let Some(joined) = writers.join_next().await {
        let resp = joined.unwrap().unwrap();
        assert!(revisions.insert(resp.revision), "revisions are unique");
    }
    assert_eq!(revisions.len(), 64);
    assert_eq!(on_hand(&c, "sku", "w1", false).await, 12 + 64);
    let calls = write_many_calls(&cluster, leader).await - calls_before;
    assert!(
        (1..64).contains(&calls),
        "64 concurrent writes took {calls} WriteMany calls; they should share calls"
    );
    cluster.wait_converged(CONVERGE).await;
}

/// `WriteMany` calls the leader has answered with OK, from its metrics.
async fn write_many_calls(cluster: &TestCluster, leader: u64) -> u64 {
    let needle = "laundry_grpc_requests_total{method=\"WriteMany\",code=\"OK\"} ";
    counter(cluster, cluster.index_of(leader), needle).await
}

/// The value of the counter sample starting with `needle` (name and labels, then a space)
/// on the node at `index`; 0 when it has no such sample yet.
async fn counter(cluster: &TestCluster, index: usize, needle: &str) -> u64 {
    let admin = cluster.admin();
    let ep = cluster.nodes[index].admin_addr.clone();
    let metrics = admin.request(&ep, "GET", "/metrics", None).await.unwrap();
    metrics
        .body
        .lines()
        .find_map(|l| l.strip_prefix(needle))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_nodes_without_write_many_the_client_falls_back_to_one_call_per_write() {
    let _serial = SERIAL.lock().await;
    // Nodes acting as a release before WriteMany (a rolling upgrade, clients first).
    let cluster = TestCluster::start(3, &["--unsafe-test-fault", "no-write-many"]);
    let leader = cluster.wait_leader(ELECTION).await;
    // Seeded by a per-call client, so the coalescing client's first writes are concurrent
    // and find out together (groups as well as a lone write fall back).
    seed(&cluster.client_per_call()).await;
    let c = cluster.client();
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let c = c.clone();
        writers.spawn(async move { c.receive(receive("sku", "w1", 1)).await });
    }
    while let Some(joined) = writers.join_next().await {
        joined
            .unwrap()
            .expect("the write falls back to its own call");
    }
    assert_eq!(on_hand(&c, "sku", "w1", false).await, 64);
    let metrics = cluster
        .admin()
        .request(
            &cluster.nodes[cluster.index_of(leader)].admin_addr,
            "GET",
            "/metrics",
            None,
        )
        .await
        .unwrap()
        .body;
    let count = |needle: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(needle))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0)
    };
    // The writes that queued behind the lone ones went as WriteMany and were refused;
    // each then went by its own call, as did every write after.
    assert!(
        count("laundry_grpc_requests_total{method=\"WriteMany\",code=\"UNIMPLEMENTED\"} ") >= 1
    );
    assert_eq!(
        count("laundry_grpc_requests_total{method=\"WriteMany\",code=\"OK\"} "),
        0
    );
    assert_eq!(
        count("laundry_grpc_requests_total{method=\"Receive\",code=\"OK\"} "),
        64
    );
}
