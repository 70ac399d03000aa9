//! The tickets service under test: started on a fresh database and a fresh embedded bus, served on
//! a random port, with people who sign in, and ways to play the orders service on the bus.

use std::ops::Deref;
use std::time::Duration;

use common::ServiceContext;
use common::bus::{ConsumerConfig, Message, Subscription};
use common::events::{Envelope, EventData, OrderCancelled, OrderCreated, OrderTicket, TicketRef};
use common::money::Cents;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use testkit::{Backend, BusKind, Client, TestBus, TestDatabase, TestServer, Value, json};
use uuid::Uuid;

/// One running tickets service and everything it stands on.
pub struct TestApp {
    pub server: TestServer,
    pub ctx: ServiceContext,
    pub bus: TestBus,
    /// Kept for its lifetime: the database is removed when the app is dropped.
    _db: TestDatabase,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    let db = TestDatabase::create(backend).await;
    let bus = TestBus::create(BusKind::Embedded).await;
    let ctx = testkit::context(tickets::NAME, &db, bus.bus.clone(), &tickets::MIGRATIONS).await;
    let server = TestServer::start(tickets::start(&ctx)).await;
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

    /// Lists a ticket as `seller` and returns it as the API answered (asserting 201).
    pub async fn list_ticket(&self, seller: &Client, title: &str, price: Value) -> Value {
        let reply = seller
            .post("/api/tickets", json!({"title": title, "price": price}))
            .await;
        assert_eq!(reply.status, 201, "{:?}", reply.body);
        reply.body
    }

    /// The ticket as `GET /api/tickets/{id}` shows it (asserting 200).
    pub async fn ticket(&self, id: &str) -> Value {
        let reply = self.anonymous().get(&format!("/api/tickets/{id}")).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        reply.body
    }

    /// The ids of `GET /api/tickets` with the given query, in order (asserting 200).
    pub async fn listed_ids(&self, query: &str) -> Vec<String> {
        let reply = self.anonymous().get(&format!("/api/tickets{query}")).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        reply
            .body
            .as_array()
            .unwrap()
            .iter()
            .map(|ticket| ticket["id"].as_str().unwrap().to_owned())
            .collect()
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

    /// Waits until the ticket shows the given version, and returns it.
    pub async fn ticket_at_version(&self, id: &str, version: i64) -> Value {
        testkit::eventually(&format!("ticket {id} at version {version}"), || async {
            let ticket = self.ticket(id).await;
            (ticket["version"] == version).then_some(ticket)
        })
        .await
    }

    /// Joins the bus as a test consumer group of one event type, seeing every such event.
    pub async fn watch<E: EventData>(&self) -> Watcher<E> {
        let subscription = self
            .bus
            .bus
            .subscribe(&ConsumerConfig::new("test", E::TYPE))
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
        let delivery = tokio::time::timeout(Duration::from_secs(20), self.subscription.next())
            .await
            .unwrap_or_else(|_| panic!("no {} event within 20s", E::TYPE))
            .unwrap();
        delivery.ack().await.unwrap();
        Envelope::decode(&delivery.payload).unwrap()
    }
}

/// An order:created as the orders service announces it.
pub fn order_created(order_id: Uuid, ticket_id: &str) -> Envelope<OrderCreated> {
    Envelope::new(OrderCreated {
        id: order_id,
        version: 0,
        status: common::events::OrderStatus::Created,
        user_id: Uuid::now_v7(),
        expires_at: time::OffsetDateTime::now_utc() + time::Duration::minutes(15),
        ticket: OrderTicket {
            id: Uuid::parse_str(ticket_id).unwrap(),
            price: Cents::new(2000).unwrap(),
        },
    })
}

/// An order:cancelled as the orders service announces it.
pub fn order_cancelled(order_id: Uuid, ticket_id: &str) -> Envelope<OrderCancelled> {
    Envelope::new(OrderCancelled {
        id: order_id,
        version: 1,
        ticket: TicketRef {
            id: Uuid::parse_str(ticket_id).unwrap(),
        },
    })
}

/// The id of a ticket as the API answered it.
pub fn id_of(ticket: &Value) -> String {
    ticket["id"].as_str().unwrap().to_owned()
}
