//! The orders service. It owns the orders table (orders placed by buyers on tickets, granted to
//! one payment at a time, cancelled by their owners or by their expiry, completed by their
//! payment) and a replica of the tickets, kept from ticket:created and ticket:updated in version
//! order. It announces every change of an order (order:created, order:updated, order:cancelled,
//! order:completed) through its transactional outbox.
//!
//! The double-sale guard is a unique index in its database: at most one order that is not
//! cancelled per ticket, so of two buyers racing for one ticket exactly one gets it.
//!
//! [`start`] spawns the outbox relay and the listeners and returns the HTTP routes; the caller
//! wraps them in the HTTP stack (`common::http::serve_stack`), alone or merged with other
//! services' routes.

pub mod domain;
mod listeners;
mod routes;
pub use routes::openapi;
mod store;

use std::time::Duration;

use axum::Router;
use common::ServiceContext;
use common::events::{
    ExpirationComplete, PaymentCreated, PaymentFailed, PaymentRequested, TicketCreated,
    TicketUpdated,
};
use common::listener;
use common::store::{Migration, Migrations};

/// The service's name, which also names its consumer groups.
pub const NAME: &str = "orders";

/// The service's own tables: the ticket replica and the orders.
pub const ORDERS_MIGRATIONS: Migrations = Migrations {
    sqlite: &[
        Migration {
            version: 100,
            name: "orders",
            sql: include_str!("../migrations/sqlite/0100_orders.sql"),
        },
        Migration {
            version: 101,
            name: "order snapshot",
            sql: include_str!("../migrations/sqlite/0101_order_snapshot.sql"),
        },
        Migration {
            version: 102,
            name: "hold limits",
            sql: include_str!("../migrations/sqlite/0102_hold_limits.sql"),
        },
        Migration {
            version: 103,
            name: "payment grant",
            sql: include_str!("../migrations/sqlite/0103_payment_grant.sql"),
        },
        Migration {
            version: 104,
            name: "ticket events",
            sql: include_str!("../migrations/sqlite/0104_ticket_events.sql"),
        },
        Migration {
            version: 105,
            name: "sale end",
            sql: include_str!("../migrations/sqlite/0105_sale_end.sql"),
        },
        Migration {
            version: 106,
            name: "resale",
            sql: include_str!("../migrations/sqlite/0106_resale.sql"),
        },
    ],
    postgres: &[
        Migration {
            version: 100,
            name: "orders",
            sql: include_str!("../migrations/postgres/0100_orders.sql"),
        },
        Migration {
            version: 101,
            name: "order snapshot",
            sql: include_str!("../migrations/postgres/0101_order_snapshot.sql"),
        },
        Migration {
            version: 102,
            name: "hold limits",
            sql: include_str!("../migrations/postgres/0102_hold_limits.sql"),
        },
        Migration {
            version: 103,
            name: "payment grant",
            sql: include_str!("../migrations/postgres/0103_payment_grant.sql"),
        },
        Migration {
            version: 104,
            name: "ticket events",
            sql: include_str!("../migrations/postgres/0104_ticket_events.sql"),
        },
        Migration {
            version: 105,
            name: "sale end",
            sql: include_str!("../migrations/postgres/0105_sale_end.sql"),
        },
        Migration {
            version: 106,
            name: "resale",
            sql: include_str!("../migrations/postgres/0106_resale.sql"),
        },
    ],
};

/// Every migration an orders database needs: the platform outbox and inbox, then its own.
pub const MIGRATIONS: [&Migrations; 2] = [&common::outbox::MIGRATIONS, &ORDERS_MIGRATIONS];

/// How the service behaves, built once from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a buyer has to pay: an order's `expiresAt` is its placing time plus this.
    pub order_expiration: Duration,
    /// How many holds a buyer may have, and how often they may take them.
    pub hold_limits: domain::HoldLimits,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            order_expiration: domain::DEFAULT_ORDER_EXPIRATION,
            hold_limits: domain::HoldLimits::default(),
        }
    }
}

/// Starts the service's background work (the outbox relay, the relay of other replicas' arrivals
/// and the ticket:created, ticket:updated, expiration:complete, payment:requested,
/// payment:created and payment:failed listeners, and the record of revoked sessions, all stopping
/// on `ctx.shutdown`) and returns its routes with their state applied, without the HTTP stack.
pub fn start(ctx: &ServiceContext, settings: &Settings) -> Router {
    ctx.spawn_relay();
    ctx.spawn_revocation_listeners();
    ctx.spawn_retention(&[]);
    ctx.spawn_arrival_relay();
    let dialect = ctx.store.dialect();
    listener::spawn::<TicketCreated, _>(ctx, listeners::RecordTicket);
    listener::spawn::<TicketUpdated, _>(ctx, listeners::UpdateTicket { dialect });
    listener::spawn::<ExpirationComplete, _>(ctx, listeners::ExpireOrder { dialect });
    listener::spawn::<PaymentRequested, _>(ctx, listeners::GrantPayment { dialect });
    listener::spawn::<PaymentCreated, _>(ctx, listeners::CompleteOrder { dialect });
    listener::spawn::<PaymentFailed, _>(ctx, listeners::ReopenOrder { dialect });
    routes::router(routes::AppState::new(ctx, settings))
}
