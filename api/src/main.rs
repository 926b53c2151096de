//! `laundry-api` binary: reads the configuration from the environment, serves the router,
//! and drains in-flight requests on SIGTERM (what Kubernetes sends before stopping a pod).

use clap::Parser;
use laundry_api::config::Config;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = Config::parse();
    let listen = config.listen;
    let state = match laundry_api::AppState::new(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("laundry-api: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("laundry-api: cannot listen on {listen}: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    tracing::info!(%listen, endpoints = ?state.config.store_endpoints, "serving");
    let app = laundry_api::router(state);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await;
    match served {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("laundry-api: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("shutting down: draining in-flight requests");
}
