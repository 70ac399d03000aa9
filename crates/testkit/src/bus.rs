//! A bus per test: an embedded log in a temporary folder, or a JetStream stream under a random
//! prefix, deleted afterwards; and watchers that read what services publish.

use std::sync::Arc;
use std::time::Duration;

use common::bus::embedded::EmbeddedBus;
use common::bus::nats::NatsBus;
use common::bus::{Bus, ConsumerConfig, Message, Subscription};
use common::events::{Envelope, EventData};

use crate::unique_name;

/// Which bus a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusKind {
    Embedded,
    Nats,
}

/// Publishes an event on `bus` as another service's relay would, from a task that holds the bus
/// itself rather than the [`TestBus`].
pub async fn publish_on<E: EventData>(
    bus: &dyn Bus,
    envelope: &Envelope<E>,
) -> Result<(), common::bus::BusError> {
    bus.publish(&Message {
        id: envelope.id.to_string(),
        event_type: E::TYPE,
        payload: envelope.encode().unwrap().into(),
        headers: Default::default(),
    })
    .await
}

/// A bus that exists for one test: an embedded log in a temporary folder, or a JetStream stream
/// under a random prefix, deleted when this value is dropped.
pub struct TestBus {
    pub bus: Arc<dyn Bus>,
    pub embedded_url: Option<String>,
    /// The JetStream prefix (and stream name), for processes that must join the same stream.
    pub nats_prefix: Option<String>,
    nats: Option<NatsBus>,
    _dir: Option<tempfile::TempDir>,
}

impl TestBus {
    pub async fn create(kind: BusKind) -> Self {
        match kind {
            BusKind::Embedded => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("bus.sqlite").display());
                let bus = EmbeddedBus::open(&url).await.unwrap();
                Self {
                    bus: Arc::new(bus),
                    embedded_url: Some(url),
                    nats_prefix: None,
                    nats: None,
                    _dir: Some(dir),
                }
            }
            BusKind::Nats => {
                let url = std::env::var("STUBS_TEST_NATS_URL")
                    .expect("STUBS_TEST_NATS_URL must be set for NATS tests");
                let prefix = unique_name("stubs_test");
                let bus = NatsBus::connect(&url, &prefix)
                    .await
                    .expect("NATS at STUBS_TEST_NATS_URL must answer");
                Self {
                    bus: Arc::new(bus.clone()),
                    embedded_url: None,
                    nats_prefix: Some(prefix),
                    nats: Some(bus),
                    _dir: None,
                }
            }
        }
    }

    /// Publishes an event as another service's relay would; returns its envelope id.
    pub async fn publish<E: EventData>(&self, envelope: &Envelope<E>) -> uuid::Uuid {
        publish_on(self.bus.as_ref(), envelope).await.unwrap();
        envelope.id
    }

    /// Joins the bus as a new test consumer group of one event type, which sees every such
    /// event published since the bus was created (whatever other watchers see).
    pub async fn watch<E: EventData>(&self) -> Watcher<E> {
        let subscription = self
            .bus
            .subscribe(&ConsumerConfig::new(&unique_name("test"), E::TYPE))
            .await
            .unwrap();
        Watcher {
            subscription,
            _type: std::marker::PhantomData,
        }
    }
}

impl Drop for TestBus {
    fn drop(&mut self) {
        if let Some(bus) = self.nats.take() {
            crate::clean_up(async move {
                let _ = bus.delete_stream().await;
            });
        }
    }
}

/// A test consumer of one event type.
pub struct Watcher<E> {
    subscription: Box<dyn Subscription>,
    _type: std::marker::PhantomData<E>,
}

impl<E: EventData> Watcher<E> {
    /// The next event on the bus, acknowledged.
    pub async fn next(&mut self) -> Envelope<E> {
        self.next_within(Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("no {} event within 20s", E::TYPE))
    }

    /// Every event left on the bus for this watcher. Call it after [`crate::TestService::flushed`]:
    /// the events are stored on the bus by then and delivered at once, so a quiet second means
    /// there are no more.
    pub async fn rest(&mut self) -> Vec<Envelope<E>> {
        let mut events = Vec::new();
        while let Some(event) = self.next_within(Duration::from_secs(1)).await {
            events.push(event);
        }
        events
    }

    /// The next event within `wait`, acknowledged; `None` if none came.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Envelope<E>> {
        let delivery = tokio::time::timeout(wait, self.subscription.next())
            .await
            .ok()?
            .unwrap();
        let envelope = Envelope::decode(&delivery.payload).unwrap();
        assert_eq!(
            delivery.message_id,
            envelope.id.to_string(),
            "an event travels under its envelope's id, which the bus de-duplicates by"
        );
        delivery.ack().await.unwrap();
        Some(envelope)
    }
}
