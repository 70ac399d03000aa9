//! One service under test: its context on a fresh database and bus, served on a random port,
//! with people who sign in, and waits for what travels through the bus.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use common::arrivals::{ArrivalSettings, Arrivals};
use common::bus::{Bus, ConsumerConfig, DeadLetter};
use common::events::{Envelope, EventData, EventType};
use common::listener::ListenerSettings;
use common::store::{Migrations, Store};
use common::{ServiceContext, Sessions};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{Backend, BusKind, Client, JWT_SECRET, TestBus, TestDatabase, TestServer, Watcher};

/// Listener settings that make retries and dead-lettering quick enough for tests.
pub fn quick_listeners() -> ListenerSettings {
    ListenerSettings {
        ack_wait: Duration::from_secs(2),
        max_deliver: 4,
        retry_delay: Duration::from_millis(50),
        max_retry_delay: Duration::from_millis(200),
        // Two members of each group, so tests see batches applied side by side too.
        workers: 2,
        ..Default::default()
    }
}

pub fn test_sessions() -> Sessions {
    Sessions::new(
        &SecretString::from(JWT_SECRET),
        Duration::from_secs(3600),
        false,
    )
}

/// A service context on a fresh database and the given bus, with quick listener settings.
pub async fn context(
    name: &'static str,
    database: &TestDatabase,
    bus: Arc<dyn Bus>,
    migrations: &[&Migrations],
) -> ServiceContext {
    let store = database.store(migrations).await;
    let mut ctx = ServiceContext::new(
        name,
        store,
        bus,
        test_sessions(),
        CancellationToken::new(),
        TaskTracker::new(),
    );
    ctx.listeners = quick_listeners();
    ctx
}

/// Waits for what the listeners bring that only their announcement can end within a test: a
/// request that is not woken waits for an hour.
fn announced_arrivals_only(service: &'static str) -> Arrivals {
    Arrivals::new(
        service,
        ArrivalSettings {
            wait: Duration::from_secs(3600),
            max_waiting: 16,
        },
    )
}

/// Polls `check` until it returns `Some`, for effects that travel through the bus.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Whether the service on `store` has applied (committed) the event with this id.
pub async fn has_handled(store: &Store, event_id: uuid::Uuid) -> bool {
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM inbox WHERE event_id = $1")
        .bind(event_id.to_string())
        .fetch_one(store.pool())
        .await
        .unwrap();
    count > 0
}

/// Waits until the service on `store` has applied the event with this id.
pub async fn handled(store: &Store, event_id: uuid::Uuid) {
    eventually(&format!("event {event_id} to be handled"), || async {
        has_handled(store, event_id).await.then_some(())
    })
    .await;
}

/// One service under test: started on a fresh database and a fresh embedded bus, served on a
/// random port, with people who sign in and a hand on the bus to play the other services.
pub struct TestService {
    pub server: TestServer,
    pub ctx: ServiceContext,
    pub bus: TestBus,
    /// Kept for its lifetime: the database is removed when the service is dropped.
    db: TestDatabase,
}

impl TestService {
    /// Starts a service: `start` spawns its background work and returns its routes.
    pub async fn start(
        name: &'static str,
        backend: Backend,
        migrations: &[&Migrations],
        start: impl FnOnce(&ServiceContext) -> Router,
    ) -> Self {
        Self::start_with(name, backend, migrations, quick_listeners(), start).await
    }

    /// Like [`TestService::start`], with listener settings of the test's choosing.
    pub async fn start_with(
        name: &'static str,
        backend: Backend,
        migrations: &[&Migrations],
        listeners: ListenerSettings,
        start: impl FnOnce(&ServiceContext) -> Router,
    ) -> Self {
        Self::start_shaped(
            name,
            backend,
            migrations,
            |ctx| ctx.listeners = listeners,
            start,
        )
        .await
    }

    /// Like [`TestService::start`], but a request for something the service has not heard of
    /// yet waits until a listener announces it, however long that takes: a test of the wake-up
    /// that cannot pass by the wait running out.
    pub async fn start_awaiting_arrivals(
        name: &'static str,
        backend: Backend,
        migrations: &[&Migrations],
        start: impl FnOnce(&ServiceContext) -> Router,
    ) -> Self {
        Self::start_shaped(
            name,
            backend,
            migrations,
            |ctx| ctx.arrivals = announced_arrivals_only(name),
            start,
        )
        .await
    }

