//! What the orders service does when other services speak: ticket:created and ticket:updated
//! keep the ticket replica, expiration:complete cancels an order whose payment window passed,
//! payment:requested grants a live order to the payment that asks (`awaiting:payment`),
//! payment:failed takes the grant back, payment:created completes a paid order. Every order change
//! is announced (order:updated, order:cancelled, order:completed) through the outbox in the
//! listener's transaction.
//!
//! Events arrive more than once, late and out of order. So: the replica applies only the next
//! version of a ticket; an order event for an order this service does not know yet is retried
//! (`NotReady`), never dropped; and the order handlers lock the order row and decide with
//! [`domain::transition`], so an expiry, a payment and the owner's cancellation of one order
//! take turns and exactly one of them changes it.

use async_trait::async_trait;
use common::clock;
use common::events::{
    Envelope, ExpirationComplete, OrderStatus, PaymentCreated, PaymentFailed, PaymentRequested,
    TicketCreated, TicketUpdated, VersionStep, version_step,
};
use common::listener::{HandleError, Handler};
use common::outbox;
use common::store::Dialect;
use sqlx::AnyConnection;
use uuid::Uuid;

use crate::domain::{self, Grant, Order, Reopen, Ticket, Transition, Trigger};
use crate::store;

/// Adds a newly listed ticket to the replica.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordTicket;

#[async_trait]
impl Handler<TicketCreated> for RecordTicket {
    // A buyer may be waiting to order the ticket.
    fn arrival(&self, event: &TicketCreated) -> Option<Uuid> {
        Some(event.id)
    }

    fn lock_key(&self, event: &TicketCreated) -> Option<Uuid> {
        Some(event.id)
    }

    async fn handle(
        &self,
        tx: &mut AnyConnection,
        event: Envelope<TicketCreated>,
    ) -> Result<(), HandleError> {
        let ticket = Ticket::from_created(&event.data);
        if store::insert_ticket(tx, &ticket, event.data.event_id).await? {
            tracing::info!(ticket = %ticket.id, version = ticket.version, "ticket replicated");
        } else {
            // The same listing announced again: the replica has it, maybe at a later version.
            tracing::debug!(ticket = %ticket.id, "ticket already replicated");
        }
        Ok(())
    }
}

/// Applies a ticket's changes to the replica, in version order.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UpdateTicket {
    pub dialect: Dialect,
}

#[async_trait]
impl Handler<TicketUpdated> for UpdateTicket {
    fn lock_key(&self, event: &TicketUpdated) -> Option<Uuid> {
        Some(event.id)
    }

    async fn handle(
        &self,
        tx: &mut AnyConnection,
        event: Envelope<TicketUpdated>,
    ) -> Result<(), HandleError> {
        let ticket = &event.data;
        let held = store::lock_ticket(tx, self.dialect, ticket.id)
            .await?
            .map(|held| held.version);
        match version_step(held, ticket.version) {
            VersionStep::Apply => {
                if !store::update_ticket(tx, ticket).await? {
                    return Err(
                        anyhow::anyhow!("ticket {} changed under its lock", ticket.id).into(),
                    );
                }
                tracing::info!(ticket = %ticket.id, version = ticket.version, "ticket replica updated");
                Ok(())
            }
            VersionStep::Stale => {
                tracing::debug!(ticket = %ticket.id, version = ticket.version, ?held, "old ticket version dropped");
                Ok(())
            }
            // Not acknowledged: the bus brings it back once the versions before it had a chance
            // to arrive, and dead-letters it if they never do.
            VersionStep::Early => Err(HandleError::NotReady(format!(
                "ticket {} version {} arrived while the replica holds {held:?}",
                ticket.id, ticket.version
            ))),
        }
    }
}

/// Cancels an order whose payment window has passed, unless it was paid or cancelled already.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ExpireOrder {
    pub dialect: Dialect,
}

#[async_trait]
impl Handler<ExpirationComplete> for ExpireOrder {
    fn lock_key(&self, event: &ExpirationComplete) -> Option<Uuid> {
        Some(event.order_id)
    }

    async fn handle(
        &self,
        tx: &mut AnyConnection,
        event: Envelope<ExpirationComplete>,
    ) -> Result<(), HandleError> {
        let order = locked_order(tx, self.dialect, event.data.order_id).await?;
        match domain::transition(order.status, Trigger::Expire) {
            Transition::To(status) => {
                let cancelled = cancel(tx, &order, status).await?;
                tracing::info!(order = %order.id, version = cancelled.version, "order expired");
            }
            Transition::Unchanged if order.status == OrderStatus::AwaitingPayment => {
                // The payment granted the order decides its end. Should it fail, the order is
                // cancelled then; the expiry is written down, so that holds whatever this
                // service's clock says of the window (the expiration service's may run ahead).
                store::note_expiry(tx, order.id, clock::now()).await?;
                tracing::info!(order = %order.id, "expiry of an order being paid; its payment decides");
            }
            Transition::Unchanged | Transition::Refused => {
                // Expiring a cancelled (or paid) order does nothing and announces nothing: a late
                // expiry must never disturb what came after it.
                tracing::info!(order = %order.id, status = order.status.as_str(), "expiry of a finished order, nothing to do");
            }
        }
        Ok(())
    }
}

/// Grants a live order to the payment that asks to charge it: from then on only that payment
/// may charge it, its owner may not cancel it, and its expiry waits for the payment's end.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GrantPayment {
    pub dialect: Dialect,
}

