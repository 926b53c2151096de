//! The replicated apply path: `StateMachine::apply` (the rules plus the ledger's movements,
//! stored in sled a chunk at a time), for log entries of 16 single-line writes as group
//! commit makes them, each with an idempotency key made as the client makes one
//! (`laundry_client::new_idempotency_key`: time first, so the key table grows at one edge).
//! Set beside `apply` (the rules alone) it tells what the storage around them costs.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use laundry_node::inventory::{Command, IdempotencyKey, LocationKind, Op};
use laundry_node::metrics::Metrics;
use laundry_node::raft::state_machine::StateMachine;
use laundry_node::raft::{Proposal, Request, TypeConfig};
use laundry_node::storage::SledEngine;
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use std::collections::BTreeMap;
use std::sync::Arc;

const ITEMS: usize = 100;
const PER_ENTRY: usize = 16;

fn entry(index: u64, proposals: Vec<Proposal>) -> Entry<TypeConfig> {
    let mut proposals = proposals.into_iter();
    let first = proposals
        .next()
        .expect("an entry holds at least one command");
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Request {
            command: first.command,
            time_ms: 1,
            idempotency: first.idempotency,
            batched: std::sync::Arc::new(proposals.collect()),
            numbered: true,
        }),
    }
}

fn plain(op: Op) -> Proposal {
    Proposal {
        command: Command::single(op),
        idempotency: None,
    }
}

fn adjust(n: u64, keyed: bool) -> Proposal {
    let mut p = plain(Op::Adjust {
        item: format!("sku-{}", n as usize % ITEMS),
        location: "w0".into(),
        delta: 1,
        counterpart: String::new(),
        reason: "count".into(),
        reference: String::new(),
    });
    if keyed {
        p.idempotency = Some(IdempotencyKey {
            key: laundry_client::new_idempotency_key(),
            fingerprint: n,
        });
    }
    p
}

fn bench_state_machine(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("state machine apply (rules + sled)");
    g.throughput(Throughput::Elements(PER_ENTRY as u64));
    for keyed in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Arc::new(SledEngine::open(&dir.path().join("db")).expect("sled"));
        let mut sm = rt
            .block_on(StateMachine::open(
                engine,
                dir.path(),
                Arc::new(Metrics::new()),
            ))
            .expect("open");
        let mut setup = vec![plain(Op::CreateLocation {
            id: "w0".into(),
            name: "w0".into(),
            kind: LocationKind::Warehouse,
        })];
        setup.extend((0..ITEMS).map(|i| {
            plain(Op::CreateItem {
                id: format!("sku-{i}"),
                name: format!("sku-{i}"),
                unit: "each".into(),
                attributes: BTreeMap::new(),
                low_stock_threshold: 0,
            })
        }));
        rt.block_on(sm.apply([entry(1, setup)])).expect("setup");
        let mut index = 1u64;
        let name = if keyed {
            "entry of 16 adjusts, each keyed"
        } else {
            "entry of 16 adjusts, no keys"
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                index += 1;
                let proposals = (0..PER_ENTRY as u64)
                    .map(|k| adjust(index * PER_ENTRY as u64 + k, keyed))
                    .collect();
                rt.block_on(sm.apply([entry(index, proposals)]))
                    .expect("apply")
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_state_machine);
criterion_main!(benches);
