//! The durable write path on real files with real fsync: appending log-entry-sized values
//! in batches of 1, 16 and 128 with one flush per batch, i.e. group commit, to sled (the
//! old log, and still the state machine's engine) and to the Raft log's own segment files
//! (`storage::wal`, the log since 2026-11-24), and single appends into a zero-filled
//! segment (the Raft log's since 2026-11-30). Entries/s is the throughput; fsyncs per
//! entry is 1 / batch size. Also snapshot build and install: encoding and
//! verifying-decoding a snapshot of 100,000 stock levels, and one of 100,000 idempotency
//! records (what most of a busy node's snapshot is), in the JSON body every release reads
//! and in the binary body a node builds for itself (records/s; the report prints sizes).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use laundry_node::inventory::{
    IdempotencyRecord, Inventory, LocationKind, Outcome, Record, StockLevel,
};
use laundry_node::raft::snapshot::{self, SnapshotBody};
use laundry_node::storage::wal::Wal;
use laundry_node::storage::{keys, Batch, Engine, SledEngine};
use std::hint::black_box;

/// About the size of one encoded single-operation log entry.
const ENTRY_BYTES: usize = 400;

fn bench_append(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let engine = SledEngine::open(&dir.path().join("db")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut index = 0u64;
    let mut g = c.benchmark_group("log append + fsync");
    g.sample_size(20);
    for batch in [1usize, 16, 128] {
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(
            format!("batch of {batch} (fsyncs/entry = 1/{batch})"),
            |b| {
                b.iter(|| {
                    let mut w = Batch::default();
                    for _ in 0..batch {
                        index += 1;
                        w.put(keys::log(index), vec![0xab; ENTRY_BYTES]);
                    }
                    engine.write(w).unwrap();
                    rt.block_on(engine.flush()).unwrap();
                })
            },
        );
    }
    g.finish();
}

/// The same batches through the Raft log's own segment files (`storage::wal`), which
/// replaced the sled log: one write and one fdatasync per batch.
fn bench_wal_append(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), 64 * 1024 * 1024, None).unwrap();
    let mut next = 0u64;
    let mut g = c.benchmark_group("raft log (wal) append + fdatasync");
    g.sample_size(20);
    for batch in [1usize, 16, 128] {
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(
            format!("batch of {batch} (fsyncs/entry = 1/{batch})"),
            |b| {
                b.iter(|| {
                    let records: Vec<(u64, Vec<u8>)> = (0..batch as u64)
                        .map(|i| (next + i, vec![0xab; ENTRY_BYTES]))
                        .collect();
                    next += batch as u64;
                    wal.append(&records).unwrap();
                })
            },
        );
    }
    // The same single appends into a segment zero-filled beforehand, as the Raft log's
    // next segment now is (`storage::spare_segment`): an overwrite, so the fdatasync
    // writes the data and no inode. A fresh log whose only segment is all zeros starts
    // at index 0 and overwrites it.
    let zeroed = tempfile::tempdir().unwrap();
    std::fs::write(
        zeroed.path().join("00000000000000000000.wal"),
        vec![0u8; ZEROED_BYTES],
    )
    .unwrap();
    std::fs::File::open(zeroed.path().join("00000000000000000000.wal"))
        .and_then(|f| f.sync_all())
        .unwrap();
    let (wal, _) = Wal::open(zeroed.path(), 1 << 30, None).unwrap();
    let mut next = 0u64;
    g.throughput(Throughput::Elements(1));
    g.bench_function("batch of 1, into a zero-filled segment", |b| {
        b.iter(|| {
            wal.append(&[(next, vec![0xab; ENTRY_BYTES])]).unwrap();
            next += 1;
        })
    });
    g.finish();
    assert!(
        wal.size_bytes() <= ZEROED_BYTES as u64,
        "the appends outgrew the zero-filled segment; raise ZEROED_BYTES"
    );
}

/// Enough zeros for every append criterion makes in the zero-filled case (~100 µs each
/// for ~5 s of measurement and warm-up, 420 bytes a record: ~25 MB).
const ZEROED_BYTES: usize = 128 * 1024 * 1024;

fn body(levels: usize) -> SnapshotBody {
    let mut records: Vec<Record> = Inventory::genesis().records().collect();
    records.push(Record::Location(laundry_node::inventory::Location {
        id: "w".into(),
        name: "w".into(),
        kind: LocationKind::Warehouse,
        revision: 1,
    }));
    for i in 0..levels {
        records.push(Record::Stock {
            item: format!("sku-{i:06}"),
            location: "w".into(),
            level: StockLevel {
                on_hand: 5,
                reserved: 1,
                revision: i as u64,
            },
        });
    }
    SnapshotBody {
        ledger_through: None,
        idempotency_files: None,
        last_applied: None,
        membership: Default::default(),
        records,
        movements: vec![],
    }
}

/// A body of `n` idempotency records shaped like the load generator's: a 34-byte key,
/// one movement in the ledger, kept by count.
fn idempotency_body(n: usize) -> SnapshotBody {
    let mut body = body(0);
    body.records
        .extend((0..n as u64).map(|i| Record::Idempotency {
            key: format!("c-{:032x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            record: IdempotencyRecord {
                fingerprint: i.wrapping_mul(0xff51_afd7_ed55_8ccd),
                time_ms: 1_795_954_073_680 + i,
                outcome: Outcome {
                    revision: 1_024 * (1_000 + i),
                    movements: Vec::new(),
                    reservations: Vec::new(),
                    replayed: false,
                },
                ledger_movements: Some(1),
            },
        }));
    body
}

fn bench_snapshot(c: &mut Criterion) {
    for (name, body) in [
        ("snapshot (100k stock levels)", body(100_000)),
        (
            "snapshot (100k idempotency records)",
            idempotency_body(100_000),
        ),
    ] {
        let json = snapshot::encode(&body).unwrap();
        let binary = snapshot::encode_binary_body(&body).unwrap();
        println!(
            "{name}: JSON {} bytes, binary {} bytes",
            json.len(),
            binary.len()
        );
        let mut g = c.benchmark_group(name);
        g.sample_size(10);
        g.throughput(Throughput::Elements(body.records.len() as u64));
        g.bench_function("build JSON (encode + checksum)", |b| {
            b.iter(|| black_box(snapshot::encode(&body).unwrap()))
        });
        g.bench_function("build binary (encode + checksum)", |b| {
            b.iter(|| black_box(snapshot::encode_binary_body(&body).unwrap()))
        });
        for (format, bytes) in [("JSON", &json), ("binary", &binary)] {
            g.bench_function(format!("install {format} (verify + decode)"), |b| {
                b.iter_batched(
                    || bytes.clone(),
                    |v| black_box(snapshot::decode(&v).unwrap()),
                    BatchSize::LargeInput,
                )
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench_append, bench_wal_append, bench_snapshot);
criterion_main!(benches);
