//! `laundry-node`: parses flags/env/config file and runs a store node until SIGINT/SIGTERM;
//! `laundry-node restore` seeds a data directory from a backup for a new cluster.

use clap::Parser;
use laundry_node::config::{parse_members, Args, NodeConfig};
use std::path::PathBuf;

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
