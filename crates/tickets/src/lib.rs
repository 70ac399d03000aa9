//! The tickets service. It owns the tickets table: tickets listed for sale by their sellers,
//! edited by them while no order holds them, reserved by order:created and released by
//! order:cancelled. It announces every change as ticket:created or ticket:updated through its
//! transactional outbox, so the orders service can keep its replica in version order.
//!
//! [`start`] spawns the outbox relay and the listeners and returns the HTTP routes; the caller
//! wraps them in the HTTP stack (`common::http::serve_stack`), alone or merged with other
//! services' routes.

mod domain;
mod event;
mod listeners;
mod routes;
pub mod sales;
mod search;
mod wallet;
pub use routes::openapi;
pub mod store;

use axum::Router;
use common::ServiceContext;
use common::events::{OrderCancelled, OrderCompleted, OrderCreated, UserCreated};
use common::listener;
use common::store::{Migration, Migrations};

/// The service's name, which also names its consumer groups.
pub const NAME: &str = "tickets";

/// The service's own tables: tickets, the events they are for, and the tombstones of cancelled
/// orders.
pub const TICKETS_MIGRATIONS: Migrations = Migrations {
    sqlite: &[
        Migration {
            version: 100,
            name: "tickets",
            sql: include_str!("../migrations/sqlite/0100_tickets.sql"),
        },
        Migration {
            version: 101,
            name: "events",
            sql: include_str!("../migrations/sqlite/0101_events.sql"),
        },
        Migration {
            version: 102,
            name: "search",
            sql: include_str!("../migrations/sqlite/0102_search.sql"),
        },
        Migration {
            version: 103,
            name: "wallet",
            sql: include_str!("../migrations/sqlite/0103_wallet.sql"),
        },
        Migration {
            version: 104,
            name: "sales",
            sql: include_str!("../migrations/sqlite/0104_sales.sql"),
        },
    ],
    postgres: &[
        Migration {
            version: 100,
            name: "tickets",
            sql: include_str!("../migrations/postgres/0100_tickets.sql"),
        },
        Migration {
            version: 101,
            name: "events",
            sql: include_str!("../migrations/postgres/0101_events.sql"),
        },
        Migration {
            version: 102,
            name: "search",
            sql: include_str!("../migrations/postgres/0102_search.sql"),
        },
        Migration {
            version: 103,
            name: "wallet",
            sql: include_str!("../migrations/postgres/0103_wallet.sql"),
        },
        Migration {
            version: 104,
            name: "sales",
            sql: include_str!("../migrations/postgres/0104_sales.sql"),
        },
    ],
};

/// Every migration a tickets database needs: the platform outbox and inbox, then its own.
pub const MIGRATIONS: [&Migrations; 2] = [&common::outbox::MIGRATIONS, &TICKETS_MIGRATIONS];

/// How the service behaves, built once from the configuration.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The marketplace's fee on each sale, kept from what its seller is owed.
    pub seller_fee: sales::SellerFee,
    /// How far above what was last paid for a ticket its owner may list it again.
    pub resale_cap: sales::ResaleCap,
}

/// Starts the service's background work (the outbox relay, the order:created and
/// order:cancelled listeners, and the record of revoked sessions, all stopping on
/// `ctx.shutdown`) and returns its routes with their state applied, without the HTTP stack.
pub fn start(ctx: &ServiceContext, settings: &Settings) -> Router {
    ctx.spawn_relay();
    ctx.spawn_revocation_listeners();
    // Its tombstones of cancelled orders are kept for good: reserving is the one effect that an
    // order:created replayed or delayed past any retention could not undo.
    ctx.spawn_retention(&[]);
    let dialect = ctx.store.dialect();
    listener::spawn::<OrderCreated, _>(ctx, listeners::ReserveTicket { dialect });
    listener::spawn::<OrderCancelled, _>(ctx, listeners::ReleaseTicket { dialect });
    let seller_fee = settings.seller_fee;
    listener::spawn::<OrderCompleted, _>(
        ctx,
        listeners::HandOverTicket {
            dialect,
            seller_fee,
        },
    );
    listener::spawn::<UserCreated, _>(ctx, listeners::RememberUser);
    let store = ctx.store.clone();
    ctx.tasks.spawn(async move {
        match store::fill_search_words(&store).await {
            Ok(0) => {}
            Ok(filled) => tracing::info!(filled, "rows stored before search given their words"),
            Err(error) => {
                tracing::error!(%error, "cannot give rows stored before search their words")
            }
        }
    });
    routes::router(routes::AppState::new(ctx, settings))
}
