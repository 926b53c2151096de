//! `laundry-failover`: how long writes stop when the leader dies. Against a cluster started
//! by `scripts/dev-cluster.sh` (it reads the node pid files), it writes in a loop, kills the
//! leader with SIGKILL, and reports the time from the kill to the first acknowledged write.
//! One kill per run; the script runs it on fresh clusters. Bounded: gives up after 30 s.

use clap::Parser;
use laundry_client::{pb, Client, ClientConfig, ClientError};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[arg(long, env = "LAUNDRY_ENDPOINTS")]
    endpoints: String,
    /// The dev cluster's data directory, holding node-<id>.pid.
    #[arg(long)]
    pid_dir: PathBuf,
}

const GIVE_UP_AFTER: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let endpoints: Vec<String> = args.endpoints.split(',').map(str::to_string).collect();
    // Short per-attempt deadlines so a write to the dead leader fails fast and is retried.
    let cfg = ClientConfig {
        attempt_timeout_ms: 300,
        total_timeout_ms: 30_000,
        max_attempts: 1_000,
        backoff_initial_ms: 5,
        backoff_max_ms: 50,
        tls: None,
        ..ClientConfig::default()
    };
    let client = Client::new(&endpoints, cfg)?;
    let ok = |r: Result<pb::WriteResponse, ClientError>| match r {
        Ok(_) | Err(ClientError::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e),
    };
    ok(client
        .create_location(pb::CreateLocationRequest {
            id: "fo-w".into(),
            name: "fo-w".into(),
            kind: pb::LocationKind::Warehouse as i32,
            options: None,
        })
        .await)?;
    ok(client
        .create_item(pb::CreateItemRequest {
            id: "fo-sku".into(),
            name: "fo".into(),
            unit: "each".into(),
            ..Default::default()
        })
        .await)?;
    let write = || {
        client.receive(pb::ReceiveRequest {
            item: "fo-sku".into(),
            location: "fo-w".into(),
            quantity: 1,
            ..Default::default()
        })
    };
    for _ in 0..50 {
        write().await?;
    }
    let mut leader = 0;
    for ep in &endpoints {
        if let Ok(s) = client.node_status(ep).await {
            leader = s.leader_id;
            break;
        }
    }
    let pid = std::fs::read_to_string(args.pid_dir.join(format!("node-{leader}.pid")))?
        .trim()
        .to_string();
    let killed = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()?;
    if !status.success() {
        return Err(format!("could not kill leader {leader} (pid {pid})").into());
    }
    loop {
        if write().await.is_ok() {
            println!(
                "leader {leader} killed; first acknowledged write after {} ms",
                killed.elapsed().as_millis()
            );
            return Ok(());
        }
        if killed.elapsed() > GIVE_UP_AFTER {
            return Err("no write succeeded within 30 s of the kill".into());
        }
    }
}
