//! Refunds: every charge of a cancelled order is given back.
//!
//! A payment owes a refund (`refund_due`) when its order is cancelled after it succeeded (the
//! order:cancelled listener marks it) or while its card was being charged (settling marks it).
//! The refunder works through what is owed: it claims one payment (`refunding`, so two
//! refunders never refund the same payment), calls the processor with no transaction open and
//! an idempotency key derived from the payment, then records the refund and marks the payment
//! `refunded`. A failed call puts the payment back as `refund_due`; a refund whose refunder died
//! is taken up again after [`REFUND_TIMEOUT_MS`], repeating the same key. So a refund, once owed,
//! is retried until it goes through, and made once.

use std::sync::Arc;

use common::Store;
use common::clock::now_millis;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::domain::REFUND_TIMEOUT_MS;
use crate::processor::{PaymentProcessor, ProcessorError, RefundRequest};
use crate::store::{self, RefundRecord};

/// How many owed refunds one pass makes at most.
const BATCH: i64 = 20;

#[derive(Debug, thiserror::Error)]
pub enum RefundError {
    #[error(transparent)]
    Store(#[from] sqlx::Error),
    #[error(transparent)]
    Processor(#[from] ProcessorError),
    #[error("payment {0} owes a refund but has no charge id")]
    NoCharge(Uuid),
}

/// Makes the refunds that are owed. Cheap to clone.
#[derive(Clone)]
pub struct Refunds {
    store: Store,
    processor: Arc<dyn PaymentProcessor>,
    wake: Arc<Notify>,
}

impl Refunds {
    pub fn new(store: Store, processor: Arc<dyn PaymentProcessor>) -> Self {
        Self {
            store,
            processor,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Asks the refunder to look now rather than at its next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Refunds one payment if it owes a refund and no other refunder is at it. Returns whether
    /// this call refunded it.
    #[tracing::instrument(name = "refund", skip(self))]
    pub async fn refund(&self, payment_id: Uuid) -> Result<bool, RefundError> {
        let now = now_millis();
        let claimed = {
            let mut conn = self.store.writer().acquire().await?;
            store::claim_refund(&mut conn, payment_id, now, now - REFUND_TIMEOUT_MS).await?
        };
        let Some(payment) = claimed else {
            return Ok(false);
        };
        let Some(stripe_id) = payment.stripe_id.clone() else {
            return Err(RefundError::NoCharge(payment.id));
        };
        let request = RefundRequest {
            stripe_id,
            amount: payment.amount,
            idempotency_key: payment.refund_key(),
            payment_id: payment.id,
        };
        let receipt = match self.processor.refund(&request).await {
            Ok(receipt) => receipt,
            Err(err) => {
                self.count("failed");
                if let Ok(mut conn) = self.store.writer().acquire().await
                    && let Err(release) =
                        store::release_refund(&mut conn, payment.id, now_millis()).await
                {
                    // Left `refunding`: taken up again once it is stale.
                    tracing::warn!(error = %release, "cannot hand a failed refund back");
                }
                return Err(err.into());
            }
        };
        let mut tx = self.store.begin().await?;
        store::record_refund(
            &mut tx,
            &RefundRecord {
                payment_id: payment.id,
                stripe_refund_id: receipt.id.clone(),
                amount_cents: payment.amount.get(),
                reason: "order_cancelled",
            },
            now_millis(),
        )
        .await?;
        store::mark_refunded(&mut tx, payment.id, now_millis()).await?;
        tx.commit().await?;
        self.count("refunded");
        tracing::info!(payment = %payment.id, refund = %receipt.id, "payment refunded");
        Ok(true)
    }

    /// One pass over what is owed. Returns how many refunds it made; an error if any failed.
    pub async fn refund_owed(&self) -> Result<usize, RefundError> {
        let now = now_millis();
        let owed =
            store::refunds_to_make(self.store.pool(), now - REFUND_TIMEOUT_MS, BATCH).await?;
        let mut refunded = 0;
        let mut failure = None;
        for payment_id in owed {
            match self.refund(payment_id).await {
                Ok(true) => refunded += 1,
                Ok(false) => {}
                Err(err) => {
                    tracing::warn!(payment = %payment_id, error = %err, "refund failed, will retry");
                    failure = Some(err);
                }
            }
        }
        failure.map_or(Ok(refunded), Err)
    }

    /// What [`Refunds::wake`] signals, for the task that makes the refunds to wait on.
    pub fn wake_signal(&self) -> &Notify {
        &self.wake
    }

    fn count(&self, outcome: &'static str) {
        metrics::counter!("stubs_payment_refunds_total", "outcome" => outcome, "processor" => self.processor.name())
            .increment(1);
    }
}
