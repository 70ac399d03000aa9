//! `/api/users/*`: thin handlers over the domain and the store.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Json, Router};
use axum_extra::extract::CookieJar;
use common::openapi::{self, ErrorBody};
use common::outbox::Outbox;
use common::session::Claims;
use common::validate::Valid;
use common::{ApiError, CurrentUser, ErrorCode, FieldError, Sessions, SignedIn, Store};
use serde::Serialize;
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::Settings;
use crate::client_address::ClientAddress;
use crate::domain::{self, RawCredentials, RawSignIn};
use crate::password::Hasher;
use crate::store::{self, Inserted};

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub outbox: Outbox,
    pub sessions: Sessions,
    pub hasher: Arc<Hasher>,
}

impl FromRef<AppState> for Sessions {
    fn from_ref(state: &AppState) -> Sessions {
        state.sessions.clone()
    }
}

/// The service's operations, each documented on its handler; sign-up and sign-in are limited
/// per client address when `settings` say so.
fn operations(settings: &Settings) -> OpenApiRouter<AppState> {
    let mut guarded = OpenApiRouter::new()
        .routes(routes!(sign_up))
        .routes(routes!(sign_in));
    if let Some(per_minute) = settings.attempts_per_minute {
        // Replenish evenly over the minute, allowing the whole minute's worth as a burst.
        let period = Duration::from_secs(60) / per_minute.get();
        let config = GovernorConfigBuilder::default()
            .period(period)
            .burst_size(per_minute.get())
            .key_extractor(ClientAddress {
                trust_forwarded_for: settings.trust_forwarded_for,
            })
            .finish();
        if let Some(config) = config {
            guarded = guarded.layer(GovernorLayer::new(config));
        }
    }
    OpenApiRouter::new()
        .routes(routes!(sign_out))
        .routes(routes!(sign_out_everywhere))
        .routes(routes!(current_user))
        .merge(guarded)
}

pub(crate) fn router(state: AppState, settings: &Settings) -> Router {
    let (routes, _) = operations(settings).split_for_parts();
    routes.with_state(state)
}

/// The service's OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let unlimited = Settings {
        attempts_per_minute: None,
        ..Settings::default()
    };
    openapi::finish(
        operations(&unlimited).into_openapi(),
        "auth",
        "users",
        "Accounts and sessions: sign up, sign in, sign out here or everywhere",
    )
}

/// A user, as sign-up and sign-in answer.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = User)]
struct UserBody {
    id: Uuid,
    email: String,
}

/// The signed-in user as `currentuser` shows it: what the token says, less its session keys.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Session)]
struct SessionBody {
    id: Uuid,
    email: String,
    iat: i64,
    exp: i64,
}

