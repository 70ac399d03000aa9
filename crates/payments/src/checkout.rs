//! Paying for an order: claim, grant, prepare, confirm, settle.
//!
//! 1. **Claim** (one transaction, the order's replica row locked): check the order may be paid,
//!    insert the payment as `pending`, and ask orders to grant the order to it
//!    (payment:requested, in the same transaction). The unique index on `payments.order_id`
//!    makes a second claim for the same order fail, so a double click ends here. An order not
//!    heard of yet is waited for, bounded, with no transaction open ([`Arrivals`]).
//! 2. **Grant** (no transaction open): wait, bounded, for orders to move the order to
//!    `awaiting:payment` for this payment (order:updated). Orders grants only a live order in its
//!    window, and from then on refuses its owner's cancellation and holds back its expiry, so a
//!    charge never races a cancellation. A cancelled or paid order withdraws the claim, and the
//!    buyer is told why; a grant that does not come in time withdraws it too (503, try again).
//! 3. **Prepare** (no transaction open): the processor creates the charge's intent, unconfirmed,
//!    with an idempotency key derived from the order and the attempt number; its id is recorded
//!    on the claim. Nothing is charged yet.
//! 4. **Confirm** (no transaction open): the money moves, or the card is declined.
//! 5. **Settle** (one transaction, the order's row locked again): the payment becomes
//!    `succeeded` and payment:created is written to the outbox in the same transaction; should
//!    the order be cancelled all the same (an old event, an operator), it becomes `refund_due`
//!    and is refunded.
//!
//! A claim that ends without a charge (a decline, a withdrawal) is deleted, its attempt counted
//! so the buyer's next try gets a fresh key, and payment:failed tells orders to take its grant
//! back. A request that dies, or loses the processor or the database, between claiming and
//! settling leaves the claim pending: the reconciler ([`crate::reconciler`]) takes it up after
//! the claim timeout and settles or releases it by asking the processor about the recorded
//! intent. Since an intent is confirmed only once its id is recorded, a claim without one was
//! never charged.

use std::sync::Arc;

use common::arrivals::Arrivals;
use common::clock::{self, from_millis, now_millis};
use common::events::OrderStatus;
use common::outbox::{self, Outbox};
use common::store::{Dialect, is_unique_violation};
use common::{ApiError, ErrorCode, ServiceContext, Store};
use sqlx::AnyConnection;
use uuid::Uuid;

use crate::domain::{Currency, NewPayment, Payment, PaymentStatus, Refusal, check_payable};
use crate::processor::{ChargeOutcome, ChargeRequest, PaymentProcessor, Prepared, ProcessorError};
use crate::refunds::Refunds;
use crate::store;

/// Takes payments for orders. Cheap to clone.
#[derive(Clone)]
pub struct Checkout {
    store: Store,
    outbox: Outbox,
    processor: Arc<dyn PaymentProcessor>,
    refunds: Refunds,
    arrivals: Arrivals,
    currency: Currency,
}

/// How a settled charge ended.
#[derive(Debug)]
pub(crate) enum Settlement {
    /// The payment succeeded; payment:created is in the outbox.
    Paid(Payment),
    /// The order was cancelled meanwhile: the charge is owed back.
    RefundDue(Payment),
    /// The payment was no longer pending: something else settled (or released) it first.
    NotPending(Option<Payment>),
}

/// Settles a pending payment whose charge succeeded, inside the caller's transaction: takes the
/// order's lock, then marks the payment `succeeded` and announces it, or `refund_due` if the
/// order is cancelled. Used by the request that charged and by the payment_intent.succeeded
/// webhook, whichever comes first.
pub(crate) async fn settle_charge(
    tx: &mut AnyConnection,
    dialect: Dialect,
    payment: &Payment,
    stripe_id: &str,
) -> Result<Settlement, sqlx::Error> {
    let order = store::lock_order(tx, dialect, payment.order_id).await?;
    let cancelled = order.is_some_and(|order| order.status == OrderStatus::Cancelled);
    // A charge that loses the race with a cancellation is refunded, never kept.
    let status = if cancelled {
        PaymentStatus::RefundDue
    } else {
        PaymentStatus::Succeeded
    };
    match store::settle(tx, payment.id, stripe_id, status, now_millis()).await? {
        Some(settled) if cancelled => Ok(Settlement::RefundDue(settled)),
        Some(settled) => {
            outbox::enqueue(tx, settled.created_event(stripe_id)).await?;
            Ok(Settlement::Paid(settled))
        }
        None => Ok(Settlement::NotPending(
            store::find_payment(&mut *tx, payment.id).await?,
        )),
    }
}

