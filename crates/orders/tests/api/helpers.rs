//! The orders service under test: started on a fresh database and a fresh embedded bus, served on
//! a random port, with people who sign in, and ways to play the tickets, expiration and payments
//! services on the bus.

use std::ops::Deref;

use common::events::{
    Envelope, ExpirationComplete, PaymentCreated, PaymentFailed, PaymentRequested, TicketCreated,
    TicketUpdated,
};
use common::listener::ListenerSettings;
use common::money::Cents;
use testkit::{Backend, Client, TestService, Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

/// One running orders service and everything it stands on.
pub(crate) struct TestApp(TestService);

/// The service with the default settings (a 15 minute payment window) and quick listeners.
pub(crate) async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(
        backend,
        &orders::Settings::default(),
        testkit::quick_listeners(),
    )
    .await
}

/// The service with settings and listener settings of the test's choosing.
pub(crate) async fn spawn_app_with(
    backend: Backend,
    settings: &orders::Settings,
    listeners: ListenerSettings,
) -> TestApp {
    TestApp(
        TestService::start_with(
            orders::NAME,
            backend,
            &orders::MIGRATIONS,
            listeners,
            |ctx| orders::start(ctx, settings),
        )
        .await,
    )
}

/// The service whose requests for a ticket it has not heard of wait until a listener announces
/// it, however long that takes.
pub(crate) async fn spawn_app_awaiting(backend: Backend) -> TestApp {
    let settings = orders::Settings::default();
    TestApp(
        TestService::start_awaiting_arrivals(orders::NAME, backend, &orders::MIGRATIONS, |ctx| {
            orders::start(ctx, &settings)
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
    /// Lists a ticket as the tickets service would (ticket:created at version 0) and waits until
    /// the replica has it.
    pub(crate) async fn list_ticket(&self, seller: Uuid, title: &str, cents: i64) -> TicketCreated {
        self.list_ticket_for(seller, None, title, cents).await
    }

    /// [`TestApp::list_ticket`] for a ticket of `event` when given (an event that starts later
    /// than any test runs).
    pub(crate) async fn list_ticket_for(
        &self,
        seller: Uuid,
        event: Option<Uuid>,
        title: &str,
        cents: i64,
    ) -> TicketCreated {
        self.publish_listing(TicketCreated {
            event_id: event,
            ..listing(seller, title, cents)
        })
        .await
    }

    /// [`TestApp::list_ticket`] for a ticket of `event`, which starts at `starts_at`.
    pub(crate) async fn list_ticket_starting(
        &self,
        seller: Uuid,
        event: Uuid,
        starts_at: OffsetDateTime,
        cents: i64,
    ) -> TicketCreated {
        self.publish_listing(TicketCreated {
            event_id: Some(event),
            event_starts_at: Some(starts_at),
            ..listing(seller, "Seat", cents)
        })
        .await
    }

    async fn publish_listing(&self, listing: TicketCreated) -> TicketCreated {
        let event = Envelope::new(listing);
        let id = self.publish(&event).await;
        self.handled(id).await;
        event.data
    }

    /// `POST /api/orders` as `buyer`, returning the order as answered (asserting 201).
    pub(crate) async fn place_order(&self, buyer: &Client, ticket_id: Uuid) -> Value {
        let reply = buyer
            .post("/api/orders", json!({"ticketId": ticket_id.to_string()}))
            .await;
        assert_eq!(reply.status, 201, "{:?}", reply.body);
        reply.body
    }

    /// `GET /api/orders/{id}` as `owner` (asserting 200).
    pub(crate) async fn order(&self, owner: &Client, id: Uuid) -> Value {
        let reply = owner.get(&format!("/api/orders/{id}")).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        reply.body
    }

    /// Waits until the order shows the given status, and returns it.
    pub(crate) async fn order_in_status(&self, owner: &Client, id: Uuid, status: &str) -> Value {
        testkit::eventually(&format!("order {id} to be {status}"), || async {
            let order = self.order(owner, id).await;
            (order["status"] == status).then_some(order)
        })
        .await
    }
}

/// A ticket:updated as the tickets service announces it.
pub(crate) fn ticket_updated(
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
        listing: 0,
    })
}

/// An expiration:complete as the expiration service announces it.
pub(crate) fn expiration_complete(order_id: Uuid) -> Envelope<ExpirationComplete> {
    Envelope::new(ExpirationComplete { order_id })
}

/// A payment:created as the payments service announces it.
pub(crate) fn payment_created(order_id: Uuid) -> Envelope<PaymentCreated> {
    Envelope::new(PaymentCreated {
        id: Uuid::now_v7(),
        order_id,
        stripe_id: format!("pi_{}", Uuid::new_v4().simple()),
    })
}

/// A payment:requested as the payments service announces it: `payment`, the buyer's attempt
/// number `attempt`, asks to charge the order.
pub(crate) fn payment_requested(
    order_id: Uuid,
    payment: Uuid,
    attempt: i64,
) -> Envelope<PaymentRequested> {
    Envelope::new(PaymentRequested {
        id: payment,
        order_id,
        attempt,
    })
}

/// A payment:failed as the payments service announces it: `payment` ended without a charge.
pub(crate) fn payment_failed(order_id: Uuid, payment: Uuid) -> Envelope<PaymentFailed> {
    Envelope::new(PaymentFailed {
        id: payment,
        order_id,
    })
}

/// The id of an order as the API answered it.
pub(crate) fn id_of(order: &Value) -> Uuid {
    Uuid::parse_str(order["id"].as_str().unwrap()).unwrap()
}

/// A ticket of no event as the tickets service announces its listing, at version 0.
fn listing(seller: Uuid, title: &str, cents: i64) -> TicketCreated {
    TicketCreated {
        id: Uuid::now_v7(),
        version: 0,
        title: title.into(),
        price: Cents::new(cents).unwrap(),
        user_id: seller,
        event_id: None,
        event_starts_at: None,
    }
}
