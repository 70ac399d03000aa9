//! The auth service: it owns users (e-mail and argon2id password hash) and issues the session
//! token every other service verifies on its own. It announces each account made
//! (`user:created`, with the e-mail as stored, for the services that find accounts by e-mail) and
//! the end of sessions (`session:revoked` on sign-out, `sessions:revoked` on signing out
//! everywhere).

mod client_address;
mod domain;
mod password;
mod routes;
pub use routes::openapi;
mod store;
pub use store::announce_stored_users;

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::Router;
use common::ServiceContext;
use common::background::{Next, run_passes};
use common::outbox::Outbox;
use common::store::{Migration, Migrations};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use domain::{Credentials, Email};

pub const NAME: &str = "auth";

const AUTH_MIGRATIONS: Migrations = Migrations {
    sqlite: &[
        Migration {
            version: 100,
            name: "users",
            sql: include_str!("../migrations/sqlite/0100_users.sql"),
        },
        Migration {
            version: 101,
            name: "session generation",
            sql: include_str!("../migrations/sqlite/0101_session_generation.sql"),
        },
        Migration {
            version: 102,
            name: "user announcements",
            sql: include_str!("../migrations/sqlite/0102_user_announcements.sql"),
        },
    ],
    postgres: &[
        Migration {
            version: 100,
            name: "users",
            sql: include_str!("../migrations/postgres/0100_users.sql"),
        },
        Migration {
            version: 101,
            name: "session generation",
            sql: include_str!("../migrations/postgres/0101_session_generation.sql"),
        },
        Migration {
            version: 102,
            name: "user announcements",
            sql: include_str!("../migrations/postgres/0102_user_announcements.sql"),
        },
    ],
};

/// Every migration of the auth database: the platform outbox, inbox and revoked sessions, then
/// its own.
pub const MIGRATIONS: [&Migrations; 2] = [&common::outbox::MIGRATIONS, &AUTH_MIGRATIONS];

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

/// Starts the service's background work (the outbox relay, the keeper of its revoked sessions,
/// one pass over the accounts stored before composing their e-mails, and the announcing of
/// accounts never announced, stopping on `ctx.shutdown`) and returns its routes with their state
/// applied, without the HTTP stack.
pub fn start(ctx: &ServiceContext, settings: &Settings) -> Router {
    ctx.spawn_relay();
    ctx.spawn_revocation_keeper();
    ctx.tasks.spawn(settle_stored_users(
        ctx.store.clone(),
        ctx.outbox.clone(),
        ctx.shutdown.clone(),
    ));
    let state = routes::AppState {
        store: ctx.store.clone(),
        outbox: ctx.outbox.clone(),
        sessions: ctx.sessions.clone(),
        hasher: Arc::new(password::Hasher::new()),
    };
    routes::router(state, settings)
}

/// How often auth looks for accounts never announced: those made before user:created was, and
/// those an older replica still running beside a newer one makes during a rolling deploy.
const ANNOUNCE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Composes the e-mails stored before addresses were composed, then announces the accounts never
/// announced, at once and then every [`ANNOUNCE_EVERY`], retried while the database is away: in
/// this order, so that they are announced with the address sign-in finds, which no later event
/// would correct.
async fn settle_stored_users(store: common::Store, outbox: Outbox, shutdown: CancellationToken) {
    compose_stored_emails(store.clone(), shutdown.clone()).await;
    let never = Notify::new();
    run_passes("announce accounts", &never, &shutdown, || async {
        let announced = store::announce_stored_users(&store, &outbox).await?;
        if announced > 0 {
            tracing::info!(announced, "accounts never announced are announced");
        }
        Ok::<_, sqlx::Error>(Next::Pause(ANNOUNCE_EVERY))
    })
    .await;
}

/// Composes the e-mails stored before addresses were composed (NFC), once per start, so that
/// their accounts sign in as typed today; retried while the database is away. An address whose
/// composed form another account has is left for the operator, named in a warning.
async fn compose_stored_emails(store: common::Store, shutdown: CancellationToken) {
    let done = shutdown.child_token();
    let never = Notify::new();
    run_passes("compose stored e-mails", &never, &done, || async {
        let composed = store::compose_stored_emails(&store).await?;
        if composed.rewritten > 0 {
            tracing::info!(
                rewritten = composed.rewritten,
                "e-mails stored before composing are composed"
            );
        }
        for user in composed.clashes {
            // The user's id only: the address is theirs to keep out of the logs.
            tracing::warn!(
                %user,
                "this account's e-mail, composed, is another account's: left as stored, it \
                 cannot be signed in to until an operator settles it"
            );
        }
        done.cancel();
        Ok::<_, sqlx::Error>(Next::Again)
    })
    .await;
}