/// What follows the deletion of a claim that charged nothing, in the same transaction: its
/// attempt is counted, so that the next one gets a fresh idempotency key, and payment:failed
/// tells orders to take back the grant it gave the claim, so that the order may be paid again
/// or cancelled (or expires, if its window passed meanwhile).
pub(crate) async fn announce_release(
    tx: &mut AnyConnection,
    payment: &Payment,
) -> Result<(), sqlx::Error> {
    store::count_declined_attempt(tx, payment.order_id).await?;
    outbox::enqueue(tx, payment.failed_event()).await?;
    Ok(())
}

impl Checkout {
    pub fn new(
        ctx: &ServiceContext,
        processor: Arc<dyn PaymentProcessor>,
        refunds: Refunds,
        currency: Currency,
    ) -> Self {
        Self {
            store: ctx.store.clone(),
            outbox: ctx.outbox.clone(),
            processor,
            refunds,
            arrivals: ctx.arrivals.clone(),
            currency,
        }
    }

    /// Pays for an order as `buyer`; answers the payment, or why not.
    #[tracing::instrument(name = "pay", skip_all, fields(order = %request.order_id))]
    pub async fn pay_for_order(
        &self,
        buyer: Uuid,
        request: NewPayment,
    ) -> Result<Payment, ApiError> {
        let claim = self.claim(buyer, request.order_id).await?;
        let payment = self.await_grant(buyer, claim).await?;
        let charge = ChargeRequest {
            amount: payment.amount,
            currency: payment.currency.clone(),
            token: request.token,
            idempotency_key: payment.charge_key(),
            order_id: payment.order_id,
            payment_id: payment.id,
        };
        let processor = self.processor.name();
        let intent_id = match self.processor.prepare(&charge).await {
            Ok(Prepared::Intent { id }) => id,
            Ok(Prepared::InvalidToken { message }) => {
                count("invalid_token", processor);
                self.release(&payment).await;
                return Err(ApiError::field("token", &message));
            }
            Err(err) => {
                count(failure(&err), processor);
                // Nothing is confirmed without a recorded intent: the claim can go at once.
                self.release(&payment).await;
                return Err(processor_error(err));
            }
        };
        if !self.record_intent(&payment, &intent_id).await? {
            // The reconciler took this claim for abandoned and released it while the intent was
            // being made: it is never confirmed.
            self.cancel_quietly(&intent_id).await;
            return Err(ApiError::Unavailable(anyhow::anyhow!(
                "payment {} was released while it was being prepared",
                payment.id
            )));
        }
        match self.processor.confirm(&intent_id).await {
            Ok(ChargeOutcome::Succeeded) => {
                count("charged", processor);
                self.settle(&payment, &intent_id).await
            }
            Ok(ChargeOutcome::Processing) => {
                count("processing", processor);
                tracing::info!(payment = %payment.id, %intent_id, "charge processing; a webhook or the reconciler will settle it");
                Ok(payment)
            }
            Ok(ChargeOutcome::Declined { message }) => {
                count("declined", processor);
                // An intent waiting for an authentication this API cannot give stays open at
                // Stripe otherwise; a declined one is simply closed.
                self.cancel_quietly(&intent_id).await;
                self.release(&payment).await;
                tracing::info!(payment = %payment.id, attempt = payment.attempt, "card declined");
                Err(ApiError::PaymentDeclined(message))
            }
            Ok(ChargeOutcome::Canceled) => {
                count("canceled", processor);
                Err(ApiError::Unavailable(anyhow::anyhow!(
                    "payment {} took too long and was cancelled before it was charged",
                    payment.id
                )))
            }
            Err(err) => {
                count(failure(&err), processor);
                // Charged or not, nobody can tell yet: the claim stays pending, and the
                // reconciler asks the processor about its intent once the claim times out.
                tracing::warn!(payment = %payment.id, %intent_id, error = %err, "charge outcome unknown; left to the reconciler");
                Err(processor_error(err))
            }
        }
    }

