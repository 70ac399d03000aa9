//! Stripe's webhook: `POST /api/payments/webhook`.
//!
//! The `Stripe-Signature` header is checked against the raw body first (see
//! [`crate::domain::verify_signature`]); anything unsigned, signed with another secret or signed
//! too long ago is refused with 400. Stripe delivers at least once, so each event id is recorded
//! in the same transaction as its effect, and an event seen before is answered 200 with no effect.
//!
//! Handled: `payment_intent.succeeded` settles a payment still pending (a charge that was
//! processing, or whose request died before it heard the answer) exactly as the request would
//! have; `payment_intent.payment_failed` releases such a claim, so the buyer may try again;
//! `charge.refunded` records refunds made at Stripe (the dashboard, say). Every other event is
//! acknowledged and ignored. A payment is found by its intent's id or, in the moment between
//! creating the intent and recording its id on the claim, by the `paymentId` the intent carries in
//! its metadata.

use std::collections::HashMap;

use common::clock::now_millis;
use common::outbox::Outbox;
use common::{ApiError, ServiceContext, Store};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sqlx::AnyConnection;
use uuid::Uuid;

use crate::checkout::{Settlement, announce_release, settle_charge};
use crate::domain::{Payment, PaymentStatus, SignatureError, verify_signature};
use crate::refunds::Refunds;
use crate::store::{self, RefundRecord};

/// An event as Stripe sends it; `data.object` is read according to `type`.
#[derive(Debug, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub data: EventData,
}

#[derive(Debug, Deserialize)]
pub struct EventData {
    pub object: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct PaymentIntentObject {
    id: String,
    #[serde(default)]
    metadata: HashMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct ChargeObject {
    id: String,
    #[serde(default)]
    payment_intent: Option<String>,
    #[serde(default)]
    amount_refunded: i64,
    #[serde(default)]
    refunded: bool,
    /// Absent from events of recent API versions; present in older ones and in localstripe's.
    #[serde(default)]
    refunds: Option<RefundList>,
}

#[derive(Debug, Deserialize)]
struct RefundList {
    data: Vec<RefundObject>,
}

#[derive(Debug, Deserialize)]
struct RefundObject {
    id: String,
    amount: i64,
}

/// What became of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receipt {
    Processed,
    /// Seen before: nothing done.
    Duplicate,
}

/// Receives Stripe's webhooks. Cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    store: Store,
    outbox: Outbox,
    refunds: Refunds,
    secret: Option<SecretString>,
}

impl Webhooks {
    pub fn new(ctx: &ServiceContext, refunds: Refunds, secret: Option<SecretString>) -> Self {
        Self {
            store: ctx.store.clone(),
            outbox: ctx.outbox.clone(),
            refunds,
            secret,
        }
    }

    /// Verifies and processes one delivery.
    pub async fn receive(&self, signature: Option<&str>, body: &[u8]) -> Result<Receipt, ApiError> {
        // Without a secret nothing can be verified: the endpoint does not exist.
        let secret = self.secret.as_ref().ok_or(ApiError::NotFound)?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        signature
            .ok_or(SignatureError::Missing)
            .and_then(|header| {
                verify_signature(header, body, secret.expose_secret().as_bytes(), now)
            })
            .map_err(|err| {
                tracing::warn!(error = %err, "webhook refused");
                ApiError::BadRequest(err.to_string())
            })?;
        let event: Event = serde_json::from_slice(body)
            .map_err(|_| ApiError::BadRequest("Malformed webhook event".into()))?;
        self.process(event).await
    }

    #[tracing::instrument(name = "webhook", skip_all, fields(id = %event.id, kind = %event.kind))]
    async fn process(&self, event: Event) -> Result<Receipt, ApiError> {
        let mut tx = self.store.begin().await?;
        if !store::record_webhook_event(&mut tx, &event.id, &event.kind, now_millis()).await? {
            tracing::info!("webhook event seen before, ignored");
            return Ok(Receipt::Duplicate);
        }
        let mut refund_due = false;
        match event.kind.as_str() {
            "payment_intent.succeeded" => {
                let intent: PaymentIntentObject = object(event.data.object)?;
                refund_due = self.payment_succeeded(&mut tx, &intent).await?;
            }
            "payment_intent.payment_failed" => {
                let intent: PaymentIntentObject = object(event.data.object)?;
                self.payment_failed(&mut tx, &intent).await?;
            }
            "charge.refunded" => {
                let charge: ChargeObject = object(event.data.object)?;
                charge_refunded(&mut tx, &event.id, &charge).await?;
            }
            _ => tracing::debug!("webhook event not handled"),
        }
        self.outbox.commit(tx).await?;
        if refund_due {
            self.refunds.wake();
        }
        Ok(Receipt::Processed)
    }

