//! The payments HTTP API: `POST /api/payments` and Stripe's `POST /api/payments/webhook`. Thin
//! handlers: extract and validate, hand over to [`Checkout`] or [`Webhooks`], answer in the one
//! shape.

use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json, Router};
use bytes::Bytes;
use common::idempotency::{self, Keys};
use common::openapi::{self, ErrorBody, IdempotencyKey};
use common::validate::Valid;
use common::{ApiError, ServiceContext, Sessions, SignedIn};
use serde::Serialize;
use tokio_util::task::TaskTracker;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;
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

/// The service's operations, each documented on its handler.
fn operations() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        // A payment's effect is a charge at the processor, outside any transaction of ours: its
        // key's answer is recorded once the payment ends. One payment per order, and the
        // processor's own idempotency key, keep a retry from charging twice meanwhile.
        .routes(routes!(create_payment).map(idempotency::keyed))
        .routes(routes!(receive_webhook))
}

/// The service's routes with their state applied.
pub(crate) fn router(state: AppState) -> Router {
    let (routes, _) = operations().split_for_parts();
    routes
        .layer(Extension(state.keys.clone()))
        .with_state(state)
}

/// The service's OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    openapi::finish(
        operations().into_openapi(),
        "payments",
        "payments",
        "Paying for an order, and Stripe's webhook",
    )
}

/// The answer to a payment: its id.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Payment)]
pub(crate) struct PaymentReceipt {
    pub id: Uuid,
}

/// What a webhook's sender is told.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct WebhookReceipt {
    received: bool,
    /// The event was received before; nothing was done again.
    duplicate: bool,
}

/// A Stripe event as its sender signs it; only `id`, `type` and `data.object` are read.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct StripeEvent {
    id: String,
    #[schema(rename = "type", example = "payment_intent.succeeded")]
    kind: String,
    data: serde_json::Value,
}

/// `POST /api/payments {token, orderId}`: charges the signed-in buyer's card for their order.
#[utoipa::path(
    post,
    path = "/api/payments",
    operation_id = "createPayment",
    tag = "payments",
    summary = "Pay for one of the signed-in buyer's orders",
    description = "Charges the card for the price the order was placed at. The answer waits, \
        bounded, for the charge; on success the order is complete and the ticket the buyer's.",
    params(IdempotencyKey),
    request_body = PaymentBody,
    security(("session_cookie" = []), ("bearer" = [])),
    responses(
        (status = 201, description = "The payment is made, or accepted and still processing at \
            the card's bank; the order completes when it succeeds", body = PaymentReceipt),
        (status = 400, description = "A field is invalid (`invalid_field`); the order was \
            cancelled (`order_cancelled`), expired (`order_expired`) or paid (`order_paid`); a \
            payment of it is under way (`payment_in_progress`); or the key was used with \
            another request (`idempotency_key_reused`)", body = ErrorBody),
        (status = 401, description = "Not signed in, or not the buyer (`not_authorized`)",
            body = ErrorBody),
        (status = 402, description = "The card was declined (`card_declined`); the message \
            says why", body = ErrorBody),
        (status = 404, description = "No such order (`not_found`)", body = ErrorBody),
    )
)]
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
#[utoipa::path(
    post,
    path = "/api/payments/webhook",
    operation_id = "receiveStripeWebhook",
    tag = "payments",
    summary = "Stripe's webhook",
    description = "For Stripe, not for clients: a payment's outcome, signed with the webhook's \
        secret. Answers 404 when no webhook secret is set.",
    params(("Stripe-Signature" = String, Header, description = "Stripe's signature of the body")),
    request_body(content = StripeEvent, content_type = "application/json"),
    responses(
        (status = 200, description = "The event is received", body = WebhookReceipt),
        (status = 400, description = "The signature does not verify or the event cannot be \
            read (`invalid_webhook`)", body = ErrorBody),
        (status = 404, description = "No webhook secret is set (`not_found`)", body = ErrorBody),
    )
)]
async fn receive_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<WebhookReceipt>, ApiError> {
    let signature = headers
        .get("stripe-signature")
        .and_then(|value| value.to_str().ok());
    let receipt = state.webhooks.receive(signature, &body).await?;
    Ok(Json(WebhookReceipt {
        received: true,
        duplicate: receipt == Receipt::Duplicate,
    }))
}