    /// Step 1: checks the order and claims it for this payment.
    async fn claim(&self, buyer: Uuid, order_id: Uuid) -> Result<Payment, ApiError> {
        let mut tx = self.store.begin().await?;
        let order = match store::lock_order(&mut tx, self.store.dialect(), order_id).await? {
            Some(order) => order,
            None => {
                // Placed a moment ago, perhaps, and its order:created still on its way: wait
                // for it with the transaction given up, so that others' payments go on.
                drop(tx);
                self.arrivals
                    .look_for(order_id, || store::find_order(self.store.pool(), order_id))
                    .await?
                    .ok_or(ApiError::NotFound)?;
                tx = self.store.begin().await?;
                store::lock_order(&mut tx, self.store.dialect(), order_id)
                    .await?
                    .ok_or(ApiError::NotFound)?
            }
        };
        let existing = store::payment_for_order(&mut tx, order_id).await?;
        let now_ms = now_millis();
        check_payable(&order, buyer, existing.as_ref(), from_millis(now_ms))?;
        let payment = Payment::claim(&order, &self.currency, now_ms);
        match store::insert_claim(&mut tx, &payment).await {
            // The lock above already serialises claims; the index is the guarantee.
            Err(err) if is_unique_violation(&err) => return Err(Refusal::InProgress.into()),
            other => other?,
        }
        outbox::enqueue(&mut tx, payment.requested_event()).await?;
        self.outbox.commit(tx).await?;
        Ok(payment)
    }

    /// Step 2: waits for orders to grant the order to this claim. Woken by the listener that
    /// applies the grant, the cancellation or the completion.
    async fn await_grant(&self, buyer: Uuid, claim: Payment) -> Result<Payment, ApiError> {
        let id = claim.id;
        let look = || async move {
            Ok::<_, sqlx::Error>(match store::find_payment(self.store.pool(), id).await? {
                Some(payment) if payment.granted_at.is_some() => Some(Some(payment)),
                Some(_) => None,
                // Withdrawn: the order was cancelled or paid meanwhile.
                None => Some(None),
            })
        };
        match self.arrivals.await_answer(claim.order_id, look).await? {
            Some(Some(granted)) => Ok(granted),
            Some(None) => Err(self.why_not_payable(buyer, claim.order_id).await),
            None => self.withdraw(buyer, claim).await,
        }
    }

    /// Gives up a claim whose grant did not come in time, unless it came at the last moment.
    async fn withdraw(&self, buyer: Uuid, claim: Payment) -> Result<Payment, ApiError> {
        let mut tx = self.store.begin().await?;
        store::lock_order(&mut tx, self.store.dialect(), claim.order_id).await?;
        if store::withdraw_claim(&mut tx, claim.id).await? {
            announce_release(&mut tx, &claim).await?;
            self.outbox.commit(tx).await?;
            count("not_granted", self.processor.name());
            return Err(ApiError::Unavailable(anyhow::anyhow!(
                "order {} was not granted for payment in time",
                claim.order_id
            )));
        }
        drop(tx);
        match store::find_payment(self.store.pool(), claim.id).await? {
            Some(payment) if payment.granted_at.is_some() => Ok(payment),
            _ => Err(self.why_not_payable(buyer, claim.order_id).await),
        }
    }

    /// Why an order whose claim was withdrawn cannot be paid, as its replica now says.
    async fn why_not_payable(&self, buyer: Uuid, order_id: Uuid) -> ApiError {
        let order = match store::find_order(self.store.pool(), order_id).await {
            Ok(Some(order)) => order,
            Ok(None) => return ApiError::NotFound,
            Err(err) => return err.into(),
        };
        match check_payable(&order, buyer, None, clock::now()) {
            Err(refusal) => refusal.into(),
            Ok(()) => ApiError::Unavailable(anyhow::anyhow!(
                "the claim on order {order_id} was withdrawn while the order is still payable"
            )),
        }
    }

    /// Step 3's record: notes the intent on the claim, unless the claim was released meanwhile.
    async fn record_intent(&self, payment: &Payment, intent_id: &str) -> Result<bool, ApiError> {
        let mut conn = self.store.writer().acquire().await?;
        Ok(store::record_intent(&mut conn, payment.id, intent_id, now_millis()).await?)
    }

