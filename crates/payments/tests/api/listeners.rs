//! The replica of orders: fed by order:created, order:cancelled and order:completed, in version
//! order, however often and in whatever order they arrive.

use std::time::Duration;

use testkit::Backend;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::helpers::{order_created, spawn_app, spawn_app_patient};

testkit::each_database!(
    order_changes_apply_in_version_order,
    an_old_order_change_is_dropped,
    a_cancellation_before_its_order_waits_for_it,
    the_same_order_announced_twice_is_recorded_once,
);

async fn order_changes_apply_in_version_order(backend: Backend) {
    // Patient listeners: the early event must not be dead-lettered while the test looks at it.
    let app = spawn_app_patient(backend).await;
    let alice = app.sign_in();
    let order_id = app.place_order(alice.id, 2000).await;

    // Version 2 before version 1: held back and retried, neither applied over the gap nor
    // dropped.
    let early = app.cancel_order(order_id, 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!app.has_handled(early).await);
    assert_eq!(app.replica(order_id).await, Some(("created".into(), 0)));

    let completed = app.complete_order(order_id, 1).await;
    app.handled(completed).await;
    app.handled(early).await;
    assert_eq!(app.replica(order_id).await, Some(("cancelled".into(), 2)));
}

async fn an_old_order_change_is_dropped(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let order_id = app.place_order(alice.id, 2000).await;
    let cancelled = app.cancel_order(order_id, 1).await;
    app.handled(cancelled).await;

    let stale = app.complete_order(order_id, 1).await;
    app.handled(stale).await;

    assert_eq!(app.replica(order_id).await, Some(("cancelled".into(), 1)));
}

async fn a_cancellation_before_its_order_waits_for_it(backend: Backend) {
    let app = spawn_app_patient(backend).await;
    let alice = app.sign_in();
    let order_id = Uuid::now_v7();

    let cancelled = app.cancel_order(order_id, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!app.has_handled(cancelled).await);
    let expires_at = OffsetDateTime::now_utc() + time::Duration::minutes(15);
    app.publish(&order_created(order_id, alice.id, 2000, expires_at))
        .await;

    app.handled(cancelled).await;
    assert_eq!(app.replica(order_id).await, Some(("cancelled".into(), 1)));
    let reply = app.pay(&alice, order_id, "tok_visa").await;
    assert_eq!(reply.status, 400, "{:?}", reply.body);
}

async fn the_same_order_announced_twice_is_recorded_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let order_id = Uuid::now_v7();
    let expires_at = OffsetDateTime::now_utc() + time::Duration::minutes(15);

    // Two messages, two ids, one order.
    let first = app
        .publish(&order_created(order_id, alice.id, 2000, expires_at))
        .await;
    app.handled(first).await;
    let cancelled = app.cancel_order(order_id, 1).await;
    app.handled(cancelled).await;
    let second = app
        .publish(&order_created(order_id, alice.id, 2000, expires_at))
        .await;
    app.handled(second).await;

    assert_eq!(app.replica(order_id).await, Some(("cancelled".into(), 1)));
}
