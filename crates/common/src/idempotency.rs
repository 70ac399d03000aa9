//! Idempotent writes. A write that carries an `Idempotency-Key` acts once: every retry of it
//! (the same user, key, method, path and body, within [`KEEP`]) is answered what the first was,
//! status and body, without acting again.
//!
//! A request first claims its key, in a short transaction of its own. The handler records its
//! answer in the transaction of its effect, so that both commit or neither does: a crash before
//! the commit leaves no effect and no answer, and a retry acts; a crash after it leaves both, and
//! a retry is answered from the record. A refusal, which has no effect to commit with, is
//! recorded after the handler. Answers that say "try again" are not recorded, and the claim is
//! let go so that a retry acts: 409, 429 and 5xx, and 404, which a write answers for an order
//! or ticket it has not heard of yet.
//!
//! A request with a key runs to its end even if its client goes away or its time runs out, so
//! that its answer is recorded for the retry. While it runs, its claim holds the key for
//! [`LEASE`], and a retry meanwhile is answered 409. The claim of a request whose process died
//! lapses then, and the next retry takes it over. An answer is recorded only under the claim's
//! own token, and recording changes the token, so a claim is taken over only as it was seen: a
//! request whose claim was taken over cannot commit, and an answer just committed is never
//! taken over as if the key were still free. Two requests never both act.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Extension;
use axum::RequestExt;
use axum::body::{Body, to_bytes};
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Row};
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::clock::{now_millis, span_millis};
use crate::error::{ApiError, ErrorCode, error_response};
use crate::http::{TOO_LARGE, closing_connection};
use crate::retention::Dated;
use crate::{Sessions, Store};

/// The request header that names a write.
pub const HEADER: &str = "idempotency-key";
/// The answer header that says an answer is a replay of the first.
pub const REPLAYED: &str = "idempotent-replayed";
/// How long a key's answer is kept and replayed.
pub const KEEP: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a running request holds its key. Well past the 10 s a request may take, so that
/// only a request that died lets its key go early.
pub const LEASE: Duration = Duration::from_secs(60);
/// The keys, dated by their first use, pruned after [`KEEP`].
pub const IDEMPOTENCY_KEYS: Dated = Dated {
    table: "idempotency_keys",
    column: "created_at",
};

/// The longest key, as Stripe allows.
const MAX_KEY_CHARS: usize = 255;
/// The largest answer recorded; answers are a ticket, an order or an error.
const MAX_ANSWER: usize = 1024 * 1024;

/// What the middleware needs: where keys are kept, who is asking, and the service's tasks, which
/// shutdown waits for.
#[derive(Clone)]
pub struct Keys {
    store: Store,
    sessions: Sessions,
    tasks: TaskTracker,
}

impl Keys {
    pub fn new(store: Store, sessions: Sessions, tasks: TaskTracker) -> Self {
        Self {
            store,
            sessions,
            tasks,
        }
    }
}

/// A key claimed by the request now running.
#[derive(Debug, Clone)]
struct Claim {
    user_id: Uuid,
    key: String,
    token: Uuid,
    /// Set once the handler recorded a success in its transaction.
    recorded: Arc<AtomicBool>,
}

/// The request's claim on its key, if it carried one: a handler records its answer through it,
/// in the transaction of its effect.
#[derive(Debug, Clone, Default)]
pub struct Idempotent(Option<Claim>);

impl<S: Send + Sync> FromRequestParts<S> for Idempotent {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Self(parts.extensions.get::<Claim>().cloned()))
    }
}

impl Idempotent {
    /// Records a success answered with `body` as JSON. Call it last before the commit: once
    /// recorded, the answer must be the one given.
    pub async fn record_json(
        &self,
        conn: &mut AnyConnection,
        status: StatusCode,
        body: &impl Serialize,
    ) -> Result<(), ApiError> {
        if self.0.is_none() {
            return Ok(());
        }
        let body = serde_json::to_string(body).map_err(ApiError::internal)?;
        self.record_success(conn, status, &body).await
    }

