//! `laundryctl`: the operator's command line over the client crate. Every command prints
//! text by default or JSON with `--output json`; errors go to stderr with a non-zero exit
//! code (2 for bad usage or input, 1 for anything else).

use clap::{Parser, Subcommand, ValueEnum};
use laundry_client::{pb, AdminClient, Client, ClientConfig, ClientError, ClientTls};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use tokio_stream::StreamExt;

#[derive(Parser)]
#[command(name = "laundryctl", version, about = "Operate a Laundry List cluster")]
struct Cli {
    /// Client endpoints of the cluster, comma separated.
    #[arg(
        long,
        env = "LAUNDRY_ENDPOINTS",
        default_value = "127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403",
        global = true
    )]
    endpoints: String,
    #[arg(long, value_enum, default_value_t = Output::Text, global = true)]
    output: Output,
    /// Serve reads from any node's applied state instead of confirming with the leader.
    #[arg(long, global = true)]
    stale: bool,
    /// Admin HTTP endpoints of the cluster, comma separated.
    #[arg(
        long,
        env = "LAUNDRY_ADMIN_ENDPOINTS",
        default_value = "127.0.0.1:7601,127.0.0.1:7602,127.0.0.1:7603",
        global = true
    )]
    admin_endpoints: String,
    /// Bearer token for mutating admin calls.
    #[arg(
        long,
        env = "LAUNDRY_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    token: Option<String>,
    /// CA certificate (PEM) of the cluster: speak TLS to the client and admin ports.
    #[arg(long, env = "LAUNDRY_CA", global = true)]
    ca: Option<std::path::PathBuf>,
    /// Deadline of the whole command, retries included.
    #[arg(long, default_value_t = 20_000, global = true)]
    timeout_ms: u64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Items (SKUs).
    #[command(subcommand)]
    Item(ItemCmd),
    /// Locations.
    #[command(subcommand)]
    Location(LocationCmd),
    /// Stock arrives from a supplier (or another virtual location).
    Receive {
        item: String,
        location: String,
        quantity: i64,
        #[arg(long, default_value = "")]
        from: String,
        #[command(flatten)]
        w: WriteArgs,
    },
    /// Stock leaves to a customer (or another virtual location).
    Ship {
        item: String,
        location: String,
        quantity: i64,
        #[arg(long, default_value = "")]
        to: String,
        #[command(flatten)]
        w: WriteArgs,
    },
    /// Count correction: DELTA > 0 adds, < 0 removes. Needs --reason.
    Adjust {
        item: String,
        location: String,
        #[arg(allow_negative_numbers = true)]
        delta: i64,
        #[command(flatten)]
        w: WriteArgs,
    },
    /// Move stock between two real locations.
    Transfer {
        item: String,
        from: String,
        to: String,
        quantity: i64,
        #[command(flatten)]
        w: WriteArgs,
    },
    /// Hold available stock until committed, released or expired.
    Reserve {
        item: String,
        location: String,
        quantity: i64,
        #[arg(long, default_value_t = 15 * 60 * 1000)]
        ttl_ms: u64,
        #[arg(long, default_value = "")]
        id: String,
        #[command(flatten)]
        w: WriteArgs,
    },
    /// Ship a reservation's stock.
    Commit {
        id: String,
        #[command(flatten)]
        w: WriteArgs,
    },
    /// Give a reservation's stock back.
    Release {
        id: String,
        #[command(flatten)]
        w: WriteArgs,
    },
    /// Stock levels of an item, at one location or all.
    Stock {
        item: String,
        #[arg(long, default_value = "")]
        location: String,
    },
    /// The ledger, oldest first.
    Movements {
        #[arg(long, default_value = "")]
        item: String,
        #[arg(long, default_value = "")]
        location: String,
        #[arg(long, default_value_t = 0)]
        from_revision: u64,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Follow movements as they apply (Ctrl-C to stop).
    Watch {
        #[arg(long, default_value = "")]
        item: String,
        #[arg(long, default_value = "")]
        location: String,
        #[arg(long, default_value_t = 0)]
        from_revision: u64,
        /// Stop after this many movements.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Raft status of every endpoint.
    Status,
    /// Load the sample inventory (once; a second run reports it is there).
    Sample,
    /// Cluster status from the admin API.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Membership changes (sent to the leader's admin API).
    #[command(subcommand)]
    Member(MemberCmd),
    /// Build a snapshot now and compact the log behind it.
    Snapshot,
    /// Write a verified backup archive to the leader's backup directory (the NAS).
    Backup,
    /// List the backups in the backup directory of the first admin endpoint.
    Backups,
    /// Leadership.
    #[command(subcommand)]
    Leader(LeaderCmd),
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Members, roles, leader, term, indexes and lag.
    Status,
}

#[derive(Subcommand)]
enum MemberCmd {
    /// Add a node as a learner; returns once it has caught up.
    Add {
        id: u64,
        #[arg(long)]
        peer_addr: String,
        #[arg(long)]
        client_addr: String,
        #[arg(long, default_value = "")]
        admin_addr: String,
    },
    /// Make a learner a voter.
    Promote { id: u64 },
    /// Remove a voter or learner.
    Remove { id: u64 },
}

#[derive(Subcommand)]
enum LeaderCmd {
    /// Move leadership to another voter before maintenance.
    Handoff {
        #[arg(long)]
        to: Option<u64>,
        /// Ask only the first admin endpoint, and do nothing (success) when it is not the
        /// leader: for a pre-stop hook, where only the stopping node's leadership matters.
        #[arg(long)]
        if_leader: bool,
    },
}

#[derive(Subcommand)]
enum ItemCmd {
    Create {
        id: String,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "each")]
        unit: String,
        /// KEY=VALUE, repeatable.
        #[arg(long = "attr")]
        attrs: Vec<String>,
        #[arg(long, default_value_t = 0)]
        low_stock: i64,
        #[command(flatten)]
        w: WriteArgs,
    },
    Get {
        id: String,
    },
    List {
        #[arg(long, default_value_t = 100)]
        page_size: u32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        unit: Option<String>,
        #[arg(long)]
        low_stock: Option<i64>,
        /// Apply only if the item is still at this revision.
        #[arg(long, default_value_t = 0)]
        expected_revision: u64,
        #[command(flatten)]
        w: WriteArgs,
    },
}