#[async_trait]
impl Handler<PaymentRequested> for GrantPayment {
    fn lock_key(&self, event: &PaymentRequested) -> Option<Uuid> {
        Some(event.order_id)
    }

    async fn handle(
        &self,
        tx: &mut AnyConnection,
        event: Envelope<PaymentRequested>,
    ) -> Result<(), HandleError> {
        let payment = event.data;
        let order = locked_order(tx, self.dialect, payment.order_id).await?;
        match domain::grant(&order, payment.id, payment.attempt, clock::now()) {
            Grant::Grant => {
                let granted = store::grant_order(tx, order.id, payment.id, payment.attempt)
                    .await?
                    .ok_or_else(|| changed_under_lock(&order))?;
                outbox::enqueue(tx, granted.updated_event()).await?;
                tracing::info!(order = %order.id, payment = %payment.id, version = granted.version, "order granted to a payment");
            }
            Grant::Expire => {
                cancel(tx, &order, OrderStatus::Cancelled).await?;
                tracing::info!(order = %order.id, payment = %payment.id, "payment asked for after the window; order expired");
            }
            Grant::Granted | Grant::Refuse => {
                tracing::info!(order = %order.id, payment = %payment.id, status = order.status.as_str(), "payment request not granted");
            }
        }
        Ok(())
    }
}

/// Takes the grant back from a payment that ended without a charge: the order is its buyer's to
/// pay again or cancel, or, if its window passed meanwhile, it is cancelled now.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReopenOrder {
    pub dialect: Dialect,
}

#[async_trait]
impl Handler<PaymentFailed> for ReopenOrder {
    fn lock_key(&self, event: &PaymentFailed) -> Option<Uuid> {
        Some(event.order_id)
    }

    async fn handle(
        &self,
        tx: &mut AnyConnection,
        event: Envelope<PaymentFailed>,
    ) -> Result<(), HandleError> {
        let payment = event.data;
        let order = locked_order(tx, self.dialect, payment.order_id).await?;
        match domain::reopen(&order, payment.id, clock::now()) {
            Reopen::Reopen => {
                let reopened = store::reopen_order(tx, order.id)
                    .await?
                    .ok_or_else(|| changed_under_lock(&order))?;
                outbox::enqueue(tx, reopened.updated_event()).await?;
                tracing::info!(order = %order.id, payment = %payment.id, version = reopened.version, "payment failed; order open again");
            }
            Reopen::Expire => {
                cancel(tx, &order, OrderStatus::Cancelled).await?;
                tracing::info!(order = %order.id, payment = %payment.id, "payment failed after the window; order expired");
            }
            Reopen::Ignore => {
                tracing::debug!(order = %order.id, payment = %payment.id, "failure of a payment the order is not granted to");
            }
        }
        Ok(())
    }
}

/// Completes an order that was paid.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CompleteOrder {
    pub dialect: Dialect,
}

#[async_trait]
impl Handler<PaymentCreated> for CompleteOrder {
    fn lock_key(&self, event: &PaymentCreated) -> Option<Uuid> {
        Some(event.order_id)
    }

    async fn handle(
        &self,
        tx: &mut AnyConnection,
        event: Envelope<PaymentCreated>,
    ) -> Result<(), HandleError> {
        let payment = event.data;
        let order = locked_order(tx, self.dialect, payment.order_id).await?;
        match domain::transition(order.status, Trigger::Pay) {
            Transition::To(status) => {
                let completed = finish(tx, &order, status).await?;
                // Announced so that every replica of the order stays in version step.
                outbox::enqueue(tx, completed.completed_event()).await?;
                tracing::info!(order = %order.id, payment = %payment.id, version = completed.version, "order paid");
            }
            Transition::Unchanged => {
                tracing::debug!(order = %order.id, payment = %payment.id, "order already complete");
            }
            Transition::Refused => {
                // The order was cancelled at the moment it was paid. Payments refunds the charge
                // when it hears order:cancelled; completing it here would sell a released ticket.
                tracing::warn!(
                    order = %order.id,
                    payment = %payment.id,
                    stripe_id = %payment.stripe_id,
                    "payment for a cancelled order, not completing it"
                );
            }
        }
        Ok(())
    }
}

/// The order an event names, locked. An order this service does not know is `NotReady`: only
/// this service creates orders and announces them after committing, so such an event is stray or
/// from another deployment. It is retried, then dead-lettered where an operator can see it.
async fn locked_order(
    tx: &mut AnyConnection,
    dialect: Dialect,
    id: Uuid,
) -> Result<Order, HandleError> {
    store::lock_order(tx, dialect, id)
        .await?
        .ok_or_else(|| HandleError::NotReady(format!("unknown order {id}")))
}

fn changed_under_lock(order: &Order) -> HandleError {
    anyhow::anyhow!("order {} changed under its lock", order.id).into()
}

/// Cancels a locked live order (`status` is the transition's, cancelled) and announces it.
async fn cancel(
    tx: &mut AnyConnection,
    order: &Order,
    status: OrderStatus,
) -> Result<Order, HandleError> {
    let cancelled = finish(tx, order, status).await?;
    outbox::enqueue(tx, cancelled.cancelled_event()).await?;
    Ok(cancelled)
}

/// Moves a locked live order to its final status.
async fn finish(
    tx: &mut AnyConnection,
    order: &Order,
    status: OrderStatus,
) -> Result<Order, HandleError> {
    store::finish_order(tx, order.id, status, clock::now())
        .await?
        .ok_or_else(|| changed_under_lock(order))
}
