//! The reconciler: no charge outlives its order.
//!
//! A request that dies, or loses the processor or the database, between claiming an order and
//! settling its charge leaves the claim `pending`. Once a claim has been pending for longer than
//! the claim timeout, the reconciler asks the processor about the intent recorded on it and
//! decides with [`reconcile_step`]: a charge that went through is settled exactly as the request
//! would have settled it (payment:created, or a refund owed if the order was cancelled
//! meanwhile); an intent that was never confirmed is cancelled first; a claim that cannot have
//! charged (never granted, never prepared, declined, cancelled) is released, and orders told
//! (payment:failed), so the buyer may pay again or the order lapse. Every write is conditional on the claim
//! being as the reconciler read it, so replicas reconciling side by side, a slow request and a
//! webhook all end the claim one way.
//!
//! The same task also makes the refunds that are owed ([`Refunds::refund_owed`]), so that a
//! charge settled as owing a refund is given back in the same pass.

use std::sync::Arc;
use std::time::Duration;

use common::arrivals::Arrivals;
use common::background::{Next, run_passes};
use common::clock::now_millis;
use common::outbox::Outbox;
use common::{ServiceContext, Store};
use tokio_util::sync::CancellationToken;

use crate::checkout::{Settlement, announce_release, settle_charge};
use crate::domain::{Payment, ReconcileStep, reconcile_step};
use crate::processor::{PaymentProcessor, ProcessorError};
use crate::refunds::{RefundError, Refunds};
use crate::store;

