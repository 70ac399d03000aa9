//! `POST /api/payments` with an `Idempotency-Key`: a retry, however many at once, charges once
//! and is answered what the first was, a decline included.

use std::time::Duration;

use common::events::PaymentRequested;
use futures::future::join_all;
use testkit::{Backend, eventually, json};

use crate::helpers::{sandbox_settings, spawn_app, spawn_app_ungranted};

testkit::each_database!(
    retries_of_a_payment_charge_once_and_answer_alike,
    a_declined_payment_is_answered_again_and_a_new_key_pays,
    a_payment_key_used_for_another_card_is_refused,
    another_replica_replays_a_payment_from_the_database,
    a_payment_whose_client_left_is_answered_to_its_retry,
);

fn payment(order_id: uuid::Uuid, token: &str) -> testkit::Value {
    json!({"token": token, "orderId": order_id.to_string()})
}

async fn retries_of_a_payment_charge_once_and_answer_alike(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let order_id = app.place_order(alice.id, 2500).await;
    let body = payment(order_id, "tok_visa");

    let tries = (0..6).map(|_| alice.post_with_key("/api/payments", "pay", body.clone()));
    let replies = join_all(tries).await;

    let paid: Vec<_> = replies.iter().filter(|r| r.status == 201).collect();
    assert!(!paid.is_empty());
    for reply in &replies {
        assert!([201, 409].contains(&reply.status), "{reply:?}");
    }
    assert!(paid.iter().all(|r| r.body == paid[0].body));
    assert_eq!(
        app.sandbox_charges_of(order_id).await.len(),
        1,
        "charged once"
    );
    let later = alice.post_with_key("/api/payments", "pay", body).await;
    assert_eq!((later.status, &later.body), (201, &paid[0].body));
    assert!(later.replayed());
}

async fn a_declined_payment_is_answered_again_and_a_new_key_pays(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let order_id = app.place_order(alice.id, 2500).await;
    let declined_card = payment(order_id, "tok_chargeDeclined");

    let declined = alice
        .post_with_key("/api/payments", "a", declined_card.clone())
        .await;
    let again = alice
        .post_with_key("/api/payments", "a", declined_card)
        .await;

    assert_eq!(declined.status, 402, "{:?}", declined.body);
    assert_eq!((again.status, &again.body), (402, &declined.body));
    assert!(again.replayed());
    let paid = alice
        .post_with_key("/api/payments", "b", payment(order_id, "tok_visa"))
        .await;
    assert_eq!(paid.status, 201, "{:?}", paid.body);
    assert_eq!(app.sandbox_charges_of(order_id).await.len(), 1);
}

async fn a_payment_key_used_for_another_card_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let order_id = app.place_order(alice.id, 2500).await;
    let first = alice
        .post_with_key(
            "/api/payments",
            "k",
            payment(order_id, "tok_chargeDeclined"),
        )
        .await;
    assert_eq!(first.status, 402);

    let refused = alice
        .post_with_key("/api/payments", "k", payment(order_id, "tok_visa"))
        .await;

    assert_eq!(refused.status, 400, "{:?}", refused.body);
    assert_eq!(refused.error_codes(), ["idempotency_key_reused"]);
    assert!(app.sandbox_charges_of(order_id).await.is_empty());
}

async fn another_replica_replays_a_payment_from_the_database(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let order_id = app.place_order(alice.id, 2500).await;
    let body = payment(order_id, "tok_visa");
    let first = alice
        .post_with_key("/api/payments", "restart", body.clone())
        .await;
    assert_eq!(first.status, 201, "{:?}", first.body);

    let settings = sandbox_settings();
    let restarted = app
        .another_replica(&payments::MIGRATIONS, |ctx| payments::start(ctx, &settings))
        .await;
    let client = testkit::Client {
        base: restarted.client().base,
        http: alice.http.clone(),
    };
    let retry = client.post_with_key("/api/payments", "restart", body).await;

    assert_eq!((retry.status, &retry.body), (201, &first.body));
    assert!(retry.replayed());
    assert_eq!(app.sandbox_charges_of(order_id).await.len(), 1);
}

async fn a_payment_whose_client_left_is_answered_to_its_retry(backend: Backend) {
    let app = spawn_app_ungranted(backend).await;
    let mut requests = app.watch::<PaymentRequested>().await;
    let alice = app.sign_in();
    let order_id = app.place_order(alice.id, 2100).await;
    let body = payment(order_id, "tok_visa");

    // The client gives up while the payment waits for orders to grant it.
    let first = alice.post_with_key("/api/payments", "left", body.clone());
    let gave_up = tokio::time::timeout(Duration::from_millis(300), first).await;
    assert!(gave_up.is_err(), "the payment waits for its grant");
    let request = requests.next().await.data;
    let meanwhile = alice
        .post_with_key("/api/payments", "left", body.clone())
        .await;
    assert_eq!(meanwhile.status, 409, "{:?}", meanwhile.body);
    app.grant(order_id, request.id, 1).await;

    // The payment went on without its client, and its answer waits for the retry.
    let retry = eventually("the retry to be answered", || async {
        let reply = alice
            .post_with_key("/api/payments", "left", body.clone())
            .await;
        (reply.status != 409).then_some(reply)
    })
    .await;
    assert_eq!(retry.status, 201, "{:?}", retry.body);
    assert!(retry.replayed());
    assert_eq!(retry.body["id"], request.id.to_string());
    assert_eq!(app.sandbox_charges_of(order_id).await.len(), 1);
}
