//! Revoked sessions. Signing out revokes one session; signing out everywhere revokes every session
//! a user began before it, by raising the user's session generation. Auth records either in its
//! own database and announces it (`session:revoked`, `sessions:revoked`); every other service that
//! verifies tokens records what it hears in its own database (the platform tables
//! `revoked_sessions` and `revoked_generations`).
//!
//! Verifying stays in memory: each process holds what its service's database holds in a
//! [`Revocations`] set, read under one lock per token. The set learns of a revocation three ways:
//! the listener (or auth's request) that records it adds it at once; on PostgreSQL, the recording
//! transaction notifies every replica of that database when it commits; and the tables are read
//! whole at start, every minute, and whenever the notification connection was lost (listening
//! first, so that nothing committed in between is missed). So once a service has heard of a
//! revocation, all of its replicas refuse the token within a notification's trip, or within the
//! minute if a replica cannot listen. Until a replica has read its tables once, requests that
//! carry a session wait for it ([`Revocations::read`]).
//!
//! Rows and entries are forgotten a minute after the tokens they revoke have expired anyway.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::background::{Next, run_passes};
use crate::clock::{millis, now_millis};
use crate::events::{Envelope, SessionRevoked, SessionsRevoked};
use crate::listener::{HandleError, Handler};
use crate::session::Claims;
use crate::store::{Dialect, Heard, Store, listen, notify_on_commit, uuid_column};

/// The PostgreSQL channel replicas hear each other's revocations on.
const CHANNEL: &str = "revocations";
/// How often the tables are read whole and expired revocations forgotten.
const REFRESH: Duration = Duration::from_secs(60);
/// How long a revocation is kept after the tokens it revokes expire. A token's `exp` is in whole
/// seconds and holds through that second; a sign-in that crossed a sign-out everywhere may have
/// issued a token of the old generation that outlives the expiry recorded; and the clocks of
/// auth and the other services may differ. A minute covers all three.
const KEEP_PAST_EXPIRY: Duration = Duration::from_secs(60);

/// One revocation, as recorded, held and notified. Times are unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Revocation {
    /// One session (sign-out).
    #[serde(rename_all = "camelCase")]
    Session {
        session_id: Uuid,
        user_id: Uuid,
        expires_at: i64,
    },
    /// Every session of a user begun under a generation below `below` (sign out everywhere).
    #[serde(rename_all = "camelCase")]
    Generation {
        user_id: Uuid,
        below: i64,
        expires_at: i64,
    },
}

impl From<&SessionRevoked> for Revocation {
    fn from(event: &SessionRevoked) -> Self {
        Self::Session {
            session_id: event.id,
            user_id: event.user_id,
            expires_at: millis(event.expires_at),
        }
    }
}

impl From<&SessionsRevoked> for Revocation {
    fn from(event: &SessionsRevoked) -> Self {
        Self::Generation {
            user_id: event.user_id,
            below: event.generation,
            expires_at: millis(event.expires_at),
        }
    }
}

/// The revocations one service has heard of, shared by its verifier and whatever records them.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Revocations(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    known: RwLock<Known>,
    /// Whether the service's tables have been read once: until then a session cannot be told
    /// from a revoked one.
    read: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct Known {
    /// Revoked session ids, with when their token expires.
    sessions: HashMap<Uuid, i64>,
    /// Per user, the generation below which sessions are revoked, and when the last of them
    /// expires.
    generations: HashMap<Uuid, (i64, i64)>,
}

impl Default for Revocations {
    /// Revocations with no database to read, such as a verifier's in a test or benchmark.
    fn default() -> Self {
        Self::with_tables_read(true)
    }
}

impl Revocations {
    /// Revocations still to be read from a service's tables ([`keep`]).
    pub fn unread() -> Self {
        Self::with_tables_read(false)
    }

    fn with_tables_read(read: bool) -> Self {
        Self(Arc::new(Shared {
            known: RwLock::new(Known::default()),
            read: watch::Sender::new(read),
        }))
    }

