//! What the tickets service does when orders change: an order:created reserves its ticket and an
//! order:cancelled releases it, each announced with a ticket:updated written to the outbox in the
//! listener's transaction.
//!
//! The two events travel on different consumers and may arrive in either order, more than once,
//! and late. So: a cancellation is remembered (a tombstone) even when it changes nothing, and an
//! order:created for a cancelled order reserves nothing; a cancellation releases a ticket only if
//! that very order holds it; a reservation already in place is not applied again. Both handlers
//! lock the ticket row first, so on PostgreSQL a reservation and a cancellation of one ticket
//! take turns and neither decides on a view the other is about to change.
//!
//! An order:completed hands the ticket its order holds to the buyer, announced with a
//! ticket:updated (the new owner, the next version) in the same way. A user:created is kept, so
//! that a ticket can be sent to the account by e-mail.
//!
//! A seller's edit can cross an order: accepted here before the order:created arrives. The
//! reservation then puts back the title and price the buyer ordered at, so the ticket shows what
//! the buyer pays, and goes back on sale at that price if the order lapses.

use async_trait::async_trait;
use common::clock;
use common::events::{Envelope, OrderCancelled, OrderCompleted, OrderCreated, UserCreated};
use common::listener::{HandleError, Handler};
use common::outbox;
use common::store::Dialect;
use sqlx::AnyConnection;
use uuid::Uuid;

use crate::sales::SellerFee;
use crate::store;
use crate::wallet::HistoryEntry;

/// Reserves a ticket for the order that was placed on it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReserveTicket {
    pub dialect: Dialect,
}

#[async_trait]
impl Handler<OrderCreated> for ReserveTicket {
    fn lock_key(&self, event: &OrderCreated) -> Option<Uuid> {
        Some(event.ticket.id)
    }

    async fn handle(
        &self,
        tx: &mut AnyConnection,
        event: Envelope<OrderCreated>,
    ) -> Result<(), HandleError> {
        let order = event.data;
        let ticket_id = order.ticket.id;
        let Some((ticket, order_cancelled)) =
            store::lock_for_order(tx, self.dialect, ticket_id, order.id).await?
        else {
            // Retried, then dead-lettered after the maximum deliveries: never lost in silence.
            return Err(HandleError::NotReady(format!(
                "order {} names unknown ticket {ticket_id}",
                order.id
            )));
        };
        if order_cancelled {
            tracing::info!(order = %order.id, ticket = %ticket_id, "order already cancelled, not reserving");
            return Ok(());
        }
        if order.listing < ticket.listing {
            // Placed on a listing since sold and listed again: settled long ago, and replayed
            // now (a consumer recreated, say). It must not take the new listing's ticket.
            tracing::info!(order = %order.id, ticket = %ticket_id, listing = order.listing, "order of an earlier listing, not reserving");
            return Ok(());
        }
        match ticket.order_id {
            Some(holder) if holder == order.id => {
                // The same order announced twice (a republished event): reserved already.
                tracing::debug!(order = %order.id, ticket = %ticket_id, "already reserved for this order");
                Ok(())
            }
            Some(holder) => Err(HandleError::NotReady(format!(
                "ticket {ticket_id} is held by order {holder}, whose cancellation has not arrived"
            ))),
            None => {
                let reserved = store::reserve(tx, order.id, &order.ticket)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("ticket {ticket_id} changed under its lock"))?;
                outbox::enqueue(tx, reserved.updated_event()).await?;
                if (reserved.price, &reserved.title) != (ticket.price, &ticket.title) {
                    tracing::info!(order = %order.id, ticket = %ticket_id, "an edit crossed the order; the ticket is held as its buyer saw it");
                }
                tracing::info!(order = %order.id, ticket = %ticket_id, version = reserved.version, "ticket reserved");
                Ok(())
            }
        }
    }
}

/// Puts a ticket back on sale when the order holding it is cancelled.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReleaseTicket {
    pub dialect: Dialect,
}

#[async_trait]
impl Handler<OrderCancelled> for ReleaseTicket {
    fn lock_key(&self, event: &OrderCancelled) -> Option<Uuid> {
        Some(event.ticket.id)
    }

    async fn handle(
        &self,
        tx: &mut AnyConnection,
        event: Envelope<OrderCancelled>,
    ) -> Result<(), HandleError> {
        let order = event.data;
        let ticket_id = order.ticket.id;
        // Taken for its lock only: whatever the ticket holds is decided by the conditional
        // release below.
        store::lock(tx, self.dialect, ticket_id).await?;
        store::record_cancelled_order(tx, order.id, ticket_id).await?;
        match store::release(tx, ticket_id, order.id).await? {
            Some(released) => {
                outbox::enqueue(tx, released.updated_event()).await?;
                tracing::info!(order = %order.id, ticket = %ticket_id, version = released.version, "ticket released");
            }
            None => {
                tracing::info!(order = %order.id, ticket = %ticket_id, "ticket not held by this order, nothing to release");
            }
        }
        Ok(())
    }
}

/// Makes a ticket its buyer's once their order is paid, and records what the sale owes its
/// seller.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HandOverTicket {
    pub dialect: Dialect,
    pub seller_fee: SellerFee,
}

#[async_trait]
impl Handler<OrderCompleted> for HandOverTicket {
    fn lock_key(&self, event: &OrderCompleted) -> Option<Uuid> {
        Some(event.ticket.id)
    }

    async fn handle(
        &self,
        tx: &mut AnyConnection,
        event: Envelope<OrderCompleted>,
    ) -> Result<(), HandleError> {
        let paid_at = event.occurred_at;
        let order = event.data;
        let ticket_id = order.ticket.id;
        let Some(buyer) = order.user_id else {
            tracing::info!(order = %order.id, ticket = %ticket_id, "order paid before tickets changed hands; the ticket stays with its seller, sold");
            return Ok(());
        };
        let Some(ticket) = store::lock(tx, self.dialect, ticket_id).await? else {
            return Err(HandleError::NotReady(format!(
                "paid order {} names unknown ticket {ticket_id}",
                order.id
            )));
        };
        if store::sold_through(tx, ticket_id, order.id).await? {
            tracing::debug!(order = %order.id, ticket = %ticket_id, "already handed over");
            return Ok(());
        }
        if ticket.order_id != Some(order.id) {
            // A paid order was placed and never cancelled, so its reservation is on its way.
            return Err(HandleError::NotReady(format!(
                "ticket {ticket_id} is not yet held by paid order {}",
                order.id
            )));
        }
        let sold = store::hand_over(tx, ticket_id, order.id, buyer, clock::millis(paid_at))
            .await?
            .ok_or_else(|| anyhow::anyhow!("ticket {ticket_id} changed under its lock"))?;
        store::record_handover(tx, &HistoryEntry::sold(&ticket, order.id, buyer, paid_at)).await?;
        store::record_payout(
            tx,
            &ticket,
            order.id,
            self.seller_fee.on(ticket.price),
            paid_at,
        )
        .await?;
        outbox::enqueue(tx, sold.updated_event()).await?;
        tracing::info!(order = %order.id, ticket = %ticket_id, version = sold.version, "ticket handed to its buyer");
        Ok(())
    }
}

/// Keeps the accounts auth announces, to find one by e-mail.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RememberUser;

#[async_trait]
impl Handler<UserCreated> for RememberUser {
    async fn handle(
        &self,
        tx: &mut AnyConnection,
        event: Envelope<UserCreated>,
    ) -> Result<(), HandleError> {
        store::remember_user(tx, event.data.id, &event.data.email).await?;
        Ok(())
    }
}
