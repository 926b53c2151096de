//! `laundry-node`: parses flags/env/config file and runs a store node until SIGINT/SIGTERM;
//! `laundry-node restore` seeds a data directory from a backup for a new cluster.

use clap::Parser;
use laundry_node::config::{parse_members, Args, NodeConfig};
use std::path::PathBuf;

/// jemalloc instead of glibc's malloc (TiKV's choice too): allocation and free were 18 % of
/// the leader's CPU under write load, most of it in glibc's arena bookkeeping
/// (`malloc_consolidate`, `unlink_chunk`). Measured (benches/RESULTS.md): node CPU per write
/// -5 %; restart with a million stock levels re-applying the log 2.1 -> 1.6 s, from a
/// snapshot 1.4-1.7 -> 1.8-2.1 s, peak resident memory the same (204-245 MiB).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's configuration, read at its start (its `malloc_conf`, a C string pointer): one
/// background thread returns pages unused for 250 ms to the OS (straight away, not through
/// `MADV_FREE`, which would still count as resident), even when the node is idle, so
/// resident memory falls back after a restart's replay or a snapshot.
#[repr(transparent)]
struct MallocConf(*const std::ffi::c_char);
// SAFETY: a pointer to an immutable static string, only read.
unsafe impl Sync for MallocConf {}
#[export_name = "_rjem_malloc_conf"]
static MALLOC_CONF: MallocConf = MallocConf(
    c"background_thread:true,max_background_threads:1,dirty_decay_ms:250,muzzy_decay_ms:0".as_ptr(),
);

#[derive(Parser)]
#[command(
    name = "laundry-node",
    version,
    about = "Laundry List store node",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Sub>,
    #[command(flatten)]
    run: Args,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Seed an empty data directory from a backup archive, for a node of a new cluster.
    /// Run it for every member with the same archive and members, then start the nodes.
    Restore {
        /// The backup archive (*.llbackup).
        #[arg(long)]
        from: PathBuf,
        /// The node's data directory; must be absent or empty.
        #[arg(long)]
        data_dir: PathBuf,
        /// Members of the new cluster: ID=PEER_ADDR/CLIENT_ADDR[/ADMIN_ADDR],...
        #[arg(long, env = "LAUNDRY_INITIAL_MEMBERS")]
        members: String,
    },
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn,sled=warn,h2=warn,tower=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Some(Sub::Restore {
        from,
        data_dir,
        members,
    }) = cli.cmd
    {
        return restore(from, data_dir, members);
    }
    let cfg = match NodeConfig::from_args(cli.run) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("laundry-node: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("laundry-node: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(laundry_node::node::run(cfg, shutdown_signal()));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("laundry-node: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn restore(from: PathBuf, data_dir: PathBuf, members: String) -> std::process::ExitCode {
    let members = match parse_members(&members) {
        Ok(m) if !m.is_empty() => m,
        Ok(_) => {
            eprintln!("laundry-node restore: --members is empty");
            return std::process::ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("laundry-node restore: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("laundry-node restore: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(laundry_node::backup::restore(&from, &data_dir, &members)) {
        Ok(m) => {
            println!(
                "restored {} into {}: last index {} (term {}), {} movements, state digest {:08x}",
                from.display(),
                data_dir.display(),
                m.last_index,
                m.last_term,
                m.movements,
                m.state_digest
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("laundry-node restore: {e}; nothing was written");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
