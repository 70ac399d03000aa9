//! Stripe's webhook: `POST /api/payments/webhook`.
//!
//! The `Stripe-Signature` header is checked against the raw body first (see
//! [`verify_signature`]); anything unsigned, signed with another secret or signed
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
use common::{ApiError, ErrorCode, ServiceContext, Store};
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::Sha256;
use sqlx::AnyConnection;
use uuid::Uuid;

use crate::checkout::{Settlement, announce_release, settle_charge};
use crate::domain::{Payment, PaymentStatus};
use crate::refunds::Refunds;
use crate::store::{self, RefundRecord};

/// An event as Stripe sends it; `data.object` is read according to `type`.
#[derive(Debug, Deserialize)]
pub(crate) struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub data: EventData,
}

/// The kinds of event the webhook acts on. Every other kind is acknowledged and ignored, its name
/// kept as Stripe sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handled {
    PaymentSucceeded,
    PaymentFailed,
    ChargeRefunded,
}

impl Handled {
    fn of(kind: &str) -> Option<Self> {
        match kind {
            "payment_intent.succeeded" => Some(Self::PaymentSucceeded),
            "payment_intent.payment_failed" => Some(Self::PaymentFailed),
            "charge.refunded" => Some(Self::ChargeRefunded),
            _ => None,
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct EventData {
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
                ApiError::BadRequest(ErrorCode::InvalidWebhook, err.to_string())
            })?;
        let event: Event = serde_json::from_slice(body).map_err(|_| malformed_event())?;
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
        match Handled::of(&event.kind) {
            Some(Handled::PaymentSucceeded) => {
                let intent: PaymentIntentObject = object(event.data.object)?;
                refund_due = self.payment_succeeded(&mut tx, &intent).await?;
            }
            Some(Handled::PaymentFailed) => {
                let intent: PaymentIntentObject = object(event.data.object)?;
                self.payment_failed(&mut tx, &intent).await?;
            }
            Some(Handled::ChargeRefunded) => {
                let charge: ChargeObject = object(event.data.object)?;
                charge_refunded(&mut tx, &event.id, &charge).await?;
            }
            None => tracing::debug!("webhook event not handled"),
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
    serde_json::from_value(value).map_err(|_| malformed_event())
}

/// How far a webhook's signed timestamp may be from now, in seconds (Stripe's default).
pub(crate) const SIGNATURE_TOLERANCE_SECS: i64 = 300;

/// Why a webhook's `Stripe-Signature` was refused. The messages go to the caller: they say what
/// is wrong with the request, never anything about the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SignatureError {
    #[error("Missing Stripe-Signature header")]
    Missing,
    #[error("Malformed Stripe-Signature header")]
    Malformed,
    #[error("Webhook timestamp is outside the tolerance")]
    OutsideTolerance,
    #[error("No webhook signature matches")]
    NoMatch,
}

/// Checks a `Stripe-Signature` header (`t=<unix seconds>,v1=<hex>[,v1=<hex>…]`) against the raw
/// body: one `v1` must be the HMAC-SHA256 of `"{t}.{body}"` under `secret`, and `t` must be
/// within [`SIGNATURE_TOLERANCE_SECS`] of `now` (an old, replayed delivery is refused). Several
/// `v1` entries are allowed, as Stripe sends while a secret is being rolled.
pub(crate) fn verify_signature(
    header: &str,
    body: &[u8],
    secret: &[u8],
    now_unix: i64,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            return Err(SignatureError::Malformed);
        };
        match key {
            "t" => {
                let parsed = value
                    .parse::<i64>()
                    .map_err(|_| SignatureError::Malformed)?;
                timestamp = Some((value, parsed));
            }
            "v1" => signatures.push(decode_hex(value).ok_or(SignatureError::Malformed)?),
            // v0 and future schemes are not ours to check.
            _ => {}
        }
    }
    let Some((timestamp_text, timestamp)) = timestamp else {
        return Err(SignatureError::Malformed);
    };
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if now_unix.saturating_sub(timestamp).abs() > SIGNATURE_TOLERANCE_SECS {
        return Err(SignatureError::OutsideTolerance);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| SignatureError::NoMatch)?;
    mac.update(timestamp_text.as_bytes());
    mac.update(b".");
    mac.update(body);
    let matches = signatures
        .iter()
        // `verify_slice` compares in constant time.
        .any(|signature| mac.clone().verify_slice(signature).is_ok());
    if matches {
        Ok(())
    } else {
        Err(SignatureError::NoMatch)
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.is_empty() || !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect()
}

/// The answer to a webhook whose event cannot be read.
fn malformed_event() -> ApiError {
    ApiError::BadRequest(ErrorCode::InvalidWebhook, "Malformed webhook event".into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn sign(secret: &str, timestamp: i64, body: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{timestamp}.{body}").as_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    #[test]
    fn a_signature_made_with_the_secret_verifies() {
        let body = r#"{"id":"evt_1","type":"charge.refunded"}"#;
        let now = 1_800_000_000;
        let header = format!("t={now},v1={}", sign("whsec_test", now, body));
        assert_eq!(
            verify_signature(&header, body.as_bytes(), b"whsec_test", now),
            Ok(())
        );
        // Within the tolerance either way.
        assert_eq!(
            verify_signature(&header, body.as_bytes(), b"whsec_test", now + 300),
            Ok(())
        );
        // One matching v1 among several (a secret being rolled), and other schemes ignored.
        let rolled = format!(
            "t={now},v1={},v1={},v0=abcd",
            sign("whsec_old", now, body),
            sign("whsec_test", now, body)
        );
        assert_eq!(
            verify_signature(&rolled, body.as_bytes(), b"whsec_test", now),
            Ok(())
        );
    }

    #[test]
    fn a_wrong_secret_body_or_timestamp_is_refused() {
        let body = r#"{"id":"evt_1"}"#;
        let now = 1_800_000_000;
        let header = format!("t={now},v1={}", sign("whsec_test", now, body));
        assert_eq!(
            verify_signature(&header, body.as_bytes(), b"whsec_other", now),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify_signature(&header, br#"{"id":"evt_2"}"#, b"whsec_test", now),
            Err(SignatureError::NoMatch)
        );
        // The signed timestamp is part of the signature: it cannot be swapped for a fresh one.
        let swapped = header.replace(&format!("t={now}"), &format!("t={}", now + 1));
        assert_eq!(
            verify_signature(&swapped, body.as_bytes(), b"whsec_test", now),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify_signature(&header, body.as_bytes(), b"whsec_test", now + 301),
            Err(SignatureError::OutsideTolerance)
        );
    }

    #[test]
    fn a_malformed_header_is_refused() {
        let now = 1_800_000_000;
        for header in [
            "",
            "garbage",
            "t=,v1=00",
            "t=abc,v1=00",
            "v1=00",
            &format!("t={now}"),
            &format!("t={now},v1=zz"),
            &format!("t={now},v1=abc"),
            &format!("t={now},v0=00"),
        ] {
            assert_eq!(
                verify_signature(header, b"{}", b"whsec_test", now),
                Err(SignatureError::Malformed),
                "{header:?}"
            );
        }
    }
}
