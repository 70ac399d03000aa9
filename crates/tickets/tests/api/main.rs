//! The tickets service's API tests: the service runs on a random port against a fresh database
//! (SQLite, and PostgreSQL when `STUBS_TEST_DATABASE_URL` is set) and a fresh embedded bus, and
//! is driven over HTTP and through the bus, as its clients and the orders service would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod event_listings;
mod events;
mod helpers;
mod idempotency;
mod listeners;
mod resale;
mod sales;
mod search;
mod text;
mod tickets;
mod wallet;
