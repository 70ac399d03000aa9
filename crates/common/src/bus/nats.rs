//! The NATS JetStream bus, for distributed mode.
//!
//! One stream per deployment, named by the prefix and holding the subjects `<prefix>.>`; an event
//! of type `ticket:created` travels on `<prefix>.ticket.created`. Each group reads each type
//! through a durable pull consumer with explicit acks. When a message arrives for the
//! `max_deliver + 1`th time we move it to the dead-letter subject `<prefix>.dead.<consumer>`
//! instead of handing it to the service.
//!
//! A message's headers (the trace context) travel as NATS headers beside `Nats-Msg-Id`; the
//! server's own `Nats-*` headers are not handed back as the message's.
//!
//! Round trips are what cost here, so they are shared: a batch is whatever the pull stream has
//! already buffered (it pulls ahead in batches of its own), acknowledged with plain acks and one
//! confirmed ack at the end; a batch of publishes is sent whole before any of the stream's
//! acknowledgements is awaited.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::header::{HeaderName, HeaderValue};
use async_nats::jetstream::{self, AckKind, consumer, stream};
use async_trait::async_trait;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};

use super::{
    Acker, Batch, BatchAcker, Bus, BusError, ConsumerConfig, DeadLetter, Delivery, Headers,
    Message, Subscription,
};
use crate::events::EventType;

const MSG_ID: &str = "Nats-Msg-Id";
const DEAD_REASON: &str = "Stubs-Dead-Reason";
const DEAD_DELIVERIES: &str = "Stubs-Dead-Deliveries";
const DEAD_ORIGINAL_ID: &str = "Stubs-Original-Id";
/// The prefix of the headers the server and client keep for themselves.
const NATS_OWN: &str = "Nats-";

/// Our headers as NATS headers. The client panics on a name or value it cannot send, so a pair
/// that does not parse is left out (and logged) rather than taking the publisher down.
fn to_nats_headers(headers: &Headers) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in headers.iter() {
        match (name.parse::<HeaderName>(), value.parse::<HeaderValue>()) {
            (Ok(name), Ok(value)) if !is_nats_own(&name) => map.insert(name, value),
            _ => tracing::warn!(header = name, "header cannot travel on NATS, left out"),
        }
    }
    map
}

fn is_nats_own(name: &HeaderName) -> bool {
    AsRef::<str>::as_ref(name).starts_with(NATS_OWN)
}

/// The headers a message was published with, less the server's own.
fn from_nats_headers(map: Option<&HeaderMap>) -> Headers {
    map.into_iter()
        .flat_map(|map| map.iter())
        .filter(|(name, _)| !is_nats_own(name))
        .filter_map(|(name, values)| {
            let value = values.first()?;
            Some((name.to_string(), value.as_str().to_owned()))
        })
        .collect()
}

#[derive(Clone)]
pub struct NatsBus {
    context: jetstream::Context,
    prefix: String,
}

impl NatsBus {
    /// Connects and makes sure the deployment's stream exists.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, BusError> {
        if prefix.is_empty()
            || !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(BusError::Nats(format!(
                "the NATS prefix must be letters, digits, '_' or '-': {prefix:?}"
            )));
        }
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(BusError::nats)?;
        let context = jetstream::new(client);
        let created = context
            .get_or_create_stream(stream::Config {
                name: prefix.to_owned(),
                subjects: vec![format!("{prefix}.>")],
                storage: stream::StorageType::File,
                duplicate_window: super::DEDUPLICATION_WINDOW,
                ..Default::default()
            })
            .await;
        if let Err(err) = created {
            // Replicas starting together on a fresh server race to create the stream; the
            // losers are told the subjects overlap. The stream is there all the same.
            context
                .get_stream(prefix)
                .await
                .map_err(|_| BusError::nats(err))?;
        }
        Ok(Self {
            context,
            prefix: prefix.to_owned(),
        })
    }

    fn subject(&self, event_type: EventType) -> String {
        format!("{}.{}", self.prefix, event_type.as_str().replace(':', "."))
    }

    fn dead_subject(&self, config: &ConsumerConfig) -> String {
        format!("{}.dead.{}", self.prefix, config.durable_name())
    }

    async fn stream(&self) -> Result<stream::Stream, BusError> {
        self.context
            .get_stream(&self.prefix)
            .await
            .map_err(BusError::nats)
    }

    /// Deletes the deployment's stream with everything in it (for tests that share a server).
    pub async fn delete_stream(&self) -> Result<(), BusError> {
        self.context
            .delete_stream(&self.prefix)
            .await
            .map(|_| ())
            .map_err(BusError::nats)
    }

    async fn publish_dead(
        &self,
        subject: &str,
        original_id: &str,
        payload: Bytes,
        deliveries: i64,
        reason: &str,
    ) -> Result<(), BusError> {
        let mut headers = HeaderMap::new();
        headers.insert(DEAD_ORIGINAL_ID, original_id);
        headers.insert(DEAD_REASON, reason);
        headers.insert(DEAD_DELIVERIES, deliveries.to_string().as_str());
        let publish = jetstream::message::PublishMessage::build()
            .payload(payload)
            .headers(headers)
            .message_id(format!("{subject}:{original_id}"));
        self.context
            .send_publish(subject.to_owned(), publish)
            .await
            .map_err(BusError::nats)?
            .await
            .map_err(BusError::nats)?;
        Ok(())
    }
}