    /// Waits until the service's tables have been read once, so that a session is not taken on
    /// the word of a replica that has just started. At once ever after.
    pub async fn read(&self) {
        if *self.0.read.borrow() {
            return;
        }
        let mut read = self.0.read.subscribe();
        // The sender lives as long as `self`, so the wait ends only when the tables are read.
        let _ = read.wait_for(|read| *read).await;
    }

    /// Whether the session these claims describe was revoked.
    pub fn covers(&self, claims: &Claims) -> bool {
        let known = self.known();
        known.sessions.contains_key(&claims.sid)
            || known
                .generations
                .get(&claims.id)
                .is_some_and(|&(below, _)| claims.generation < below)
    }

    pub fn add(&self, revocation: Revocation) {
        let mut known = self.0.known.write().unwrap_or_else(PoisonError::into_inner);
        match revocation {
            Revocation::Session {
                session_id,
                expires_at,
                ..
            } => {
                known.sessions.insert(session_id, expires_at);
            }
            Revocation::Generation {
                user_id,
                below,
                expires_at,
            } => {
                // Generations only rise; an older revocation heard late changes nothing.
                let entry = known
                    .generations
                    .entry(user_id)
                    .or_insert((below, expires_at));
                *entry = (entry.0.max(below), entry.1.max(expires_at));
            }
        }
    }

    /// How many revocations are held.
    #[cfg(test)]
    fn len(&self) -> usize {
        let known = self.known();
        known.sessions.len() + known.generations.len()
    }

    fn known(&self) -> std::sync::RwLockReadGuard<'_, Known> {
        self.0.known.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets what expired before `horizon` (unix milliseconds).
    fn forget_expired(&self, horizon: i64) {
        let mut known = self.0.known.write().unwrap_or_else(PoisonError::into_inner);
        known.sessions.retain(|_, expires_at| *expires_at > horizon);
        known
            .generations
            .retain(|_, (_, expires_at)| *expires_at > horizon);
    }

    fn tables_read(&self) {
        self.0
            .read
            .send_if_modified(|read| !std::mem::replace(read, true));
    }
}

/// Records a revocation in the caller's transaction. On PostgreSQL every replica of this
/// database hears of it when the transaction commits.
pub async fn record(
    tx: &mut AnyConnection,
    dialect: Dialect,
    revocation: Revocation,
) -> Result<(), sqlx::Error> {
    match revocation {
        Revocation::Session {
            session_id,
            user_id,
            expires_at,
        } => {
            sqlx::query(
                "INSERT INTO revoked_sessions (session_id, user_id, expires_at) \
                 VALUES ($1, $2, $3) ON CONFLICT (session_id) DO NOTHING",
            )
            .bind(session_id.to_string())
            .bind(user_id.to_string())
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
        }
        Revocation::Generation {
            user_id,
            below,
            expires_at,
        } => {
            let sql = match dialect {
                Dialect::Sqlite => {
                    "INSERT INTO revoked_generations (user_id, below, expires_at) \
                     VALUES ($1, $2, $3) ON CONFLICT (user_id) DO UPDATE SET \
                     below = max(revoked_generations.below, excluded.below), \
                     expires_at = max(revoked_generations.expires_at, excluded.expires_at)"
                }
                Dialect::Postgres => {
                    "INSERT INTO revoked_generations (user_id, below, expires_at) \
                     VALUES ($1, $2, $3) ON CONFLICT (user_id) DO UPDATE SET \
                     below = GREATEST(revoked_generations.below, excluded.below), \
                     expires_at = GREATEST(revoked_generations.expires_at, excluded.expires_at)"
                }
            };
            sqlx::query(sql)
                .bind(user_id.to_string())
                .bind(below)
                .bind(expires_at)
                .execute(&mut *tx)
                .await?;
        }
    }
    if dialect == Dialect::Postgres {
        let payload = serde_json::to_string(&revocation)
            .map_err(|err| sqlx::Error::Protocol(err.to_string()))?;
        notify_on_commit(tx, CHANNEL, &payload).await?;
    }
    Ok(())
}

