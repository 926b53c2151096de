//! Every bad input named in the brief gets its precise gRPC status and changes nothing:
//! after all of them, every replica's state digest is what it was before.

mod common;

use common::*;
use laundry_client::{pb, ClientError};
use laundry_proto::v1::inventory_service_client::InventoryServiceClient;
use std::collections::BTreeMap;
use std::time::Duration;
use tonic::Code;

fn code(r: Result<pb::WriteResponse, ClientError>) -> Code {
    match r {
        Ok(w) => panic!("accepted: {w:?}"),
        Err(e) => e.code(),
    }
}

/// The refusal's code and the stable reason name the node sent with it.
fn reason(r: Result<pb::WriteResponse, ClientError>) -> (Code, String) {
    match r {
        Ok(w) => panic!("accepted: {w:?}"),
        Err(e) => (
            e.code(),
            e.rejection().map(|r| r.reason.clone()).unwrap_or_default(),
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_precise_status_and_changes_nothing() {
    let _serial = SERIAL.lock().await;
    let cluster = TestCluster::start(3, &[]);
    let leader = cluster.wait_leader(Duration::from_secs(15)).await;
    let c = cluster.client();
    seed(&c).await;
    c.receive(receive("sku", "w1", 5)).await.unwrap();
    let before = cluster.wait_converged(Duration::from_secs(20)).await[0].state_digest;

    // INVALID_ARGUMENT: shapes and bounds.
    assert_eq!(code(c.create_item(item("")).await), Code::InvalidArgument);
    assert_eq!(
        code(c.create_item(item(&"x".repeat(129))).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(c.create_item(item("has space")).await),
        Code::InvalidArgument
    );
    let mut long_name = item("n");
    long_name.name = "x".repeat(257);
    assert_eq!(code(c.create_item(long_name).await), Code::InvalidArgument);
    let mut many_attrs = item("a");
    many_attrs.attributes = (0..33)
        .map(|i| (format!("k{i}"), "v".to_string()))
        .collect::<BTreeMap<_, _>>();
    assert_eq!(code(c.create_item(many_attrs).await), Code::InvalidArgument);
    for q in [0, -1, i64::MIN, i64::MAX] {
        assert_eq!(
            code(c.receive(receive("sku", "w1", q)).await),
            Code::InvalidArgument,
            "quantity {q}"
        );
    }
    let no_kind = pb::CreateLocationRequest {
        id: "l".into(),
        name: "l".into(),
        ..Default::default()
    };
    assert_eq!(
        code(c.create_location(no_kind).await),
        Code::InvalidArgument
    );
    let bad_kind = pb::CreateLocationRequest {
        id: "l".into(),
        name: "l".into(),
        kind: 99,
        ..Default::default()
    };
    assert_eq!(
        code(c.create_location(bad_kind).await),
        Code::InvalidArgument
    );
    let adjust_no_reason = pb::AdjustRequest {
        item: "sku".into(),
        location: "w1".into(),
        delta: -1,
        ..Default::default()
    };
    assert_eq!(
        code(c.adjust(adjust_no_reason).await),
        Code::InvalidArgument
    );
    let same = pb::TransferRequest {
        item: "sku".into(),
        from: "w1".into(),
        to: "w1".into(),
        quantity: 1,
        ..Default::default()
    };
    assert_eq!(code(c.transfer(same).await), Code::InvalidArgument);
    let bad_token = pb::ListMovementsRequest {
        page_token: "garbage".into(),
        ..Default::default()
    };
    assert_eq!(
        c.list_movements(bad_token).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let bad_key = pb::WriteOptions {
        idempotency_key: "white space".into(),
        conditions: vec![],
    };
    let mut r = receive("sku", "w1", 1);
    r.options = Some(bad_key);
    assert_eq!(code(c.receive(r).await), Code::InvalidArgument);

    // RESOURCE_EXHAUSTED: a batch over the limit.
    let op = pb::Operation {
        op: Some(pb::operation::Op::Receive(receive("sku", "w1", 1))),
    };
    let big = pb::BatchRequest {
        options: None,
        operations: vec![op; 129],
    };
    assert_eq!(code(c.batch(big).await), Code::ResourceExhausted);

    // NOT_FOUND: unknown items, locations, reservations.
    assert_eq!(
        reason(c.receive(receive("nope", "w1", 1)).await),
        (Code::NotFound, "item_not_found".into())
    );
    assert_eq!(
        reason(c.receive(receive("sku", "nowhere", 1)).await),
        (Code::NotFound, "location_not_found".into())
    );
    let commit = pb::CommitReservationRequest {
        reservation_id: "r-none".into(),
        ..Default::default()
    };
    assert_eq!(code(c.commit_reservation(commit).await), Code::NotFound);
    let get = pb::GetStockRequest {
        item: "nope".into(),
        ..Default::default()
    };
    assert_eq!(c.get_stock(get).await.unwrap_err().code(), Code::NotFound);

    // ALREADY_EXISTS: duplicates.
    assert_eq!(
        reason(c.create_item(item("sku")).await),
        (Code::AlreadyExists, "item_exists".into())
    );
    assert_eq!(
        code(c.create_location(warehouse("w1")).await),
        Code::AlreadyExists
    );

    // FAILED_PRECONDITION: rules and conditions, including a batch whose last op fails.
    let ship = pb::ShipRequest {
        item: "sku".into(),
        location: "w1".into(),
        quantity: 6,
        ..Default::default()
    };
    assert_eq!(
        reason(c.ship(ship).await),
        (Code::FailedPrecondition, "insufficient_stock".into())
    );
    let mut guarded = receive("sku", "w1", 1);
    guarded.options = Some(pb::WriteOptions {
        idempotency_key: String::new(),
        conditions: vec![pb::Condition {
            item: "sku".into(),
            location: "w1".into(),
            expect: Some(pb::condition::Expect::OnHand(4)),
        }],
    });
    assert_eq!(
        reason(c.receive(guarded).await),
        (Code::FailedPrecondition, "condition_failed".into())
    );
    let half_good = pb::BatchRequest {
        options: None,
        operations: vec![
            pb::Operation {
                op: Some(pb::operation::Op::Receive(receive("sku", "w1", 100))),
            },
            pb::Operation {
                op: Some(pb::operation::Op::Ship(pb::ShipRequest {
                    item: "sku".into(),
                    location: "w1".into(),
                    quantity: 1000,
                    ..Default::default()
                })),
            },
        ],
    };
    assert_eq!(code(c.batch(half_good).await), Code::FailedPrecondition);
    let to_real = pb::ShipRequest {
        item: "sku".into(),
        location: "w1".into(),
        quantity: 1,
        to: "w1".into(),
        ..Default::default()
    };
    assert_eq!(
        reason(c.ship(to_real).await),
        (Code::FailedPrecondition, "wrong_location_kind".into())
    );

    // UNAVAILABLE with a leader hint from a follower.
    let follower = (0..3).find(|i| cluster.nodes[*i].id != leader).unwrap();
    let mut raw =
        InventoryServiceClient::connect(format!("http://{}", cluster.nodes[follower].client_addr))
            .await
            .unwrap();
    let status = raw.receive(receive("sku", "w1", 1)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    let hint = status
        .metadata()
        .get(laundry_proto::LEADER_ADDR_KEY)
        .expect("leader hint")
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(hint, cluster.nodes[cluster.index_of(leader)].client_addr);

    // Generic tools work: the standard health service reports the inventory API serving.
    let channel = tonic::transport::Endpoint::from_shared(format!(
        "http://{}",
        cluster.nodes[follower].client_addr
    ))
    .unwrap()
    .connect()
    .await
    .unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "laundry.v1.InventoryService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // Nothing changed anywhere.
    let after = cluster.wait_converged(Duration::from_secs(20)).await;
    assert!(
        after.iter().all(|s| s.state_digest == before),
        "state changed: before {before}, after {after:?}"
    );
    assert_eq!(on_hand(&c, "sku", "w1", false).await, 5);
}

/// Greets the peer stream when `greet`, sends `bytes`, closes its sending side, and
/// returns what the node sent back before it closed the connection.
async fn on_peer_port(addr: &str, greet: bool, bytes: &[u8]) -> Vec<u8> {
    use laundry_node::raft::wire;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    if greet {
        conn.write_all(&wire::MAGIC).await.unwrap();
        let mut answer = [0u8; 8];
        conn.read_exact(&mut answer).await.unwrap();
        assert_eq!(answer, wire::MAGIC, "the node answers the greeting");
    }
    conn.write_all(bytes).await.unwrap();
    conn.shutdown().await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut out))
        .await
        .expect("the node closes a connection it has nothing more to read from")
        .ok();
    out
}

fn frame(len: u32, tag: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = len.to_le_bytes().to_vec();
    f.push(tag);
    f.extend_from_slice(payload);
    f
}

/// Bytes that are not a well-formed peer-stream request close that one connection and
/// change nothing: the node goes on replicating and serving gRPC on the same port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_peer_port_closes_that_connection_and_changes_nothing() {
    use laundry_node::raft::wire;
    let _serial = SERIAL.lock().await;
    let cluster = TestCluster::start(3, &[]);
    cluster.wait_leader(Duration::from_secs(15)).await;
    let c = cluster.client();
    seed(&c).await;
    c.receive(receive("sku", "w1", 5)).await.unwrap();
    let before = cluster.wait_converged(Duration::from_secs(20)).await[0].state_digest;
    let peer = cluster.nodes[1].peer_addr.clone();

    // A length past the limit, a zero length, an unknown kind, a frame cut short: closed
    // without a reply.
    let huge = frame(u32::MAX, wire::Kind::Append as u8, b"");
    assert_eq!(on_peer_port(&peer, true, &huge).await, b"");
    assert_eq!(on_peer_port(&peer, true, &frame(0, 1, b"")).await, b"");
    assert_eq!(on_peer_port(&peer, true, &frame(3, 9, b"xy")).await, b"");
    assert_eq!(
        on_peer_port(&peer, true, &frame(100, 1, b"\x01ab")).await,
        b""
    );
    // A well-formed frame whose request does not decode: refused, with the reason.
    let reply = on_peer_port(
        &peer,
        true,
        &frame(9, wire::Kind::Vote as u8, b"\x01garbage"),
    )
    .await;
    assert!(reply.len() > 5, "a reply: {reply:?}");
    assert_eq!(reply[4], wire::REPLY_REFUSED);
    let reason = String::from_utf8_lossy(&reply[5..]).to_string();
    assert!(reason.contains("decode"), "{reason}");
    // Not the greeting, not HTTP/2: the gRPC server gets it and closes it.
    on_peer_port(&peer, false, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;

    // The peer port still serves gRPC, and the cluster still replicates.
    let mut raft = laundry_proto::raft::raft_service_client::RaftServiceClient::connect(format!(
        "http://{peer}"
    ))
    .await
    .unwrap();
    let status = raft
        .peer_status(laundry_proto::raft::PeerStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.node_id, cluster.nodes[1].id);
    assert_eq!(
        cluster.wait_converged(Duration::from_secs(20)).await[0].state_digest,
        before
    );
    c.receive(receive("sku", "w1", 1)).await.unwrap();
    let after = cluster.wait_converged(Duration::from_secs(20)).await;
    assert!(after.iter().all(|s| s.state_digest != before));
}