    /// Records a success answered without a body.
    pub async fn record_status(
        &self,
        conn: &mut AnyConnection,
        status: StatusCode,
    ) -> Result<(), ApiError> {
        self.record_success(conn, status, "").await
    }

    async fn record_success(
        &self,
        conn: &mut AnyConnection,
        status: StatusCode,
        body: &str,
    ) -> Result<(), ApiError> {
        let Some(claim) = &self.0 else {
            return Ok(());
        };
        record(conn, claim, status, body).await?;
        claim.recorded.store(true, Ordering::Release);
        Ok(())
    }
}

/// Makes the writes of `route` take an `Idempotency-Key`, through [`guard`]. The router that
/// holds the route provides the [`Keys`] as an extension (`.layer(Extension(keys))`), so that
/// routes can be declared, and documented, before the service has a store; without it every
/// request to the route is a 500, which any test of the route shows.
pub fn keyed<S: Clone + Send + Sync + 'static>(route: MethodRouter<S>) -> MethodRouter<S> {
    route.route_layer(axum::middleware::from_fn(guard))
}

/// Middleware for the routes of writes: claims the request's key, replays a recorded answer,
/// and records or lets go the key after the handler. Requests without a key pass untouched, as
/// do requests without a session (the handler answers them 401).
pub async fn guard(Extension(keys): Extension<Keys>, request: Request, next: Next) -> Response {
    let Some(raw) = request.headers().get(HEADER) else {
        return next.run(request).await;
    };
    if request.method().is_safe() {
        return next.run(request).await;
    }
    let key = match parse_key(raw) {
        Ok(key) => key,
        Err(message) => return ApiError::malformed(message).into_response(),
    };
    // The body is read within the service's own limit, as the handler would read it.
    let (mut parts, body) = request.with_limited_body().into_parts();
    let Some(user) = keys.sessions.from_parts(&parts).await else {
        return next.run(Request::from_parts(parts, body)).await;
    };
    let Ok(bytes) = to_bytes(body, usize::MAX).await else {
        let unread = error_response(
            StatusCode::BAD_REQUEST,
            ErrorCode::MalformedRequest,
            format!("{TOO_LARGE}, or was cut short"),
        );
        return closing_connection(unread);
    };
    let fingerprint = fingerprint(&parts, &bytes);
    let claim = match claim(&keys.store, user.id, key, &fingerprint).await {
        Ok(Claimed::Ours(claim)) => claim,
        Ok(Claimed::Replay { status, body }) => return replay(status, body),
        Ok(Claimed::Running) => {
            return ApiError::Conflict(
                "A request with this Idempotency-Key is still being processed; retry later".into(),
            )
            .into_response();
        }
        Ok(Claimed::Mismatch) => {
            return ApiError::BadRequest(
                ErrorCode::IdempotencyKeyReused,
                "This Idempotency-Key was used with another request; use a new key for a new \
                 request"
                    .into(),
            )
            .into_response();
        }
        Err(err) => return ApiError::from(err).into_response(),
    };
    parts.extensions.insert(claim.clone());
    let request = Request::from_parts(parts, Body::from(bytes));
    let store = keys.store.clone();
    let finished = keys.tasks.spawn({
        let claim = claim.clone();
        async move {
            let response = next.run(request).await;
            settle(&store, &claim, response).await
        }
    });
    match finished.await {
        Ok(response) => response,
        Err(err) => {
            if let Err(err) = release(&keys.store, &claim).await {
                tracing::warn!(error = %err, "cannot let an idempotency key go");
            }
            ApiError::internal(err).into_response()
        }
    }
}

