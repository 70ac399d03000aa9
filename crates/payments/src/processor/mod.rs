//! The seam to whoever moves the money: Stripe, or the sandbox when no Stripe key is configured.
//!
//! A processor is an outside system: it is never called while a database transaction is open
//! (the sandbox writes its books in the same database, and a network call must not hold locks).
//! Every call that moves money carries an idempotency key, so repeating a call whose outcome was
//! lost returns the first outcome instead of moving money twice.

pub mod sandbox;
pub mod stripe;

use std::sync::Arc;

use async_trait::async_trait;
use common::Store;
use common::money::Cents;
use uuid::Uuid;

use crate::domain::{Currency, PaymentToken};
use crate::{Settings, SettingsError};

/// A charge to make.
#[derive(Debug, Clone)]
pub struct ChargeRequest {
    pub amount: Cents,
    pub currency: Currency,
    pub token: PaymentToken,
    pub idempotency_key: String,
    /// Sent along as metadata, so a charge can be traced back to its order and payment.
    pub order_id: Uuid,
    pub payment_id: Uuid,
}

/// What became of creating the intent of a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    /// The intent exists, unconfirmed: nothing is charged until it is confirmed.
    Intent { id: String },
    /// The token names no card the processor knows.
    InvalidToken { message: String },
}

/// What the processor did when an intent was confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// The money is taken.
    Succeeded,
    /// Accepted but not final (asynchronous payment methods); a webhook, or the reconciler,
    /// will tell the end.
    Processing,
    /// The card was declined; the message is the processor's, fit for the buyer.
    Declined { message: String },
    /// The intent was cancelled before it could be confirmed (by the reconciler, which took the
    /// claim for abandoned): nothing is charged.
    Canceled,
}

/// Where an intent is, as the reconciler needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntentStatus {
    /// Created and not confirmed (or waiting for an authentication that never comes): no money
    /// has moved yet, and cancelling it makes sure none will.
    RequiresConfirmation,
    /// Confirmed, the outcome not final yet.
    Processing,
    /// Charged.
    Succeeded,
    /// Confirmed and declined: nothing charged.
    Failed,
    /// Cancelled: nothing charged, nothing ever will be.
    Canceled,
}

/// A full refund of a charge.
#[derive(Debug, Clone)]
pub struct RefundRequest {
    pub stripe_id: String,
    pub amount: Cents,
    pub idempotency_key: String,
    pub payment_id: Uuid,
}

/// The processor's record of a refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundReceipt {
    pub id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    /// The processor did not answer (network, timeout, 5xx, rate limit): the outcome is unknown.
    /// Repeating the call with the same idempotency key is safe and learns it.
    #[error("payment processor unavailable: {0:#}")]
    Unavailable(#[source] anyhow::Error),
    /// The processor refused the request itself (a bad key, a request it cannot take): nothing
    /// happened, and repeating it will not help.
    #[error("payment processor refused the request: {0:#}")]
    Refused(#[source] anyhow::Error),
}

/// Whoever moves the money. A charge takes two calls: [`PaymentProcessor::prepare`] creates its
/// intent, whose id the caller records on the claim, and only then [`PaymentProcessor::confirm`]
/// moves the money. So a claim left pending by a crash either has no intent (nothing can have
/// been charged) or names one that [`PaymentProcessor::look_up`] can ask about.
#[async_trait]
pub trait PaymentProcessor: Send + Sync + 'static {
    /// A short name for logs and metrics: `stripe` or `sandbox`.
    fn name(&self) -> &'static str;

    /// Creates the intent of a charge, unconfirmed, once per idempotency key.
    async fn prepare(&self, request: &ChargeRequest) -> Result<Prepared, ProcessorError>;

    /// Confirms an intent: the money moves now, or the card is declined.
    async fn confirm(&self, intent_id: &str) -> Result<ChargeOutcome, ProcessorError>;

    /// Where an intent is now.
    async fn look_up(&self, intent_id: &str) -> Result<IntentStatus, ProcessorError>;

    /// Cancels an intent that is not confirmed yet, and answers where it is afterwards: cancelled,
    /// or, if it was confirmed first, whatever its confirmation made it.
    async fn cancel(&self, intent_id: &str) -> Result<IntentStatus, ProcessorError>;

    /// Refunds a charge in full, once per idempotency key.
    async fn refund(&self, request: &RefundRequest) -> Result<RefundReceipt, ProcessorError>;

    /// The intent made under an idempotency key, if any: for a claim from before intents were
    /// recorded on claims. `Refused` by a processor that cannot be asked so.
    async fn find_by_key(&self, idempotency_key: &str) -> Result<Option<String>, ProcessorError>;
}

/// The processor the settings ask for: Stripe with a key, the sandbox without one.
pub fn from_settings(
    settings: &Settings,
    store: &Store,
) -> Result<Arc<dyn PaymentProcessor>, SettingsError> {
    Ok(match &settings.stripe {
        Some(stripe) => Arc::new(stripe::StripeClient::new(stripe)?),
        None => Arc::new(sandbox::Sandbox::new(store.clone())),
    })
}

/// Stands in for a processor that could not be built from the settings, so that a service
/// started with settings that were never validated refuses payments instead of panicking.
#[derive(Debug)]
pub struct Unconfigured {
    pub reason: String,
}

impl Unconfigured {
    fn error(&self) -> ProcessorError {
        ProcessorError::Refused(anyhow::anyhow!(
            "payments are not configured: {}",
            self.reason
        ))
    }
}

#[async_trait]
impl PaymentProcessor for Unconfigured {
    fn name(&self) -> &'static str {
        "unconfigured"
    }

    async fn prepare(&self, _: &ChargeRequest) -> Result<Prepared, ProcessorError> {
        Err(self.error())
    }

    async fn confirm(&self, _: &str) -> Result<ChargeOutcome, ProcessorError> {
        Err(self.error())
    }

    async fn look_up(&self, _: &str) -> Result<IntentStatus, ProcessorError> {
        Err(self.error())
    }

    async fn cancel(&self, _: &str) -> Result<IntentStatus, ProcessorError> {
        Err(self.error())
    }

    async fn refund(&self, _: &RefundRequest) -> Result<RefundReceipt, ProcessorError> {
        Err(ProcessorError::Unavailable(anyhow::anyhow!(
            "payments are not configured: {}",
            self.reason
        )))
    }

    async fn find_by_key(&self, _: &str) -> Result<Option<String>, ProcessorError> {
        Err(self.error())
    }
}