#[async_trait]
impl Bus for NatsBus {
    async fn publish(&self, message: &Message) -> Result<(), BusError> {
        self.publish_batch(std::slice::from_ref(message)).await
    }

    async fn publish_batch(&self, messages: &[Message]) -> Result<(), BusError> {
        // Every publish goes out before any acknowledgement is awaited: one round trip for the
        // batch rather than one per message.
        let mut stored = Vec::with_capacity(messages.len());
        for message in messages {
            // Headers first: `message_id` adds to them, `headers` would replace them.
            let publish = jetstream::message::PublishMessage::build()
                .payload(message.payload.clone())
                .headers(to_nats_headers(&message.headers))
                .message_id(&message.id);
            stored.push(
                self.context
                    .send_publish(self.subject(message.event_type), publish)
                    .await
                    .map_err(BusError::nats)?,
            );
        }
        // Each acknowledgement says the stream has stored its message; they arrive together.
        for ack in stored {
            ack.await.map_err(BusError::nats)?;
        }
        Ok(())
    }

    async fn subscribe(&self, config: &ConsumerConfig) -> Result<Box<dyn Subscription>, BusError> {
        let durable = config.durable_name();
        let consumer: consumer::PullConsumer = self
            .stream()
            .await?
            .get_or_create_consumer(
                &durable,
                consumer::pull::Config {
                    durable_name: Some(durable.clone()),
                    filter_subject: self.subject(config.event_type),
                    deliver_policy: consumer::DeliverPolicy::All,
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: config.ack_wait,
                    // Unlimited on the server: we dead-letter on the delivery after our maximum.
                    // Were the server to stop delivering, a dead-letter publish that failed at
                    // that moment would lose the message without a trace; this way it is simply
                    // tried again after the ack wait.
                    max_deliver: -1,
                    ..Default::default()
                },
            )
            .await
            .map_err(BusError::nats)?;
        let messages = consumer.messages().await.map_err(BusError::nats)?;
        Ok(Box::new(NatsSubscription {
            bus: self.clone(),
            config: config.clone(),
            consumer,
            messages,
        }))
    }

    async fn dead_letters(&self, config: &ConsumerConfig) -> Result<Vec<DeadLetter>, BusError> {
        let reader: consumer::PullConsumer = self
            .stream()
            .await?
            .create_consumer(consumer::pull::Config {
                filter_subject: self.dead_subject(config),
                deliver_policy: consumer::DeliverPolicy::All,
                ack_policy: consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(10),
                ..Default::default()
            })
            .await
            .map_err(BusError::nats)?;
        let mut letters = Vec::new();
        loop {
            let mut batch = reader
                .fetch()
                .max_messages(256)
                .messages()
                .await
                .map_err(BusError::nats)?;
            let before = letters.len();
            while let Some(message) = batch.next().await {
                let message = message.map_err(BusError::nats)?;
                let header = |name: &str| {
                    message
                        .headers
                        .as_ref()
                        .and_then(|h| h.get(name))
                        .map(|v| v.as_str().to_owned())
                        .unwrap_or_default()
                };
                letters.push(DeadLetter {
                    message_id: header(DEAD_ORIGINAL_ID),
                    event_type: config.event_type,
                    payload: message.payload.clone(),
                    deliveries: header(DEAD_DELIVERIES).parse().unwrap_or(0),
                    reason: header(DEAD_REASON),
                });
            }
            if letters.len() == before {
                return Ok(letters);
            }
        }
    }

    async fn ping(&self) -> Result<(), BusError> {
        tokio::time::timeout(Duration::from_secs(2), self.stream())
            .await
            .map_err(|_| BusError::Nats("JetStream did not answer within 2s".into()))?
            .map(|_| ())
    }
}

struct NatsSubscription {
    bus: NatsBus,
    config: ConsumerConfig,
    consumer: consumer::PullConsumer,
    messages: consumer::pull::Stream,
}

/// A delivery and the handle that acknowledges it, shared by its own acker and its batch's.
type Accepted = (Delivery, Arc<jetstream::message::Acker>);

