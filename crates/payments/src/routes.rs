//! The payments HTTP API: `POST /api/payments` and Stripe's `POST /api/payments/webhook`. Thin
//! handlers: extract and validate, hand over to [`Checkout`] or [`Webhooks`], answer in the one
//! shape.

use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use common::idempotency::{self, Keys};
use common::validate::Valid;
use common::{ApiError, ServiceContext, Sessions, SignedIn};
use serde::Serialize;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::checkout::Checkout;
use crate::domain::PaymentBody;
use crate::webhook::{Receipt, Webhooks};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    checkout: Checkout,
    webhooks: Webhooks,
    sessions: Sessions,
    tasks: TaskTracker,
    keys: Keys,
}

impl AppState {
    pub fn new(ctx: &ServiceContext, checkout: Checkout, webhooks: Webhooks) -> Self {
        Self {
            checkout,
            webhooks,
            sessions: ctx.sessions.clone(),
            tasks: ctx.tasks.clone(),
            keys: ctx.idempotency_keys(),
        }
    }
}

impl FromRef<AppState> for Sessions {
    fn from_ref(state: &AppState) -> Self {
        state.sessions.clone()
    }
}

/// The service's routes with their state applied.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        // A payment's effect is a charge at the processor, outside any transaction of ours: its
        // key's answer is recorded once the payment ends. One payment per order, and the
        // processor's own idempotency key, keep a retry from charging twice meanwhile.
        .route(
            "/api/payments",
            post(create_payment)
                .route_layer(from_fn_with_state(state.keys.clone(), idempotency::guard)),
        )
        .route("/api/payments/webhook", post(receive_webhook))
        .with_state(state)
}

/// The answer to a payment: its id.
#[derive(Debug, Serialize)]
pub(crate) struct PaymentReceipt {
    pub id: Uuid,
}

/// `POST /api/payments {token, orderId}`: charges the signed-in buyer's card for their order.
async fn create_payment(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Valid(request): Valid<PaymentBody>,
) -> Result<(StatusCode, Json<PaymentReceipt>), ApiError> {
    let checkout = state.checkout.clone();
    // Run to the end even if the client goes away or the request times out: a charge that was
    // made must be settled (or its claim released), not abandoned half-way.
    let payment = state
        .tasks
        .spawn(async move { checkout.pay_for_order(user.id, request).await })
        .await
        .map_err(ApiError::internal)??;
    Ok((StatusCode::CREATED, Json(PaymentReceipt { id: payment.id })))
}

/// `POST /api/payments/webhook`: one event from Stripe, signed.
async fn receive_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let signature = headers
        .get("stripe-signature")
        .and_then(|value| value.to_str().ok());
    let receipt = state.webhooks.receive(signature, &body).await?;
    Ok(Json(serde_json::json!({
        "received": true,
        "duplicate": receipt == Receipt::Duplicate,
    })))
}