    /// Like [`TestService::start`], with the service's context shaped by the test first.
    pub async fn start_shaped(
        name: &'static str,
        backend: Backend,
        migrations: &[&Migrations],
        shape: impl FnOnce(&mut ServiceContext),
        start: impl FnOnce(&ServiceContext) -> Router,
    ) -> Self {
        let db = TestDatabase::create(backend).await;
        let bus = TestBus::create(BusKind::Embedded).await;
        let mut ctx = context(name, &db, bus.bus.clone(), migrations).await;
        shape(&mut ctx);
        let server = TestServer::start(start(&ctx)).await;
        Self {
            server,
            ctx,
            bus,
            db,
        }
    }

    /// Another replica of the service on the same database and bus, as a restarted process
    /// would be: it knows only what the database holds.
    pub async fn another_replica(
        &self,
        migrations: &[&Migrations],
        start: impl FnOnce(&ServiceContext) -> Router,
    ) -> TestServer {
        let ctx = context(self.ctx.name, &self.db, self.bus.bus.clone(), migrations).await;
        TestServer::start(start(&ctx)).await
    }

    /// Makes the stored idempotency keys (those named, or all) older by `by`, as if their
    /// requests were made that long ago.
    pub async fn age_idempotency_keys(&self, key: Option<&str>, by: std::time::Duration) {
        let by = common::clock::span_millis(by);
        sqlx::query(
            "UPDATE idempotency_keys SET created_at = created_at - $1 \
             WHERE $2 IS NULL OR idempotency_key = $2",
        )
        .bind(by)
        .bind(key)
        .execute(self.ctx.store.writer())
        .await
        .unwrap();
    }

    /// Someone who is not signed in.
    pub fn anonymous(&self) -> Client {
        self.server.client()
    }

    /// A new user with a valid session token, sent as `Authorization: Bearer`.
    pub fn sign_in(&self) -> User {
        let id = uuid::Uuid::now_v7();
        let (token, _) = self
            .ctx
            .sessions
            .issue(id, &format!("{}@example.com", id.simple()), 0)
            .unwrap();
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        User {
            id,
            client: Client {
                base: self.server.client().base,
                http,
            },
        }
    }

    /// Publishes an event as another service's relay would; returns its envelope id.
    pub async fn publish<E: EventData>(&self, envelope: &Envelope<E>) -> uuid::Uuid {
        self.bus.publish(envelope).await
    }

    /// Whether the service has applied (committed) the event with this id.
    pub async fn has_handled(&self, event_id: uuid::Uuid) -> bool {
        has_handled(&self.ctx.store, event_id).await
    }

    /// Waits until the service has applied the event with this id.
    pub async fn handled(&self, event_id: uuid::Uuid) {
        handled(&self.ctx.store, event_id).await;
    }

    /// Waits until every event the service has committed is on the bus, so that what a watcher
    /// has not seen by then was never announced.
    pub async fn flushed(&self) {
        eventually("the outbox to be empty", || async {
            (self.ctx.outbox.backlog().await.unwrap() == 0).then_some(())
        })
        .await;
    }

    /// Joins the bus as a new test consumer group of one event type, seeing every such event.
    pub async fn watch<E: EventData>(&self) -> Watcher<E> {
        self.bus.watch().await
    }

    /// Waits until the service's listener of `event_type` has given up on the event with this
    /// id and dead-lettered it, and returns the dead letter.
    pub async fn dead_lettered(&self, event_type: EventType, event_id: uuid::Uuid) -> DeadLetter {
        let consumer = ConsumerConfig::new(self.ctx.name, event_type);
        eventually(&format!("the {event_type} to be dead-lettered"), || async {
            let letters = self.bus.bus.dead_letters(&consumer).await.unwrap();
            letters
                .into_iter()
                .find(|letter| letter.message_id == event_id.to_string())
        })
        .await
    }
}

impl Drop for TestService {
    fn drop(&mut self) {
        // Stops the relay and the listeners before the database goes away.
        self.ctx.shutdown.cancel();
    }
}

/// A signed-in person: their id and a client that sends their token on every request.
pub struct User {
    pub id: uuid::Uuid,
    pub client: Client,
}

impl std::ops::Deref for User {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}
