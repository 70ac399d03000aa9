//! The payments service's replica of orders: order:created adds an order, order:cancelled and
//! order:completed move it on, in version order. A change with version N applies only when the
//! replica holds N-1; one already applied (N or older) is acknowledged and dropped; one that
//! arrives early (an unknown order, or a version gap) is not acknowledged and comes back later.
//!
//! A cancellation also marks the order's succeeded payment as owing a refund, in the same
//! transaction, under the order's lock: a charge that settled just before the cancellation
//! arrived is refunded by the refunder (see [`crate::refunds`]), which calls the processor
//! outside any transaction and retries until the refund goes through.

use async_trait::async_trait;
use common::events::{Envelope, OrderCancelled, OrderCompleted, OrderCreated, OrderStatus};
use common::listener::{HandleError, Handler};
use common::store::{Dialect, now_millis};
use sqlx::AnyConnection;
use uuid::Uuid;

use crate::domain::{Order, VersionStep, version_step};
use crate::store;

/// Adds a newly placed order to the replica.
#[derive(Debug, Clone, Copy)]
pub struct RecordOrder;

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

/// Cancels an order of the replica; its succeeded payment, if any, now owes a refund.
#[derive(Debug, Clone, Copy)]
pub struct CancelOrder {
    pub dialect: Dialect,
}

#[async_trait]
impl Handler<OrderCancelled> for CancelOrder {
    fn lock_key(&self, event: &OrderCancelled) -> Option<Uuid> {
        Some(event.id)
    }

    async fn handle(
        &self,
        tx: &mut AnyConnection,
        event: Envelope<OrderCancelled>,
    ) -> Result<(), HandleError> {
        let order = &event.data;
        if move_order(
            tx,
            self.dialect,
            order.id,
            OrderStatus::Cancelled,
            order.version,
        )
        .await?
            && store::mark_refund_due(tx, order.id, now_millis()).await?
        {
            tracing::warn!(order = %order.id, "paid order cancelled; its payment will be refunded");
        }
        Ok(())
    }
}

/// Marks an order of the replica complete (paid), as the orders service announced.
#[derive(Debug, Clone, Copy)]
pub struct CompleteOrder {
    pub dialect: Dialect,
}

#[async_trait]
impl Handler<OrderCompleted> for CompleteOrder {
    fn lock_key(&self, event: &OrderCompleted) -> Option<Uuid> {
        Some(event.id)
    }

    async fn handle(
        &self,
        tx: &mut AnyConnection,
        event: Envelope<OrderCompleted>,
    ) -> Result<(), HandleError> {
        let order = &event.data;
        move_order(
            tx,
            self.dialect,
            order.id,
            OrderStatus::Complete,
            order.version,
        )
        .await?;
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
    match version_step(order.version, version) {
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
