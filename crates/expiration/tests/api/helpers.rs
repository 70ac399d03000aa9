//! The expiration service under test: one or more replicas on a fresh database and a fresh
//! embedded bus, ways to play the orders service on the bus, and an observer of what expires.

use std::time::Duration;

use common::ServiceContext;
use common::bus::ConsumerConfig;
use common::events::{
    Envelope, EventData, EventType, ExpirationComplete, OrderCancelled, OrderCompleted,
    OrderCreated, OrderStatus, OrderTicket, TicketRef,
};
use common::money::Cents;
use testkit::{Backend, BusKind, TestBus, TestDatabase};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use uuid::Uuid;

/// The expiration service and everything it stands on. Every replica shares the database, the
/// bus and the consumer group, as replicas in a deployment do.
pub(crate) struct TestApp {
    pub replicas: Vec<ServiceContext>,
    pub bus: TestBus,
    pub db: TestDatabase,
}

/// One replica of the service on a fresh database and bus.
pub(crate) async fn spawn_app(backend: Backend) -> TestApp {
    let db = TestDatabase::create(backend).await;
    let bus = TestBus::create(BusKind::Embedded).await;
    let mut app = TestApp {
        replicas: Vec::new(),
        bus,
        db,
    };
    app.start_replica().await;
    app
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Stops the relays, listeners and schedulers before the database goes away.
        for ctx in &self.replicas {
            ctx.shutdown.cancel();
        }
    }
}

impl TestApp {
    /// Starts another replica (or, after [`TestApp::stop`], the service again).
    pub(crate) async fn start_replica(&mut self) {
        let ctx = testkit::context(
            expiration::NAME,
            &self.db,
            self.bus.bus.clone(),
            &expiration::MIGRATIONS,
        )
        .await;
        // No routes to serve: the service has no HTTP API of its own.
        let _routes = expiration::start(&ctx);
        self.replicas.push(ctx);
    }

    /// Stops every replica and waits until their tasks have finished, as a shutdown does.
    pub(crate) async fn stop(&mut self) {
        for ctx in self.replicas.drain(..) {
            ctx.shutdown.cancel();
            ctx.tasks.close();
            ctx.tasks.wait().await;
        }
    }

    fn ctx(&self) -> &ServiceContext {
        self.replicas.first().expect("a running replica")
    }

    /// Publishes an event on the bus as another service's relay would; returns its envelope id.
    pub(crate) async fn publish<E: EventData>(&self, envelope: &Envelope<E>) -> Uuid {
        self.bus.publish(envelope).await
    }

    /// Waits until the service has applied (committed) the event with this id.
    pub(crate) async fn handled(&self, event_id: Uuid) {
        testkit::handled(&self.ctx().store, event_id).await;
    }

    /// Jobs still waiting to fire. Once an order has expired, its job must be gone: a job left
    /// behind would be due for ever, and the scheduler would never rest.
    pub(crate) async fn pending_jobs(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM jobs")
            .fetch_one(self.ctx().store.pool())
            .await
            .unwrap()
    }

    /// Whether an order has a job waiting to fire.
    pub(crate) async fn has_job(&self, order_id: Uuid) -> bool {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE order_id = $1")
            .bind(order_id.to_string())
            .fetch_one(self.ctx().store.pool())
            .await
            .unwrap();
        count > 0
    }

    /// Publishes an event and waits until the service has applied it.
    pub(crate) async fn deliver<E: EventData>(&self, envelope: &Envelope<E>) {
        let id = self.publish(envelope).await;
        self.handled(id).await;
    }

    /// Joins the bus as an observer group of expiration:complete, seeing every such event.
    pub(crate) async fn observe(&self) -> Observer {
        let mut subscription = self
            .bus
            .bus
            .subscribe(&ConsumerConfig::new(
                "observer",
                EventType::ExpirationComplete,
            ))
            .await
            .unwrap();
        let (sender, receiver) = mpsc::unbounded_channel();
        // Reads in a task of its own, so a test's timeout never drops a delivery half-taken.
        let reader = tokio::spawn(async move {
            loop {
                let delivery = subscription.next().await.unwrap();
                delivery.ack().await.unwrap();
                let at = OffsetDateTime::now_utc();
                let envelope = Envelope::<ExpirationComplete>::decode(&delivery.payload).unwrap();
                if sender
                    .send(Expired {
                        order_id: envelope.data.order_id,
                        at,
                    })
                    .is_err()
                {
                    return;
                }
            }
        });
        Observer { receiver, reader }
    }
}

