//! When an order expires: once, at its expiresAt, however often its order:created arrives, and at
//! once when that time has already passed.

use std::time::Duration;

use testkit::Backend;
use uuid::Uuid;

use crate::helpers::{assert_none, in_millis, order_created, order_ids, spawn_app};

testkit::each_database!(
    an_order_expires_once_and_not_before_its_expiry,
    an_order_already_past_its_expiry_expires_at_once,
    a_new_earlier_order_expires_on_time_while_a_later_one_waits,
    the_same_order_announced_twice_expires_once,
    an_order_announced_again_after_it_expired_does_not_expire_again,
);

/// Slack for clocks: the store keeps milliseconds, the event carries nanoseconds.
const CLOCK_SLACK: time::Duration = time::Duration::milliseconds(50);

async fn an_order_expires_once_and_not_before_its_expiry(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut observer = app.observe().await;
    let order_id = Uuid::now_v7();
    let expires_at = in_millis(1_000);

    app.publish(&order_created(order_id, expires_at)).await;

    let expired = observer.next().await;
    assert_eq!(expired.order_id, order_id);
    assert!(
        expired.at >= expires_at - CLOCK_SLACK,
        "expired at {} before its expiry {expires_at}",
        expired.at
    );
    let again = observer.during(Duration::from_secs(2)).await;
    assert_none(&again, "expired again");
    assert_eq!(app.pending_jobs().await, 0, "a fired job was left behind");
}

async fn an_order_already_past_its_expiry_expires_at_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut observer = app.observe().await;
    let order_id = Uuid::now_v7();

    app.publish(&order_created(order_id, in_millis(-60_000)))
        .await;

    // Generous, but well under the scheduler's 30 s safety net: it must not take that to notice.
    let expired = observer
        .next_within(Duration::from_secs(10))
        .await
        .expect("an overdue order did not expire at once");
    assert_eq!(expired.order_id, order_id);
}

async fn a_new_earlier_order_expires_on_time_while_a_later_one_waits(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut observer = app.observe().await;
    let (later, sooner) = (Uuid::now_v7(), Uuid::now_v7());
    app.deliver(&order_created(later, in_millis(10 * 60_000)))
        .await;
    // Let the scheduler go to sleep until the later order's expiry.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let expires_at = in_millis(1_000);
    app.publish(&order_created(sooner, expires_at)).await;

    // Generous, but well under the scheduler's 30 s safety net: only a wake-up meets it.
    let expired = observer
        .next_within(Duration::from_secs(11))
        .await
        .expect("the sooner order did not expire within 10 s of its expiry");
    assert_eq!(expired.order_id, sooner);
    assert!(expired.at >= expires_at - CLOCK_SLACK);
}

async fn the_same_order_announced_twice_expires_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut observer = app.observe().await;
    let order_id = Uuid::now_v7();
    let expires_at = in_millis(1_000);

    // Two messages, two ids, one order: the inbox sees two events, the table one job.
    let first = app.publish(&order_created(order_id, expires_at)).await;
    let second = app.publish(&order_created(order_id, expires_at)).await;
    app.handled(first).await;
    app.handled(second).await;

    let expired = observer.until(expires_at, Duration::from_secs(3)).await;
    assert_eq!(order_ids(&expired), [order_id]);
}

async fn an_order_announced_again_after_it_expired_does_not_expire_again(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut observer = app.observe().await;
    let order_id = Uuid::now_v7();
    let expires_at = in_millis(-1_000);
    app.publish(&order_created(order_id, expires_at)).await;
    assert_eq!(observer.next().await.order_id, order_id);

    // A late copy (republished under a new id): already past its expiry, so a job written for it
    // would fire at once. Another overdue order shows the scheduler is still at work.
    app.deliver(&order_created(order_id, expires_at)).await;
    let control = Uuid::now_v7();
    app.publish(&order_created(control, expires_at)).await;

    let expired = observer.during(Duration::from_secs(3)).await;
    assert_eq!(order_ids(&expired), [control]);
}
