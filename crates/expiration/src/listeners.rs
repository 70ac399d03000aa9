//! What the expiration service does when orders change: an order:created schedules a job at the
//! order's expiresAt; an order:cancelled or order:completed removes it, since the window it
//! watches is over.
//!
//! The events travel on different consumers and may arrive in either order, more than once, and
//! late. So the end of an order is remembered (a tombstone in `finished_orders`), and an
//! order:created for an order that is already over schedules nothing. The scheduler records a
//! tombstone too when a job fires, so a late copy of the order:created cannot bring it back.

use std::sync::Arc;

use async_trait::async_trait;
use common::clock::millis;
use common::events::{Envelope, OrderCancelled, OrderCompleted, OrderCreated};
use common::listener::{HandleError, Handler};
use common::store::Dialect;
use sqlx::AnyConnection;
use uuid::Uuid;

use crate::scheduler::Wakeup;
use crate::store::{self, Finish};

/// Schedules an order's expiry at its expiresAt.
#[derive(Debug, Clone)]
pub(crate) struct ScheduleExpiration {
    pub dialect: Dialect,
    pub wakeup: Arc<Wakeup>,
}

#[async_trait]
impl Handler<OrderCreated> for ScheduleExpiration {
    fn lock_key(&self, event: &OrderCreated) -> Option<Uuid> {
        Some(event.id)
    }

    async fn handle(
        &self,
        tx: &mut AnyConnection,
        event: Envelope<OrderCreated>,
    ) -> Result<(), HandleError> {
        let order = event.data;
        // Taken before anything else and held to the commit: the scheduler, once woken below,
        // waits for this transaction to end before it looks for the new job.
        store::hold_scheduling_lock(tx, self.dialect).await?;
        if store::is_finished(tx, order.id).await? {
            tracing::info!(order = %order.id, "order already over, not scheduling its expiry");
            return Ok(());
        }
        let due_at = millis(order.expires_at);
        if store::insert_job(tx, order.id, due_at).await? {
            self.wakeup.job_scheduled(due_at);
            tracing::info!(order = %order.id, expires_at = %order.expires_at, "expiry scheduled");
        } else {
            // The same order announced again (a republished event): scheduled already.
            tracing::debug!(order = %order.id, "expiry already scheduled");
        }
        Ok(())
    }
}

/// Drops an order's job when the order is cancelled or paid: there is nothing left to expire.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ForgetExpiration;

impl ForgetExpiration {
    async fn forget(
        tx: &mut AnyConnection,
        order_id: Uuid,
        reason: Finish,
    ) -> Result<(), HandleError> {
        // The tombstone first, kept even when there is no job yet: the order:created may come
        // after this.
        store::record_finished(tx, order_id, reason).await?;
        let had_job = store::delete_job(tx, order_id).await?;
        tracing::info!(order = %order_id, ?reason, had_job, "expiry no longer needed");
        Ok(())
    }
}

#[async_trait]
impl Handler<OrderCancelled> for ForgetExpiration {
    fn lock_key(&self, event: &OrderCancelled) -> Option<Uuid> {
        Some(event.id)
    }

    async fn handle(
        &self,
        tx: &mut AnyConnection,
        event: Envelope<OrderCancelled>,
    ) -> Result<(), HandleError> {
        Self::forget(tx, event.data.id, Finish::Cancelled).await
    }
}

#[async_trait]
impl Handler<OrderCompleted> for ForgetExpiration {
    fn lock_key(&self, event: &OrderCompleted) -> Option<Uuid> {
        Some(event.id)
    }

    async fn handle(
        &self,
        tx: &mut AnyConnection,
        event: Envelope<OrderCompleted>,
    ) -> Result<(), HandleError> {
        Self::forget(tx, event.data.id, Finish::Completed).await
    }
}
