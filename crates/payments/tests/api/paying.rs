//! `POST /api/payments` on the sandbox processor: every status code of paying, in the one
//! error shape, and what becomes of a payment whose order is cancelled.

use std::time::Duration;

use common::events::PaymentCreated;
use testkit::{Backend, json};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::helpers::{id_of, order_created, spawn_app, spawn_app_awaiting};

testkit::each_database!(
    paying_for_an_order_returns_201_and_announces_payment_created,
    paying_requires_a_token_and_an_order_id,
    a_body_that_is_not_json_is_refused_in_the_error_shape,
    paying_requires_signing_in,
    paying_for_someone_elses_order_returns_401,
    paying_for_an_unknown_order_returns_404,
    paying_for_an_order_placed_a_moment_ago_waits_for_it,
    paying_for_a_cancelled_order_returns_400,
    paying_for_a_paid_order_returns_400,
    paying_for_a_completed_order_returns_400,
    paying_for_an_expired_order_returns_400_before_its_cancellation_arrives,
    a_declined_card_returns_402_and_another_card_then_succeeds,
    an_unknown_test_token_is_refused_on_the_token_field,
    a_paid_order_cancelled_afterwards_is_refunded,
);

async fn paying_for_an_order_returns_201_and_announces_payment_created(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut created = app.watch::<PaymentCreated>().await;
    let alice = app.sign_in();
    // 19.99: an amount floating point gets wrong (19.99 × 100 is not 1999).
    let order_id = app.place_order(alice.id, 1999).await;

    let reply = app.pay(&alice, order_id, "tok_visa").await;

    assert_eq!(reply.status, 201, "{:?}", reply.body);
    assert_eq!(reply.body.as_object().unwrap().len(), 1, "{}", reply.body);
    let id = Uuid::parse_str(&id_of(&reply)).unwrap();
    let event = created.next().await;
    assert_eq!(event.data.id, id);
    assert_eq!(event.data.order_id, order_id);
    assert!(event.data.stripe_id.starts_with("ch_sandbox_"), "{event:?}");
    let charges = app.sandbox_charges_of(order_id).await;
    assert_eq!(charges.len(), 1, "{charges:?}");
    assert_eq!(charges[0].id, event.data.stripe_id);
    assert_eq!(charges[0].amount_cents, 1999);
    assert_eq!(charges[0].currency, "usd");
    assert_eq!(
        charges[0].idempotency_key,
        format!("order-{order_id}-attempt-1")
    );
    let payment = app.payment_of(order_id).await;
    assert_eq!(payment.id, id.to_string());
    assert_eq!(payment.status, "succeeded");
    assert_eq!(payment.amount_cents, 1999);
    assert_eq!(payment.stripe_id.as_deref(), Some(charges[0].id.as_str()));
}

async fn paying_requires_a_token_and_an_order_id(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let order_id = app.place_order(alice.id, 2000).await.to_string();
    let cases = [
        (json!({}), vec!["token", "orderId"]),
        (
            json!({"token": "", "orderId": ""}),
            vec!["token", "orderId"],
        ),
        (
            json!({"token": null, "orderId": null}),
            vec!["token", "orderId"],
        ),
        (json!({"token": "tok_visa"}), vec!["orderId"]),
        (json!({"orderId": order_id}), vec!["token"]),
        (json!({"token": 42, "orderId": order_id}), vec!["token"]),
        (
            json!({"token": "tok_visa", "orderId": "not-an-id"}),
            vec!["orderId"],
        ),
        (json!({"token": "tok_visa", "orderId": 7}), vec!["orderId"]),
    ];

    for (body, fields) in cases {
        let reply = alice.post("/api/payments", body.clone()).await;

        assert_eq!(reply.status, 400, "{body}: {:?}", reply.body);
        reply.assert_error_shape();
        assert_eq!(reply.error_fields(), fields, "{body}");
    }
    assert!(app.payments_of(order_id.parse().unwrap()).await.is_empty());
}

async fn a_body_that_is_not_json_is_refused_in_the_error_shape(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();

    let reply = alice.post_raw_json("/api/payments", "{\"token\": ").await;

    assert_eq!(reply.status, 400, "{:?}", reply.body);
    reply.assert_error_shape();
}

