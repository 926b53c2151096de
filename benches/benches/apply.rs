//! The domain apply path: how many movements per second `Inventory::apply` sustains, for
//! single transfers and for atomic batches, with the state already holding many balances.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use laundry_node::inventory::{ApplyCtx, Command, Inventory, LocationKind, Op};
use std::collections::BTreeMap;
use std::hint::black_box;

const ITEMS: usize = 1_000;
const LOCATIONS: usize = 10;

/// 1,000 items × 10 warehouses, each balance stocked with 1,000,000.
fn stocked() -> (Inventory, u64) {
    let mut inv = Inventory::genesis();
    let mut rev = 0;
    let mut run = |inv: &mut Inventory, op: Op| {
        rev += 1;
        inv.apply(
            &Command::single(op),
            &ApplyCtx {
                revision: rev,
                time_ms: 1,
                idempotency: None,
            },
        )
        .result
        .unwrap();
    };
    for l in 0..LOCATIONS {
        run(
            &mut inv,
            Op::CreateLocation {
                id: format!("w{l}"),
                name: format!("w{l}"),
                kind: LocationKind::Warehouse,
            },
        );
    }
    for i in 0..ITEMS {
        let id = format!("sku-{i}");
        run(
            &mut inv,
            Op::CreateItem {
                id: id.clone(),
                name: id.clone(),
                unit: "each".into(),
                attributes: BTreeMap::new(),
                low_stock_threshold: 0,
            },
        );
        for l in 0..LOCATIONS {
            run(
                &mut inv,
                Op::Receive {
                    item: id.clone(),
                    location: format!("w{l}"),
                    quantity: 1_000_000,
                    from: String::new(),
                    reason: String::new(),
                    reference: String::new(),
                },
            );
        }
    }
    (inv, rev)
}

fn transfer(i: u64) -> Op {
    let item = format!("sku-{}", i as usize % ITEMS);
    let from = format!("w{}", i as usize % LOCATIONS);
    let to = format!("w{}", (i as usize + 1) % LOCATIONS);
    Op::Transfer {
        item,
        from,
        to,
        quantity: 1,
        reason: String::new(),
        reference: String::new(),
    }
}

fn bench_apply(c: &mut Criterion) {
    let (base, rev0) = stocked();
    let mut g = c.benchmark_group("apply");
    g.throughput(Throughput::Elements(1));
    g.bench_function("transfer (1 movement)", |b| {
        let mut inv = base.clone();
        let mut rev = rev0;
        b.iter(|| {
            rev += 1;
            let cmd = Command::single(transfer(rev));
            black_box(inv.apply(
                &cmd,
                &ApplyCtx {
                    revision: rev,
                    time_ms: 2,
                    idempotency: None,
                },
            ))
        })
    });
    const BATCH: usize = 100;
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("batch of 100 transfers (100 movements)", |b| {
        let mut inv = base.clone();
        let mut rev = rev0;
        b.iter_batched(
            || {
                rev += 1;
                let ops = (0..BATCH as u64).map(|k| transfer(rev * 131 + k)).collect();
                (
                    Command {
                        ops,
                        conditions: vec![],
                    },
                    rev,
                )
            },
            |(cmd, rev)| {
                black_box(inv.apply(
                    &cmd,
                    &ApplyCtx {
                        revision: rev,
                        time_ms: 2,
                        idempotency: None,
                    },
                ))
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_apply);
criterion_main!(benches);
