//! What becomes of an order when the expiration and payments services speak: an expiry cancels
//! a live order, a payment completes it, and neither touches an order that is already finished
//! (a late expiry, a cancelled paid order). Every change is announced once; no change, no event.

use common::events::{EventType, OrderCancelled, OrderCompleted, TicketRef};
use testkit::{Backend, User, json};
use uuid::Uuid;

use crate::helpers::{TestApp, expiration_complete, id_of, payment_created, spawn_app};

testkit::each_database!(
    an_expiry_cancels_a_created_order_and_announces_it,
    an_expiry_of_a_paid_order_changes_nothing_and_announces_nothing,
    an_expiry_of_a_cancelled_order_changes_nothing_and_announces_nothing,
    a_payment_completes_the_order_and_announces_it,
    the_same_order_paid_twice_completes_once,
    a_payment_for_a_cancelled_order_does_not_complete_it,
    events_for_an_unknown_order_are_retried_then_dead_lettered,
);

/// A buyer with a freshly placed order on a freshly listed ticket.
async fn placed_order(app: &TestApp) -> (User, Uuid, Uuid) {
    let (seller, buyer) = (app.sign_in(), app.sign_in());
    let ticket = app.list_ticket(seller.id, "Concert", 2000).await;
    let order = id_of(&app.place_order(&buyer, ticket.id).await);
    (buyer, order, ticket.id)
}

async fn an_expiry_cancels_a_created_order_and_announces_it(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut cancelled = app.watch::<OrderCancelled>().await;
    let (buyer, id, ticket_id) = placed_order(&app).await;

    let expiry = app.publish(&expiration_complete(id)).await;

    app.handled(expiry).await;
    let order = app.order(&buyer, id).await;
    assert_eq!(order["status"], "cancelled");
    assert_eq!(order["version"], 1);
    let event = cancelled.next().await;
    assert_eq!(event.event_type, EventType::OrderCancelled);
    assert_eq!(
        event.data,
        OrderCancelled {
            id,
            version: 1,
            ticket: TicketRef { id: ticket_id },
        }
    );
    // The lock has lapsed: the ticket is for sale again.
    let next = app.sign_in();
    app.place_order(&next, ticket_id).await;
}

async fn an_expiry_of_a_paid_order_changes_nothing_and_announces_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut cancelled = app.watch::<OrderCancelled>().await;
    let (buyer, id, ticket_id) = placed_order(&app).await;
    let payment = app.publish(&payment_created(id)).await;
    app.handled(payment).await;
    let paid = app.order(&buyer, id).await;
    assert_eq!(paid["status"], "complete");

    let expiry = app.publish(&expiration_complete(id)).await;

    app.handled(expiry).await;
    assert_eq!(app.order(&buyer, id).await, paid);
    app.flushed().await;
    assert!(cancelled.rest().await.is_empty(), "no order:cancelled");
    // A sold ticket stays sold.
    let late = app
        .sign_in()
        .post("/api/orders", json!({"ticketId": ticket_id.to_string()}))
        .await;
    assert_eq!(late.status, 400, "{:?}", late.body);
    late.assert_error_shape();
    assert_eq!(late.error_messages(), ["Ticket is already reserved"]);
    assert_eq!(late.error_codes(), ["ticket_reserved"]);
}

async fn an_expiry_of_a_cancelled_order_changes_nothing_and_announces_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut cancelled = app.watch::<OrderCancelled>().await;
    let (buyer, id, _) = placed_order(&app).await;
    assert_eq!(buyer.delete(&format!("/api/orders/{id}")).await.status, 204);

    let expiry = app.publish(&expiration_complete(id)).await;

    app.handled(expiry).await;
    let order = app.order(&buyer, id).await;
    assert_eq!(order["status"], "cancelled");
    assert_eq!(order["version"], 1);
    app.flushed().await;
    let versions: Vec<i64> = cancelled
        .rest()
        .await
        .iter()
        .map(|e| e.data.version)
        .collect();
    assert_eq!(versions, [1], "only the owner's cancellation is announced");
}

async fn a_payment_completes_the_order_and_announces_it(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut completed = app.watch::<OrderCompleted>().await;
    let (buyer, id, ticket_id) = placed_order(&app).await;

    let payment = app.publish(&payment_created(id)).await;

    app.handled(payment).await;
    let order = app.order(&buyer, id).await;
    assert_eq!(order["status"], "complete");
    assert_eq!(order["version"], 1);
    let event = completed.next().await;
    assert_eq!(event.event_type, EventType::OrderCompleted);
    assert_eq!(
        event.data,
        OrderCompleted {
            id,
            version: 1,
            ticket: TicketRef { id: ticket_id },
            user_id: Some(buyer.id),
        }
    );
}

async fn the_same_order_paid_twice_completes_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut completed = app.watch::<OrderCompleted>().await;
    let (buyer, id, _) = placed_order(&app).await;

    // Two messages, two ids: the inbox cannot tell them apart, the order's status must.
    let first = app.publish(&payment_created(id)).await;
    let second = app.publish(&payment_created(id)).await;

    app.handled(first).await;
    app.handled(second).await;
    let order = app.order(&buyer, id).await;
    assert_eq!(order["status"], "complete");
    assert_eq!(order["version"], 1);
    app.flushed().await;
    assert_eq!(completed.rest().await.len(), 1, "one order:completed");
}

async fn a_payment_for_a_cancelled_order_does_not_complete_it(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut completed = app.watch::<OrderCompleted>().await;
    let (buyer, id, _) = placed_order(&app).await;
    assert_eq!(buyer.delete(&format!("/api/orders/{id}")).await.status, 204);
    let cancelled = app.order(&buyer, id).await;

    let payment = app.publish(&payment_created(id)).await;

    app.handled(payment).await;
    assert_eq!(app.order(&buyer, id).await, cancelled);
    assert_eq!(cancelled["status"], "cancelled");
    app.flushed().await;
    assert!(completed.rest().await.is_empty(), "no order:completed");
}

async fn events_for_an_unknown_order_are_retried_then_dead_lettered(backend: Backend) {
    let app = spawn_app(backend).await;
    let (buyer, known, _) = placed_order(&app).await;
    let before = app.order(&buyer, known).await;
    let unknown = Uuid::now_v7();

    let expiry = app.publish(&expiration_complete(unknown)).await;
    let payment = app.publish(&payment_created(unknown)).await;

    for (event_type, event) in [
        (EventType::ExpirationComplete, expiry),
        (EventType::PaymentCreated, payment),
    ] {
        let dead = app.dead_lettered(event_type, event).await;
        assert_eq!(
            dead.deliveries, app.ctx.listeners.max_deliver,
            "retried before giving up"
        );
        assert!(!app.has_handled(event).await);
    }
    assert_eq!(app.order(&buyer, known).await, before);
}
