//! The orders service's API tests: the service runs on a random port against a fresh database
//! (SQLite, and PostgreSQL when `STUBS_TEST_DATABASE_URL` is set) and a fresh embedded bus, and
//! is driven over HTTP and through the bus, as its clients and the tickets, expiration and
//! payments services would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod best_available;
mod concurrency;
mod grants;
mod helpers;
mod idempotency;
mod lifecycle;
mod limits;
mod orders;
mod replica;
mod resale;
mod sale_end;
