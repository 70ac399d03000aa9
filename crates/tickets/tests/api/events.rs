//! What the service announces: every listing and edit reaches the bus through the outbox.

use common::events::{EventType, TicketCreated, TicketUpdated};
use common::money::Cents;
use testkit::{Backend, json};
use uuid::Uuid;

use crate::helpers::{id_of, spawn_app};

testkit::each_database!(
    creating_a_ticket_publishes_ticket_created,
    a_ticket_for_an_event_is_announced_with_its_event,
    updating_a_ticket_publishes_ticket_updated_with_the_new_version,
);

async fn creating_a_ticket_publishes_ticket_created(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut created = app.watch::<TicketCreated>().await;
    let alice = app.sign_in();

    let ticket = app.list_ticket(&alice, "Concert", json!(19.99)).await;

    let event = created.next().await;
    assert_eq!(event.event_type, EventType::TicketCreated);
    assert_eq!(
        event.data,
        TicketCreated {
            id: Uuid::parse_str(&id_of(&ticket)).unwrap(),
            version: 0,
            title: "Concert".into(),
            price: Cents::new(1999).unwrap(),
            user_id: alice.id,
            event_id: None,
            event_starts_at: None,
        }
    );
}

async fn updating_a_ticket_publishes_ticket_updated_with_the_new_version(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut updated = app.watch::<TicketUpdated>().await;
    let alice = app.sign_in();
    let id = id_of(&app.list_ticket(&alice, "Concert", json!(20)).await);

    let reply = alice
        .put(
            &format!("/api/tickets/{id}"),
            json!({"title": "Opera", "price": 15.5}),
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);

    let event = updated.next().await;
    assert_eq!(
        event.data,
        TicketUpdated {
            id: Uuid::parse_str(&id).unwrap(),
            version: 1,
            title: "Opera".into(),
            price: Cents::new(1550).unwrap(),
            user_id: alice.id,
            order_id: None,
            listing: 0,
        }
    );
}

async fn a_ticket_for_an_event_is_announced_with_its_event(backend: Backend) {
    let year = time::OffsetDateTime::now_utc().year() + 2;
    let app = spawn_app(backend).await;
    let mut created = app.watch::<TicketCreated>().await;
    let alice = app.sign_in();
    let event = alice
        .post(
            "/api/events",
            json!({"name": "Adele", "venue": "Wembley", "city": "London",
                   "startsAt": format!("{year}-08-01T19:30"), "timeZone": "Europe/London"}),
        )
        .await;
    assert_eq!(event.status, 201, "{:?}", event.body);
    let event_id = Uuid::parse_str(&id_of(&event.body)).unwrap();

    let reply = alice
        .post(
            "/api/tickets",
            json!({"title": "Adele", "price": 90, "eventId": event_id, "seat": "G12"}),
        )
        .await;
    assert_eq!(reply.status, 201, "{:?}", reply.body);

    let announced = created.next().await;
    assert_eq!(announced.data.id.to_string(), id_of(&reply.body));
    assert_eq!(announced.data.event_id, Some(event_id));
    // Its sale ends when the event starts: 19:30 in London's summer is 18:30 UTC.
    assert_eq!(
        announced.data.event_starts_at.map(|at| at.to_string()),
        Some(format!("{year}-08-01 18:30:00.0 +00:00:00"))
    );
}