/// One expiration:complete as the observer received it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expired {
    pub order_id: Uuid,
    /// When the observer received it.
    pub at: OffsetDateTime,
}

/// A consumer group of its own that sees every expiration:complete.
pub(crate) struct Observer {
    receiver: mpsc::UnboundedReceiver<Expired>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Observer {
    /// The next expiration, if one arrives within `limit`.
    pub(crate) async fn next_within(&mut self, limit: Duration) -> Option<Expired> {
        tokio::time::timeout(limit, self.receiver.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next expiration, which must arrive within 20 s.
    pub(crate) async fn next(&mut self) -> Expired {
        self.next_within(Duration::from_secs(20))
            .await
            .expect("no expiration:complete within 20 s")
    }

    /// Exactly `count` expirations, which must arrive within `limit` in all.
    pub(crate) async fn take(&mut self, count: usize, limit: Duration) -> Vec<Expired> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut seen = Vec::with_capacity(count);
        while seen.len() < count {
            match tokio::time::timeout_at(deadline, self.receiver.recv()).await {
                Ok(Some(expired)) => seen.push(expired),
                _ => panic!(
                    "only {} of {count} expiration:complete within {limit:?}",
                    seen.len()
                ),
            }
        }
        seen
    }

    /// Everything that arrives during `period`.
    pub(crate) async fn during(&mut self, period: Duration) -> Vec<Expired> {
        let deadline = tokio::time::Instant::now() + period;
        let mut seen = Vec::new();
        while let Ok(Some(expired)) = tokio::time::timeout_at(deadline, self.receiver.recv()).await
        {
            seen.push(expired);
        }
        seen
    }

    /// Everything that arrives until `at` (wall clock), and for `margin` after it.
    pub(crate) async fn until(&mut self, at: OffsetDateTime, margin: Duration) -> Vec<Expired> {
        let left = (at - OffsetDateTime::now_utc()).max(time::Duration::ZERO);
        let left = Duration::try_from(left).unwrap_or_default();
        self.during(left + margin).await
    }
}

/// A time `millis` milliseconds from now (in the past when negative).
pub(crate) fn in_millis(millis: i64) -> OffsetDateTime {
    OffsetDateTime::now_utc() + time::Duration::milliseconds(millis)
}

/// An order:created as the orders service announces it, expiring at `expires_at`.
pub(crate) fn order_created(order_id: Uuid, expires_at: OffsetDateTime) -> Envelope<OrderCreated> {
    Envelope::new(OrderCreated {
        id: order_id,
        version: 0,
        status: OrderStatus::Created,
        user_id: Uuid::now_v7(),
        expires_at,
        ticket: OrderTicket {
            id: Uuid::now_v7(),
            price: Cents::new(2000).unwrap(),
            title: Some("Concert".into()),
        },
        listing: 0,
    })
}

/// An order:cancelled as the orders service announces it.
pub(crate) fn order_cancelled(order_id: Uuid) -> Envelope<OrderCancelled> {
    Envelope::new(OrderCancelled {
        id: order_id,
        version: 1,
        ticket: TicketRef { id: Uuid::now_v7() },
    })
}

/// An order:completed (the order was paid) as the orders service announces it.
pub(crate) fn order_completed(order_id: Uuid) -> Envelope<OrderCompleted> {
    Envelope::new(OrderCompleted {
        id: order_id,
        version: 1,
        ticket: TicketRef { id: Uuid::now_v7() },
        user_id: Some(Uuid::now_v7()),
    })
}

/// Asserts that nothing expired (`what` says what would have been wrong).
pub(crate) fn assert_none(expired: &[Expired], what: &str) {
    assert!(
        expired.is_empty(),
        "{what}: {} expiration:complete, for {:?}...",
        expired.len(),
        &order_ids(expired)[..expired.len().min(5)]
    );
}

/// The order ids of some expirations, sorted.
pub(crate) fn order_ids(expired: &[Expired]) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = expired.iter().map(|e| e.order_id).collect();
    ids.sort();
    ids
}
