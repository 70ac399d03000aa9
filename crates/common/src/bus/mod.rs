//! The bus seam: publish an event, consume it through a durable consumer group.
//!
//! Two implementations share one contract, checked by one conformance suite:
//! [`embedded::EmbeddedBus`] (a log in SQLite, for `stubs up`) and [`nats::NatsBus`] (NATS
//! JetStream, for distributed mode). The contract:
//! - delivery is at least once to every durable group that listens to a type, and a group created
//!   late still sees what was published before it;
//! - members of one group share the work: each message goes to one of them at a time;
//! - a message not acknowledged within the ack wait is delivered again; a negative
//!   acknowledgement asks for it again after a delay;
//! - a second publish with the same message id is dropped;
//! - after `max_deliver` deliveries without an ack, the message moves to the dead letters instead
//!   of being delivered again;
//! - a message's headers (the trace context) are delivered with it, beside the payload, so the
//!   envelope stays `{id, type, occurredAt, data}`;
//! - a consumer may take up to K deliveries at once ([`Subscription::next_batch`]) and
//!   acknowledge them together ([`Batch::ack`]): one bus write or one round trip for the whole
//!   batch. Negative acknowledgements and rejections stay per delivery, so one message that fails
//!   neither holds up the others nor brings them back.

pub mod embedded;
pub mod nats;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::events::EventType;

/// How long a second publish of a message id is dropped as a copy, on either bus.
pub const DEDUPLICATION_WINDOW: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("bus storage: {0}")]
    Store(#[from] sqlx::Error),
    #[error("bus: {0}")]
    Nats(String),
    #[error("bus subscription ended")]
    Closed,
}

impl BusError {
    pub fn nats(err: impl std::fmt::Display) -> Self {
        Self::Nats(err.to_string())
    }
}

/// Name-value pairs that travel beside a message's payload, such as the W3C `traceparent`.
/// Kept in name order, so their stored JSON form is stable.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Headers(BTreeMap<String, String>);

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.insert(name.into(), value.into());
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// The form kept in a text column: a JSON object, or `None` when there is nothing to keep.
    pub fn to_json(&self) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        serde_json::to_string(&self.0).ok()
    }

    /// Reads what [`Headers::to_json`] wrote. Headers only carry context, never the event, so a
    /// column that does not read as an object of strings gives no headers rather than an error.
    pub fn from_json(text: Option<&str>) -> Self {
        text.and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default()
    }
}

impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        Self(
            iter.into_iter()
                .map(|(name, value)| (name.into(), value.into()))
                .collect(),
        )
    }
}

/// An event ready to publish: its id (for de-duplication), its type, its encoded envelope and
/// the headers that travel beside it.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: String,
    pub event_type: EventType,
    pub payload: Bytes,
    pub headers: Headers,
}

/// How a consumer group reads one type of event.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The group, named after the service that consumes (`tickets`, `orders`, ...).
    pub group: String,
    pub event_type: EventType,
    /// How long a delivery may stay unacknowledged before it is delivered again.
    pub ack_wait: Duration,
    /// Deliveries before a message moves to the dead letters.
    pub max_deliver: u32,
}

impl ConsumerConfig {
    pub fn new(group: &str, event_type: EventType) -> Self {
        Self {
            group: group.to_owned(),
            event_type,
            ack_wait: Duration::from_secs(30),
            max_deliver: 10,
        }
    }

    /// The durable name, unique per group and type: `tickets_order_created`.
    pub fn durable_name(&self) -> String {
        format!(
            "{}_{}",
            self.group,
            self.event_type.as_str().replace(':', "_")
        )
    }
}

/// A message that gave up: delivered `max_deliver` times without an ack, or rejected.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub message_id: String,
    pub event_type: EventType,
    pub payload: Bytes,
    pub deliveries: u32,
    pub reason: String,
}

/// What the bus does with a delivery once the consumer is done with it.
#[async_trait]
pub trait Acker: Send + Sync {
    /// Done: never deliver it again. Returns once the bus has recorded it.
    async fn ack(&self) -> Result<(), BusError>;
    /// Not now: deliver it again after `delay`.
    async fn nak(&self, delay: Duration) -> Result<(), BusError>;
    /// Never: move it to the dead letters with a reason.
    async fn reject(&self, reason: &str) -> Result<(), BusError>;
}

/// One delivery of a message to a consumer.
pub struct Delivery {
    pub message_id: String,
    pub event_type: EventType,
    pub payload: Bytes,
    /// What was published beside the payload; empty when nothing was.
    pub headers: Headers,
    /// 1 on the first delivery, 2 on the first redelivery, and so on.
    pub attempt: u32,
    acker: Box<dyn Acker>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("message_id", &self.message_id)
            .field("event_type", &self.event_type)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    pub fn new(
        message_id: String,
        event_type: EventType,
        payload: Bytes,
        attempt: u32,
        acker: Box<dyn Acker>,
    ) -> Self {
        Self {
            message_id,
            event_type,
            payload,
            headers: Headers::new(),
            attempt,
            acker,
        }
    }