/// Records the revocations a service hears of, and adds them to its verifier's set.
#[derive(Debug, Clone)]
pub struct RecordRevocation {
    pub dialect: Dialect,
    pub revocations: Revocations,
}

impl RecordRevocation {
    async fn apply(
        &self,
        tx: &mut AnyConnection,
        revocation: Revocation,
    ) -> Result<(), HandleError> {
        record(tx, self.dialect, revocation).await?;
        // Before the commit: should it fail, the event comes again, and refusing the token a
        // moment early is what its owner asked for.
        self.revocations.add(revocation);
        Ok(())
    }
}

#[async_trait]
impl Handler<SessionRevoked> for RecordRevocation {
    fn lock_key(&self, event: &SessionRevoked) -> Option<Uuid> {
        Some(event.id)
    }

    async fn handle(
        &self,
        tx: &mut AnyConnection,
        event: Envelope<SessionRevoked>,
    ) -> Result<(), HandleError> {
        self.apply(tx, Revocation::from(&event.data)).await
    }
}

#[async_trait]
impl Handler<SessionsRevoked> for RecordRevocation {
    /// The user's row: two batches raising one user's generation side by side take it in turn.
    fn lock_key(&self, event: &SessionsRevoked) -> Option<Uuid> {
        Some(event.user_id)
    }

    async fn handle(
        &self,
        tx: &mut AnyConnection,
        event: Envelope<SessionsRevoked>,
    ) -> Result<(), HandleError> {
        self.apply(tx, Revocation::from(&event.data)).await
    }
}

/// Keeps `revocations` in step with the service's database until shutdown, as the module says.
pub async fn keep(store: Store, revocations: Revocations, shutdown: CancellationToken) {
    let (store, revocations) = (&store, &revocations);
    let refreshing = async {
        let never = Notify::new();
        run_passes("revocations", &never, &shutdown, move || async move {
            refresh(store, revocations).await?;
            Ok::<_, sqlx::Error>(Next::Pause(REFRESH))
        })
        .await;
    };
    match store.listen_url() {
        Some(url) => {
            tokio::join!(
                refreshing,
                hear_replicas(store, revocations, url, &shutdown)
            );
        }
        // One process per SQLite database: whatever records a revocation adds it itself.
        None => refreshing.await,
    }
}

/// Forgets what expired longer ago than [`KEEP_PAST_EXPIRY`] and reads every revocation kept.
async fn refresh(store: &Store, revocations: &Revocations) -> Result<(), sqlx::Error> {
    let horizon = now_millis().saturating_sub(crate::clock::span_millis(KEEP_PAST_EXPIRY));
    for table in ["revoked_sessions", "revoked_generations"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE expires_at <= $1"
        )))
        .bind(horizon)
        .execute(store.writer())
        .await?;
    }
    revocations.forget_expired(horizon);
    let sessions = sqlx::query(
        "SELECT session_id, user_id, expires_at FROM revoked_sessions WHERE expires_at > $1",
    )
    .bind(horizon)
    .fetch_all(store.pool())
    .await?;
    for row in sessions {
        revocations.add(Revocation::Session {
            session_id: uuid_column(&row, "session_id")?,
            user_id: uuid_column(&row, "user_id")?,
            expires_at: row.try_get("expires_at")?,
        });
    }
    let generations = sqlx::query(
        "SELECT user_id, below, expires_at FROM revoked_generations WHERE expires_at > $1",
    )
    .bind(horizon)
    .fetch_all(store.pool())
    .await?;
    for row in generations {
        revocations.add(Revocation::Generation {
            user_id: uuid_column(&row, "user_id")?,
            below: row.try_get("below")?,
            expires_at: row.try_get("expires_at")?,
        });
    }
    revocations.tables_read();
    Ok(())
}

