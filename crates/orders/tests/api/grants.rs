//! Orders' side of paying: payments asks (payment:requested) and orders grants a live order to
//! that one payment (`awaiting:payment`, order:updated). While granted, the owner cannot cancel
//! the order and its expiry waits; the payment's failure (payment:failed) gives it back, or
//! cancels it if its window passed meanwhile; its success (payment:created) completes it.

use std::time::Duration;

use common::events::{OrderCancelled, OrderStatus, OrderUpdated, TicketRef};
use testkit::{Backend, User};
use uuid::Uuid;

use crate::helpers::{
    TestApp, expiration_complete, id_of, payment_created, payment_failed, payment_requested,
    spawn_app, spawn_app_with,
};

testkit::each_database!(
    a_live_order_is_granted_to_the_payment_that_asks_and_announced,
    an_order_being_paid_cannot_be_cancelled_and_its_expiry_waits,
    the_granted_payments_failure_gives_the_order_back,
    a_failure_after_the_window_cancels_the_order_it_held_back,
    a_failure_of_another_payment_changes_nothing,
    a_request_after_the_window_cancels_the_order_instead,
    a_request_for_a_cancelled_order_grants_nothing,
);

/// A buyer with a freshly placed order on a freshly listed ticket.
async fn placed_order(app: &TestApp) -> (User, Uuid, Uuid) {
    let (seller, buyer) = (app.sign_in(), app.sign_in());
    let ticket = app.list_ticket(seller.id, "Concert", 2000).await;
    let order = id_of(&app.place_order(&buyer, ticket.id).await);
    (buyer, order, ticket.id)
}

/// Asks for a grant as payments would (attempt `attempt`) and waits until orders has applied
/// the request.
async fn request(app: &TestApp, order: Uuid, attempt: i64) -> Uuid {
    let payment = Uuid::now_v7();
    let event = app
        .publish(&payment_requested(order, payment, attempt))
        .await;
    app.handled(event).await;
    payment
}

async fn a_live_order_is_granted_to_the_payment_that_asks_and_announced(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut updates = app.watch::<OrderUpdated>().await;
    let (buyer, id, ticket_id) = placed_order(&app).await;

    let payment = request(&app, id, 1).await;

    let order = app.order(&buyer, id).await;
    assert_eq!(order["status"], "awaiting:payment");
    assert_eq!(order["version"], 1);
    assert_eq!(
        updates.next().await.data,
        OrderUpdated {
            id,
            version: 1,
            status: OrderStatus::AwaitingPayment,
            payment_id: Some(payment),
            ticket: TicketRef { id: ticket_id },
        }
    );
    // The same request again is granted already; a request of the same attempt by another
    // payment is late (it was given up), and is not granted.
    let again = app.publish(&payment_requested(id, payment, 1)).await;
    app.handled(again).await;
    let late = app.publish(&payment_requested(id, Uuid::now_v7(), 1)).await;
    app.handled(late).await;
    // The next attempt begins only once this one ended: it takes the grant over.
    let next = request(&app, id, 2).await;
    app.flushed().await;
    let grants: Vec<(i64, Option<Uuid>)> = updates
        .rest()
        .await
        .iter()
        .map(|e| (e.data.version, e.data.payment_id))
        .collect();
    assert_eq!(grants, [(2, Some(next))]);

    let paid = app.publish(&payment_created(id)).await;
    app.handled(paid).await;
    assert_eq!(app.order(&buyer, id).await["status"], "complete");
}

async fn an_order_being_paid_cannot_be_cancelled_and_its_expiry_waits(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut cancelled = app.watch::<OrderCancelled>().await;
    let (buyer, id, _) = placed_order(&app).await;
    let payment = request(&app, id, 1).await;

    let refused = buyer.delete(&format!("/api/orders/{id}")).await;
    let expiry = app.publish(&expiration_complete(id)).await;
    app.handled(expiry).await;

    assert_eq!(refused.status, 400, "{:?}", refused.body);
    refused.assert_error_shape();
    assert_eq!(
        refused.error_messages(),
        ["Cannot cancel an order while it is being paid"]
    );
    assert_eq!(refused.error_codes(), ["order_being_paid"]);
    let order = app.order(&buyer, id).await;
    assert_eq!(order["status"], "awaiting:payment");
    assert_eq!(order["version"], 1);
    app.flushed().await;
    assert!(cancelled.rest().await.is_empty(), "no order:cancelled");

    // The expiry came (by the expiration service's clock) well before the 15 minutes are up by
    // this service's: the payment's failure ends the order all the same.
    let failed = app.publish(&payment_failed(id, payment)).await;
    app.handled(failed).await;

    assert_eq!(app.order(&buyer, id).await["status"], "cancelled");
    assert_eq!(cancelled.next().await.data.version, 2);
}

