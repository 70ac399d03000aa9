//! The ticket replica: fed only by ticket:created and ticket:updated, applied in version order
//! whatever order, however often and however late the events arrive. What
//! the replica holds shows in the ticket of an order, and in whom it may be sold to.

use std::time::Duration;

use common::events::{Envelope, EventType, TicketCreated, TicketUpdated};
use common::listener::ListenerSettings;
use testkit::{Backend, Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, id_of, spawn_app, spawn_app_with, ticket_updated};

testkit::each_database!(
    a_listed_ticket_is_replicated_once,
    the_next_version_of_a_ticket_is_applied,
    an_early_update_is_applied_only_after_the_one_before_it,
    an_old_update_is_dropped,
    the_same_update_twice_applies_once,
    an_update_of_an_unknown_ticket_is_retried_then_dead_lettered,
    an_order_keeps_the_ticket_as_its_buyer_saw_it,
);

/// The ticket as the replica holds it now, seen by a fresh buyer through a new order, which is
/// then cancelled so the ticket can be looked at again. An order shows its ticket as it was
/// when the order was placed, so each look needs an order of its own.
async fn replica_view(app: &TestApp, ticket: Uuid) -> Value {
    let buyer = app.sign_in();
    let order = app.place_order(&buyer, ticket).await;
    let cancelled = buyer
        .delete(&format!("/api/orders/{}", id_of(&order)))
        .await;
    assert_eq!(cancelled.status, 204, "{:?}", cancelled.body);
    order["ticket"].clone()
}

async fn a_listed_ticket_is_replicated_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let (seller, buyer) = (app.sign_in(), app.sign_in());
    let ticket = app.list_ticket(seller.id, "Concert", 2000).await;

    // The same listing announced again under a new message id, with other details: the replica
    // keeps what it has.
    let again = app
        .publish(&Envelope::new(TicketCreated {
            title: "Imposter".into(),
            ..ticket.clone()
        }))
        .await;
    app.handled(again).await;

    let order = app.place_order(&buyer, ticket.id).await;
    assert_eq!(
        order["ticket"],
        json!({"id": ticket.id.to_string(), "title": "Concert", "price": 20, "version": 0})
    );
}

async fn the_next_version_of_a_ticket_is_applied(backend: Backend) {
    let app = spawn_app(backend).await;
    let (seller, new_seller, buyer) = (app.sign_in(), app.sign_in(), app.sign_in());
    let ticket = app.list_ticket(seller.id, "Concert", 2000).await;
    let mut update = ticket_updated(&ticket, 1, "Opera", 1550);
    update.data.user_id = new_seller.id;

    let event = app.publish(&update).await;

    app.handled(event).await;
    let own = new_seller
        .post("/api/orders", json!({"ticketId": ticket.id.to_string()}))
        .await;
    assert_eq!(own.status, 400, "{:?}", own.body);
    own.assert_error_shape();
    assert_eq!(own.error_messages(), ["You cannot buy your own ticket"]);
    assert_eq!(own.error_codes(), ["own_ticket"]);
    let order = app.place_order(&buyer, ticket.id).await;
    assert_eq!(
        order["ticket"],
        json!({"id": ticket.id.to_string(), "title": "Opera", "price": 15.5, "version": 1})
    );
}

async fn an_early_update_is_applied_only_after_the_one_before_it(backend: Backend) {
    // Enough deliveries that the early update is still being retried when its predecessor
    // arrives, instead of ending in the dead letters.
    let listeners = ListenerSettings {
        max_deliver: 100,
        ..testkit::quick_listeners()
    };
    let app = spawn_app_with(backend, &orders::Settings::default(), listeners).await;
    let seller = app.sign_in();
    let ticket = app.list_ticket(seller.id, "Concert", 2000).await;

    let second = app
        .publish(&ticket_updated(&ticket, 2, "Ballet", 3000))
        .await;
    // Long enough for several deliveries of the early update, each refused.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!app.has_handled(second).await, "version 2 applied before 1");
    assert_eq!(replica_view(&app, ticket.id).await["version"], 0);
    let first = app
        .publish(&ticket_updated(&ticket, 1, "Opera", 2500))
        .await;

    app.handled(first).await;
    app.handled(second).await;
    assert_eq!(
        replica_view(&app, ticket.id).await,
        json!({"id": ticket.id.to_string(), "title": "Ballet", "price": 30, "version": 2})
    );
}

