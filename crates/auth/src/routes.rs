//! `/api/users/*`: thin handlers over the domain and the store.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use axum_extra::extract::CookieJar;
use common::validate::Valid;
use common::{ApiError, CurrentUser, Sessions, Store};
use serde_json::json;
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use uuid::Uuid;

use crate::Settings;
use crate::client_address::ClientAddress;
use crate::domain::{self, RawCredentials, RawSignIn};
use crate::password::Hasher;
use crate::store::{self, Inserted};

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub sessions: Sessions,
    pub hasher: Arc<Hasher>,
}

impl FromRef<AppState> for Sessions {
    fn from_ref(state: &AppState) -> Sessions {
        state.sessions.clone()
    }
}

pub fn router(state: AppState, settings: &Settings) -> Router {
    let mut guarded = Router::new()
        .route("/api/users/signup", post(sign_up))
        .route("/api/users/signin", post(sign_in));
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
    Router::new()
        .route("/api/users/signout", post(sign_out))
        .route("/api/users/currentuser", get(current_user))
        .merge(guarded)
        .with_state(state)
}

#[tracing::instrument(skip_all)]
async fn sign_up(
    State(state): State<AppState>,
    jar: CookieJar,
    Valid(credentials): Valid<RawCredentials>,
) -> Result<impl IntoResponse, ApiError> {
    if let Some(why) = domain::guessable(&credentials.password, &credentials.email) {
        return Err(ApiError::field("password", why));
    }
    let hash = state.hasher.hash(credentials.password).await?;
    let id = Uuid::now_v7();
    match store::insert_user(&state.store, id, &credentials.email, &hash).await? {
        Inserted::EmailTaken => Err(ApiError::field("email", "Email in use")),
        Inserted::Created => {
            let email = credentials.email.as_str();
            let (token, _) = state.sessions.issue(id, email)?;
            let jar = jar.add(state.sessions.cookie(token));
            Ok((
                StatusCode::CREATED,
                jar,
                Json(json!({"id": id, "email": email})),
            ))
        }
    }
}

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
        .await?;
    match user {
        Some(user) if verified => {
            let (token, _) = state.sessions.issue(user.id, &user.email)?;
            let jar = jar.add(state.sessions.cookie(token));
            Ok((jar, Json(json!({"id": user.id, "email": user.email}))))
        }
        // One answer for an unknown e-mail and a wrong password: no account enumeration.
        _ => Err(ApiError::BadRequest("Invalid credentials".into())),
    }
}

async fn sign_out(State(state): State<AppState>, jar: CookieJar) -> impl IntoResponse {
    (jar.add(state.sessions.removal_cookie()), Json(json!({})))
}

async fn current_user(CurrentUser(claims): CurrentUser) -> impl IntoResponse {
    Json(json!({ "currentUser": claims }))
}
