//! The only place with SQL for the auth service.

use common::Store;
use common::clock::from_millis;
use common::events::{SessionRevoked, SessionsRevoked, UserCreated};
use common::outbox::{self, Outbox};
use common::revocation::{self, Revocation};
use common::session::Claims;
use common::store::{Dialect, is_unique_violation, parse_uuid, uuid_column};
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

/// Stores a new account and announces it (user:created, with the e-mail as stored), in one
/// transaction: the event leaves if and only if the account exists.
pub(crate) async fn insert_user(
    store: &Store,
    outbox: &Outbox,
    id: Uuid,
    email: &Email,
    password_hash: &str,
) -> Result<Inserted, sqlx::Error> {
    let mut tx = store.begin().await?;
    let now = common::clock::now_millis();
    let result = sqlx::query(
        "INSERT INTO users (id, email, password_hash, created_at, announced_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id.to_string())
    .bind(email.as_str())
    .bind(password_hash)
    .bind(now)
    .bind(now)
    .execute(&mut *tx)
    .await;
    match result {
        Ok(_) => {}
        // Dropping the transaction rolls it back: no account, no event.
        Err(err) if is_unique_violation(&err) => return Ok(Inserted::EmailTaken),
        Err(err) => return Err(err),
    }
    let event = UserCreated {
        id,
        email: email.as_str().to_owned(),
    };
    outbox::enqueue(&mut tx, event).await?;
    outbox.commit(tx).await?;
    Ok(Inserted::Created)
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

/// How many accounts [`announce_stored_users`] announces per transaction.
const ANNOUNCE_BATCH: i64 = 500;

/// Announces (user:created) the accounts stored without ever being announced, those made before
/// the event existed, in id order, a batch per transaction; returns how many it announced. Safe
/// on several replicas at once: an account is marked announced, and its event written, only by
/// the transaction that finds it unannounced, so each is announced once.
pub async fn announce_stored_users(store: &Store, outbox: &Outbox) -> Result<u64, sqlx::Error> {
    let mut announced = 0;
    // Past the last id read, so that it ends whatever another replica does meanwhile.
    let mut after = String::new();
    loop {
        let mut tx = store.begin().await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM users WHERE announced_at IS NULL AND id > $1 ORDER BY id LIMIT $2",
        )
        .bind(&after)
        .bind(ANNOUNCE_BATCH)
        .fetch_all(&mut *tx)
        .await?;
        let Some(last) = ids.last().cloned() else {
            return Ok(announced);
        };
        let now = common::clock::now_millis();
        for id in &ids {
            // The address as it is when marked, which nothing can change before the commit.
            let email: Option<String> = sqlx::query_scalar(
                "UPDATE users SET announced_at = $2 WHERE id = $1 AND announced_at IS NULL \
                 RETURNING email",
            )
            .bind(id)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            // None: another replica announced it since it was read.
            let Some(email) = email else {
                continue;
            };
            let id = parse_uuid("id", id)?;
            outbox::enqueue(&mut tx, UserCreated { id, email }).await?;
            announced += 1;
        }
        outbox.commit(tx).await?;
        after = last;
    }
}