async fn an_old_update_is_dropped(backend: Backend) {
    let app = spawn_app(backend).await;
    let seller = app.sign_in();
    let ticket = app.list_ticket(seller.id, "Concert", 2000).await;
    let first = ticket_updated(&ticket, 1, "Opera", 2500);
    app.handled(app.publish(&first).await).await;
    app.handled(
        app.publish(&ticket_updated(&ticket, 2, "Ballet", 3000))
            .await,
    )
    .await;

    // Version 1 once more, as a new message: acknowledged and dropped.
    let late = app
        .publish(&ticket_updated(&ticket, 1, "Opera", 2500))
        .await;

    app.handled(late).await;
    assert_eq!(
        replica_view(&app, ticket.id).await,
        json!({"id": ticket.id.to_string(), "title": "Ballet", "price": 30, "version": 2})
    );
}

async fn the_same_update_twice_applies_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let seller = app.sign_in();
    let ticket = app.list_ticket(seller.id, "Concert", 2000).await;
    let update = ticket_updated(&ticket, 1, "Opera", 2500);

    // The same message twice (the bus drops the second), then, once it is applied, a copy under
    // a new id claiming the same version with other details (only the replica's version check
    // can drop it). The copy waits for the original: two events claiming one version at the same
    // moment are a tie the replica may settle either way.
    let event = app.publish(&update).await;
    app.publish(&update).await;
    app.handled(event).await;
    let copy = app
        .publish(&Envelope::new(TicketUpdated {
            title: "Imposter".into(),
            ..update.data.clone()
        }))
        .await;

    app.handled(copy).await;
    assert_eq!(
        replica_view(&app, ticket.id).await,
        json!({"id": ticket.id.to_string(), "title": "Opera", "price": 25, "version": 1})
    );
}

async fn an_update_of_an_unknown_ticket_is_retried_then_dead_lettered(backend: Backend) {
    let app = spawn_app(backend).await;
    let buyer = app.sign_in();
    let unknown = TicketCreated {
        id: Uuid::now_v7(),
        version: 0,
        title: "Ghost".into(),
        price: common::money::Cents::new(2000).unwrap(),
        user_id: Uuid::now_v7(),
        event_id: None,
        event_starts_at: None,
    };

    let event = app
        .publish(&ticket_updated(&unknown, 1, "Ghost", 2000))
        .await;

    let dead = app.dead_lettered(EventType::TicketUpdated, event).await;
    assert_eq!(
        dead.deliveries, app.ctx.listeners.max_deliver,
        "retried before giving up"
    );
    assert!(!app.has_handled(event).await);
    let reply = buyer
        .post("/api/orders", json!({"ticketId": unknown.id.to_string()}))
        .await;
    assert_eq!(reply.status, 404, "{:?}", reply.body);
    reply.assert_error_shape();
}

async fn an_order_keeps_the_ticket_as_its_buyer_saw_it(backend: Backend) {
    let app = spawn_app(backend).await;
    let (seller, buyer) = (app.sign_in(), app.sign_in());
    let ticket = app.list_ticket(seller.id, "Concert", 2000).await;
    let placed = app.place_order(&buyer, ticket.id).await;
    let order = id_of(&placed);

    // The seller's edit crossed the order: the tickets service accepted it before it heard of
    // the order, and the replica applies it.
    let edit = app
        .publish(&ticket_updated(&ticket, 1, "Cheap seats", 1))
        .await;
    app.handled(edit).await;

    let as_placed =
        json!({"id": ticket.id.to_string(), "title": "Concert", "price": 20, "version": 0});
    assert_eq!(placed["ticket"], as_placed);
    assert_eq!(app.order(&buyer, order).await["ticket"], as_placed);
    let listed = buyer.get("/api/orders").await;
    assert_eq!(listed.body[0]["ticket"], as_placed);
}
