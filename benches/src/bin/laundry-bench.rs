//! `laundry-bench`: a closed-loop load generator. N workers each keep one request in flight
//! against a running cluster, drawing operations from a weighted mix, for a duration or an
//! operation count; it prints throughput and latency percentiles (HDR histograms) and can
//! write them as JSON. Every request and loop is bounded: by the deadline, the op budget and
//! the client's own retry limits.

use clap::Parser;
use laundry_benches::etcd::{self, kv_client::KvClient};
use laundry_benches::{release_schedule, Mix, OpKind, Report, SlowWindows};
use laundry_client::{pb, Client, ClientConfig, ClientError, ClientTls};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser, Clone)]
#[command(
    name = "laundry-bench",
    about = "Closed-loop load generator for a Laundry List cluster"
)]
struct Args {
    /// Client endpoints, comma separated.
    #[arg(
        long,
        env = "LAUNDRY_ENDPOINTS",
        default_value = "127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403"
    )]
    endpoints: String,
    /// Concurrent workers, each with one request in flight.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Run for this long...
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
    /// ...or stop after this many operations, whichever comes first.
    #[arg(long)]
    ops: Option<u64>,
    /// Weighted operation mix.
    #[arg(
        long,
        default_value = "adjust=40,transfer=30,reserve=10,read=15,stale=5"
    )]
    mix: String,
    /// Open loop: issue this many operations per second in total, on a fixed schedule, and
    /// measure each latency from its scheduled start (so a stall is not hidden by the
    /// generator slowing down). Without it, the loop is closed.
    #[arg(long)]
    rate: Option<u64>,
    /// Distinct items the workload spreads over.
    #[arg(long, default_value_t = 100)]
    items: usize,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// What to load: `laundry` or `etcd` (the same workload as etcd KV operations:
    /// adjust = read + compare-and-swap on the key's mod revision, put = blind put, read =
    /// linearizable range, stale = serializable range).
    #[arg(long, default_value = "laundry")]
    target: String,
    /// CA certificate for a TLS cluster.
    #[arg(long, env = "LAUNDRY_CA")]
    ca: Option<std::path::PathBuf>,
    /// Longest pause between a call's retries (the client's backoff doubles up to it). A
    /// readiness probe sets it low, so what it times is the node, not the backoff's steps.
    #[arg(long, default_value_t = ClientConfig::default().backoff_max_ms)]
    retry_backoff_max_ms: u64,
    /// One call per write, as before client-side coalescing (the client's default sends
    /// the writes its callers make at the same time in one `WriteMany` call).
    #[arg(long)]
    no_coalesce: bool,
    /// Also list when the operations of at least this many ms happened, per 100 ms window
    /// since the start (to line stalls up with the nodes' logs).
    #[arg(long)]
    slow_ms: Option<u64>,
}

