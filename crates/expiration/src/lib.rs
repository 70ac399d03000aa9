//! The expiration service. It owns durable scheduled jobs, one per live order, due when the
//! order's payment window closes (its expiresAt). When a job falls due the service announces
//! expiration:complete through its transactional outbox, and the orders service cancels the order
//! unless it was paid. It learns about orders only from events: order:created schedules a job,
//! order:cancelled and order:completed remove it.
//!
//! It has no HTTP API of its own: [`start`] spawns the outbox relay, the listeners and the
//! scheduler and returns an empty router, to which the binary adds health and metrics.

mod listeners;
mod scheduler;
mod store;

use std::sync::Arc;

use axum::Router;
use common::ServiceContext;
use common::events::{OrderCancelled, OrderCompleted, OrderCreated};
use common::listener;
use common::retention::Dated;
use common::store::{Migration, Migrations};

/// The service's name, which also names its consumer groups.
pub const NAME: &str = "expiration";

/// The service's own tables: the jobs and the tombstones of finished orders.
pub const EXPIRATION_MIGRATIONS: Migrations = Migrations {
    sqlite: &[
        Migration {
            version: 100,
            name: "expiration",
            sql: include_str!("../migrations/sqlite/0100_expiration.sql"),
        },
        Migration {
            version: 101,
            name: "tombstones by age",
            sql: include_str!("../migrations/sqlite/0101_tombstones_by_age.sql"),
        },
    ],
    postgres: &[
        Migration {
            version: 100,
            name: "expiration",
            sql: include_str!("../migrations/postgres/0100_expiration.sql"),
        },
        Migration {
            version: 101,
            name: "tombstones by age",
            sql: include_str!("../migrations/postgres/0101_tombstones_by_age.sql"),
        },
    ],
};

/// Every migration an expiration database needs: the platform outbox and inbox, then its own.
pub const MIGRATIONS: [&Migrations; 2] = [&common::outbox::MIGRATIONS, &EXPIRATION_MIGRATIONS];

/// The tombstones of finished orders: needed only while an order:created can still arrive after
/// its order ended, so kept for the retention, as the inbox is. One that comes later schedules a
/// job whose expiry the orders service then ignores, since the order is over.
const FINISHED_ORDERS: Dated = Dated {
    table: "finished_orders",
    column: "finished_at",
};

/// Starts the service's background work (the outbox relay, the order:created, order:cancelled
/// and order:completed listeners, and the scheduler, all stopping on `ctx.shutdown`) and returns
/// its routes: none.
pub fn start(ctx: &ServiceContext) -> Router {
    ctx.spawn_relay();
    ctx.spawn_retention(&[FINISHED_ORDERS]);
    let wakeup = Arc::new(scheduler::Wakeup::default());
    listener::spawn::<OrderCreated, _>(
        ctx,
        listeners::ScheduleExpiration {
            dialect: ctx.store.dialect(),
            wakeup: wakeup.clone(),
        },
    );
    listener::spawn::<OrderCancelled, _>(ctx, listeners::ForgetExpiration);
    listener::spawn::<OrderCompleted, _>(ctx, listeners::ForgetExpiration);
    ctx.tasks.spawn(scheduler::run(ctx.clone(), wakeup));
    Router::new()
}