/// Records the answer after the handler, or lets the key go when the answer says try again.
async fn settle(store: &Store, claim: &Claim, response: Response) -> Response {
    let status = response.status();
    let retry = status.is_server_error()
        || status == StatusCode::NOT_FOUND
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::CONFLICT;
    if retry {
        if let Err(err) = release(store, claim).await {
            // The claim lapses after its lease instead.
            tracing::warn!(error = %err, "cannot let an idempotency key go");
        }
        return response;
    }
    // A success was recorded with its effect; anything else is recorded here. Should the
    // handler have recorded and then refused, its record rolled back and this one stands.
    if status.is_success() && claim.recorded.load(Ordering::Acquire) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_ANSWER).await else {
        let _ = release(store, claim).await;
        return ApiError::internal(anyhow::anyhow!("an answer too large to record"))
            .into_response();
    };
    let recorded = match store.writer().acquire().await {
        Ok(mut conn) => {
            let body = String::from_utf8_lossy(&bytes);
            record(&mut conn, claim, status, &body).await
        }
        Err(err) => Err(err.into()),
    };
    if let Err(err) = recorded {
        // Nothing was acted on: the key goes, and a retry acts and is refused the same way.
        tracing::warn!(error = ?err, "cannot record the answer of an idempotent request");
        if let Err(err) = release(store, claim).await {
            tracing::warn!(error = %err, "cannot let an idempotency key go");
        }
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// A key as sent: 1 to 255 visible ASCII characters.
fn parse_key(raw: &HeaderValue) -> Result<String, String> {
    let key = raw.to_str().unwrap_or_default();
    let visible = key.bytes().all(|b| b.is_ascii_graphic());
    if key.is_empty() || key.len() > MAX_KEY_CHARS || !visible {
        return Err(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_CHARS} visible ASCII characters"
        ));
    }
    Ok(key.to_owned())
}