/// How often the reconciler and the refunder look without being woken.
const POLL: Duration = Duration::from_secs(1);
const BATCH: i64 = 20;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ReconcileError {
    #[error(transparent)]
    Store(#[from] sqlx::Error),
    #[error(transparent)]
    Processor(#[from] ProcessorError),
    #[error("payment intent {0} is still unconfirmed after it was cancelled")]
    NotCancelled(String),
    #[error(transparent)]
    Refund(#[from] RefundError),
}

impl ReconcileError {
    /// Whether the processor refused outright (an intent it does not know, a state it should not
    /// be in), as opposed to being away for a while.
    fn is_lasting(&self) -> bool {
        matches!(
            self,
            Self::Processor(ProcessorError::Refused(_)) | Self::NotCancelled(_)
        )
    }
}

/// What the reconciler did with one stale claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reconciled {
    /// Nothing was charged: the claim is gone.
    Released,
    /// Charged, and now paid or owing a refund.
    Settled,
    /// Not final yet: looked at again after another timeout.
    Waiting,
    /// Someone else (the request, a webhook, another replica) ended it first.
    AlreadyEnded,
}

/// Settles or releases stale claims. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Reconciler {
    store: Store,
    outbox: Outbox,
    processor: Arc<dyn PaymentProcessor>,
    refunds: Refunds,
    arrivals: Arrivals,
    claim_timeout: Duration,
}

impl Reconciler {
    pub(crate) fn new(
        ctx: &ServiceContext,
        processor: Arc<dyn PaymentProcessor>,
        refunds: Refunds,
        claim_timeout: Duration,
    ) -> Self {
        Self {
            store: ctx.store.clone(),
            outbox: ctx.outbox.clone(),
            processor,
            refunds,
            arrivals: ctx.arrivals.clone(),
            claim_timeout,
        }
    }

    /// One pass over the claims pending for longer than the claim timeout. Returns how many it
    /// took up; an error if any could not be decided (it is taken up again on a later pass).
    pub(crate) async fn reconcile_stale(&self) -> Result<usize, ReconcileError> {
        let timeout_ms = i64::try_from(self.claim_timeout.as_millis()).unwrap_or(i64::MAX);
        let stale_before = now_millis().saturating_sub(timeout_ms);
        let claims = store::stale_claims(self.store.pool(), stale_before, BATCH).await?;
        let taken = claims.len();
        let mut failure = None;
        for claim in claims {
            match self.reconcile(&claim).await {
                Ok(done) => {
                    tracing::info!(payment = %claim.id, order = %claim.order_id, ?done, "stale claim reconciled");
                    self.count(done);
                }
                Err(err) => {
                    tracing::warn!(payment = %claim.id, error = %err, "cannot reconcile a stale claim yet");
                    metrics::counter!("stubs_payment_reconciled_total", "outcome" => "failed", "processor" => self.processor.name())
                        .increment(1);
                    if err.is_lasting() {
                        // Asking again at once will not help: look again after another timeout,
                        // and let the other claims and the refunds go on meanwhile.
                        let mut conn = self.store.writer().acquire().await?;
                        store::touch_claim(&mut conn, claim.id, now_millis()).await?;
                    } else {
                        failure = Some(err);
                    }
                }
            }
        }
        failure.map_or(Ok(taken), Err)
    }

    /// Ends one stale claim, as its intent's status says.
    #[tracing::instrument(name = "reconcile", skip_all, fields(payment = %claim.id))]
    pub(crate) async fn reconcile(&self, claim: &Payment) -> Result<Reconciled, ReconcileError> {
        let claim = &match self.find_legacy_intent(claim).await? {
            Some(found) => found,
            None => return Ok(Reconciled::AlreadyEnded),
        };
        let Some(intent_id) = claim.stripe_id.as_deref() else {
            // An intent is confirmed only once its id is recorded: this claim never charged.
            return self.release(claim).await;
        };
        let mut status = self.processor.look_up(intent_id).await?;
        if reconcile_step(status) == ReconcileStep::Cancel {
            // It may have been confirmed a moment before: the cancellation's answer says.
            status = self.processor.cancel(intent_id).await?;
        }
        match reconcile_step(status) {
            ReconcileStep::Release => self.release(claim).await,
            ReconcileStep::Settle => self.settle(claim, intent_id).await,
            ReconcileStep::Wait => {
                let mut conn = self.store.writer().acquire().await?;
                store::touch_claim(&mut conn, claim.id, now_millis()).await?;
                Ok(Reconciled::Waiting)
            }
            ReconcileStep::Cancel => Err(ReconcileError::NotCancelled(intent_id.to_owned())),
        }
    }

    /// A claim from the one-step flow has no intent recorded, yet may have charged: the intent
    /// made under its idempotency key, if the processor has one, is recorded on it first. `None`
    /// when the claim changed meanwhile.
    async fn find_legacy_intent(&self, claim: &Payment) -> Result<Option<Payment>, ReconcileError> {
        if !claim.is_legacy_claim() {
            return Ok(Some(claim.clone()));
        }
        let Some(intent_id) = self.processor.find_by_key(&claim.charge_key()).await? else {
            // Never charged: released like any claim without an intent.
            return Ok(Some(claim.clone()));
        };
        let now = now_millis();
        let mut conn = self.store.writer().acquire().await?;
        if !store::record_intent(&mut conn, claim.id, &intent_id, now).await? {
            return Ok(None);
        }
        Ok(Some(Payment {
            stripe_id: Some(intent_id),
            updated_at: now,
            ..claim.clone()
        }))
    }

    /// Deletes a claim that cannot have charged (counting its attempt, so that the buyer's next
    /// one gets a fresh idempotency key rather than the spent intent) and tells orders.
    async fn release(&self, claim: &Payment) -> Result<Reconciled, ReconcileError> {
        let mut tx = self.store.begin().await?;
        store::lock_order(&mut tx, self.store.dialect(), claim.order_id).await?;
        if !store::release_stale_claim(&mut tx, claim).await? {
            return Ok(Reconciled::AlreadyEnded);
        }
        announce_release(&mut tx, claim).await?;
        // A request still waiting for this claim's grant (a timeout shorter than its wait) is
        // told at once, on whichever replica it waits.
        let order = [claim.order_id];
        Arrivals::announce_on_commit(&mut tx, self.store.dialect(), &order).await?;
        self.outbox.commit(tx).await?;
        self.arrivals.announce(&order);
        Ok(Reconciled::Released)
    }

    async fn settle(&self, claim: &Payment, intent_id: &str) -> Result<Reconciled, ReconcileError> {
        let mut tx = self.store.begin().await?;
        let settlement = settle_charge(&mut tx, self.store.dialect(), claim, intent_id).await?;
        self.outbox.commit(tx).await?;
        Ok(match settlement {
            Settlement::Paid(_) => Reconciled::Settled,
            Settlement::RefundDue(_) => {
                self.refunds.wake();
                Reconciled::Settled
            }
            Settlement::NotPending(_) => Reconciled::AlreadyEnded,
        })
    }

    /// Reconciles stale claims and makes owed refunds until shut down: at once when a refund is
    /// asked for, every second otherwise, backing off while the processor or the database is
    /// away.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        run_passes(
            "payments reconciler",
            self.refunds.wake_signal(),
            &shutdown,
            || async {
                let reconciled = self.reconcile_stale().await;
                let refunded = self.refunds.refund_owed().await;
                let done = reconciled? + refunded?;
                Ok::<_, ReconcileError>(if done as i64 >= BATCH {
                    Next::Again
                } else {
                    Next::Pause(POLL)
                })
            },
        )
        .await
    }

    fn count(&self, done: Reconciled) {
        let outcome = match done {
            Reconciled::Released => "released",
            Reconciled::Settled => "settled",
            Reconciled::Waiting => "waiting",
            Reconciled::AlreadyEnded => "already_ended",
        };
        metrics::counter!("stubs_payment_reconciled_total", "outcome" => outcome, "processor" => self.processor.name())
            .increment(1);
    }
}
