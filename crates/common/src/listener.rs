//! Consuming events: one loop per (group, event type) that takes the deliveries ready at once (a
//! batch), applies them in one transaction with an inbox record each, and acknowledges the batch
//! together only after that transaction committed.
//!
//! So a redelivered event is recognised by the inbox and applied once; an event that arrives
//! before what it depends on (`HandleError::NotReady`) is asked for again later; a malformed
//! event goes straight to the dead letters; and anything still failing after the maximum number
//! of deliveries ends in the dead letters too, counted in the metrics, never dropped in silence.
//!
//! When one event's handler fails, the transaction is rolled back and the batch applied again
//! without it (and without the later events of its row, which wait with it), so an event that
//! cannot be applied yet holds up none of the others: they are acknowledged, and it alone is asked
//! for again. A failure that is no one event's (the commit) has the events applied one
//! transaction each; a database that is away has the whole batch asked for again later.
//!
//! Within a batch, events are applied in the order of the row each one locks
//! ([`Handler::lock_key`]), keeping the bus's order among events of one ticket or order; so two
//! batches applied side by side on PostgreSQL take their row locks in the same order and do not
//! deadlock each other. Across the batches of two members of a group there is no order: versions
//! and the handlers' state checks already make events of one row apply in turn.
//!
//! Each event is handled in a span that continues the trace carried in its headers, so the
//! handler's work, and the events it writes, belong to the request that caused them.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::AnyConnection;
use tracing::Instrument;
use uuid::Uuid;

use crate::arrivals::Arrivals;
use crate::bus::{Batch, ConsumerConfig, Delivery};
use crate::clock::now_millis;
use crate::events::{Envelope, EventData};
use crate::service::ServiceContext;
use crate::store::{Dialect, Params, is_unavailable};
use crate::telemetry;

/// Applies one type of event inside the transaction the listener opened.
#[async_trait]
pub trait Handler<E: EventData>: Send + Sync + 'static {
    /// The id of the row this handler locks for the event (a ticket, an order). A batch is
    /// applied in the order of these keys; `None` keeps the order the bus delivered in.
    fn lock_key(&self, _event: &E) -> Option<Uuid> {
        None
    }

    /// The id of what the event brings that requests may be waiting for (a ticket or an order
    /// heard of for the first time): announced to them once the event's batch has committed
    /// ([`Arrivals`]).
    fn arrival(&self, _event: &E) -> Option<Uuid> {
        None
    }

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
    /// Concurrent consumers per event type in this process (members of one group). With two,
    /// one applies its batch while the other waits for the database, which doubled the
    /// throughput on PostgreSQL, where a batch waits on a round trip per statement.
    pub workers: usize,
    /// The most deliveries a consumer takes and applies in one transaction.
    pub batch_size: usize,
    /// How long the inbox (and any tombstones) remember an event: at least
    /// [`ListenerSettings::redelivery_span`].
    pub retention: Duration,
    /// A fault an operator (or a fault test) can set to rehearse recovery: the consumer of this
    /// durable name (for example `tickets_order_created`) aborts the process right after
    /// committing an effect and before acknowledging it, as a crash at the worst moment would.
    /// Unset, it costs one comparison per batch.
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
            batch_size: 256,
            retention: Duration::from_secs(15 * 60),
            crash_before_ack: None,
        }
    }
}

impl ListenerSettings {
    /// The longest an event can keep coming back after its first delivery: every delivery up to
    /// the maximum left unacknowledged for the whole ack wait, then retried after the longest
    /// delay.
    pub fn redelivery_span(&self) -> Duration {
        (self.ack_wait + self.max_retry_delay) * self.max_deliver
    }