/// What makes two requests the same request: method, path and body.
fn fingerprint(parts: &Parts, body: &[u8]) -> String {
    let target = parts.uri.path_and_query().map_or("", |p| p.as_str());
    let digest = Sha256::new()
        .chain_update(parts.method.as_str())
        .chain_update(b" ")
        .chain_update(target)
        .chain_update(b"\n")
        .chain_update(body)
        .finalize();
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn replay(status: i64, body: String) -> Response {
    let status = u16::try_from(status)
        .ok()
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = if body.is_empty() {
        status.into_response()
    } else {
        (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response()
    };
    response
        .headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

enum Claimed {
    Ours(Claim),
    Replay { status: i64, body: String },
    Running,
    Mismatch,
}

/// Claims `key` for this request, or says why not.
async fn claim(
    store: &Store,
    user_id: Uuid,
    key: String,
    fingerprint: &str,
) -> Result<Claimed, sqlx::Error> {
    let token = Uuid::now_v7();
    let user = user_id.to_string();
    let ours = |key: String| {
        Claimed::Ours(Claim {
            user_id,
            key,
            token,
            recorded: Arc::default(),
        })
    };
    // A claim can be let go or taken over between two of these statements; a few rounds settle it.
    for _ in 0..4 {
        let now = now_millis();
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys \
             (user_id, idempotency_key, fingerprint, token, locked_until, status, body, created_at) \
             VALUES ($1, $2, $3, $4, $5, NULL, NULL, $6) \
             ON CONFLICT (user_id, idempotency_key) DO NOTHING",
        )
        .bind(&user)
        .bind(&key)
        .bind(fingerprint)
        .bind(token.to_string())
        .bind(now + span_millis(LEASE))
        .bind(now)
        .execute(store.writer())
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(ours(key));
        }
        let Some(row) = sqlx::query(
            "SELECT fingerprint, token, locked_until, status, body, created_at \
             FROM idempotency_keys WHERE user_id = $1 AND idempotency_key = $2",
        )
        .bind(&user)
        .bind(&key)
        .fetch_optional(store.writer())
        .await?
        else {
            continue;
        };
        let held_by: String = row.try_get("token")?;
        let status: Option<i64> = row.try_get("status")?;
        let created_at: i64 = row.try_get("created_at")?;
        let locked_until: i64 = row.try_get("locked_until")?;
        let kept = created_at > now - span_millis(KEEP);
        if kept {
            if row.try_get::<String, _>("fingerprint")? != fingerprint {
                return Ok(Claimed::Mismatch);
            }
            if let Some(status) = status {
                let body: Option<String> = row.try_get("body")?;
                return Ok(Claimed::Replay {
                    status,
                    body: body.unwrap_or_default(),
                });
            }
            if locked_until > now {
                return Ok(Claimed::Running);
            }
        }
        // A claim whose request died, or a key past its day not yet pruned: taken over as it was
        // seen, unless another request took it or recorded under it first (either changes the
        // token).
        let taken = sqlx::query(
            "UPDATE idempotency_keys SET fingerprint = $1, token = $2, locked_until = $3, \
             status = NULL, body = NULL, created_at = $4 \
             WHERE user_id = $5 AND idempotency_key = $6 AND token = $7",
        )
        .bind(fingerprint)
        .bind(token.to_string())
        .bind(now + span_millis(LEASE))
        .bind(now)
        .bind(&user)
        .bind(&key)
        .bind(held_by)
        .execute(store.writer())
        .await?
        .rows_affected();
        if taken == 1 {
            return Ok(ours(key));
        }
    }
    Ok(Claimed::Running)
}

/// Records the answer under the claim's token; refused when the claim was taken over.
async fn record(
    conn: &mut AnyConnection,
    claim: &Claim,
    status: StatusCode,
    body: &str,
) -> Result<(), ApiError> {
    let updated = sqlx::query(
        "UPDATE idempotency_keys SET status = $1, body = $2, token = $6 \
         WHERE user_id = $3 AND idempotency_key = $4 AND token = $5 AND status IS NULL",
    )
    .bind(i64::from(status.as_u16()))
    .bind(body)
    .bind(claim.user_id.to_string())
    .bind(&claim.key)
    .bind(claim.token.to_string())
    .bind(Uuid::now_v7().to_string())
    .execute(conn)
    .await?
    .rows_affected();
    if updated == 1 {
        Ok(())
    } else {
        Err(ApiError::Conflict(
            "Another request with this Idempotency-Key took over; retry later".into(),
        ))
    }
}

/// Lets the key go, unless an answer was recorded under it.
async fn release(store: &Store, claim: &Claim) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM idempotency_keys \
         WHERE user_id = $1 AND idempotency_key = $2 AND token = $3 AND status IS NULL",
    )
    .bind(claim.user_id.to_string())
    .bind(&claim.key)
    .bind(claim.token.to_string())
    .execute(store.writer())
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_key_is_1_to_255_visible_ascii_characters() {
        for good in ["a", "order-7f3c", &"k".repeat(255), "0b1c/2d+3e=4f"] {
            assert!(
                parse_key(&HeaderValue::from_str(good).unwrap()).is_ok(),
                "{good}"
            );
        }
        for bad in ["", " ", "two words", &"k".repeat(256)] {
            assert!(
                parse_key(&HeaderValue::from_str(bad).unwrap()).is_err(),
                "{bad:?}"
            );
        }
        assert!(parse_key(&HeaderValue::from_bytes("clé".as_bytes()).unwrap()).is_err());
    }

    #[test]
    fn a_request_differs_by_its_method_path_or_body() {
        let parts = |method: &str, uri: &str| {
            let (parts, ()) = Request::builder()
                .method(method)
                .uri(uri)
                .body(())
                .unwrap()
                .into_parts();
            parts
        };
        let post = parts("POST", "/api/orders");
        let print = |p: &Parts, body: &[u8]| fingerprint(p, body);
        let first = print(&post, br#"{"ticketId":"a"}"#);
        assert_eq!(first, print(&post, br#"{"ticketId":"a"}"#));
        assert_ne!(first, print(&post, br#"{"ticketId":"b"}"#));
        assert_ne!(
            first,
            print(&parts("POST", "/api/tickets"), br#"{"ticketId":"a"}"#)
        );
        assert_ne!(
            first,
            print(&parts("PUT", "/api/orders"), br#"{"ticketId":"a"}"#)
        );
        assert_eq!(first.len(), 64);
    }
}
