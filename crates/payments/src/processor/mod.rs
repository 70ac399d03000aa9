//! The seam to whoever moves the money: Stripe, or the sandbox when no Stripe key is configured.
//!
//! A processor is an outside system: it is never called while a database transaction is open
//! (the sandbox writes its books in the same database, and a network call must not hold locks).
//! Every call carries an idempotency key, so repeating a call whose outcome was lost returns the
//! first outcome instead of moving money twice.

pub mod sandbox;
pub mod stripe;

use std::sync::Arc;

use async_trait::async_trait;
use common::Store;
use common::money::Cents;
use uuid::Uuid;

use crate::domain::PaymentToken;
use crate::{Settings, SettingsError};

/// A charge to make.
#[derive(Debug, Clone)]
pub struct ChargeRequest {
    pub amount: Cents,
    pub currency: String,
    pub token: PaymentToken,
    pub idempotency_key: String,
    /// Sent along as metadata, so a charge can be traced back to its order and payment.
    pub order_id: Uuid,
    pub payment_id: Uuid,
}

/// What the processor did with a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// The money is taken; `stripe_id` names the charge (`pi_…` at Stripe).
    Succeeded { stripe_id: String },
    /// Accepted but not final (asynchronous payment methods); a webhook will tell the end.
    Processing { stripe_id: String },
    /// The card was declined; the message is the processor's, fit for the buyer.
    Declined { message: String },
    /// The token names no card the processor knows.
    InvalidToken { message: String },
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

/// Whoever moves the money.
#[async_trait]
pub trait PaymentProcessor: Send + Sync + 'static {
    /// A short name for logs and metrics: `stripe` or `sandbox`.
    fn name(&self) -> &'static str;

    /// Charges a card, once per idempotency key.
    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, ProcessorError>;

    /// Refunds a charge in full, once per idempotency key.
    async fn refund(&self, request: &RefundRequest) -> Result<RefundReceipt, ProcessorError>;
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

#[async_trait]
impl PaymentProcessor for Unconfigured {
    fn name(&self) -> &'static str {
        "unconfigured"
    }

    async fn charge(&self, _: &ChargeRequest) -> Result<ChargeOutcome, ProcessorError> {
        Err(ProcessorError::Refused(anyhow::anyhow!(
            "payments are not configured: {}",
            self.reason
        )))
    }

    async fn refund(&self, _: &RefundRequest) -> Result<RefundReceipt, ProcessorError> {
        Err(ProcessorError::Unavailable(anyhow::anyhow!(
            "payments are not configured: {}",
            self.reason
        )))
    }
}
