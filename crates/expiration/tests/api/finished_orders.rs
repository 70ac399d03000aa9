//! Orders that end before their expiry (cancelled by their owner, or paid) never expire, in
//! whichever order their events arrive. Each test expires another order beside them at the same
//! time, so that "nothing arrived" cannot mean the scheduler was not running.

use std::time::Duration;

use testkit::Backend;
use uuid::Uuid;

use crate::helpers::{
    in_millis, order_cancelled, order_completed, order_created, order_ids, spawn_app,
};

testkit::each_database!(
    a_cancelled_order_never_expires,
    a_paid_order_never_expires,
    a_cancellation_that_arrives_before_its_order_leaves_nothing_to_expire,
);

async fn a_cancelled_order_never_expires(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut observer = app.observe().await;
    let (cancelled, control) = (Uuid::now_v7(), Uuid::now_v7());
    let expires_at = in_millis(2_500);
    app.deliver(&order_created(cancelled, expires_at)).await;
    app.deliver(&order_created(control, expires_at)).await;

    app.deliver(&order_cancelled(cancelled)).await;

    assert!(!app.has_job(cancelled).await, "the job outlived its order");
    let expired = observer.until(expires_at, Duration::from_secs(3)).await;
    assert_eq!(order_ids(&expired), [control]);
}

async fn a_paid_order_never_expires(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut observer = app.observe().await;
    let (paid, control) = (Uuid::now_v7(), Uuid::now_v7());
    let expires_at = in_millis(2_500);
    app.deliver(&order_created(paid, expires_at)).await;
    app.deliver(&order_created(control, expires_at)).await;

    app.deliver(&order_completed(paid)).await;

    assert!(!app.has_job(paid).await, "the job outlived its order");
    let expired = observer.until(expires_at, Duration::from_secs(3)).await;
    assert_eq!(order_ids(&expired), [control]);
}

async fn a_cancellation_that_arrives_before_its_order_leaves_nothing_to_expire(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut observer = app.observe().await;
    let (cancelled, control) = (Uuid::now_v7(), Uuid::now_v7());
    let expires_at = in_millis(1_000);

    app.deliver(&order_cancelled(cancelled)).await;
    app.deliver(&order_created(cancelled, expires_at)).await;
    app.deliver(&order_created(control, expires_at)).await;

    assert!(!app.has_job(cancelled).await, "a job for a cancelled order");
    let expired = observer.until(expires_at, Duration::from_secs(3)).await;
    assert_eq!(order_ids(&expired), [control]);
}
