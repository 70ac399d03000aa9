//! The payments service's API tests: the service runs on a random port against a fresh database
//! (SQLite, and PostgreSQL when `STUBS_TEST_DATABASE_URL` is set) and a fresh embedded bus, and
//! is driven over HTTP and through the bus, as buyers, the orders service and Stripe would. The
//! processor is the real sandbox, or a Stripe-compatible server (localstripe) when
//! `STUBS_TEST_STRIPE_API_BASE` is set.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod grants;
mod helpers;
mod idempotency;
mod listeners;
mod paying;
mod races;
mod reconciler;
mod stripe;
mod webhook;