#[derive(Subcommand)]
enum LocationCmd {
    Create {
        id: String,
        #[arg(long)]
        name: String,
        #[arg(long, value_enum)]
        kind: Kind,
        #[command(flatten)]
        w: WriteArgs,
    },
    List,
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    Warehouse,
    Store,
    InTransit,
    Virtual,
}

#[derive(clap::Args, Clone, Default)]
struct WriteArgs {
    #[arg(long, default_value = "")]
    reason: String,
    #[arg(long, default_value = "")]
    reference: String,
    /// Idempotency key; a fresh one is generated when absent.
    #[arg(long, default_value = "")]
    key: String,
}

impl WriteArgs {
    fn options(&self) -> Option<pb::WriteOptions> {
        Some(pb::WriteOptions {
            idempotency_key: self.key.clone(),
            conditions: vec![],
        })
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(&cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("laundryctl: {e}");
            let usage = matches!(
                e,
                ClientError::InvalidArgument(_)
                    | ClientError::Endpoint(_)
                    | ClientError::ResourceExhausted(_)
            );
            std::process::ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

fn read_opts(cli: &Cli) -> Option<pb::ReadOptions> {
    Some(pb::ReadOptions {
        consistency: if cli.stale {
            pb::Consistency::Stale
        } else {
            pb::Consistency::Linearizable
        } as i32,
    })
}

async fn run(cli: &Cli) -> Result<(), ClientError> {
    let endpoints: Vec<String> = cli
        .endpoints
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let tls = cli.ca.as_deref().map(ClientTls::from_ca_file).transpose()?;
    let config = ClientConfig {
        total_timeout_ms: cli.timeout_ms,
        tls,
        ..ClientConfig::default()
    };
    let c = Client::new(&endpoints, config)?;
    let out = |v: Value, text: String| {
        if cli.output == Output::Json {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        } else {
            println!("{text}");
        }
    };
    match &cli.cmd {
        Cmd::Item(ItemCmd::Create {
            id,
            name,
            unit,
            attrs,
            low_stock,
            w,
        }) => {
            let mut attributes = BTreeMap::new();
            for a in attrs {
                let (k, v) = a.split_once('=').ok_or_else(|| {
                    ClientError::InvalidArgument(format!("--attr {a:?}: expected KEY=VALUE").into())
                })?;
                attributes.insert(k.to_string(), v.to_string());
            }
            let r = c
                .create_item(pb::CreateItemRequest {
                    options: w.options(),
                    id: id.clone(),
                    name: name.clone(),
                    unit: unit.clone(),
                    attributes,
                    low_stock_threshold: *low_stock,
                })
                .await?;
            write_out(cli, &r);
        }
        Cmd::Item(ItemCmd::Get { id }) => {
            let r = c
                .get_item(pb::GetItemRequest {
                    id: id.clone(),
                    read: read_opts(cli),
                })
                .await?;
            let i = r.item.unwrap_or_default();
            out(item_json(&i), item_text(&i));
        }
        Cmd::Item(ItemCmd::List {
            page_size,
            page_token,
        }) => {
            let r = c
                .list_items(pb::ListItemsRequest {
                    page_size: *page_size,
                    page_token: page_token.clone(),
                    read: read_opts(cli),
                })
                .await?;
            let text = r.items.iter().map(item_text).collect::<Vec<_>>().join("\n");
            let next = if r.next_page_token.is_empty() {
                String::new()
            } else {
                format!("\n(next page: --page-token {})", r.next_page_token)
            };
            out(
                json!({"items": r.items.iter().map(item_json).collect::<Vec<_>>(), "next_page_token": r.next_page_token}),
                format!("{text}{next}"),
            );
        }
        Cmd::Item(ItemCmd::Update {
            id,
            name,
            unit,
            low_stock,
            expected_revision,
            w,
        }) => {
            let r = c
                .update_item(pb::UpdateItemRequest {
                    options: w.options(),
                    id: id.clone(),
                    name: name.clone(),
                    unit: unit.clone(),
                    attributes: None,
                    low_stock_threshold: *low_stock,
                    expected_revision: *expected_revision,
                })
                .await?;
            write_out(cli, &r);
        }
        Cmd::Location(LocationCmd::Create { id, name, kind, w }) => {
            let kind = match kind {
                Kind::Warehouse => pb::LocationKind::Warehouse,
                Kind::Store => pb::LocationKind::Store,
                Kind::InTransit => pb::LocationKind::InTransit,
                Kind::Virtual => pb::LocationKind::Virtual,
            } as i32;
            let r = c
                .create_location(pb::CreateLocationRequest {
                    options: w.options(),
                    id: id.clone(),
                    name: name.clone(),
                    kind,
                })
                .await?;
            write_out(cli, &r);
        }
        Cmd::Location(LocationCmd::List) => {
            let r = c
                .list_locations(pb::ListLocationsRequest {
                    page_size: 1000,
                    page_token: String::new(),
                    read: read_opts(cli),
                })
                .await?;
            let rows: Vec<Value> = r.locations.iter().map(|l| json!({"id": l.id, "name": l.name, "kind": kind_name(l.kind), "revision": l.revision})).collect();
            let text = r
                .locations
                .iter()
                .map(|l| format!("{:<20} {:<11} {}", l.id, kind_name(l.kind), l.name))
                .collect::<Vec<_>>()
                .join("\n");
            out(json!({"locations": rows}), text);
        }
        Cmd::Receive {
            item,
            location,
            quantity,
            from,
            w,
        } => {
            let r = c
                .receive(pb::ReceiveRequest {
                    options: w.options(),
                    item: item.clone(),
                    location: location.clone(),
                    quantity: *quantity,
                    from: from.clone(),
                    reason: w.reason.clone(),
                    reference: w.reference.clone(),
                })
                .await?;
            write_out(cli, &r);
        }
        Cmd::Ship {
            item,
            location,
            quantity,
            to,
            w,
        } => {
            let r = c
                .ship(pb::ShipRequest {
                    options: w.options(),
                    item: item.clone(),
                    location: location.clone(),
                    quantity: *quantity,
                    to: to.clone(),
                    reason: w.reason.clone(),
                    reference: w.reference.clone(),
                })
                .await?;
            write_out(cli, &r);
        }
        Cmd::Adjust {
            item,
            location,
            delta,
            w,
        } => {
            let r = c
                .adjust(pb::AdjustRequest {
                    options: w.options(),
                    item: item.clone(),
                    location: location.clone(),
                    delta: *delta,
                    counterpart: String::new(),
                    reason: w.reason.clone(),
                    reference: w.reference.clone(),
                })
                .await?;
            write_out(cli, &r);
        }
        Cmd::Transfer {
            item,
            from,
            to,
            quantity,
            w,
        } => {
            let r = c
                .transfer(pb::TransferRequest {
                    options: w.options(),
                    item: item.clone(),
                    from: from.clone(),
                    to: to.clone(),
                    quantity: *quantity,
                    reason: w.reason.clone(),
                    reference: w.reference.clone(),
                })
                .await?;
            write_out(cli, &r);
        }
        Cmd::Reserve {
            item,
            location,
            quantity,
            ttl_ms,
            id,
            w,
        } => {
            let r = c
                .reserve(pb::ReserveRequest {
                    options: w.options(),
                    reservation_id: id.clone(),
                    item: item.clone(),
                    location: location.clone(),
                    quantity: *quantity,
                    ttl_ms: *ttl_ms,
                    reference: w.reference.clone(),
                })
                .await?;
            write_out(cli, &r);
        }
        Cmd::Commit { id, w } => {
            let r = c
                .commit_reservation(pb::CommitReservationRequest {
                    options: w.options(),
                    reservation_id: id.clone(),
                    to: String::new(),
                    reason: w.reason.clone(),
                })
                .await?;
            write_out(cli, &r);
        }
        Cmd::Release { id, w } => {
            let r = c
                .release_reservation(pb::ReleaseReservationRequest {
                    options: w.options(),
                    reservation_id: id.clone(),
                    reason: w.reason.clone(),
                })
                .await?;
            write_out(cli, &r);
        }
        Cmd::Stock { item, location } => {
            let r = c
                .get_stock(pb::GetStockRequest {
                    item: item.clone(),
                    location: location.clone(),
                    read: read_opts(cli),
                })
                .await?;
            let rows: Vec<Value> = r.levels.iter().map(stock_json).collect();
            let text = r
                .levels
                .iter()
                .map(|s| {
                    format!(
                        "{:<20} on_hand={:<8} reserved={:<8} available={:<8} rev={}{}",
                        s.location,
                        s.on_hand,
                        s.reserved,
                        s.available,
                        s.revision,
                        if s.low_stock { "  LOW" } else { "" }
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            let applied = r.header.map(|h| h.applied_index).unwrap_or(0);
            out(
                json!({"item": item, "applied_index": applied, "levels": rows}),
                text,
            );
        }
        Cmd::Movements {
            item,
            location,
            from_revision,
            limit,
        } => {
            let r = c
                .list_movements(pb::ListMovementsRequest {
                    from_revision: *from_revision,
                    item: item.clone(),
                    location: location.clone(),
                    page_size: *limit,
                    page_token: String::new(),
                    read: read_opts(cli),
                })
                .await?;
            let text = r
                .movements
                .iter()
                .map(movement_text)
                .collect::<Vec<_>>()
                .join("\n");
            out(
                json!({"movements": r.movements.iter().map(movement_json).collect::<Vec<_>>(), "next_page_token": r.next_page_token}),
                text,
            );
        }
        Cmd::Watch {
            item,
            location,
            from_revision,
            count,
        } => {
            let mut stream = Box::pin(c.watch(*from_revision, item, location));
            let mut seen = 0;
            while let Some(m) = stream.next().await {
                let m = m?;
                if cli.output == Output::Json {
                    println!("{}", movement_json(&m));
                } else {
                    println!("{}", movement_text(&m));
                }
                seen += 1;
                if count.is_some_and(|n| seen >= n) {
                    break;
                }
            }
        }
        Cmd::Status => {
            let mut rows = Vec::new();
            let mut text = Vec::new();
            for e in &endpoints {
                match c.node_status(e).await {
                    Ok(s) => {
                        text.push(format!(
                            "{e:<22} node={} role={:<9} leader={} term={} applied={} snapshot={} digest={:08x}",
                            s.node_id, s.role, s.leader_id, s.term, s.applied_index, s.snapshot_index, s.state_digest
                        ));
                        rows.push(json!({"endpoint": e, "node_id": s.node_id, "role": s.role, "leader_id": s.leader_id, "term": s.term,
                            "last_log_index": s.last_log_index, "applied_index": s.applied_index, "snapshot_index": s.snapshot_index,
                            "purged_index": s.purged_index, "state_digest": s.state_digest, "voters": s.voters, "learners": s.learners}));
                    }
                    Err(err) => {
                        text.push(format!("{e:<22} unreachable: {err}"));
                        rows.push(json!({"endpoint": e, "error": err.to_string()}));
                    }
                }
            }
            out(json!({"nodes": rows}), text.join("\n"));
        }
        Cmd::Sample => sample(&c, cli).await?,
        Cmd::Cluster(ClusterCmd::Status) => {
            let r = admin(cli)?.any("GET", "/cluster").await?;
            let v = admin_json(r)?;
            let mut text = format!(
                "leader={} term={} last_log={} applied={} snapshot={} (seen from node {})",
                v["leader_id"],
                v["term"],
                v["last_log_index"],
                v["applied_index"],
                v["snapshot_index"],
                v["node_id"]
            );
            for m in v["members"].as_array().into_iter().flatten() {
                let lag = if m["lag_entries"].is_null() {
                    "-".to_string()
                } else {
                    m["lag_entries"].to_string()
                };
                text.push_str(&format!(
                    "\n  node {:<3} {:<8} peer={} client={} admin={} lag={}",
                    m["id"],
                    m["role"].as_str().unwrap_or(""),
                    m["peer_addr"].as_str().unwrap_or(""),
                    m["client_addr"].as_str().unwrap_or(""),
                    m["admin_addr"].as_str().unwrap_or(""),
                    lag
                ));
            }
            out(v, text);
        }
        Cmd::Member(MemberCmd::Add {
            id,
            peer_addr,
            client_addr,
            admin_addr,
        }) => {
            let body = json!({"id": id, "peer_addr": peer_addr, "client_addr": client_addr, "admin_addr": admin_addr});
            let v = admin_json(admin(cli)?.leader("POST", "/members", Some(&body)).await?)?;
            out(
                v.clone(),
                format!(
                    "node {id} added as a learner (log index {})",
                    v["log_index"]
                ),
            );
        }
        Cmd::Member(MemberCmd::Promote { id }) => {
            let v = admin_json(
                admin(cli)?
                    .leader("POST", &format!("/members/{id}/promote"), None)
                    .await?,
            )?;
            out(
                v.clone(),
                format!("node {id} is now a voter (log index {})", v["log_index"]),
            );
        }
        Cmd::Member(MemberCmd::Remove { id }) => {
            let v = admin_json(
                admin(cli)?
                    .leader("DELETE", &format!("/members/{id}"), None)
                    .await?,
            )?;
            out(
                v.clone(),
                format!("node {id} removed (log index {})", v["log_index"]),
            );
        }
        Cmd::Snapshot => {
            let v = admin_json(admin(cli)?.leader("POST", "/snapshot", None).await?)?;
            out(
                v.clone(),
                format!("snapshot at index {}", v["snapshot_index"]),
            );
        }
        Cmd::Backup => {
            let v = admin_json(admin(cli)?.leader("POST", "/backup", None).await?)?;
            let m = &v["manifest"];
            out(
                v.clone(),
                format!(
                    "backup written and verified: {}\n  last index {} (term {}), {} movements, sha256 {}",
                    v["path"].as_str().unwrap_or(""), m["last_index"], m["last_term"], m["movements"], m["sha256"].as_str().unwrap_or("")
                ),
            );
        }
        Cmd::Backups => {
            let v = admin_json(admin(cli)?.any("GET", "/backups").await?)?;
            let mut text = format!("in {}:", v["backup_dir"].as_str().unwrap_or(""));
            for b in v["backups"].as_array().into_iter().flatten() {
                match b["error"].as_str() {
                    Some(e) => text.push_str(&format!(
                        "\n  {}  UNREADABLE: {e}",
                        b["path"].as_str().unwrap_or("")
                    )),
                    None => text.push_str(&format!(
                        "\n  {}  index={} bytes={} movements={}",
                        b["path"].as_str().unwrap_or(""),
                        b["last_index"],
                        b["bytes"],
                        b["movements"]
                    )),
                }
            }
            out(v, text);
        }
        Cmd::Leader(LeaderCmd::Handoff { to, if_leader }) => {
            let body = json!({ "to": to });
            let admin = admin(cli)?;
            let response = if *if_leader {
                let first = cli
                    .admin_endpoints
                    .split(',')
                    .map(str::trim)
                    .find(|s| !s.is_empty())
                    .ok_or_else(|| ClientError::Endpoint(String::new()))?;
                let r = admin
                    .request(first, "POST", "/leader/handoff", Some(&body))
                    .await?;
                if r.status == 503 {
                    out(
                        json!({ "handed_off": false, "reason": "not the leader" }),
                        format!("node at {first} is not the leader; nothing to hand off"),
                    );
                    return Ok(());
                }
                r
            } else {
                admin.leader("POST", "/leader/handoff", Some(&body)).await?
            };
            let v = admin_json(response)?;
            out(
                v.clone(),
                format!(
                    "leadership moved from node {} to node {}",
                    v["previous_leader"], v["leader"]
                ),
            );
        }
    }
    Ok(())
}

fn admin(cli: &Cli) -> Result<AdminClient, ClientError> {
    let eps = cli
        .admin_endpoints
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let client = AdminClient::new(eps, cli.token.clone());
    match cli.ca.as_deref() {
        Some(ca) => client.with_tls(&ClientTls::from_ca_file(ca)?),
        None => Ok(client),
    }
}

/// The JSON body of a successful admin answer; an error status becomes a typed error.
fn admin_json(r: laundry_client::AdminResponse) -> Result<Value, ClientError> {
    let v = r.json()?;
    let message = v["error"].as_str().unwrap_or(&r.body).to_string();
    match r.status {
        200..=299 => Ok(v),
        400 => Err(ClientError::InvalidArgument(message.into())),
        401 | 403 => Err(ClientError::Server {
            code: tonic::Code::PermissionDenied,
            message,
        }),
        404 => Err(ClientError::NotFound(message.into())),
        409 => Err(ClientError::FailedPrecondition(message.into())),
        503 => Err(ClientError::Unavailable {
            attempts: 1,
            last: message,
        }),
        _ => Err(ClientError::Server {
            code: tonic::Code::Internal,
            message: format!("HTTP {}: {message}", r.status),
        }),
    }
}

fn write_out(cli: &Cli, r: &pb::WriteResponse) {
    if cli.output == Output::Json {
        let v = json!({"revision": r.revision, "replayed": r.replayed, "reservation_ids": r.reservation_ids,
            "movements": r.movements.iter().map(movement_json).collect::<Vec<_>>()});
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        let mut line = format!("ok revision={}", r.revision);
        if r.replayed {
            line.push_str(" (replayed: an earlier request with this key already applied)");
        }
        for id in &r.reservation_ids {
            line.push_str(&format!(" reservation={id}"));
        }
        println!("{line}");
        for m in &r.movements {
            println!("  {}", movement_text(m));
        }
    }
}

fn kind_name(k: i32) -> &'static str {
    match pb::LocationKind::try_from(k) {
        Ok(pb::LocationKind::Warehouse) => "warehouse",
        Ok(pb::LocationKind::Store) => "store",
        Ok(pb::LocationKind::InTransit) => "in-transit",
        Ok(pb::LocationKind::Virtual) => "virtual",
        _ => "unknown",
    }
}

fn movement_kind(k: i32) -> String {
    pb::MovementKind::try_from(k)
        .map(|k| k.as_str_name().to_lowercase())
        .unwrap_or_else(|_| "unknown".into())
}

fn item_json(i: &pb::Item) -> Value {
    json!({"id": i.id, "name": i.name, "unit": i.unit, "attributes": i.attributes, "low_stock_threshold": i.low_stock_threshold, "revision": i.revision})
}

fn item_text(i: &pb::Item) -> String {
    format!(
        "{:<20} {:<30} unit={} rev={}",
        i.id, i.name, i.unit, i.revision
    )
}

fn stock_json(s: &pb::StockLevel) -> Value {
    json!({"location": s.location, "on_hand": s.on_hand, "reserved": s.reserved, "available": s.available, "revision": s.revision, "low_stock": s.low_stock})
}

fn movement_json(m: &pb::Movement) -> Value {
    json!({"revision": m.revision, "seq": m.seq, "kind": movement_kind(m.kind), "item": m.item, "from": m.from, "to": m.to,
        "quantity": m.quantity, "reason": m.reason, "reference": m.reference, "time_ms": m.time_ms, "reservation_id": m.reservation_id})
}

fn movement_text(m: &pb::Movement) -> String {
    let mut s = format!(
        "{}.{} {:<8} {} x{} {} -> {}",
        m.revision,
        m.seq,
        movement_kind(m.kind),
        m.item,
        m.quantity,
        m.from,
        m.to
    );
    if !m.reservation_id.is_empty() {
        s.push_str(&format!(" [{}]", m.reservation_id));
    }
    if !m.reason.is_empty() {
        s.push_str(&format!(" ({})", m.reason));
    }
    s
}

/// A small, recognisable inventory: two warehouses, a store, a truck, three items.
async fn sample(c: &Client, cli: &Cli) -> Result<(), ClientError> {
    let locations = [
        ("wh-east", "East warehouse", pb::LocationKind::Warehouse),
        ("wh-west", "West warehouse", pb::LocationKind::Warehouse),
        ("store-soho", "SoHo store", pb::LocationKind::Store),
        ("truck-1", "Truck 1", pb::LocationKind::InTransit),
    ];
    let items = [
        (
            "tee-black-m",
            "T-shirt, black, M",
            "each",
            [("color", "black"), ("size", "M")],
            20,
        ),
        (
            "mug-white",
            "Mug, white, 350 ml",
            "each",
            [("color", "white"), ("volume_ml", "350")],
            10,
        ),
        (
            "socks-3pk",
            "Socks, 3-pack",
            "pack",
            [("color", "grey"), ("size", "one")],
            15,
        ),
    ];
    let mut ops: Vec<pb::operation::Op> = Vec::new();
    for (id, name, kind) in locations {
        ops.push(pb::operation::Op::CreateLocation(
            pb::CreateLocationRequest {
                options: None,
                id: id.into(),
                name: name.into(),
                kind: kind as i32,
            },
        ));
    }
    for (id, name, unit, attrs, low) in items {
        ops.push(pb::operation::Op::CreateItem(pb::CreateItemRequest {
            options: None,
            id: id.into(),
            name: name.into(),
            unit: unit.into(),
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            low_stock_threshold: low,
        }));
    }
    for (item, loc, q) in [
        ("tee-black-m", "wh-east", 120),
        ("tee-black-m", "wh-west", 80),
        ("mug-white", "wh-east", 60),
        ("socks-3pk", "wh-west", 200),
    ] {
        ops.push(pb::operation::Op::Receive(pb::ReceiveRequest {
            item: item.into(),
            location: loc.into(),
            quantity: q,
            reason: "opening stock".into(),
            reference: "PO-1001".into(),
            ..Default::default()
        }));
    }
    ops.push(pb::operation::Op::Transfer(pb::TransferRequest {
        item: "tee-black-m".into(),
        from: "wh-east".into(),
        to: "store-soho".into(),
        quantity: 24,
        reason: "restock".into(),
        reference: "TR-7".into(),
        ..Default::default()
    }));
    ops.push(pb::operation::Op::Ship(pb::ShipRequest {
        item: "mug-white".into(),
        location: "wh-east".into(),
        quantity: 5,
        reference: "SO-5001".into(),
        ..Default::default()
    }));
    ops.push(pb::operation::Op::Reserve(pb::ReserveRequest {
        reservation_id: "order-5002".into(),
        item: "tee-black-m".into(),
        location: "store-soho".into(),
        quantity: 2,
        ttl_ms: 24 * 60 * 60 * 1000,
        reference: "SO-5002".into(),
        ..Default::default()
    }));
    let batch = pb::BatchRequest {
        options: None,
        operations: ops
            .into_iter()
            .map(|op| pb::Operation { op: Some(op) })
            .collect(),
    };
    match c.batch(batch).await {
        Ok(r) => {
            if cli.output == Output::Json {
                println!("{}", json!({"loaded": true, "revision": r.revision}));
            } else {
                println!(
                    "sample inventory loaded at revision {} (4 locations, 3 items, {} movements)",
                    r.revision,
                    r.movements.len()
                );
            }
            Ok(())
        }
        Err(ClientError::AlreadyExists(_)) => {
            if cli.output == Output::Json {
                println!("{}", json!({"loaded": false, "reason": "already present"}));
            } else {
                println!("sample inventory already present; nothing changed");
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}
