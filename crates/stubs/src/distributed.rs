//! `stubs serve SERVICE`: one service in this process, on its own database (PostgreSQL in
//! production) and NATS JetStream.

use std::sync::Arc;

use anyhow::Context;
use common::bus::Bus;
use common::bus::nats::NatsBus;
use common::http::{Dependency, platform_routes};
use common::store::{Store, redact};
use common::{ServiceContext, Sessions};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Running;
use crate::cli::{ServeArgs, Service};

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let secret = args
        .shared
        .jwt_secret
        .clone()
        .context("--jwt-secret (STUBS_JWT_SECRET) is required by `serve`: every replica must sign sessions with the same key")?;
    anyhow::ensure!(
        secret.expose_secret().len() >= 32,
        "--jwt-secret (STUBS_JWT_SECRET) must be at least 32 characters"
    );
    let sessions = Sessions::new(
        &secret,
        args.shared.session_lifetime,
        args.shared.cookie_secure.unwrap_or(true),
    );
    let service = args.service;
    let migrations: &[&common::store::Migrations] = match service {
        Service::Auth => &auth::MIGRATIONS,
        Service::Tickets => &tickets::MIGRATIONS,
    };
    let store = Store::connect(&args.database_url, migrations)
        .await
        .with_context(|| {
            format!(
                "cannot open the {} database at {} (--database-url, STUBS_DATABASE_URL)",
                service.name(),
                redact(&args.database_url)
            )
        })?;
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let mut dependencies = vec![Dependency::Database(service.name(), store.clone())];

    let routes = match service {
        Service::Auth => auth::start(store.clone(), sessions, &args.shared.auth_settings()),
        Service::Tickets => {
            let bus = connect_bus(&args).await?;
            dependencies.push(Dependency::Bus(bus.clone()));
            let ctx = ServiceContext::new(
                tickets::NAME,
                store.clone(),
                bus,
                sessions,
                shutdown.clone(),
                tasks.clone(),
            );
            tickets::start(&ctx)
        }
    };

    crate::serve(
        args.listen,
        Running {
            routes: routes.merge(platform_routes(dependencies)),
            shutdown,
            tasks,
            stores: vec![store],
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