    /// The delivery with the headers its message was published with.
    pub fn with_headers(mut self, headers: Headers) -> Self {
        self.headers = headers;
        self
    }

    pub async fn ack(&self) -> Result<(), BusError> {
        self.acker.ack().await
    }

    pub async fn nak(&self, delay: Duration) -> Result<(), BusError> {
        self.acker.nak(delay).await
    }

    /// Moves the message to the dead letters at once, with why. The reason is kept on one line:
    /// on NATS it travels in a header, where a line break would not parse, and a decoding error
    /// can quote a malformed event's text, line breaks and all.
    pub async fn reject(&self, reason: &str) -> Result<(), BusError> {
        metrics::counter!("stubs_bus_dead_letters_total", "type" => self.event_type.as_str())
            .increment(1);
        self.acker.reject(&reason.replace(['\r', '\n'], " ")).await
    }
}

/// Acknowledges deliveries of one batch together.
#[async_trait]
pub trait BatchAcker: Send + Sync {
    /// Done with the deliveries at these positions of the batch: never deliver them again.
    /// Returns once the bus has taken every one of them.
    async fn ack(&self, positions: &[usize]) -> Result<(), BusError>;
}

/// Deliveries a consumer took at once, in the order the bus holds them. Each can still be
/// negatively acknowledged or rejected on its own; acknowledging is done for many at once.
pub struct Batch {
    pub deliveries: Vec<Delivery>,
    acker: Box<dyn BatchAcker>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("deliveries", &self.deliveries)
            .finish_non_exhaustive()
    }
}

impl Batch {
    pub fn new(deliveries: Vec<Delivery>, acker: Box<dyn BatchAcker>) -> Self {
        Self { deliveries, acker }
    }

    /// The deliveries and what acknowledges them, for a bus that wraps another's batches.
    pub fn into_parts(self) -> (Vec<Delivery>, Box<dyn BatchAcker>) {
        (self.deliveries, self.acker)
    }

    pub fn len(&self) -> usize {
        self.deliveries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.deliveries.is_empty()
    }

    /// Acknowledges the deliveries at these positions together, in one bus write or round trip.
    pub async fn ack(&self, positions: &[usize]) -> Result<(), BusError> {
        if positions.is_empty() {
            return Ok(());
        }
        self.acker.ack(positions).await
    }

    /// Acknowledges every delivery of the batch together.
    pub async fn ack_all(&self) -> Result<(), BusError> {
        let all: Vec<usize> = (0..self.deliveries.len()).collect();
        self.ack(&all).await
    }
}

/// A durable consumer's stream of deliveries.
#[async_trait]
pub trait Subscription: Send {
    /// Waits until at least one delivery is ready, then takes every ready one up to `max`.
    async fn next_batch(&mut self, max: usize) -> Result<Batch, BusError>;

    /// Waits for the next delivery, to be acknowledged on its own.
    async fn next(&mut self) -> Result<Delivery, BusError> {
        let batch = self.next_batch(1).await?;
        batch.deliveries.into_iter().next().ok_or(BusError::Closed)
    }
}

/// The bus. Implementations are cheap to share behind an `Arc`.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes and returns once the bus has stored the message durably.
    async fn publish(&self, message: &Message) -> Result<(), BusError>;
    /// Publishes many messages and returns once the bus has stored every one of them: in one
    /// write, or with every publish in flight at once. On an error some may have been stored;
    /// publishing them all again is safe, since the bus drops copies by message id.
    async fn publish_batch(&self, messages: &[Message]) -> Result<(), BusError> {
        for message in messages {
            self.publish(message).await?;
        }
        Ok(())
    }
    /// Joins (creating if needed) a durable consumer group for one type of event.
    async fn subscribe(&self, config: &ConsumerConfig) -> Result<Box<dyn Subscription>, BusError>;
    /// The dead letters of a group, oldest first.
    async fn dead_letters(&self, config: &ConsumerConfig) -> Result<Vec<DeadLetter>, BusError>;
    /// Answers whether the bus is reachable now.
    async fn ping(&self) -> Result<(), BusError>;
}

pub type SharedBus = Arc<dyn Bus>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_survive_their_stored_form() {
        let headers: Headers = [("traceparent", "00-abc-def-01"), ("tracestate", "k=v")]
            .into_iter()
            .collect();
        let stored = headers.to_json();
        assert_eq!(Headers::from_json(stored.as_deref()), headers);
    }

    #[test]
    fn no_headers_are_stored_as_null() {
        assert_eq!(Headers::new().to_json(), None);
        assert!(Headers::from_json(None).is_empty());
    }

    #[test]
    fn an_unreadable_stored_form_gives_no_headers() {
        assert!(Headers::from_json(Some("not json")).is_empty());
        assert!(Headers::from_json(Some("{\"traceparent\": 1}")).is_empty());
    }
}
