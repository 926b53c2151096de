//! `laundry-load-levels`: fills a cluster with many stock levels (items × locations) using
//! atomic batches from several concurrent writers, for restart and memory measurements.
//! Bounded by the requested size; idempotent keys make a rerun of a batch harmless.

use clap::Parser;
use laundry_client::{pb, Client, ClientConfig};
use std::time::Instant;

#[derive(Parser)]
struct Args {
    #[arg(long, env = "LAUNDRY_ENDPOINTS")]
    endpoints: String,
    #[arg(long, default_value_t = 100_000)]
    items: usize,
    #[arg(long, default_value_t = 10)]
    locations: usize,
    #[arg(long, default_value_t = 8)]
    writers: usize,
}

/// Operations per atomic batch (the server's limit is 128).
const BATCH: usize = 128;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let endpoints: Vec<String> = args.endpoints.split(',').map(str::to_string).collect();
    let client = Client::new(&endpoints, ClientConfig::default())?;
    let started = Instant::now();
    let mut ops: Vec<pb::operation::Op> = (0..args.locations)
        .map(|l| {
            pb::operation::Op::CreateLocation(pb::CreateLocationRequest {
                id: format!("L{l}"),
                name: format!("L{l}"),
                kind: pb::LocationKind::Warehouse as i32,
                options: None,
            })
        })
        .collect();
    for i in 0..args.items {
        ops.push(pb::operation::Op::CreateItem(pb::CreateItemRequest {
            id: format!("I{i:07}"),
            name: format!("I{i}"),
            unit: "each".into(),
            ..Default::default()
        }));
    }
    for i in 0..args.items {
        for l in 0..args.locations {
            ops.push(pb::operation::Op::Receive(pb::ReceiveRequest {
                item: format!("I{i:07}"),
                location: format!("L{l}"),
                quantity: 10,
                ..Default::default()
            }));
        }
    }
    let total = ops.len();
    let batches: Vec<Vec<pb::operation::Op>> = ops.chunks(BATCH).map(|c| c.to_vec()).collect();
    // Locations and items first (later batches depend on them), then receives in parallel.
    let first_receive_batch = (args.locations + args.items).div_ceil(BATCH);
    for b in &batches[..first_receive_batch] {
        client
            .batch(pb::BatchRequest {
                options: None,
                operations: b
                    .iter()
                    .cloned()
                    .map(|op| pb::Operation { op: Some(op) })
                    .collect(),
            })
            .await?;
    }
    let rest: Vec<Vec<pb::operation::Op>> = batches[first_receive_batch..].to_vec();
    let per_writer = rest.len().div_ceil(args.writers.max(1));
    let mut tasks = Vec::new();
    for chunk in rest.chunks(per_writer.max(1)) {
        let (client, chunk) = (client.clone(), chunk.to_vec());
        tasks.push(tokio::spawn(async move {
            for b in chunk {
                client
                    .batch(pb::BatchRequest {
                        options: None,
                        operations: b
                            .into_iter()
                            .map(|op| pb::Operation { op: Some(op) })
                            .collect(),
                    })
                    .await?;
            }
            Ok::<(), laundry_client::ClientError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    println!(
        "loaded {} stock levels ({} items x {} locations) in {} operations, {:.1} s",
        args.items * args.locations,
        args.items,
        args.locations,
        total,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
