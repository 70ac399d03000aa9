//! Jobs are durable and fire exactly once: across a restart, and with several replicas of the
//! service claiming from one table at the same time.

use std::collections::BTreeSet;
use std::time::Duration;

use testkit::Backend;
use uuid::Uuid;

use crate::helpers::{assert_none, in_millis, order_created, order_ids, spawn_app};

testkit::each_database!(
    orders_that_expired_while_the_service_was_down_expire_once_on_start,
    two_replicas_expire_each_order_exactly_once,
);

async fn orders_that_expired_while_the_service_was_down_expire_once_on_start(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let mut observer = app.observe().await;
    let expires_at = in_millis(3_000);
    let orders: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
    for &order_id in &orders {
        app.deliver(&order_created(order_id, expires_at)).await;
    }

    app.stop().await;
    let while_down = observer.until(expires_at, Duration::from_millis(500)).await;
    assert_none(&while_down, "a stopped service fired");
    app.start_replica().await;

    let expired = observer.take(orders.len(), Duration::from_secs(10)).await;
    let mut expected = orders.clone();
    expected.sort();
    assert_eq!(order_ids(&expired), expected);
    let again = observer.during(Duration::from_secs(2)).await;
    assert_none(&again, "expired again");
    assert_eq!(app.pending_jobs().await, 0, "a fired job was left behind");
}

async fn two_replicas_expire_each_order_exactly_once(backend: Backend) {
    let mut app = spawn_app(backend).await;
    app.start_replica().await;
    let mut observer = app.observe().await;
    // 200 orders, all expiring within the same second, so both schedulers wake for them together.
    let due = in_millis(2_000);
    let orders: Vec<Uuid> = (0..200).map(|_| Uuid::now_v7()).collect();
    for (i, &order_id) in orders.iter().enumerate() {
        let offset = time::Duration::milliseconds(i64::try_from(i).unwrap() * 4);
        app.publish(&order_created(order_id, due + offset)).await;
    }

    let expired = observer.take(orders.len(), Duration::from_secs(60)).await;
    let late = observer.during(Duration::from_secs(2)).await;

    let fired: BTreeSet<Uuid> = expired.iter().map(|e| e.order_id).collect();
    assert_eq!(fired.len(), orders.len(), "some orders expired twice");
    assert_eq!(fired, orders.iter().copied().collect::<BTreeSet<_>>());
    assert_none(&late, "expired again");
    assert_eq!(app.pending_jobs().await, 0, "a fired job was left behind");
}