    /// Settles the pending payment of a succeeded intent. Returns whether it now owes a refund.
    async fn payment_succeeded(
        &self,
        tx: &mut AnyConnection,
        intent: &PaymentIntentObject,
    ) -> Result<bool, sqlx::Error> {
        let Some(payment) = pending_payment(tx, intent).await? else {
            tracing::debug!(intent = %intent.id, "no pending payment for this intent");
            return Ok(false);
        };
        let settlement = settle_charge(tx, self.store.dialect(), &payment, &intent.id).await?;
        tracing::info!(payment = %payment.id, intent = %intent.id, ?settlement, "payment settled by webhook");
        Ok(matches!(settlement, Settlement::RefundDue(_)))
    }

    /// Releases the claim of a charge that failed, so the buyer may try again.
    async fn payment_failed(
        &self,
        tx: &mut AnyConnection,
        intent: &PaymentIntentObject,
    ) -> Result<(), sqlx::Error> {
        let Some(payment) = pending_payment(tx, intent).await? else {
            return Ok(());
        };
        store::lock_order(tx, self.store.dialect(), payment.order_id).await?;
        if store::release_claim(tx, payment.id).await? {
            announce_release(tx, &payment).await?;
        }
        tracing::info!(payment = %payment.id, intent = %intent.id, "charge failed; claim released");
        Ok(())
    }
}

/// The pending payment an intent is about: the one with its id, or, when the request that
/// charged never learnt that id (it died, or is still waiting for the answer), the claim the
/// intent names in its metadata.
async fn pending_payment(
    tx: &mut AnyConnection,
    intent: &PaymentIntentObject,
) -> Result<Option<Payment>, sqlx::Error> {
    let payment = match store::payment_by_stripe_id(tx, &intent.id).await? {
        Some(payment) => Some(payment),
        None => match intent
            .metadata
            .get("paymentId")
            .and_then(|raw| Uuid::try_parse(raw).ok())
        {
            Some(id) => store::find_payment(&mut *tx, id)
                .await?
                .filter(|payment| payment.stripe_id.is_none()),
            None => None,
        },
    };
    Ok(payment.filter(|payment| payment.status == PaymentStatus::Pending))
}

/// Records the refunds of a charge refunded at the processor.
async fn charge_refunded(
    tx: &mut AnyConnection,
    event_id: &str,
    charge: &ChargeObject,
) -> Result<(), sqlx::Error> {
    // Stripe's payments are named by their intent; the sandbox's by their charge.
    let charged = charge.payment_intent.as_deref().unwrap_or(&charge.id);
    let Some(payment) = store::payment_by_stripe_id(tx, charged).await? else {
        tracing::debug!(charge = %charge.id, "refund of a charge that is not ours");
        return Ok(());
    };
    let listed = charge
        .refunds
        .as_ref()
        .map(|list| &list.data[..])
        .unwrap_or_default();
    let refunds: Vec<(String, i64)> = if listed.is_empty() {
        // Recent API versions leave the refunds out of the event: what is refunded beyond the
        // refunds already recorded is recorded under the event's id.
        let unrecorded = charge.amount_refunded - store::refunded_cents(tx, payment.id).await?;
        if unrecorded > 0 {
            vec![(event_id.to_owned(), unrecorded)]
        } else {
            Vec::new()
        }
    } else {
        listed
            .iter()
            .map(|refund| (refund.id.clone(), refund.amount))
            .collect()
    };
    let now = now_millis();
    for (stripe_refund_id, amount_cents) in refunds {
        let record = RefundRecord {
            payment_id: payment.id,
            stripe_refund_id,
            amount_cents,
            reason: "processor",
        };
        if store::record_refund(tx, &record, now).await? {
            tracing::info!(payment = %payment.id, refund = %record.stripe_refund_id, "refund recorded from webhook");
        }
    }
    if charge.refunded {
        store::mark_refunded(tx, payment.id, now).await?;
    }
    Ok(())
}

fn object<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_json::from_value(value)
        .map_err(|_| ApiError::BadRequest("Malformed webhook event".into()))
}
