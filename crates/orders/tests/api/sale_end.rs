//! A ticket of an event is for sale until the event starts: a hold on it ends then at the latest,
//! and afterwards it cannot be ordered, by name or as an event's best available.

use std::time::Duration;

use common::events::OrderCreated;
use testkit::{Backend, json};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::helpers::{expiration_complete, id_of, spawn_app};

testkit::each_database!(
    a_hold_ends_when_the_event_starts_if_that_comes_before_the_payment_window_does,
    once_the_event_has_started_its_tickets_cannot_be_ordered,
);

/// Now, to the millisecond the service keeps times in, plus `span`.
fn in_(span: Duration) -> OffsetDateTime {
    common::clock::now() + span
}

fn expires_at(order: &testkit::Value) -> OffsetDateTime {
    OffsetDateTime::parse(
        order["expiresAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
}

async fn a_hold_ends_when_the_event_starts_if_that_comes_before_the_payment_window_does(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let mut created = app.watch::<OrderCreated>().await;
    let seller = app.sign_in();
    let buyer = app.sign_in();
    let soon = in_(Duration::from_secs(5 * 60));
    let tonight = in_(Duration::from_secs(6 * 60 * 60));
    let starts_soon = app
        .list_ticket_starting(seller.id, Uuid::now_v7(), soon, 2000)
        .await;
    let starts_tonight = app
        .list_ticket_starting(seller.id, Uuid::now_v7(), tonight, 2000)
        .await;

    let cut_short = app.place_order(&buyer, starts_soon.id).await;
    let before = common::clock::now();
    let full = app.place_order(&buyer, starts_tonight.id).await;
    let after = common::clock::now();

    // Five minutes to pay, not fifteen: the expiry that lets an unpaid hold go comes at the
    // start, and the expiration service learns it from order:created.
    assert_eq!(expires_at(&cut_short), soon);
    assert_eq!(created.next().await.data.expires_at, soon);
    // The full fifteen minutes when the event starts later.
    let window = time::Duration::minutes(15);
    assert!((before + window..=after + window).contains(&expires_at(&full)));
    // When the expiry comes, the hold goes, as any other would.
    app.publish(&expiration_complete(id_of(&cut_short))).await;
    app.order_in_status(&buyer, id_of(&cut_short), "cancelled")
        .await;
}

async fn once_the_event_has_started_its_tickets_cannot_be_ordered(backend: Backend) {
    let app = spawn_app(backend).await;
    let seller = app.sign_in();
    let buyer = app.sign_in();
    let event = Uuid::now_v7();
    let a_moment_ago = common::clock::now() - Duration::from_millis(1);
    let ticket = app
        .list_ticket_starting(seller.id, event, a_moment_ago, 1000)
        .await;

    let named = buyer
        .post("/api/orders", json!({"ticketId": ticket.id.to_string()}))
        .await;
    assert_eq!(named.status, 400, "{:?}", named.body);
    assert_eq!(named.error_codes(), ["sale_ended"]);
    assert_eq!(
        named.error_messages(),
        ["The event has started: its tickets are no longer for sale"]
    );
    let best = buyer
        .post("/api/orders", json!({"eventId": event.to_string()}))
        .await;
    assert_eq!(best.status, 400, "{:?}", best.body);
    assert_eq!(best.error_codes(), ["sold_out"]);
}