async fn the_granted_payments_failure_gives_the_order_back(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut updates = app.watch::<OrderUpdated>().await;
    let (buyer, id, _) = placed_order(&app).await;
    let payment = request(&app, id, 1).await;

    let failed = app.publish(&payment_failed(id, payment)).await;
    app.handled(failed).await;

    let order = app.order(&buyer, id).await;
    assert_eq!(order["status"], "created");
    assert_eq!(order["version"], 2);
    let versions: Vec<(i64, OrderStatus, Option<Uuid>)> =
        [updates.next().await, updates.next().await]
            .iter()
            .map(|e| (e.data.version, e.data.status, e.data.payment_id))
            .collect();
    assert_eq!(
        versions,
        [
            (1, OrderStatus::AwaitingPayment, Some(payment)),
            (2, OrderStatus::Created, None)
        ]
    );
    // Its owner may cancel it again.
    assert_eq!(buyer.delete(&format!("/api/orders/{id}")).await.status, 204);
}

async fn a_failure_after_the_window_cancels_the_order_it_held_back(backend: Backend) {
    let settings = orders::Settings {
        order_expiration: Duration::from_millis(300),
        ..orders::Settings::default()
    };
    let app = spawn_app_with(backend, &settings, testkit::quick_listeners()).await;
    let mut cancelled = app.watch::<OrderCancelled>().await;
    let (buyer, id, ticket_id) = placed_order(&app).await;
    let payment = request(&app, id, 1).await;
    let expiry = app.publish(&expiration_complete(id)).await;
    app.handled(expiry).await;
    assert_eq!(app.order(&buyer, id).await["status"], "awaiting:payment");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let failed = app.publish(&payment_failed(id, payment)).await;
    app.handled(failed).await;

    let order = app.order(&buyer, id).await;
    assert_eq!(order["status"], "cancelled");
    assert_eq!(order["version"], 2);
    assert_eq!(
        cancelled.next().await.data,
        OrderCancelled {
            id,
            version: 2,
            ticket: TicketRef { id: ticket_id },
        }
    );
}

async fn a_failure_of_another_payment_changes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let (buyer, id, _) = placed_order(&app).await;
    request(&app, id, 1).await;

    let stray = app.publish(&payment_failed(id, Uuid::now_v7())).await;
    app.handled(stray).await;

    let order = app.order(&buyer, id).await;
    assert_eq!(order["status"], "awaiting:payment");
    assert_eq!(order["version"], 1);
}

async fn a_request_after_the_window_cancels_the_order_instead(backend: Backend) {
    let settings = orders::Settings {
        order_expiration: Duration::from_millis(200),
        ..orders::Settings::default()
    };
    let app = spawn_app_with(backend, &settings, testkit::quick_listeners()).await;
    let mut cancelled = app.watch::<OrderCancelled>().await;
    let (buyer, id, _) = placed_order(&app).await;
    tokio::time::sleep(Duration::from_millis(250)).await;

    request(&app, id, 1).await;

    let order = app.order(&buyer, id).await;
    assert_eq!(order["status"], "cancelled");
    assert_eq!(order["version"], 1);
    assert_eq!(cancelled.next().await.data.version, 1);
}

async fn a_request_for_a_cancelled_order_grants_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut updates = app.watch::<OrderUpdated>().await;
    let (buyer, id, _) = placed_order(&app).await;
    assert_eq!(buyer.delete(&format!("/api/orders/{id}")).await.status, 204);

    request(&app, id, 1).await;

    let order = app.order(&buyer, id).await;
    assert_eq!(order["status"], "cancelled");
    assert_eq!(order["version"], 1);
    app.flushed().await;
    assert!(updates.rest().await.is_empty(), "no order:updated");
}
