//! Payments' side of orders' grant: nothing is charged until orders has granted the order to the
//! claim (order:updated, awaiting:payment); a claim whose grant does not come is withdrawn and
//! orders told (payment:failed); a claim that ends without a charge tells orders too. Here the
//! test plays orders on the bus.

use std::time::Duration;

use common::events::{PaymentFailed, PaymentRequested};
use testkit::{Backend, json};

use crate::helpers::{id_of, spawn_app, spawn_app_ungranted, spawn_app_waiting};

testkit::each_database!(
    nothing_is_charged_until_orders_grants_the_order,
    a_claim_whose_grant_does_not_come_is_withdrawn_and_orders_told,
    a_grant_that_comes_after_the_claim_gave_up_is_handed_back,
    a_declined_card_tells_orders_the_payment_failed,
);

async fn nothing_is_charged_until_orders_grants_the_order(backend: Backend) {
    let app = spawn_app_ungranted(backend).await;
    let mut requests = app.watch::<PaymentRequested>().await;
    let alice = app.sign_in();
    let order_id = app.place_order(alice.id, 2100).await;

    let paying = tokio::spawn({
        let alice = alice.clone();
        let body = json!({"token": "tok_visa", "orderId": order_id.to_string()});
        async move { alice.post("/api/payments", body).await }
    });
    let request = requests.next().await.data;

    assert_eq!(request.order_id, order_id);
    assert_eq!(request.attempt, 1);
    let claims = app.payments_of(order_id).await;
    assert_eq!(claims.len(), 1, "{claims:?}");
    assert_eq!(claims[0].id, request.id.to_string());
    assert_eq!(claims[0].status, "pending");
    assert!(
        app.sandbox_charges_of(order_id).await.is_empty(),
        "nothing charged before the grant"
    );
    assert!(!paying.is_finished(), "the request waits for the grant");

    app.grant(order_id, request.id, 1).await;

    let reply = tokio::time::timeout(Duration::from_secs(20), paying)
        .await
        .expect("the grant wakes the request")
        .unwrap();
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    assert_eq!(id_of(&reply), request.id.to_string());
    assert_eq!(app.sandbox_charges_of(order_id).await.len(), 1);
    assert_eq!(app.payment_of(order_id).await.status, "succeeded");
}

async fn a_claim_whose_grant_does_not_come_is_withdrawn_and_orders_told(backend: Backend) {
    let app = spawn_app_waiting(backend, Duration::from_millis(300)).await;
    let mut requests = app.watch::<PaymentRequested>().await;
    let mut failures = app.watch::<PaymentFailed>().await;
    let alice = app.sign_in();
    let order_id = app.place_order(alice.id, 2100).await;

    let reply = app.pay(&alice, order_id, "tok_visa").await;

    assert_eq!(reply.status, 503, "{:?}", reply.body);
    reply.assert_error_shape();
    let asked = requests.next().await.data;
    let failed = failures.next().await.data;
    assert_eq!((failed.id, failed.order_id), (asked.id, order_id));
    assert!(
        app.payments_of(order_id).await.is_empty(),
        "claim withdrawn"
    );
    assert!(app.sandbox_charges_of(order_id).await.is_empty());
    // The next try is a new attempt, with a key of its own.
    let retry = app.pay(&alice, order_id, "tok_visa").await;
    assert_eq!(retry.status, 503, "{:?}", retry.body);
    assert_eq!(requests.next().await.data.attempt, 2);
}

async fn a_grant_that_comes_after_the_claim_gave_up_is_handed_back(backend: Backend) {
    let app = spawn_app_waiting(backend, Duration::from_millis(300)).await;
    let mut failures = app.watch::<PaymentFailed>().await;
    let alice = app.sign_in();
    let order_id = app.place_order(alice.id, 2100).await;
    assert_eq!(app.pay(&alice, order_id, "tok_visa").await.status, 503);
    let given_up = failures.next().await.data.id;

    // Orders heard the request at last, and granted the order to the claim that is gone.
    let grant = app.grant(order_id, given_up, 1).await;
    app.handled(grant).await;

    let handed_back = failures.next().await.data;
    assert_eq!(handed_back.id, given_up);
    assert_eq!(handed_back.order_id, order_id);
    assert_eq!(
        app.replica(order_id).await,
        Some(("awaiting:payment".into(), 1))
    );
    assert!(app.sandbox_charges_of(order_id).await.is_empty());
}

async fn a_declined_card_tells_orders_the_payment_failed(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut requests = app.watch::<PaymentRequested>().await;
    let mut failures = app.watch::<PaymentFailed>().await;
    let alice = app.sign_in();
    let order_id = app.place_order(alice.id, 2100).await;

    let declined = app.pay(&alice, order_id, "tok_chargeDeclined").await;

    assert_eq!(declined.status, 402, "{:?}", declined.body);
    let asked = requests.next().await.data;
    let failed = failures.next().await.data;
    assert_eq!((failed.id, failed.order_id), (asked.id, order_id));
    assert!(
        failures
            .next_within(Duration::from_millis(300))
            .await
            .is_none(),
        "told once"
    );
}