    /// Refuses a retention shorter than the redelivery span: the inbox would forget an event
    /// that can still arrive again.
    pub fn validate(&self) -> Result<(), String> {
        let span = self.redelivery_span();
        if self.retention < span {
            return Err(format!(
                "the inbox retention ({}) must be at least {} ({} deliveries of up to the ack wait \
                 ({}) plus a retry delay of up to {})",
                humantime::format_duration(self.retention),
                humantime::format_duration(span),
                self.max_deliver,
                humantime::format_duration(self.ack_wait),
                humantime::format_duration(self.max_retry_delay),
            ));
        }
        Ok(())
    }

    fn retry_after(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(16);
        (self.retry_delay * 2u32.pow(doublings)).min(self.max_retry_delay)
    }
}

/// Starts the consumers of one event type for a service. They stop when the context shuts down,
/// after finishing (and acking) the delivery in hand.
pub fn spawn<E: EventData, H: Handler<E>>(ctx: &ServiceContext, handler: H) {
    let handler = Arc::new(handler);
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
    handler: Arc<H>,
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
    let batch_size = ctx.listeners.batch_size.max(1);
    loop {
        let batch = tokio::select! {
            next = subscription.next_batch(batch_size) => next,
            () = ctx.shutdown.cancelled() => return,
        };
        match batch {
            Ok(batch) => process(&ctx, &config, handler.as_ref(), batch).await,
            Err(err) => {
                tracing::warn!(consumer = %config.durable_name(), error = %err, "bus delivery failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// An event of the batch, read from its delivery, with its place in the batch and the span it
/// is handled in: one of the trace the event was published in, or of a new trace when it came
/// without one.
struct Decoded<E> {
    position: usize,
    envelope: Envelope<E>,
    span: tracing::Span,
}

/// Applies a batch and settles each delivery: the applied ones acknowledged together, each
/// malformed one dead-lettered, each failed one asked for again after its delay.
async fn process<E: EventData, H: Handler<E>>(
    ctx: &ServiceContext,
    config: &ConsumerConfig,
    handler: &H,
    batch: Batch,
) {
    let labels = [("service", ctx.name), ("type", E::TYPE.as_str())];
    metrics::counter!("stubs_event_batches_total", &labels).increment(1);
    let mut events = Vec::with_capacity(batch.len());
    for (position, delivery) in batch.deliveries.iter().enumerate() {
        let span = tracing::info_span!(
            parent: None,
            "event",
            consumer = %config.durable_name(),
            id = %delivery.message_id,
            attempt = delivery.attempt,
        );
        telemetry::continue_trace(&span, &delivery.headers);
        if delivery.attempt > 1 {
            metrics::counter!("stubs_events_redelivered_total", &labels).increment(1);
        }
        match Envelope::<E>::decode(&delivery.payload) {
            Ok(envelope) => events.push(Decoded {
                position,
                envelope,
                span,
            }),
            Err(err) => {
                span.in_scope(
                    || tracing::error!(error = %err, "malformed event, moved to dead letters"),
                );
                if let Err(err) = delivery.reject(&err.to_string()).await {
                    tracing::warn!(error = %err, "cannot dead-letter a malformed event");
                }
            }
        }
    }
    // Stable: events with one key keep the order they came in.
    events.sort_by_key(|event| handler.lock_key(&event.envelope.data));

    let mut pending: Vec<&Decoded<E>> = events.iter().collect();
    let mut applied = Vec::with_capacity(events.len());
    let mut failed = Vec::new();
    while !pending.is_empty() {
        match apply(ctx, config, handler, &pending).await {
            Ok(()) => {
                applied.extend(pending.iter().map(|event| event.position));
                break;
            }
            // Tried again one by one, each would only wait for the database in turn: all of
            // them come back later.
            Err(Failure {
                error: HandleError::Store(err),
                ..
            }) if is_unavailable(&err) => {
                tracing::warn!(consumer = %config.durable_name(), error = %err, size = pending.len(), "database unavailable, the batch will come again");
                metrics::counter!("stubs_events_failed_total", &labels)
                    .increment(pending.len() as u64);
                for event in &pending {
                    retry_later(ctx, &batch.deliveries[event.position]).await;
                }
                break;
            }
            // One event failed: it, and the later events of its row, wait; the others are
            // applied together again.
            Err(Failure {
                event: Some(at),
                error,
            }) => {
                metrics::counter!("stubs_event_batch_fallbacks_total", &labels).increment(1);
                let key = handler.lock_key(&pending[at].envelope.data);
                let failing = pending.remove(at);
                let (held_back, rest): (Vec<_>, Vec<_>) =
                    pending.into_iter().enumerate().partition(|(i, event)| {
                        *i >= at && key.is_some() && handler.lock_key(&event.envelope.data) == key
                    });
                pending = rest.into_iter().map(|(_, event)| event).collect();
                // Given back first, so that it is due again no later than those behind it.
                give_back(ctx, &batch, failing, &error, &labels).await;
                for (_, event) in held_back {
                    let delivery = &batch.deliveries[event.position];
                    event.span.in_scope(|| {
                        tracing::debug!("held back behind an earlier event of its row")
                    });
                    retry_later(ctx, delivery).await;
                }
            }
            // Not one event's doing (the inbox, the commit): each is tried on its own.
            Err(Failure { event: None, error }) => {
                tracing::debug!(error = %error, size = pending.len(), "batch failed, applying its events one at a time");
                metrics::counter!("stubs_event_batch_fallbacks_total", &labels).increment(1);
                for event in pending {
                    match apply(ctx, config, handler, &[event]).await {
                        Ok(()) => applied.push(event.position),
                        Err(failure) => failed.push((event, failure.error)),
                    }
                }
                break;
            }
        }
    }

    if !applied.is_empty() {
        // Only a process started with the fault point pays for building the name.
        if let Some(consumer) = &ctx.listeners.crash_before_ack
            && *consumer == config.durable_name()
        {
            tracing::error!("crashing after the effect and before the ack, as configured");
            std::process::abort();
        }
        metrics::counter!("stubs_events_consumed_total", &labels).increment(applied.len() as u64);
        if let Err(err) = batch.ack(&applied).await {
            // The effects are committed; the redeliveries will find them in the inbox.
            tracing::warn!(consumer = %config.durable_name(), error = %err, "ack failed");
        }
    }
    for (event, err) in failed {
        give_back(ctx, &batch, event, &err, &labels).await;
    }
}

/// Asks for an event that failed again after its retry delay, saying why it failed.
async fn give_back<E>(
    ctx: &ServiceContext,
    batch: &Batch,
    event: &Decoded<E>,
    err: &HandleError,
    labels: &[(&'static str, &'static str); 2],
) {
    let delay = retry_later(ctx, &batch.deliveries[event.position]).await;
    event.span.in_scope(|| match err {
        HandleError::NotReady(_) => {
            tracing::info!(error = %err, retry_in = ?delay, "event not ready")
        }
        HandleError::Store(db) if is_unavailable(db) => {
            tracing::warn!(error = %err, retry_in = ?delay, "database unavailable")
        }
        _ => tracing::error!(error = %err, retry_in = ?delay, "event handler failed"),
    });
    metrics::counter!("stubs_events_failed_total", labels).increment(1);
}

/// Asks for a delivery again after its retry delay, which it returns.
async fn retry_later(ctx: &ServiceContext, delivery: &Delivery) -> Duration {
    let delay = ctx.listeners.retry_after(delivery.attempt);
    if let Err(err) = delivery.nak(delay).await {
        tracing::warn!(error = %err, "nak failed; the ack wait will bring it back");
    }
    delay
}

/// Why a transaction of events did not commit, and the event whose handler failed if one did.
struct Failure {
    /// Its index among the events given to [`apply`].
    event: Option<usize>,
    error: HandleError,
}

impl Failure {
    fn of_batch(error: impl Into<HandleError>) -> Self {
        Self {
            event: None,
            error: error.into(),
        }
    }
}

/// Applies events in one transaction, each with its inbox record; an event already in the inbox
/// is skipped. Nothing is applied unless all of them are.
async fn apply<E: EventData, H: Handler<E>>(
    ctx: &ServiceContext,
    config: &ConsumerConfig,
    handler: &H,
    events: &[&Decoded<E>],
) -> Result<(), Failure> {
    let mut tx = ctx.store.begin().await.map_err(Failure::of_batch)?;
    let mut first_time =
        record_in_inbox(&mut tx, ctx.store.dialect(), &config.durable_name(), events)
            .await
            .map_err(Failure::of_batch)?;
    let mut arrivals = Vec::new();
    for (index, event) in events.iter().enumerate() {
        // Taken out as it is applied, so a second copy of an event in one batch is skipped too.
        if first_time.remove(&event.envelope.id) {
            arrivals.extend(handler.arrival(&event.envelope.data));
            handler
                .handle(&mut tx, event.envelope.clone())
                .instrument(event.span.clone())
                .await
                .map_err(|error| Failure {
                    event: Some(index),
                    error,
                })?;
        } else {
            event.span.in_scope(|| tracing::debug!("already handled"));
        }
    }
    if !arrivals.is_empty() {
        Arrivals::announce_on_commit(&mut tx, ctx.store.dialect(), &arrivals)
            .await
            .map_err(Failure::of_batch)?;
    }
    ctx.outbox.commit(tx).await.map_err(Failure::of_batch)?;
    ctx.arrivals.announce(&arrivals);
    Ok(())
}

/// Rows of the inbox written per statement: three parameters each, well under either dialect's
/// limit.
const INBOX_ROWS_PER_STATEMENT: usize = 300;

/// Records the events in the inbox, one statement for many, and returns the ids that were not
/// there yet: the events to apply.
async fn record_in_inbox<E: EventData>(
    tx: &mut AnyConnection,
    dialect: Dialect,
    consumer: &str,
    events: &[&Decoded<E>],
) -> Result<HashSet<Uuid>, sqlx::Error> {
    let handled_at = now_millis();
    let mut first_time = HashSet::with_capacity(events.len());
    for chunk in events.chunks(INBOX_ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO inbox (consumer, event_id, handled_at) VALUES {} \
             ON CONFLICT (consumer, event_id) DO NOTHING RETURNING event_id",
            Params::new(dialect).rows(chunk.len(), 3)
        );
        let mut insert =
            sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql)).persistent(false);
        for event in chunk {
            insert = insert
                .bind(consumer)
                .bind(event.envelope.id.to_string())
                .bind(handled_at);
        }
        for id in insert.fetch_all(&mut *tx).await? {
            // Only this code writes the inbox, always from an envelope's id.
            if let Ok(id) = Uuid::try_parse(&id) {
                first_time.insert(id);
            }
        }
    }
    Ok(first_time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redelivery_span_counts_every_delivery_with_its_ack_wait_and_longest_delay() {
        let settings = ListenerSettings::default();
        // 10 × (30 s + 10 s)
        assert_eq!(settings.redelivery_span(), Duration::from_secs(400));
        assert!(settings.validate().is_ok(), "the defaults fit together");
    }

    #[test]
    fn a_retention_shorter_than_the_redelivery_span_is_refused() {
        let settings = ListenerSettings {
            ack_wait: Duration::from_secs(120),
            ..Default::default()
        };
        let refusal = settings.validate().unwrap_err();
        assert!(refusal.contains("at least 21m 40s"), "{refusal}");
        let enough = ListenerSettings {
            retention: Duration::from_secs(1300),
            ..settings
        };
        assert!(enough.validate().is_ok());
    }

    #[test]
    fn retries_back_off_up_to_the_longest_delay() {
        let settings = ListenerSettings::default();
        assert_eq!(settings.retry_after(1), Duration::from_millis(200));
        assert_eq!(settings.retry_after(3), Duration::from_millis(800));
        assert_eq!(settings.retry_after(12), settings.max_retry_delay);
    }
}
