//! The expiration service's tests: the service runs against a fresh database (SQLite, and
//! PostgreSQL when `STUBS_TEST_DATABASE_URL` is set) and a fresh embedded bus, and is driven
//! through the bus as the orders service would drive it, while an observer group watches the
//! expiration:complete events it announces.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod finished_orders;
mod helpers;
mod replicas;
mod scheduling;