async fn paying_requires_signing_in(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let order_id = app.place_order(alice.id, 2000).await;
    let body = json!({"token": "tok_visa", "orderId": order_id.to_string()});

    let anonymous = app.anonymous().post("/api/payments", body.clone()).await;
    let client = app.anonymous();
    let forged = client
        .send(
            client
                .http
                .post(format!("{}/api/payments", client.base))
                .bearer_auth("not.a.token")
                .json(&body),
        )
        .await;

    for reply in [anonymous, forged] {
        assert_eq!(reply.status, 401, "{:?}", reply.body);
        reply.assert_error_shape();
        assert!(reply.error_fields().is_empty());
    }
    assert!(app.payments_of(order_id).await.is_empty());
    assert!(app.sandbox_charges_of(order_id).await.is_empty());
}

async fn paying_for_someone_elses_order_returns_401(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let mallory = app.sign_in();
    let order_id = app.place_order(alice.id, 2000).await;

    let reply = app.pay(&mallory, order_id, "tok_visa").await;

    assert_eq!(reply.status, 401, "{:?}", reply.body);
    reply.assert_error_shape();
    assert!(app.payments_of(order_id).await.is_empty());
    assert!(app.sandbox_charges_of(order_id).await.is_empty());
    // The owner still can.
    assert_eq!(app.pay(&alice, order_id, "tok_visa").await.status, 201);
}

async fn paying_for_an_order_placed_a_moment_ago_waits_for_it(backend: Backend) {
    let app = spawn_app_awaiting(backend).await;
    let mut created = app.watch::<PaymentCreated>().await;
    let alice = app.sign_in();
    let order_id = Uuid::now_v7();
    let expires_at = OffsetDateTime::now_utc() + time::Duration::minutes(15);

    // The buyer pays before the order's event arrives; the event comes while the payment waits.
    let payment = app.pay(&alice, order_id, "tok_visa");
    let event_on_its_way = async {
        testkit::eventually("the payment to wait for its order", || async {
            (app.ctx.arrivals.waiting() == 1).then_some(())
        })
        .await;
        app.publish(&order_created(order_id, alice.id, 2000, expires_at))
            .await;
    };
    let (reply, ()) = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(payment, event_on_its_way)
    })
    .await
    .expect("the payment is woken when its order arrives");

    assert_eq!(reply.status, 201, "{:?}", reply.body);
    assert_eq!(created.next().await.data.order_id, order_id);
    assert_eq!(app.sandbox_charges_of(order_id).await.len(), 1);
}

async fn paying_for_an_unknown_order_returns_404(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let unknown = Uuid::now_v7();

    let reply = app.pay(&alice, unknown, "tok_visa").await;

    assert_eq!(reply.status, 404, "{:?}", reply.body);
    reply.assert_error_shape();
    assert!(app.sandbox_charges_of(unknown).await.is_empty());
}

async fn paying_for_a_cancelled_order_returns_400(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let order_id = app.place_order(alice.id, 2000).await;
    let cancelled = app.cancel_order(order_id, 1).await;
    app.handled(cancelled).await;

    let reply = app.pay(&alice, order_id, "tok_visa").await;

    assert_eq!(reply.status, 400, "{:?}", reply.body);
    reply.assert_error_shape();
    assert_eq!(reply.error_messages(), ["Cannot pay for a cancelled order"]);
    assert_eq!(reply.error_codes(), ["order_cancelled"]);
    assert!(reply.error_fields().is_empty());
    assert!(app.payments_of(order_id).await.is_empty());
    assert!(app.sandbox_charges_of(order_id).await.is_empty());
}

async fn paying_for_a_paid_order_returns_400(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let order_id = app.place_order(alice.id, 2000).await;
    assert_eq!(app.pay(&alice, order_id, "tok_visa").await.status, 201);

    let reply = app.pay(&alice, order_id, "tok_mastercard").await;

    assert_eq!(reply.status, 400, "{:?}", reply.body);
    reply.assert_error_shape();
    assert_eq!(reply.error_messages(), ["Order already paid"]);
    assert_eq!(reply.error_codes(), ["order_paid"]);
    assert_eq!(app.sandbox_charges_of(order_id).await.len(), 1);
    assert_eq!(app.payment_of(order_id).await.status, "succeeded");
}