    /// Cancels an intent that must never be confirmed, or was declined. A failure only leaves an
    /// intent behind that moves no money.
    async fn cancel_quietly(&self, intent_id: &str) {
        if let Err(err) = self.processor.cancel(intent_id).await {
            tracing::warn!(%intent_id, error = %err, "cannot cancel an intent of a released claim");
        }
    }

    /// Step 5: records the successful charge and answers the buyer.
    async fn settle(&self, payment: &Payment, stripe_id: &str) -> Result<Payment, ApiError> {
        let mut tx = self.store.begin().await?;
        let settlement = settle_charge(&mut tx, self.store.dialect(), payment, stripe_id).await?;
        self.outbox.commit(tx).await?;
        match settlement {
            Settlement::Paid(paid) => {
                tracing::info!(payment = %paid.id, %stripe_id, "payment succeeded");
                Ok(paid)
            }
            Settlement::RefundDue(owed) => {
                tracing::warn!(payment = %owed.id, %stripe_id, "order cancelled while charging; refunding");
                self.refund_now(owed.id).await;
                Err(Refusal::Cancelled.into())
            }
            // A webhook settled it while the answer was on its way.
            Settlement::NotPending(Some(settled)) => match settled.status {
                PaymentStatus::Succeeded => Ok(settled),
                PaymentStatus::RefundDue | PaymentStatus::Refunding | PaymentStatus::Refunded => {
                    Err(Refusal::Cancelled.into())
                }
                PaymentStatus::Pending => Err(ApiError::internal(anyhow::anyhow!(
                    "payment {} still pending after settling",
                    settled.id
                ))),
            },
            Settlement::NotPending(None) => Err(ApiError::internal(anyhow::anyhow!(
                "payment {} vanished while charging",
                payment.id
            ))),
        }
    }

    async fn refund_now(&self, payment_id: Uuid) {
        match self.refunds.refund(payment_id).await {
            Ok(_) => {}
            Err(err) => {
                // Still owed: the refunder retries until it goes through.
                tracing::warn!(payment = %payment_id, error = %err, "refund failed; the refunder will retry");
                self.refunds.wake();
            }
        }
    }

    /// Deletes a claim whose charge did not go through, and says so (see [`announce_release`]).
    async fn release(&self, payment: &Payment) {
        let released = async {
            let mut tx = self.store.begin().await?;
            store::lock_order(&mut tx, self.store.dialect(), payment.order_id).await?;
            if store::release_claim(&mut tx, payment.id).await? {
                announce_release(&mut tx, payment).await?;
            }
            self.outbox.commit(tx).await
        };
        if let Err(err) = released.await {
            // The claim stays pending until the reconciler takes it up.
            tracing::error!(payment = %payment.id, error = %err, "cannot release a claim");
        }
    }
}

/// A processor's failure as the buyer is told of it.
fn processor_error(err: ProcessorError) -> ApiError {
    match err {
        ProcessorError::Unavailable(err) => ApiError::Unavailable(err),
        ProcessorError::Refused(err) => ApiError::Internal(err),
    }
}

/// A processor's failure as the charge metrics count it.
fn failure(err: &ProcessorError) -> &'static str {
    match err {
        ProcessorError::Unavailable(_) => "unknown",
        ProcessorError::Refused(_) => "refused",
    }
}

fn count(outcome: &'static str, processor: &'static str) {
    metrics::counter!("stubs_payment_charges_total", "outcome" => outcome, "processor" => processor)
        .increment(1);
}

/// Why an order cannot be paid, as the buyer is told.
impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::NotOwner => ApiError::Unauthorized,
            Refusal::Cancelled => ApiError::BadRequest(
                ErrorCode::OrderCancelled,
                "Cannot pay for a cancelled order".into(),
            ),
            Refusal::AlreadyPaid => {
                ApiError::BadRequest(ErrorCode::OrderPaid, "Order already paid".into())
            }
            Refusal::InProgress => ApiError::BadRequest(
                ErrorCode::PaymentInProgress,
                "A payment for this order is already in progress".into(),
            ),
            Refusal::Expired => {
                ApiError::BadRequest(ErrorCode::OrderExpired, "Order has expired".into())
            }
        }
    }
}
