//! Wiring: builds each service's store, bus and context from the command line, serves their
//! routes behind the HTTP stack, and shuts everything down in order on SIGTERM or Ctrl-C.

pub mod api_docs;
pub mod cli;
mod distributed;
mod embedded;
mod services;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::routing::MethodRouter;
use common::http::{HttpSettings, serve_stack, serve_stack_with_fallback};
use common::store::Store;
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cli::Command;

/// Runs a command until it is told to stop.
pub async fn run(command: Command) -> anyhow::Result<()> {
    let (shared, service_name) = match &command {
        Command::Up(args) => (&args.shared, "stubs".to_owned()),
        Command::Serve(args) => (&args.shared, format!("stubs-{}", args.service.name())),
        Command::Openapi => {
            let document = api_docs::printed(&api_docs::document())
                .context("cannot write the OpenAPI document")?;
            print!("{document}");
            return Ok(());
        }
    };
    let tracing = common::telemetry::init_tracing(
        shared.log_format,
        &service_name,
        shared.otlp_endpoint.as_deref(),
    )
    .context("--otlp-endpoint (STUBS_OTLP_ENDPOINT)")?;
    let result = match command {
        Command::Up(args) => embedded::run(args).await,
        Command::Serve(args) => distributed::run(args).await,
        Command::Openapi => Ok(()),
    };
    // After the services stopped, so their last spans leave too.
    tracing.shutdown().await;
    result
}

/// What a mode hands to [`serve`]: the routes, the background tasks and the stores to close.
struct Running {
    routes: Router,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    stores: Vec<Store>,
    /// The answer to unknown paths when the process serves pages; `None`: the API's JSON 404.
    fallback: Option<MethodRouter>,
}

/// Serves until SIGTERM or Ctrl-C, then stops taking requests, lets in-flight ones finish, stops
/// the listeners (each finishes and acks the event in hand), flushes the outbox relays and closes
/// the databases.
async fn serve(listen: SocketAddr, settings: HttpSettings, running: Running) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (--listen, STUBS_LISTEN)"))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, "listening");
    // A line on stdout that scripts and tests can wait for.
    println!("listening on http://{address}");

    let app = match running.fallback {
        Some(fallback) => serve_stack_with_fallback(running.routes, &settings, fallback),
        None => serve_stack(running.routes, &settings),
    };
    let stop = running.shutdown.clone();
    common::http::serve(listener, app, &settings, async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        stop.cancel();
    })
    .await;

    running.shutdown.cancel();
    running.tasks.close();
    if tokio::time::timeout(Duration::from_secs(20), running.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("background tasks did not stop within 20s");
    }
    for store in running.stores {
        store.close().await;
    }
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// A JWT secret long enough to sign with (HS256 wants at least 256 bits).
fn checked_secret(secret: SecretString) -> anyhow::Result<SecretString> {
    anyhow::ensure!(
        secret.expose_secret().len() >= 32,
        "--jwt-secret (STUBS_JWT_SECRET) must be at least 32 characters"
    );
    Ok(secret)
}
