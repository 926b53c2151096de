//! Request encode/decode: the protobuf client request (what every write costs on the wire)
//! and the log-entry payload codecs, JSON and binary (what every write costs in the log and
//! on the peer wire),
//! against the clone that a read served by the log cache costs.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use laundry_node::inventory::{Command, IdempotencyKey, Op};
use laundry_node::raft::{codec, Request};
use laundry_proto::v1 as pb;
use prost::Message;
use std::hint::black_box;

fn bench_codec(c: &mut Criterion) {
    let req = pb::TransferRequest {
        options: Some(pb::WriteOptions {
            idempotency_key: "c-0123456789abcdef0123456789abcdef".into(),
            conditions: vec![],
        }),
        item: "tee-black-m".into(),
        from: "wh-east".into(),
        to: "store-soho".into(),
        quantity: 3,
        reason: "restock".into(),
        reference: "TR-1234".into(),
    };
    let wire = req.encode_to_vec();
    let entry = Request {
        command: Command::single(Op::Transfer {
            item: req.item.clone(),
            from: req.from.clone(),
            to: req.to.clone(),
            quantity: 3,
            reason: req.reason.clone(),
            reference: req.reference.clone(),
        }),
        time_ms: 1_795_000_000_000,
        idempotency: Some(IdempotencyKey {
            key: "c-0123456789abcdef0123456789abcdef".into(),
            fingerprint: 42,
        }),
        batched: Default::default(),
        numbered: true,
    };
    let json = serde_json::to_vec(&entry).unwrap();

    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    g.bench_function(
        format!("protobuf TransferRequest encode ({} B)", wire.len()),
        |b| b.iter(|| black_box(req.encode_to_vec())),
    );
    g.bench_function("protobuf TransferRequest decode", |b| {
        b.iter(|| black_box(pb::TransferRequest::decode(&wire[..]).unwrap()))
    });
    g.bench_function(
        format!("log entry payload encode, JSON ({} B)", json.len()),
        |b| b.iter(|| black_box(serde_json::to_vec(&entry).unwrap())),
    );
    g.bench_function("log entry payload decode, JSON", |b| {
        b.iter(|| black_box(serde_json::from_slice::<Request>(&json).unwrap()))
    });
    let binary = codec::to_bytes(&entry, codec::Format::Binary).unwrap();
    g.bench_function(
        format!("log entry payload encode, binary ({} B)", binary.len()),
        |b| b.iter(|| black_box(codec::to_bytes(&entry, codec::Format::Binary).unwrap())),
    );
    g.bench_function("log entry payload decode, binary", |b| {
        b.iter(|| black_box(codec::from_bytes::<Request>(&binary).unwrap()))
    });
    // What a read answered by the log cache costs instead of the decode.
    g.bench_function("log entry payload clone (log cache read)", |b| {
        b.iter(|| black_box(entry.clone()))
    });
    g.finish();
}

criterion_group!(benches, bench_codec);
criterion_main!(benches);
