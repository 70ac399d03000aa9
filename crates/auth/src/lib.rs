//! The auth service: it owns users (e-mail and argon2id password hash) and issues the session
//! token every other service verifies on its own. It publishes no events.

mod client_address;
mod domain;
mod password;
mod routes;
mod store;

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::Router;
use common::store::{Migration, Migrations};
use common::{Sessions, Store};

pub use domain::{Credentials, Email};

pub const NAME: &str = "auth";

const AUTH_MIGRATIONS: Migrations = Migrations {
    sqlite: &[Migration {
        version: 100,
        name: "users",
        sql: include_str!("../migrations/sqlite/0100_users.sql"),
    }],
    postgres: &[Migration {
        version: 100,
        name: "users",
        sql: include_str!("../migrations/postgres/0100_users.sql"),
    }],
};

/// Every migration of the auth database.
pub const MIGRATIONS: [&Migrations; 1] = [&AUTH_MIGRATIONS];

/// Settings of the auth service.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Sign-in and sign-up attempts allowed per client address per minute; `None` turns the
    /// limit off.
    pub attempts_per_minute: Option<NonZeroU32>,
    /// Count attempts by the address the ingress puts last in X-Forwarded-For, not by the peer
    /// (which, behind an ingress, is always the ingress).
    pub trust_forwarded_for: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            attempts_per_minute: NonZeroU32::new(30),
            trust_forwarded_for: false,
        }
    }
}

/// Starts the auth service and returns its routes (without the HTTP stack). It needs no bus:
/// nothing else has to hear about users.
pub fn start(store: Store, sessions: Sessions, settings: &Settings) -> Router {
    let state = routes::AppState {
        store,
        sessions,
        hasher: Arc::new(password::Hasher::new()),
    };
    routes::router(state, settings)
}