impl From<Claims> for SessionBody {
    fn from(claims: Claims) -> Self {
        Self {
            id: claims.id,
            email: claims.email,
            iat: claims.iat,
            exp: claims.exp,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = CurrentUser)]
struct CurrentUserBody {
    #[schema(required)]
    current_user: Option<SessionBody>,
}

/// The empty object sign-out answers.
#[derive(Serialize, utoipa::ToSchema)]
struct Empty {}

#[utoipa::path(
    post,
    path = "/api/users/signup",
    operation_id = "signUp",
    tag = "users",
    summary = "Create an account and sign in",
    request_body = RawCredentials,
    responses(
        (status = 201, description = "The account; the session cookie is set", body = UserBody,
            headers(("Set-Cookie" = String, description = "`session`: the session's token"))),
        (status = 400, description = "The e-mail or password is invalid or too easy to guess \
            (`invalid_field`), or the e-mail has an account (`email_in_use`)", body = ErrorBody),
        (status = 429, description = "Too many attempts from this address (`rate_limited`)",
            body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
#[tracing::instrument(skip_all)]
async fn sign_up(
    State(state): State<AppState>,
    jar: CookieJar,
    Valid(credentials): Valid<RawCredentials>,
) -> Result<impl IntoResponse, ApiError> {
    let (password, email) = (credentials.password.clone(), credentials.email.clone());
    let guessable = tokio::task::spawn_blocking(move || domain::guessable(&password, &email))
        .await
        .map_err(ApiError::internal)?;
    if let Some(why) = guessable {
        return Err(ApiError::field("password", &why));
    }
    let hash = state
        .hasher
        .hash(credentials.password)
        .await
        .map_err(ApiError::internal)?;
    let id = Uuid::now_v7();
    match store::insert_user(&state.store, &state.outbox, id, &credentials.email, &hash).await? {
        Inserted::EmailTaken => Err(ApiError::Validation(vec![
            FieldError::new("email", "Email in use").with_code(ErrorCode::EmailInUse),
        ])),
        Inserted::Created => {
            let email = credentials.email.as_str().to_owned();
            let (token, _) = state.sessions.issue(id, &email, 0)?;
            let jar = jar.add(state.sessions.cookie(token));
            Ok((StatusCode::CREATED, jar, Json(UserBody { id, email })))
        }
    }
}

#[utoipa::path(
    post,
    path = "/api/users/signin",
    operation_id = "signIn",
    tag = "users",
    summary = "Sign in",
    request_body = RawCredentials,
    responses(
        (status = 200, description = "The user; the session cookie is set", body = UserBody,
            headers(("Set-Cookie" = String, description = "`session`: the session's token"))),
        (status = 400, description = "A field is invalid (`invalid_field`), or the e-mail and \
            password match no account (`invalid_credentials`)", body = ErrorBody),
        (status = 429, description = "Too many attempts from this address (`rate_limited`)",
            body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
#[tracing::instrument(skip_all)]
async fn sign_in(
    State(state): State<AppState>,
    jar: CookieJar,
    Valid(credentials): Valid<RawSignIn>,
) -> Result<impl IntoResponse, ApiError> {
    let user = store::find_by_email(&state.store, &credentials.email).await?;
    let stored_hash = user.as_ref().map(|u| u.password_hash.clone());
    let verified = state
        .hasher
        .verify(credentials.password, stored_hash)
        .await
        .map_err(ApiError::internal)?;
    match user {
        Some(user) if verified => {
            let (token, _) = state
                .sessions
                .issue(user.id, &user.email, user.session_generation)?;
            let jar = jar.add(state.sessions.cookie(token));
            let body = UserBody {
                id: user.id,
                email: user.email,
            };
            Ok((jar, Json(body)))
        }
        // One answer for an unknown e-mail and a wrong password: no account enumeration.
        _ => Err(ApiError::BadRequest(
            ErrorCode::InvalidCredentials,
            "Invalid credentials".into(),
        )),
    }
}

/// Ends the session the request carries, if it carries a live one, in every service.
#[utoipa::path(
    post,
    path = "/api/users/signout",
    operation_id = "signOut",
    tag = "users",
    summary = "End this session",
    description = "Ends the session the request carries in every service, and clears the cookie. \
        Succeeds without a session too.",
    security((), ("session_cookie" = []), ("bearer" = [])),
    responses((status = 200, description = "Signed out; the cookie is cleared", body = Empty)),
)]
#[tracing::instrument(skip_all)]
async fn sign_out(
    State(state): State<AppState>,
    CurrentUser(claims): CurrentUser,
    jar: CookieJar,
) -> Result<impl IntoResponse, ApiError> {
    if let Some(claims) = claims {
        let revocation = store::revoke_session(&state.store, &state.outbox, &claims).await?;
        state.sessions.revocations().add(revocation);
    }
    Ok((jar.add(state.sessions.removal_cookie()), Json(Empty {})))
}

/// Ends every session of the signed-in user, this one included, in every service.
#[utoipa::path(
    post,
    path = "/api/users/signout/everywhere",
    operation_id = "signOutEverywhere",
    tag = "users",
    summary = "End every session of the signed-in user",
    security(("session_cookie" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "Every session is ended; the cookie is cleared",
            body = Empty),
        (status = 401, description = "Not signed in (`not_authorized`)", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
async fn sign_out_everywhere(
    State(state): State<AppState>,
    SignedIn(claims): SignedIn,
    jar: CookieJar,
) -> Result<impl IntoResponse, ApiError> {
    // The longest any session begun until now can live.
    let last_expiry = time::OffsetDateTime::now_utc() + state.sessions.lifetime();
    let revocation =
        store::revoke_all_sessions(&state.store, &state.outbox, claims.id, last_expiry)
            .await?
            .ok_or(ApiError::Unauthorized)?;
    state.sessions.revocations().add(revocation);
    Ok((jar.add(state.sessions.removal_cookie()), Json(Empty {})))
}

/// `GET /api/users/currentuser`: who the request's session belongs to, if anyone.
#[utoipa::path(
    get,
    path = "/api/users/currentuser",
    operation_id = "currentUser",
    tag = "users",
    summary = "The signed-in user, or null",
    security((), ("session_cookie" = []), ("bearer" = [])),
    responses((status = 200, description = "The session's user, or `null` without a live session",
        body = CurrentUserBody)),
)]
async fn current_user(CurrentUser(claims): CurrentUser) -> Json<CurrentUserBody> {
    Json(CurrentUserBody {
        current_user: claims.map(SessionBody::from),
    })
}
