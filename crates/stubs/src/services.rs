//! The services one binary can run, and how each is started from its store and the bus. Both
//! modes go through here, so `up` and `serve` run the very same service code.

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use clap::ValueEnum;
use common::bus::Bus;
use common::store::{Migrations, Store};
use common::{ServiceContext, Sessions};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cli::SharedArgs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Service {
    Auth,
    Tickets,
    Orders,
    Expiration,
    Payments,
    /// The web pages: no database and no bus, a client of the API at `--api-url`.
    Web,
}

impl Service {
    /// Every service with a database, in the order `up` starts them (`up` adds the pages after).
    pub const WITH_DATABASE: [Service; 5] = [
        Self::Auth,
        Self::Tickets,
        Self::Orders,
        Self::Expiration,
        Self::Payments,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Auth => auth::NAME,
            Self::Tickets => tickets::NAME,
            Self::Orders => orders::NAME,
            Self::Expiration => expiration::NAME,
            Self::Payments => payments::NAME,
            Self::Web => web::NAME,
        }
    }

    pub fn migrations(self) -> &'static [&'static Migrations] {
        match self {
            Self::Auth => &auth::MIGRATIONS,
            Self::Tickets => &tickets::MIGRATIONS,
            Self::Orders => &orders::MIGRATIONS,
            Self::Expiration => &expiration::MIGRATIONS,
            Self::Payments => &payments::MIGRATIONS,
            Self::Web => &[],
        }
    }

    /// The OpenAPI document of the service's operations; the expiration service has none.
    pub fn openapi(self) -> Option<utoipa::openapi::OpenApi> {
        match self {
            Self::Auth => Some(auth::openapi()),
            Self::Tickets => Some(tickets::openapi()),
            Self::Orders => Some(orders::openapi()),
            Self::Payments => Some(payments::openapi()),
            Self::Expiration | Self::Web => None,
        }
    }

    /// The pages talk to nobody on the bus; every other service publishes or listens.
    pub fn needs_bus(self) -> bool {
        self != Self::Web
    }
}

/// What every service is started with besides its own store.
pub(crate) struct Shared {
    pub sessions: Sessions,
    pub bus: Option<Arc<dyn Bus>>,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
}

/// Refuses settings a service cannot run with, before anything starts.
pub(crate) fn check_settings(args: &SharedArgs) -> anyhow::Result<()> {
    args.listener_settings()
        .validate()
        .map_err(anyhow::Error::msg)
        .context("--inbox-retention (STUBS_INBOX_RETENTION) is too short for --event-ack-wait")?;
    args.payments_settings()
        .validate()
        .context("invalid payments settings (--stripe-*, --payment-claim-timeout)")
}

/// Starts a service's background work and returns its routes.
pub(crate) fn start(
    service: Service,
    store: Store,
    shared: &Shared,
    args: &SharedArgs,
) -> anyhow::Result<Router> {
    let context = || -> anyhow::Result<ServiceContext> {
        let bus = shared
            .bus
            .clone()
            .with_context(|| format!("the {} service needs the bus", service.name()))?;
        let mut context = ServiceContext::new(
            service.name(),
            store.clone(),
            bus,
            shared.sessions.clone(),
            shared.shutdown.clone(),
            shared.tasks.clone(),
        );
        context.listeners = args.listener_settings();
        Ok(context)
    };
    Ok(match service {
        Service::Auth => auth::start(&context()?, &args.auth_settings()),
        Service::Tickets => tickets::start(&context()?, &args.tickets_settings()),
        Service::Orders => orders::start(&context()?, &args.orders_settings()),
        Service::Expiration => expiration::start(&context()?),
        Service::Payments => payments::start(&context()?, &args.payments_settings()),
        Service::Web => anyhow::bail!("the web service has no store: start it with web::router"),
    })
}
