//! The payments service's replica of orders: order:created adds an order, order:updated,
//! order:cancelled and order:completed move it on, in version order. order:updated also carries
//! orders' grant of the order to one claim, which may then be charged; a cancellation or a
//! completion withdraws any claim still waiting for a grant that will not come. A change with version N applies only when the
//! replica holds N-1; one already applied (N or older) is acknowledged and dropped; one that
//! arrives early (an unknown order, or a version gap) is not acknowledged and comes back later.
//!
//! A cancellation also marks the order's succeeded payment as owing a refund, in the same
//! transaction, under the order's lock: a charge that settled just before the cancellation
//! arrived is refunded by the refunder (see [`crate::refunds`]), which calls the processor
//! outside any transaction and retries until the refund goes through.

use async_trait::async_trait;
use common::clock::now_millis;
use common::events::{
    Envelope, OrderCancelled, OrderCompleted, OrderCreated, OrderStatus, OrderUpdated,
    PaymentFailed, VersionStep, version_step,
};
use common::listener::{HandleError, Handler};
use common::outbox;
use common::store::Dialect;
use sqlx::AnyConnection;
use uuid::Uuid;

use crate::domain::Order;
use crate::store;

/// Adds a newly placed order to the replica.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordOrder;

#[async_trait]
impl Handler<OrderCreated> for RecordOrder {
    // A buyer may be waiting to pay for the order.
    fn arrival(&self, event: &OrderCreated) -> Option<Uuid> {
        Some(event.id)
    }

    fn lock_key(&self, event: &OrderCreated) -> Option<Uuid> {
        Some(event.id)
    }

    async fn handle(
        &self,
        tx: &mut AnyConnection,
        event: Envelope<OrderCreated>,
    ) -> Result<(), HandleError> {
        let order = Order::from_created(&event.data);
        if store::insert_order(tx, &order).await? {
            tracing::info!(order = %order.id, version = order.version, "order recorded");
        } else {
            tracing::debug!(order = %order.id, "order already recorded");
        }
        Ok(())
    }
}

/// Moves an order of the replica into or out of `awaiting:payment`; a grant lets its claim be
/// charged.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UpdateOrder {
    pub dialect: Dialect,
}

#[async_trait]
impl Handler<OrderUpdated> for UpdateOrder {
    // A buyer's request waits for this grant.
    fn arrival(&self, event: &OrderUpdated) -> Option<Uuid> {
        Some(event.id)
    }

    fn lock_key(&self, event: &OrderUpdated) -> Option<Uuid> {
        Some(event.id)
    }

    async fn handle(
        &self,
        tx: &mut AnyConnection,
        event: Envelope<OrderUpdated>,
    ) -> Result<(), HandleError> {
        let order = &event.data;
        if !move_order(tx, self.dialect, order.id, order.status, order.version).await? {
            return Ok(());
        }
        let (OrderStatus::AwaitingPayment, Some(payment_id)) = (order.status, order.payment_id)
        else {
            return Ok(());
        };
        if !store::grant_claim(tx, payment_id, now_millis()).await? {
            // The claim gave up waiting before the grant came: orders must take it back, or
            // the order would wait for a payment that never comes.
            tracing::info!(order = %order.id, payment = %payment_id, "grant for a claim that is gone; handing it back");
            outbox::enqueue(
                tx,
                PaymentFailed {
                    id: payment_id,
                    order_id: order.id,
                },
            )
            .await?;
        }
        Ok(())
    }
}

/// Cancels an order of the replica; its succeeded payment, if any, now owes a refund.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CancelOrder {
    pub dialect: Dialect,
}

#[async_trait]
impl Handler<OrderCancelled> for CancelOrder {
    // A buyer's request may be waiting for a grant this makes impossible.
    fn arrival(&self, event: &OrderCancelled) -> Option<Uuid> {
        Some(event.id)
    }

    fn lock_key(&self, event: &OrderCancelled) -> Option<Uuid> {
        Some(event.id)
    }

    async fn handle(
        &self,
        tx: &mut AnyConnection,
        event: Envelope<OrderCancelled>,
    ) -> Result<(), HandleError> {
        let order = &event.data;
        if !move_order(
            tx,
            self.dialect,
            order.id,
            OrderStatus::Cancelled,
            order.version,
        )
        .await?
        {
            return Ok(());
        }
        store::withdraw_claims_of(tx, order.id).await?;
        // Orders cancels no order granted to a payment; a charge kept for a cancelled order all
        // the same (an event from before grants, an operator's doing) is given back.
        if store::mark_refund_due(tx, order.id, now_millis()).await? {
            tracing::warn!(order = %order.id, "paid order cancelled; its payment will be refunded");
        }
        Ok(())
    }
}

/// Marks an order of the replica complete (paid), as the orders service announced.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CompleteOrder {
    pub dialect: Dialect,
}

#[async_trait]
impl Handler<OrderCompleted> for CompleteOrder {
    // A buyer's request may be waiting for a grant this makes impossible.
    fn arrival(&self, event: &OrderCompleted) -> Option<Uuid> {
        Some(event.id)
    }

    fn lock_key(&self, event: &OrderCompleted) -> Option<Uuid> {
        Some(event.id)
    }

    async fn handle(
        &self,
        tx: &mut AnyConnection,
        event: Envelope<OrderCompleted>,
    ) -> Result<(), HandleError> {
        let order = &event.data;
        if move_order(
            tx,
            self.dialect,
            order.id,
            OrderStatus::Complete,
            order.version,
        )
        .await?
        {
            store::withdraw_claims_of(tx, order.id).await?;
        }
        Ok(())
    }
}

/// Applies a status change at `version` under the order's lock. Returns whether it was applied.
async fn move_order(
    tx: &mut AnyConnection,
    dialect: Dialect,
    id: Uuid,
    status: OrderStatus,
    version: i64,
) -> Result<bool, HandleError> {
    let Some(order) = store::lock_order(tx, dialect, id).await? else {
        // Retried, then dead-lettered after the maximum deliveries: never lost in silence.
        return Err(HandleError::NotReady(format!(
            "order {id} is not in the replica yet"
        )));
    };
    match version_step(Some(order.version), version) {
        VersionStep::Apply => {
            store::set_order_status(tx, id, status, version).await?;
            tracing::info!(order = %id, version, status = status.as_str(), "order updated");
            Ok(true)
        }
        VersionStep::Stale => {
            tracing::debug!(order = %id, held = order.version, version, "old order version, dropped");
            Ok(false)
        }
        VersionStep::Early => Err(HandleError::NotReady(format!(
            "order {id} is at version {}, {version} is early",
            order.version
        ))),
    }
}
