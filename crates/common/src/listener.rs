//! Consuming events: one loop per (group, event type) that decodes each delivery, applies it in
//! one transaction with its inbox record, and acks only after that transaction committed.
//!
//! So a redelivered event is recognised by the inbox and applied once; an event that arrives
//! before what it depends on (`HandleError::NotReady`) is asked for again later; a malformed
//! event goes straight to the dead letters; and anything still failing after the maximum number
//! of deliveries ends in the dead letters too, counted in the metrics, never dropped in silence.
//!
//! Each delivery is handled in a span that continues the trace carried in its headers, so the
//! handler's work, and the events it writes, belong to the request that caused them.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::AnyConnection;
use tracing::Instrument;

use crate::bus::{ConsumerConfig, Delivery};
use crate::events::{Envelope, EventData};
use crate::service::ServiceContext;
use crate::store::{is_unavailable, now_millis};
use crate::telemetry;

/// Applies one type of event inside the transaction the listener opened.
#[async_trait]
pub trait Handler<E: EventData>: Send + Sync + 'static {
    async fn handle(&self, tx: &mut AnyConnection, event: Envelope<E>) -> Result<(), HandleError>;
}

#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The event depends on one that has not arrived yet (an unknown ticket, a version gap).
    #[error("not ready: {0}")]
    NotReady(String),
    #[error(transparent)]
    Store(#[from] sqlx::Error),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// How listeners consume: shared by every listener of a service.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    pub ack_wait: Duration,
    pub max_deliver: u32,
    /// The delay before the first retry; doubled on each further one, up to `max_retry_delay`.
    pub retry_delay: Duration,
    pub max_retry_delay: Duration,
    /// Concurrent consumers per event type in this process (members of one group).
    pub workers: usize,
    /// Fault injection for redelivery tests: the consumer of this durable name (for example
    /// `tickets_order_created`) aborts the process right after committing an effect and before
    /// acknowledging it, as a crash at the worst moment would.
    pub crash_before_ack: Option<String>,
}

impl Default for ListenerSettings {
    fn default() -> Self {
        Self {
            ack_wait: Duration::from_secs(30),
            max_deliver: 10,
            retry_delay: Duration::from_millis(200),
            max_retry_delay: Duration::from_secs(10),
            workers: 2,
            crash_before_ack: None,
        }
    }
}

impl ListenerSettings {
    fn retry_after(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(16);
        (self.retry_delay * 2u32.pow(doublings)).min(self.max_retry_delay)
    }
}

/// Starts the consumers of one event type for a service. They stop when the context shuts down,
/// after finishing (and acking) the delivery in hand.
pub fn spawn<E: EventData, H: Handler<E>>(ctx: &ServiceContext, handler: H) {
    let handler = std::sync::Arc::new(handler);
    let settings = ctx.listeners.clone();
    let config = ConsumerConfig {
        group: ctx.name.to_owned(),
        event_type: E::TYPE,
        ack_wait: settings.ack_wait,
        max_deliver: settings.max_deliver,
    };
    for _ in 0..settings.workers.max(1) {
        let ctx = ctx.clone();
        let handler = handler.clone();
        let config = config.clone();
        ctx.tasks.clone().spawn(async move {
            consume(ctx, config, handler).await;
        });
    }
}

async fn consume<E: EventData, H: Handler<E>>(
    ctx: ServiceContext,
    config: ConsumerConfig,
    handler: std::sync::Arc<H>,
) {
    let mut subscription = loop {
        match ctx.bus.subscribe(&config).await {
            Ok(subscription) => break subscription,
            Err(err) => {
                tracing::warn!(consumer = %config.durable_name(), error = %err, "cannot subscribe, retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = ctx.shutdown.cancelled() => return,
                }
            }
        }
    };
    loop {
        let delivery = tokio::select! {
            next = subscription.next() => next,
            () = ctx.shutdown.cancelled() => return,
        };
        match delivery {
            Ok(delivery) => process(&ctx, &config, handler.as_ref(), delivery).await,
            Err(err) => {
                tracing::warn!(consumer = %config.durable_name(), error = %err, "bus delivery failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Handles one delivery in a span of the trace the event was published in, or of a new trace
/// when it came without one.
async fn process<E: EventData, H: Handler<E>>(
    ctx: &ServiceContext,
    config: &ConsumerConfig,
    handler: &H,
    delivery: Delivery,
) {
    let span = tracing::info_span!(
        parent: None,
        "event",
        consumer = %config.durable_name(),
        id = %delivery.message_id,
        attempt = delivery.attempt,
    );
    telemetry::continue_trace(&span, &delivery.headers);
    handle_delivery(ctx, config, handler, delivery)
        .instrument(span)
        .await
}

async fn handle_delivery<E: EventData, H: Handler<E>>(
    ctx: &ServiceContext,
    config: &ConsumerConfig,
    handler: &H,
    delivery: Delivery,
) {
    let labels = [("service", ctx.name), ("type", E::TYPE.as_str())];
    if delivery.attempt > 1 {
        metrics::counter!("stubs_events_redelivered_total", &labels).increment(1);
    }
    let envelope = match Envelope::<E>::decode(&delivery.payload) {
        Ok(envelope) => envelope,
        Err(err) => {
            tracing::error!(error = %err, "malformed event, moved to dead letters");
            if let Err(err) = delivery.reject(&err.to_string()).await {
                tracing::warn!(error = %err, "cannot dead-letter a malformed event");
            }
            return;
        }
    };
    match apply(ctx, config, handler, envelope).await {
        Ok(()) => {
            // Only a process started with the fault point pays for building the name.
            if let Some(consumer) = &ctx.listeners.crash_before_ack
                && *consumer == config.durable_name()
            {
                tracing::error!("crashing after the effect and before the ack, as configured");
                std::process::abort();
            }
            metrics::counter!("stubs_events_consumed_total", &labels).increment(1);
            if let Err(err) = delivery.ack().await {
                // The effect is committed; the redelivery will find it in the inbox.
                tracing::warn!(error = %err, "ack failed");
            }
        }
        Err(err) => {
            let delay = ctx.listeners.retry_after(delivery.attempt);
            match &err {
                HandleError::NotReady(_) => {
                    tracing::info!(error = %err, retry_in = ?delay, "event not ready")
                }
                HandleError::Store(db) if is_unavailable(db) => {
                    tracing::warn!(error = %err, retry_in = ?delay, "database unavailable")
                }
                _ => tracing::error!(error = %err, retry_in = ?delay, "event handler failed"),
            }
            metrics::counter!("stubs_events_failed_total", &labels).increment(1);
            if let Err(err) = delivery.nak(delay).await {
                tracing::warn!(error = %err, "nak failed; the ack wait will bring it back");
            }
        }
    }
}

async fn apply<E: EventData, H: Handler<E>>(
    ctx: &ServiceContext,
    config: &ConsumerConfig,
    handler: &H,
    envelope: Envelope<E>,
) -> Result<(), HandleError> {
    let mut tx = ctx.store.begin().await?;
    let first_time = sqlx::query(
        "INSERT INTO inbox (consumer, event_id, handled_at) VALUES ($1, $2, $3) \
         ON CONFLICT (consumer, event_id) DO NOTHING",
    )
    .bind(config.durable_name())
    .bind(envelope.id.to_string())
    .bind(now_millis())
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if first_time {
        handler.handle(&mut tx, envelope).await?;
    } else {
        tracing::debug!("already handled");
    }
    ctx.outbox.commit(tx).await?;
    Ok(())
}
