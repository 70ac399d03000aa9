//! The tickets service under test: started on a fresh database and a fresh embedded bus, served on
//! a random port, with people who sign in, and ways to play the orders service on the bus.

use std::ops::Deref;

use common::events::{
    Envelope, OrderCancelled, OrderCompleted, OrderCreated, OrderTicket, TicketRef, UserCreated,
};
use common::money::Cents;
use testkit::{Backend, Client, TestService, Value, json};
use uuid::Uuid;

/// One running tickets service and everything it stands on.
pub(crate) struct TestApp(TestService);

pub(crate) async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, tickets::Settings::default()).await
}

pub(crate) async fn spawn_app_with(backend: Backend, settings: tickets::Settings) -> TestApp {
    TestApp(
        TestService::start(tickets::NAME, backend, &tickets::MIGRATIONS, |ctx| {
            tickets::start(ctx, &settings)
        })
        .await,
    )
}

impl Deref for TestApp {
    type Target = TestService;
    fn deref(&self) -> &TestService {
        &self.0
    }
}

impl TestApp {
    /// Lists a ticket as `seller` and returns it as the API answered (asserting 201).
    pub(crate) async fn list_ticket(&self, seller: &Client, title: &str, price: Value) -> Value {
        let reply = seller
            .post("/api/tickets", json!({"title": title, "price": price}))
            .await;
        assert_eq!(reply.status, 201, "{:?}", reply.body);
        reply.body
    }

    /// The ticket as `GET /api/tickets/{id}` shows it (asserting 200).
    pub(crate) async fn ticket(&self, id: &str) -> Value {
        let reply = self.anonymous().get(&format!("/api/tickets/{id}")).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        reply.body
    }

    /// The ids of `GET /api/tickets` with the given query, in order (asserting 200).
    pub(crate) async fn listed_ids(&self, query: &str) -> Vec<String> {
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

    /// Waits until the ticket shows the given version, and returns it.
    pub(crate) async fn ticket_at_version(&self, id: &str, version: i64) -> Value {
        testkit::eventually(&format!("ticket {id} at version {version}"), || async {
            let ticket = self.ticket(id).await;
            (ticket["version"] == version).then_some(ticket)
        })
        .await
    }
}

/// An order:created as the orders service announces it, for a ticket listed at 20.
pub(crate) fn order_created(order_id: Uuid, ticket_id: &str) -> Envelope<OrderCreated> {
    order_created_at(order_id, ticket_id, "Concert", 2000)
}

/// An order:created for a ticket the buyer saw with this title and price.
pub(crate) fn order_created_at(
    order_id: Uuid,
    ticket_id: &str,
    title: &str,
    cents: i64,
) -> Envelope<OrderCreated> {
    Envelope::new(OrderCreated {
        id: order_id,
        version: 0,
        status: common::events::OrderStatus::Created,
        user_id: Uuid::now_v7(),
        expires_at: time::OffsetDateTime::now_utc() + time::Duration::minutes(15),
        ticket: OrderTicket {
            id: Uuid::parse_str(ticket_id).unwrap(),
            price: Cents::new(cents).unwrap(),
            title: Some(title.to_owned()),
        },
        listing: 0,
    })
}

/// An order:cancelled as the orders service announces it.
pub(crate) fn order_cancelled(order_id: Uuid, ticket_id: &str) -> Envelope<OrderCancelled> {
    Envelope::new(OrderCancelled {
        id: order_id,
        version: 1,
        ticket: TicketRef {
            id: Uuid::parse_str(ticket_id).unwrap(),
        },
    })
}

/// An order:completed as the orders service announces it once `buyer` has paid.
pub(crate) fn order_completed(
    order_id: Uuid,
    ticket_id: &str,
    buyer: Option<Uuid>,
) -> Envelope<OrderCompleted> {
    Envelope::new(OrderCompleted {
        id: order_id,
        version: 1,
        ticket: TicketRef {
            id: Uuid::parse_str(ticket_id).unwrap(),
        },
        user_id: buyer,
    })
}

/// A user:created as auth announces it for a user signed in by the test kit (whose e-mail is
/// their id's digits at example.com).
pub(crate) fn user_created(user: Uuid) -> Envelope<UserCreated> {
    Envelope::new(UserCreated {
        id: user,
        email: format!("{}@example.com", user.simple()),
    })
}

/// The id of a ticket as the API answered it.
pub(crate) fn id_of(ticket: &Value) -> String {
    ticket["id"].as_str().unwrap().to_owned()
}

/// An event body starting `days` from now at 20:00 on the venue's clocks.
pub(crate) fn event_body(name: &str, venue: &str, days: i64) -> Value {
    let day = time::OffsetDateTime::now_utc().date() + time::Duration::days(days);
    json!({"name": name, "venue": venue, "city": "London",
           "startsAt": format!("{day}T20:00"), "timeZone": "Europe/London"})
}

/// Creates an event as `user` and returns it as answered (asserting 201).
pub(crate) async fn create_event(user: &Client, body: Value) -> Value {
    let reply = user.post("/api/events", body).await;
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    reply.body
}

/// Lists a ticket for `event` at `price` and returns it (asserting 201).
pub(crate) async fn list_for(seller: &Client, event: &Value, price: Value) -> Value {
    let reply = seller
        .post(
            "/api/tickets",
            json!({"title": "Standing", "price": price, "eventId": event["id"]}),
        )
        .await;
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    reply.body
}

/// Every item of a paged list, following its `Link` headers, with pages of `limit`.
pub(crate) async fn all_pages(app: &TestApp, path: &str, limit: u32) -> Vec<Value> {
    let mut items = Vec::new();
    let joint = if path.contains('?') { '&' } else { '?' };
    let mut next = Some(format!("{path}{joint}limit={limit}"));
    while let Some(page) = next {
        let reply = app.anonymous().get(&page).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        let body = reply.body.as_array().unwrap();
        assert!(body.len() <= limit as usize);
        items.extend(body.iter().cloned());
        next = reply.next_page();
    }
    items
}
