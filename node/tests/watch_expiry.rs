//! The watch stream delivers every movement once, in order, across the loss of the node it
//! was reading from; and reservations expire through a replicated command, identically on
//! every replica.

mod common;

use common::*;
use laundry_client::pb;
use std::time::Duration;
use tokio_stream::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_across_a_node_kill_without_gaps_or_repeats() {
    let _serial = SERIAL.lock().await;
    let mut cluster = TestCluster::start(3, &[]);
    cluster.wait_leader(Duration::from_secs(15)).await;
    let client = cluster.client();
    seed(&client).await;
    // The watch reads from node 1 first (the client's first endpoint).
    let mut watch = Box::pin(client.watch(1, "sku", ""));
    for _ in 0..10 {
        client.receive(receive("sku", "w1", 1)).await.unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < 10 {
        let m = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("watch stalled")
            .unwrap()
            .unwrap();
        seen.push(m);
    }
    cluster.kill(0);
    cluster.wait_leader(Duration::from_secs(15)).await;
    for _ in 0..10 {
        client.receive(receive("sku", "w1", 1)).await.unwrap();
    }
    while seen.len() < 20 {
        let m = tokio::time::timeout(Duration::from_secs(20), watch.next())
            .await
            .expect("watch did not resume")
            .unwrap()
            .unwrap();
        seen.push(m);
    }
    let positions: Vec<(u64, u32)> = seen.iter().map(|m| (m.revision, m.seq)).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "strictly increasing, no repeats: {positions:?}"
    );
    assert!(seen
        .iter()
        .all(|m| m.item == "sku" && m.kind == pb::MovementKind::Receive as i32));
    // No gaps: the stream matches the ledger exactly.
    let ledger = client
        .list_movements(pb::ListMovementsRequest {
            item: "sku".into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ledger.movements, seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_expire_by_replicated_command_on_every_replica() {
    let _serial = SERIAL.lock().await;
    let cluster = TestCluster::start(3, &[]);
    cluster.wait_leader(Duration::from_secs(15)).await;
    let client = cluster.client();
    seed(&client).await;
    client.receive(receive("sku", "w1", 10)).await.unwrap();
    let r = client
        .reserve(pb::ReserveRequest {
            item: "sku".into(),
            location: "w1".into(),
            quantity: 4,
            ttl_ms: 300,
            ..Default::default()
        })
        .await
        .unwrap();
    let id = r.reservation_ids[0].clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let res = client
            .get_reservation(pb::GetReservationRequest {
                id: id.clone(),
                read: None,
            })
            .await
            .unwrap();
        if res.reservation.unwrap().state == pb::ReservationState::Expired as i32 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "reservation {id} never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.wait_converged(Duration::from_secs(20)).await;
    for i in 0..3 {
        let s = cluster
            .client_of(i)
            .get_stock(pb::GetStockRequest {
                item: "sku".into(),
                location: "w1".into(),
                read: Some(pb::ReadOptions {
                    consistency: pb::Consistency::Stale as i32,
                }),
            })
            .await
            .unwrap();
        assert_eq!(
            (s.levels[0].on_hand, s.levels[0].reserved),
            (10, 0),
            "node {}",
            i + 1
        );
    }
    let commit = pb::CommitReservationRequest {
        reservation_id: id,
        ..Default::default()
    };
    assert_eq!(
        client.commit_reservation(commit).await.unwrap_err().code(),
        tonic::Code::FailedPrecondition
    );
}
