//! `stubs serve SERVICE`: one service in this process, on its own database (PostgreSQL in
//! production) and NATS JetStream.

use std::sync::Arc;

use anyhow::Context;
use common::Sessions;
use common::bus::Bus;
use common::bus::nats::NatsBus;
use common::http::{Dependency, platform_routes};
use common::store::{Store, redact};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api_docs::own_document;
use crate::cli::ServeArgs;
use crate::services::{self, Shared};
use crate::{Running, api_docs, checked_secret};

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    if args.service == services::Service::Web {
        return run_web(args).await;
    }
    let database_url = args.database_url.clone().with_context(|| {
        format!(
            "--database-url (STUBS_DATABASE_URL) is required by `serve {}`",
            args.service.name()
        )
    })?;
    let secret = args.shared.jwt_secret.clone().context(
        "--jwt-secret (STUBS_JWT_SECRET) is required by `serve`: every replica must sign sessions with the same key",
    )?;
    let secret = checked_secret(secret)?;
    let service = args.service;
    if service == services::Service::Payments {
        services::check_settings(&args.shared)?;
    }
    let bus = if service.needs_bus() {
        Some(connect_bus(&args).await?)
    } else {
        None
    };
    let store = Store::connect_with(
        &database_url,
        service.migrations(),
        args.database_max_connections,
    )
    .await
    .with_context(|| {
        format!(
            "cannot open the {} database at {} (--database-url, STUBS_DATABASE_URL)",
            service.name(),
            redact(&database_url)
        )
    })?;
    let shared = Shared {
        sessions: Sessions::new(
            &secret,
            args.shared.session_lifetime,
            args.shared.cookie_secure.unwrap_or(true),
        ),
        bus: bus.clone(),
        shutdown: CancellationToken::new(),
        tasks: TaskTracker::new(),
    };
    let mut dependencies = vec![Dependency::Database(service.name(), store.clone())];
    dependencies.extend(bus.map(Dependency::Bus));
    let routes = services::start(service, store.clone(), &shared, &args.shared)?;

    crate::serve(
        args.listen,
        args.shared.http_settings(),
        Running {
            routes: routes
                .merge(platform_routes(dependencies))
                .merge(service.openapi().map(own_document).unwrap_or_default()),
            shutdown: shared.shutdown,
            tasks: shared.tasks,
            stores: vec![store],
            fallback: None,
        },
    )
    .await
}

/// `stubs serve web`: the pages, calling the API at `--api-url` (the ingress) over HTTP. No
/// database, no bus and no session key: the API checks every session.
async fn run_web(args: ServeArgs) -> anyhow::Result<()> {
    let api_url = args
        .api_url
        .as_deref()
        .context("--api-url (STUBS_API_URL) is required by `serve web`, e.g. http://ingress")?;
    anyhow::ensure!(
        api_url.starts_with("http://") || api_url.starts_with("https://"),
        "--api-url (STUBS_API_URL) must start with http:// or https://, got {api_url}"
    );
    let api =
        web::ApiClient::http(api_url).context("cannot build the HTTP client for --api-url")?;
    crate::serve(
        args.listen,
        args.shared.http_settings(),
        Running {
            // The pages are what the ingress routes every other path to: the API's reference
            // with them.
            routes: web::router(api, args.shared.web_settings())
                .merge(api_docs::reference(api_docs::document()))
                .merge(platform_routes(Vec::new())),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            stores: Vec::new(),
            fallback: Some(web::fallback()),
        },
    )
    .await
}

async fn connect_bus(args: &ServeArgs) -> anyhow::Result<Arc<dyn Bus>> {
    let url = args.nats_url.as_deref().with_context(|| {
        format!(
            "--nats-url (STUBS_NATS_URL) is required by `serve {}`",
            args.service.name()
        )
    })?;
    let bus = NatsBus::connect(url, &args.nats_prefix)
        .await
        .with_context(|| {
            format!("cannot reach NATS JetStream at {url} (--nats-url, STUBS_NATS_URL)")
        })?;
    Ok(Arc::new(bus))
}