/// Adds the revocations other replicas of this database record, as they commit. The tables are
/// read whole once listening, and again after a lost connection, since what was notified
/// meanwhile is lost.
async fn hear_replicas(
    store: &Store,
    revocations: &Revocations,
    url: &SecretString,
    shutdown: &CancellationToken,
) {
    let what = "other replicas' revocations";
    listen(url, CHANNEL, what, shutdown, |heard| async move {
        match heard {
            Heard::Notice(payload) => match serde_json::from_str::<Revocation>(&payload) {
                Ok(revocation) => revocations.add(revocation),
                Err(err) => {
                    tracing::warn!(error = %err, "unreadable revocation notice; reading them all");
                    refresh(store, revocations).await?;
                }
            },
            Heard::Listening | Heard::Missed => refresh(store, revocations).await?,
        }
        Ok(())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(user: Uuid, sid: Uuid, generation: i64) -> Claims {
        Claims {
            id: user,
            email: "a@b.co".into(),
            sid,
            generation,
            iat: 0,
            exp: 0,
        }
    }

    #[test]
    fn a_revoked_session_is_covered_and_no_other() {
        let revocations = Revocations::default();
        let (user, signed_out, other) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        revocations.add(Revocation::Session {
            session_id: signed_out,
            user_id: user,
            expires_at: 10,
        });
        assert!(revocations.covers(&claims(user, signed_out, 0)));
        assert!(!revocations.covers(&claims(user, other, 0)));
    }

    #[test]
    fn a_generation_covers_the_sessions_below_it_and_only_rises() {
        let revocations = Revocations::default();
        let (user, someone_else) = (Uuid::new_v4(), Uuid::new_v4());
        revocations.add(Revocation::Generation {
            user_id: user,
            below: 2,
            expires_at: 10,
        });
        assert!(revocations.covers(&claims(user, Uuid::new_v4(), 1)));
        assert!(!revocations.covers(&claims(user, Uuid::new_v4(), 2)));
        assert!(!revocations.covers(&claims(someone_else, Uuid::new_v4(), 0)));
        // Heard late, an earlier sign-out everywhere lowers nothing.
        revocations.add(Revocation::Generation {
            user_id: user,
            below: 1,
            expires_at: 5,
        });
        assert!(revocations.covers(&claims(user, Uuid::new_v4(), 1)));
    }

    #[test]
    fn expired_revocations_are_forgotten() {
        let revocations = Revocations::default();
        let user = Uuid::new_v4();
        let (old, young) = (Uuid::new_v4(), Uuid::new_v4());
        for (session_id, expires_at) in [(old, 10), (young, 20)] {
            revocations.add(Revocation::Session {
                session_id,
                user_id: user,
                expires_at,
            });
        }
        revocations.add(Revocation::Generation {
            user_id: user,
            below: 3,
            expires_at: 10,
        });
        revocations.forget_expired(10);
        assert_eq!(revocations.len(), 1);
        assert!(revocations.covers(&claims(user, young, 5)));
        assert!(!revocations.covers(&claims(user, old, 0)));
    }

    #[test]
    fn a_notice_has_one_wire_form_that_replicas_of_any_version_read() {
        let user = Uuid::new_v4();
        let revocation = Revocation::Generation {
            user_id: user,
            below: 7,
            expires_at: 1_700_000_000_000,
        };
        let text = serde_json::to_string(&revocation).unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            serde_json::json!({
                "kind": "generation",
                "userId": user,
                "below": 7,
                "expiresAt": 1_700_000_000_000_i64,
            })
        );
        assert_eq!(
            serde_json::from_str::<Revocation>(&text).unwrap(),
            revocation
        );
        let session = serde_json::json!({
            "kind": "session",
            "sessionId": user,
            "userId": user,
            "expiresAt": 5,
        });
        assert_eq!(
            serde_json::from_value::<Revocation>(session).unwrap(),
            Revocation::Session {
                session_id: user,
                user_id: user,
                expires_at: 5,
            }
        );
    }

    #[tokio::test]
    async fn a_session_waits_for_the_tables_to_be_read_once() {
        let revocations = Revocations::unread();
        let waiting = tokio::spawn({
            let revocations = revocations.clone();
            async move { revocations.read().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "nothing read yet");
        revocations.tables_read();
        waiting.await.unwrap();
        Revocations::default().read().await;
    }
}
