//! The orders service under test: started on a fresh database and a fresh embedded bus, served on
//! a random port, with people who sign in, and ways to play the tickets, expiration and payments
//! services on the bus.

use std::ops::Deref;
use std::time::Duration;

use common::ServiceContext;
use common::bus::{ConsumerConfig, Message, Subscription};
use common::events::{
    Envelope, EventData, ExpirationComplete, PaymentCreated, TicketCreated, TicketUpdated,
};
use common::listener::ListenerSettings;
use common::money::Cents;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use testkit::{Backend, BusKind, Client, TestBus, TestDatabase, TestServer, Value, json};
use uuid::Uuid;

/// One running orders service and everything it stands on.
pub struct TestApp {
    pub server: TestServer,
    pub ctx: ServiceContext,
    pub bus: TestBus,
    /// Kept for its lifetime: the database is removed when the app is dropped.
    _db: TestDatabase,
}

/// The service with the default settings (a 15 minute payment window) and quick listeners.
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(
        backend,
        &orders::Settings::default(),
        testkit::quick_listeners(),
    )
    .await
}

/// The service with settings and listener settings of the test's choosing.
pub async fn spawn_app_with(
    backend: Backend,
    settings: &orders::Settings,
    listeners: ListenerSettings,
) -> TestApp {
    let db = TestDatabase::create(backend).await;
    let bus = TestBus::create(BusKind::Embedded).await;
    let mut ctx = testkit::context(orders::NAME, &db, bus.bus.clone(), &orders::MIGRATIONS).await;
    ctx.listeners = listeners;
    let server = TestServer::start(orders::start(&ctx, settings)).await;
    TestApp {
        server,
        ctx,
        bus,
        _db: db,
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Stops the relay and the listeners before the database goes away.
        self.ctx.shutdown.cancel();
    }
}

/// A signed-in person: their id and a client that sends their token on every request.
pub struct User {
    pub id: Uuid,
    pub client: Client,
}

impl Deref for User {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl TestApp {
    /// Someone who is not signed in.
    pub fn anonymous(&self) -> Client {
        self.server.client()
    }

    /// A new user with a valid session token, sent as `Authorization: Bearer`.
    pub fn sign_in(&self) -> User {
        let id = Uuid::now_v7();
        let (token, _) = self
            .ctx
            .sessions
            .issue(id, &format!("{}@example.com", id.simple()))
            .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        let http = reqwest::Client::builder()
            .default_headers(headers)
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

    /// Lists a ticket as the tickets service would (ticket:created at version 0) and waits until
    /// the replica has it.
    pub async fn list_ticket(&self, seller: Uuid, title: &str, cents: i64) -> TicketCreated {
        let event = Envelope::new(TicketCreated {
            id: Uuid::now_v7(),
            version: 0,
            title: title.into(),
            price: Cents::new(cents).unwrap(),
            user_id: seller,
        });
        let id = self.publish(&event).await;
        self.handled(id).await;
        event.data
    }

    /// `POST /api/orders` as `buyer`, returning the order as answered (asserting 201).
    pub async fn place_order(&self, buyer: &Client, ticket_id: Uuid) -> Value {
        let reply = buyer
            .post("/api/orders", json!({"ticketId": ticket_id.to_string()}))
            .await;
        assert_eq!(reply.status, 201, "{:?}", reply.body);
        reply.body
    }

    /// `GET /api/orders/{id}` as `owner` (asserting 200).
    pub async fn order(&self, owner: &Client, id: Uuid) -> Value {
        let reply = owner.get(&format!("/api/orders/{id}")).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        reply.body
    }

    /// Publishes an event on the bus as another service's relay would; returns its envelope id.
    pub async fn publish<E: EventData>(&self, envelope: &Envelope<E>) -> Uuid {
        self.bus
            .bus
            .publish(&Message {
                id: envelope.id.to_string(),
                event_type: E::TYPE,
                payload: envelope.encode().unwrap().into(),
            })
            .await
            .unwrap();
        envelope.id
    }

    /// Whether the service has applied (committed) the event with this id.
    pub async fn has_handled(&self, event_id: Uuid) -> bool {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM inbox WHERE event_id = $1")
            .bind(event_id.to_string())
            .fetch_one(self.ctx.store.pool())
            .await
            .unwrap();
        count > 0
    }

    /// Waits until the service has applied the event with this id.
    pub async fn handled(&self, event_id: Uuid) {
        testkit::eventually(&format!("event {event_id} to be handled"), || async {
            self.has_handled(event_id).await.then_some(())
        })
        .await;
    }

    /// Waits until every event the service has committed is on the bus, so that what a watcher
    /// has not seen by then was never announced.
    pub async fn flushed(&self) {
        testkit::eventually("the outbox to be empty", || async {
            (self.ctx.outbox.backlog().await.unwrap() == 0).then_some(())
        })
        .await;
    }

    /// Waits until the order shows the given status, and returns it.
    pub async fn order_in_status(&self, owner: &Client, id: Uuid, status: &str) -> Value {
        testkit::eventually(&format!("order {id} to be {status}"), || async {
            let order = self.order(owner, id).await;
            (order["status"] == status).then_some(order)
        })
        .await
    }

    /// Joins the bus as a new test consumer group of one event type, which sees every such
    /// event published since the bus was created.
    pub async fn watch<E: EventData>(&self) -> Watcher<E> {
        let group = format!("test{}", Uuid::new_v4().simple());
        let subscription = self
            .bus
            .bus
            .subscribe(&ConsumerConfig::new(&group, E::TYPE))
            .await
            .unwrap();
        Watcher {
            subscription,
            _type: std::marker::PhantomData,
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
        self.within(Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("no {} event within 20s", E::TYPE))
    }

    /// Every event left on the bus for this watcher. Call it after [`TestApp::flushed`]: the
    /// events are stored on the bus by then and delivered at once, so a quiet second means
    /// there are no more.
    pub async fn rest(&mut self) -> Vec<Envelope<E>> {
        let mut events = Vec::new();
        while let Some(event) = self.within(Duration::from_secs(1)).await {
            events.push(event);
        }
        events
    }

    async fn within(&mut self, wait: Duration) -> Option<Envelope<E>> {
        let delivery = tokio::time::timeout(wait, self.subscription.next())
            .await
            .ok()?
            .unwrap();
        delivery.ack().await.unwrap();
        Some(Envelope::decode(&delivery.payload).unwrap())
    }
}

/// A ticket:updated as the tickets service announces it.
pub fn ticket_updated(
    ticket: &TicketCreated,
    version: i64,
    title: &str,
    cents: i64,
) -> Envelope<TicketUpdated> {
    Envelope::new(TicketUpdated {
        id: ticket.id,
        version,
        title: title.into(),
        price: Cents::new(cents).unwrap(),
        user_id: ticket.user_id,
        order_id: None,
    })
}

/// An expiration:complete as the expiration service announces it.
pub fn expiration_complete(order_id: Uuid) -> Envelope<ExpirationComplete> {
    Envelope::new(ExpirationComplete { order_id })
}

/// A payment:created as the payments service announces it.
pub fn payment_created(order_id: Uuid) -> Envelope<PaymentCreated> {
    Envelope::new(PaymentCreated {
        id: Uuid::now_v7(),
        order_id,
        stripe_id: format!("pi_{}", Uuid::new_v4().simple()),
    })
}

/// The id of an order as the API answered it.
pub fn id_of(order: &Value) -> Uuid {
    Uuid::parse_str(order["id"].as_str().unwrap()).unwrap()
}