async fn paying_for_a_completed_order_returns_400(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let order_id = app.place_order(alice.id, 2000).await;
    let completed = app.complete_order(order_id, 1).await;
    app.handled(completed).await;

    let reply = app.pay(&alice, order_id, "tok_visa").await;

    assert_eq!(reply.status, 400, "{:?}", reply.body);
    reply.assert_error_shape();
    assert_eq!(reply.error_messages(), ["Order already paid"]);
    assert_eq!(reply.error_codes(), ["order_paid"]);
    assert!(app.sandbox_charges_of(order_id).await.is_empty());
}

async fn paying_for_an_expired_order_returns_400_before_its_cancellation_arrives(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let expired_at = OffsetDateTime::now_utc() - time::Duration::seconds(1);
    let order_id = app.place_order_expiring(alice.id, 2000, expired_at).await;

    let reply = app.pay(&alice, order_id, "tok_visa").await;

    assert_eq!(reply.status, 400, "{:?}", reply.body);
    reply.assert_error_shape();
    assert_eq!(reply.error_messages(), ["Order has expired"]);
    assert_eq!(reply.error_codes(), ["order_expired"]);
    assert_eq!(
        app.replica(order_id).await,
        Some(("created".into(), 0)),
        "the cancellation has not arrived"
    );
    assert!(app.payments_of(order_id).await.is_empty());
    assert!(app.sandbox_charges_of(order_id).await.is_empty());
}

async fn a_declined_card_returns_402_and_another_card_then_succeeds(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut created = app.watch::<PaymentCreated>().await;
    let alice = app.sign_in();
    let order_id = app.place_order(alice.id, 1550).await;

    let declined = app.pay(&alice, order_id, "tok_chargeDeclined").await;

    assert_eq!(declined.status, 402, "{:?}", declined.body);
    assert_eq!(declined.error_codes(), ["card_declined"]);
    declined.assert_error_shape();
    assert_eq!(declined.error_messages(), ["Your card was declined."]);
    assert!(app.payments_of(order_id).await.is_empty(), "claim released");
    assert!(app.sandbox_charges_of(order_id).await.is_empty());

    let paid = app.pay(&alice, order_id, "tok_visa").await;

    assert_eq!(paid.status, 201, "{:?}", paid.body);
    let charges = app.sandbox_charges_of(order_id).await;
    assert_eq!(charges.len(), 1, "{charges:?}");
    assert_eq!(charges[0].amount_cents, 1550);
    // The second attempt has its own key, so the decline is not answered again from the first.
    assert_eq!(
        charges[0].idempotency_key,
        format!("order-{order_id}-attempt-2")
    );
    assert_eq!(app.payment_of(order_id).await.attempt, 2);
    assert_eq!(created.next().await.data.order_id, order_id);
}

async fn an_unknown_test_token_is_refused_on_the_token_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let order_id = app.place_order(alice.id, 2000).await;

    let reply = app.pay(&alice, order_id, "tok_4242424242424242").await;

    assert_eq!(reply.status, 400, "{:?}", reply.body);
    reply.assert_error_shape();
    assert_eq!(reply.error_fields(), ["token"]);
    assert!(
        reply.error_messages()[0].contains("tok_visa"),
        "{:?}",
        reply.body
    );
    assert!(app.payments_of(order_id).await.is_empty());
    assert_eq!(app.pay(&alice, order_id, "pm_card_visa").await.status, 201);
}

async fn a_paid_order_cancelled_afterwards_is_refunded(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let order_id = app.place_order(alice.id, 1999).await;
    let paid = app.pay(&alice, order_id, "tok_visa").await;
    assert_eq!(paid.status, 201, "{:?}", paid.body);

    // Orders cancels no order granted to a payment; should a cancellation come all the same (an
    // operator's doing, an event from before grants), the charge is not kept. The grant was
    // version 1.
    app.cancel_order(order_id, 2).await;

    let payment = app.payment_with_status(order_id, "refunded").await;
    let refunds = app.refunds_of(&payment.id).await;
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert_eq!(refunds[0].amount_cents, 1999);
    assert_eq!(refunds[0].reason, "order_cancelled");
    let charges = app.sandbox_charges_of(order_id).await;
    assert_eq!(charges.len(), 1);
    assert_eq!(
        charges[0].refund_id.as_deref(),
        Some(refunds[0].stripe_refund_id.as_str()),
        "the sandbox gave the money back"
    );
    assert_eq!(app.replica(order_id).await, Some(("cancelled".into(), 2)));
}