impl NatsSubscription {
    /// Waits for the next message from the pull stream, reopening the stream if it ended.
    async fn next_message(&mut self) -> jetstream::Message {
        loop {
            match self.messages.next().await {
                Some(Ok(message)) => return message,
                Some(Err(err)) => {
                    // Missed heartbeats or a server restart: the client reconnects by itself;
                    // the pull stream goes on, or we open a new one.
                    tracing::warn!(error = %err, consumer = %self.config.durable_name(), "bus pull interrupted");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                None => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    match self.consumer.messages().await {
                        Ok(messages) => self.messages = messages,
                        Err(err) => {
                            tracing::warn!(error = %err, consumer = %self.config.durable_name(), "cannot reopen the pull stream");
                        }
                    }
                }
            }
        }
    }

    /// Turns a message into a delivery, or dead-letters it when it has been delivered more than
    /// the maximum number of times.
    async fn accept(&self, message: jetstream::Message) -> Result<Option<Accepted>, BusError> {
        let delivered = message.info().map_err(BusError::nats)?.delivered;
        let (message, acker) = message.split();
        let id = message
            .headers
            .as_ref()
            .and_then(|h| h.get(MSG_ID))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        if delivered > i64::from(self.config.max_deliver) {
            self.bus
                .publish_dead(
                    &self.bus.dead_subject(&self.config),
                    &id,
                    message.payload.clone(),
                    delivered - 1,
                    "maximum deliveries reached",
                )
                .await?;
            acker
                .double_ack_with(AckKind::Term)
                .await
                .map_err(BusError::nats)?;
            metrics::counter!(
                "stubs_bus_dead_letters_total",
                "type" => self.config.event_type.as_str()
            )
            .increment(1);
            return Ok(None);
        }
        let acker = Arc::new(acker);
        let headers = from_nats_headers(message.headers.as_ref());
        let delivery = Delivery::new(
            id.clone(),
            self.config.event_type,
            message.payload.clone(),
            u32::try_from(delivered).unwrap_or(u32::MAX),
            Box::new(NatsAcker {
                bus: self.bus.clone(),
                dead_subject: self.bus.dead_subject(&self.config),
                acker: acker.clone(),
                id,
                payload: message.payload,
                delivered,
            }),
        )
        .with_headers(headers);
        Ok(Some((delivery, acker)))
    }
}

#[async_trait]
impl Subscription for NatsSubscription {
    async fn next_batch(&mut self, max: usize) -> Result<Batch, BusError> {
        let mut accepted: Vec<Accepted> = Vec::new();
        while accepted.is_empty() {
            let message = self.next_message().await;
            accepted.extend(self.accept(message).await?);
            // Then whatever the pull stream already holds, without waiting for more.
            while accepted.len() < max.max(1) {
                match self.messages.next().now_or_never() {
                    Some(Some(Ok(message))) => accepted.extend(self.accept(message).await?),
                    Some(Some(Err(err))) => {
                        // What was taken goes out; the next call waits out the interruption.
                        tracing::warn!(error = %err, consumer = %self.config.durable_name(), "bus pull interrupted");
                        break;
                    }
                    _ => break,
                }
            }
        }
        let (deliveries, ackers) = accepted.into_iter().unzip();
        Ok(Batch::new(deliveries, Box::new(NatsBatchAcker { ackers })))
    }
}

/// Acknowledges a batch with a plain ack per message and a confirmed one for the last: the
/// server takes a connection's messages in order, and the consumer its acks, so once the last is
/// confirmed every one before it has been taken too. One round trip for the whole batch.
struct NatsBatchAcker {
    ackers: Vec<Arc<jetstream::message::Acker>>,
}

#[async_trait]
impl BatchAcker for NatsBatchAcker {
    async fn ack(&self, positions: &[usize]) -> Result<(), BusError> {
        let acked: Vec<_> = positions
            .iter()
            .filter_map(|&p| self.ackers.get(p))
            .collect();
        let Some((last, others)) = acked.split_last() else {
            return Ok(());
        };
        for acker in others {
            acker.ack().await.map_err(BusError::nats)?;
        }
        last.double_ack().await.map_err(BusError::nats)
    }
}

struct NatsAcker {
    bus: NatsBus,
    dead_subject: String,
    acker: Arc<jetstream::message::Acker>,
    id: String,
    payload: Bytes,
    delivered: i64,
}

#[async_trait]
impl Acker for NatsAcker {
    async fn ack(&self) -> Result<(), BusError> {
        // double_ack waits for the server to confirm; a plain ack can be lost on shutdown.
        self.acker.double_ack().await.map_err(BusError::nats)
    }

    async fn nak(&self, delay: Duration) -> Result<(), BusError> {
        self.acker
            .ack_with(AckKind::Nak(Some(delay)))
            .await
            .map_err(BusError::nats)
    }

    async fn reject(&self, reason: &str) -> Result<(), BusError> {
        self.bus
            .publish_dead(
                &self.dead_subject,
                &self.id,
                self.payload.clone(),
                self.delivered,
                reason,
            )
            .await?;
        self.acker
            .double_ack_with(AckKind::Term)
            .await
            .map_err(BusError::nats)
    }
}
