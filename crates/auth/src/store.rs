//! The only place with SQL for the auth service.

use common::Store;
use common::clock::from_millis;
use common::events::{SessionRevoked, SessionsRevoked};
use common::outbox::{self, Outbox};
use common::revocation::{self, Revocation};
use common::session::Claims;
use common::store::{Dialect, is_unique_violation, uuid_column};
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::Email;

pub(crate) struct User {
    pub id: Uuid,
    pub email: String,
    pub password_hash: String,
    /// Sessions begun now carry this; signing out everywhere raises it.
    pub session_generation: i64,
}

pub(crate) enum Inserted {
    Created,
    EmailTaken,
}

pub(crate) async fn insert_user(
    store: &Store,
    id: Uuid,
    email: &Email,
    password_hash: &str,
) -> Result<Inserted, sqlx::Error> {
    let result = sqlx::query(
        "INSERT INTO users (id, email, password_hash, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(id.to_string())
    .bind(email.as_str())
    .bind(password_hash)
    .bind(common::clock::now_millis())
    .execute(store.writer())
    .await;
    match result {
        Ok(_) => Ok(Inserted::Created),
        Err(err) if is_unique_violation(&err) => Ok(Inserted::EmailTaken),
        Err(err) => Err(err),
    }
}

pub(crate) async fn find_by_email(
    store: &Store,
    email: &Email,
) -> Result<Option<User>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT id, email, password_hash, session_generation FROM users WHERE email = $1",
    )
    .bind(email.as_str())
    .fetch_optional(store.pool())
    .await?;
    row.map(|row| {
        Ok(User {
            id: uuid_column(&row, "id")?,
            email: row.try_get("email")?,
            password_hash: row.try_get("password_hash")?,
            session_generation: row.try_get("session_generation")?,
        })
    })
    .transpose()
}

/// Ends the session these claims describe: recorded here and announced, in one transaction.
pub(crate) async fn revoke_session(
    store: &Store,
    outbox: &Outbox,
    claims: &Claims,
) -> Result<Revocation, sqlx::Error> {
    let event = SessionRevoked {
        id: claims.sid,
        user_id: claims.id,
        expires_at: from_millis(claims.exp.saturating_mul(1000)),
    };
    let revocation = Revocation::from(&event);
    let mut tx = store.begin().await?;
    revocation::record(&mut tx, store.dialect(), revocation).await?;
    outbox::enqueue(&mut tx, event).await?;
    outbox.commit(tx).await?;
    Ok(revocation)
}

/// Ends every session of a user begun so far by raising their session generation: recorded here
/// and announced, in one transaction. `last_expiry` is when the last of those tokens expires.
/// `None` if there is no such user.
pub(crate) async fn revoke_all_sessions(
    store: &Store,
    outbox: &Outbox,
    user_id: Uuid,
    last_expiry: OffsetDateTime,
) -> Result<Option<Revocation>, sqlx::Error> {
    let mut tx = store.begin().await?;
    let raised: Option<i64> = sqlx::query_scalar(
        "UPDATE users SET session_generation = session_generation + 1 WHERE id = $1 \
         RETURNING session_generation",
    )
    .bind(user_id.to_string())
    .fetch_optional(&mut *tx)
    .await?;
    let Some(generation) = raised else {
        return Ok(None);
    };
    let event = SessionsRevoked {
        user_id,
        generation,
        expires_at: last_expiry,
    };
    let revocation = Revocation::from(&event);
    revocation::record(&mut tx, store.dialect(), revocation).await?;
    outbox::enqueue(&mut tx, event).await?;
    outbox.commit(tx).await?;
    Ok(Some(revocation))
}

/// What composing the stored e-mails did.
#[derive(Debug, Default)]
pub(crate) struct Composed {
    pub rewritten: u64,
    /// Accounts whose address, composed, is another account's: left as stored.
    pub clashes: Vec<Uuid>,
}

/// Rewrites addresses stored before e-mails were composed (NFC) into the form sign-in looks up
/// now. Only addresses with a character outside printable ASCII can differ, so only those are
/// read.
pub(crate) async fn compose_stored_emails(store: &Store) -> Result<Composed, sqlx::Error> {
    let beyond_ascii = match store.dialect() {
        Dialect::Sqlite => "SELECT id, email FROM users WHERE email GLOB '*[^ -~]*'",
        Dialect::Postgres => "SELECT id, email FROM users WHERE email ~ '[^ -~]'",
    };
    let rows = sqlx::query(beyond_ascii).fetch_all(store.pool()).await?;
    let mut composed = Composed::default();
    for row in rows {
        let id = uuid_column(&row, "id")?;
        let stored: String = row.try_get("email")?;
        let Ok(email) = Email::for_sign_in(&stored) else {
            continue;
        };
        if email.as_str() == stored {
            continue;
        }
        let result = sqlx::query("UPDATE users SET email = $1 WHERE id = $2 AND email = $3")
            .bind(email.as_str())
            .bind(id.to_string())
            .bind(&stored)
            .execute(store.writer())
            .await;
        match result {
            Ok(done) => composed.rewritten += done.rows_affected(),
            Err(err) if is_unique_violation(&err) => composed.clashes.push(id),
            Err(err) => return Err(err),
        }
    }
    Ok(composed)
}