/// Upper bound on workers: more gives no more load on a 2-core machine, only noise.
const MAX_CLIENTS: usize = 1024;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("laundry-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Where the load goes.
#[derive(Clone)]
enum Target {
    Laundry(Client),
    /// One client per etcd endpoint; worker `w` uses endpoint `w % n`.
    Etcd(Vec<KvClient<tonic::transport::Channel>>),
}

/// Most compare-and-swap rounds one etcd conditional decrement may take.
const MAX_CAS_ROUNDS: usize = 64;

async fn etcd_setup(
    kv: &mut KvClient<tonic::transport::Channel>,
    items: usize,
) -> Result<(), tonic::Status> {
    for i in 0..items {
        kv.put(etcd::PutRequest {
            key: format!("bench-{i}").into_bytes(),
            value: b"1000000000".to_vec(),
        })
        .await?;
    }
    Ok(())
}

async fn etcd_one(
    kv: &mut KvClient<tonic::transport::Channel>,
    kind: OpKind,
    key: Vec<u8>,
    r: u64,
) -> bool {
    match kind {
        OpKind::Put => kv
            .put(etcd::PutRequest {
                key,
                value: r.to_string().into_bytes(),
            })
            .await
            .is_ok(),
        OpKind::Read | OpKind::StaleRead => kv
            .range(etcd::RangeRequest {
                key,
                serializable: kind == OpKind::StaleRead,
                ..Default::default()
            })
            .await
            .is_ok(),
        // A conditional decrement: read the value and its mod revision, then write
        // value - 1 only if the key is unchanged; retry on a lost race.
        _ => {
            for _ in 0..MAX_CAS_ROUNDS {
                let Ok(got) = kv
                    .range(etcd::RangeRequest {
                        key: key.clone(),
                        ..Default::default()
                    })
                    .await
                else {
                    return false;
                };
                let Some(cur) = got.into_inner().kvs.into_iter().next() else {
                    return false;
                };
                let value: i64 = String::from_utf8_lossy(&cur.value).parse().unwrap_or(0);
                let txn = etcd::TxnRequest {
                    compare: vec![etcd::Compare {
                        result: etcd::compare::CompareResult::Equal as i32,
                        target: etcd::compare::CompareTarget::Mod as i32,
                        key: key.clone(),
                        target_union: Some(etcd::compare::TargetUnion::ModRevision(
                            cur.mod_revision,
                        )),
                    }],
                    success: vec![etcd::RequestOp {
                        request: Some(etcd::request_op::Request::RequestPut(etcd::PutRequest {
                            key: key.clone(),
                            value: (value - 1).to_string().into_bytes(),
                        })),
                    }],
                    failure: vec![],
                };
                match kv.txn(txn).await {
                    Ok(resp) if resp.get_ref().succeeded => return true,
                    Ok(_) => continue,
                    Err(_) => return false,
                }
            }
            false
        }
    }
}

async fn setup(c: &Client, items: usize) -> Result<(), ClientError> {
    let ok_if_exists = |r: Result<pb::WriteResponse, ClientError>| match r {
        Ok(_) | Err(ClientError::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e),
    };
    for w in ["bench-w0", "bench-w1"] {
        ok_if_exists(
            c.create_location(pb::CreateLocationRequest {
                id: w.into(),
                name: w.into(),
                kind: pb::LocationKind::Warehouse as i32,
                options: None,
            })
            .await,
        )?;
    }
    for i in 0..items {
        let id = format!("bench-{i}");
        if c.create_item(pb::CreateItemRequest {
            id: id.clone(),
            name: id.clone(),
            unit: "each".into(),
            ..Default::default()
        })
        .await
        .is_ok()
        {
            for w in ["bench-w0", "bench-w1"] {
                c.receive(pb::ReceiveRequest {
                    item: id.clone(),
                    location: w.into(),
                    quantity: 1_000_000_000,
                    ..Default::default()
                })
                .await?;
            }
        }
    }
    Ok(())
}

async fn one(c: &Client, kind: OpKind, item: String, flip: bool) -> bool {
    let (w0, w1) = if flip {
        ("bench-w1", "bench-w0")
    } else {
        ("bench-w0", "bench-w1")
    };
    let stale = |s: bool| {
        Some(pb::ReadOptions {
            consistency: if s {
                pb::Consistency::Stale
            } else {
                pb::Consistency::Linearizable
            } as i32,
        })
    };
    match kind {
        OpKind::Put => c
            .adjust(pb::AdjustRequest {
                item,
                location: w0.into(),
                delta: 1,
                reason: "bench".into(),
                ..Default::default()
            })
            .await
            .is_ok(),
        OpKind::Adjust => c
            .adjust(pb::AdjustRequest {
                item,
                location: w0.into(),
                delta: if flip { 1 } else { -1 },
                reason: "bench".into(),
                ..Default::default()
            })
            .await
            .is_ok(),
        OpKind::Transfer => c
            .transfer(pb::TransferRequest {
                item,
                from: w0.into(),
                to: w1.into(),
                quantity: 1,
                ..Default::default()
            })
            .await
            .is_ok(),
        OpKind::ReserveCommit => {
            let r = c
                .reserve(pb::ReserveRequest {
                    item,
                    location: w0.into(),
                    quantity: 1,
                    ttl_ms: 60_000,
                    ..Default::default()
                })
                .await;
            match r.ok().and_then(|r| r.reservation_ids.first().cloned()) {
                Some(id) => c
                    .commit_reservation(pb::CommitReservationRequest {
                        reservation_id: id,
                        ..Default::default()
                    })
                    .await
                    .is_ok(),
                None => false,
            }
        }
        OpKind::Read => c
            .get_stock(pb::GetStockRequest {
                item,
                location: w0.into(),
                read: stale(false),
            })
            .await
            .is_ok(),
        OpKind::StaleRead => c
            .get_stock(pb::GetStockRequest {
                item,
                location: w0.into(),
                read: stale(true),
            })
            .await
            .is_ok(),
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mix = Mix::parse(&args.mix)?;
    if args.clients == 0 || args.clients > MAX_CLIENTS || args.items == 0 {
        return Err(format!("--clients must be 1..={MAX_CLIENTS} and --items > 0").into());
    }
    let endpoints: Vec<String> = args
        .endpoints
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let tls = args
        .ca
        .as_deref()
        .map(ClientTls::from_ca_file)
        .transpose()?;
    let target = match args.target.as_str() {
        "laundry" => {
            let client = Client::new(
                &endpoints,
                ClientConfig {
                    tls,
                    backoff_max_ms: args.retry_backoff_max_ms,
                    coalesce_writes: !args.no_coalesce,
                    backoff_initial_ms: ClientConfig::default()
                        .backoff_initial_ms
                        .min(args.retry_backoff_max_ms),
                    ..ClientConfig::default()
                },
            )?;
            setup(&client, args.items).await?;
            Target::Laundry(client)
        }
        "etcd" => {
            if let Some(k) = OpKind::ALL.into_iter().find(|k| {
                matches!(k, OpKind::Transfer | OpKind::ReserveCommit) && mix.weight(*k) > 0
            }) {
                return Err(format!(
                    "--target etcd supports adjust, put, read and stale, not {}",
                    k.name()
                )
                .into());
            }
            let mut kvs = Vec::new();
            for e in &endpoints {
                let ch = tonic::transport::Endpoint::from_shared(format!("http://{e}"))?
                    .tcp_nodelay(true)
                    .connect_lazy();
                kvs.push(KvClient::new(ch));
            }
            etcd_setup(&mut kvs[0], args.items).await?;
            Target::Etcd(kvs)
        }
        other => return Err(format!("--target must be laundry or etcd, not {other:?}").into()),
    };
    if args.rate == Some(0) {
        return Err("--rate must be > 0".into());
    }
    let budget = Arc::new(AtomicU64::new(args.ops.unwrap_or(u64::MAX)));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration_s);
    // Open loop: `release_schedule` hands each worker its operations' scheduled instants
    // from a thread (tokio's timer, used before, fires on whole milliseconds and released
    // the operations of each millisecond together, adding up to a millisecond to each).
    let mut schedules = Vec::with_capacity(args.clients);
    if let Some(rate) = args.rate {
        let mut senders = Vec::with_capacity(args.clients);
        for _ in 0..args.clients {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
            senders.push(tx);
            schedules.push(Some(rx));
        }
        // Bounded: at most rate × duration_s releases (or --ops), then the senders drop
        // and the workers finish.
        let releases = rate
            .saturating_mul(args.duration_s)
            .min(args.ops.unwrap_or(u64::MAX));
        std::thread::spawn(move || release_schedule(started, deadline, rate, releases, senders));
    } else {
        schedules.resize_with(args.clients, || None);
    }
    let mut workers = Vec::with_capacity(args.clients);
    // Without --slow-ms nothing is slow enough to count (a latency never reaches u64::MAX ms).
    let slow_ms = args.slow_ms.unwrap_or(u64::MAX);
    for (w, mut schedule) in schedules.into_iter().enumerate() {
        let (target, mix, budget, items) =
            (target.clone(), mix.clone(), budget.clone(), args.items);
        workers.push(tokio::spawn(async move {
            let mut report = Report::default();
            let mut slow = SlowWindows::new(Duration::from_millis(slow_ms));
            let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ ((w as u64 + 1) * 0x2545_f491_4f6c_dd1d);
            loop {
                let t = match schedule.as_mut() {
                    Some(rx) => match rx.recv().await {
                        Some(at) => at,
                        None => break,
                    },
                    None => Instant::now(),
                };
                if Instant::now() >= deadline
                    || budget
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
                        .is_err()
                {
                    break;
                }
                let r = xorshift(&mut rng);
                let kind = mix.pick(r);
                let item = format!("bench-{}", (r >> 20) as usize % items);
                let ok = match &target {
                    Target::Laundry(client) => one(client, kind, item, (r >> 40) & 1 == 1).await,
                    Target::Etcd(kvs) => {
                        let mut kv = kvs[w % kvs.len()].clone();
                        etcd_one(&mut kv, kind, item.into_bytes(), r).await
                    }
                };
                let latency = t.elapsed();
                if ok {
                    slow.record(t.saturating_duration_since(started), latency);
                }
                report.record(kind, latency, ok);
            }
            (report, slow)
        }));
    }
    let mut report = Report::default();
    let mut slow = SlowWindows::new(Duration::from_millis(slow_ms));
    for w in workers {
        let (r, s) = w.await?;
        report.merge(&r);
        slow.merge(&s);
    }
    let elapsed = started.elapsed();
    let mode = match args.rate {
        Some(r) => format!("open loop at {r} ops/s"),
        None => "closed loop".to_string(),
    };
    println!(
        "laundry-bench: target {}, {} clients, {mode}, mix {}, {:.1} s",
        args.target,
        args.clients,
        args.mix,
        elapsed.as_secs_f64()
    );
    print!("{}", report.table(elapsed));
    if args.slow_ms.is_some() {
        print!("{}", slow.table());
    }
    if let Some(path) = &args.json {
        let doc = serde_json::json!({ "clients": args.clients, "rate": args.rate, "mix": args.mix, "elapsed_s": elapsed.as_secs_f64(), "rows": report.to_json(elapsed) });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)?;
    }
    Ok(())
}
