//! `POST /api/payments/webhook`: signed events only, each processed once.

use std::time::Duration;

use common::events::PaymentCreated;
use payments::Settings;
use testkit::{Backend, json};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::helpers::{
    WEBHOOK_SECRET, id_of, signed_now, spawn_app, spawn_app_with, stripe_signature,
};

testkit::each_database!(
    a_signed_payment_intent_succeeded_settles_a_pending_payment_once,
    a_charge_that_succeeds_for_a_cancelled_order_is_refunded,
    a_signed_charge_refunded_records_the_refund_once,
    a_processing_charge_that_fails_releases_its_claim,
    an_unsigned_or_wrongly_signed_webhook_is_refused,
    an_old_webhook_is_refused_even_correctly_signed,
    without_a_webhook_secret_the_endpoint_does_not_exist,
);

fn event(kind: &str, object: serde_json::Value) -> String {
    json!({
        "id": format!("evt_{}", Uuid::now_v7().simple()),
        "object": "event",
        "type": kind,
        "data": {"object": object},
    })
    .to_string()
}

async fn a_signed_payment_intent_succeeded_settles_a_pending_payment_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut created = app.watch::<PaymentCreated>().await;
    let alice = app.sign_in();
    let order_id = app.place_order(alice.id, 2000).await;
    // A request has claimed the order and is still waiting for Stripe's answer.
    let payment_id = app.insert_claim(order_id, 2000, 0).await;
    let intent = format!("pi_{}", Uuid::now_v7().simple());
    let body = event(
        "payment_intent.succeeded",
        json!({"id": intent, "object": "payment_intent", "status": "succeeded",
               "metadata": {"orderId": order_id.to_string(), "paymentId": payment_id.to_string()}}),
    );
    let signature = signed_now(&body);

    let first = app.send_webhook(&body, Some(&signature)).await;
    let replay = app.send_webhook(&body, Some(&signature)).await;

    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.body["duplicate"], false);
    assert_eq!(replay.status, 200, "{:?}", replay.body);
    assert_eq!(replay.body["duplicate"], true);
    let payment = app.payment_of(order_id).await;
    assert_eq!(payment.status, "succeeded");
    assert_eq!(payment.stripe_id.as_deref(), Some(intent.as_str()));
    let event = created.next().await;
    assert_eq!(event.data.id, payment_id);
    assert_eq!(event.data.stripe_id, intent);
    assert!(
        created
            .next_within(Duration::from_millis(500))
            .await
            .is_none(),
        "a replay has no second effect"
    );
    assert_eq!(app.webhook_events().await, 1);
}

async fn a_charge_that_succeeds_for_a_cancelled_order_is_refunded(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut created = app.watch::<PaymentCreated>().await;
    let alice = app.sign_in();
    let order_id = app.place_order(alice.id, 2000).await;
    // The card was charged (here by the sandbox) while the order's cancellation was applied.
    app.insert_claim(order_id, 2000, 0).await;
    let charge = app
        .insert_sandbox_charge(order_id, &format!("order-{order_id}-attempt-1"), 2000)
        .await;
    let cancelled = app.cancel_order(order_id, 1).await;
    app.handled(cancelled).await;
    let payment_id = app.payment_of(order_id).await.id;
    let body = event(
        "payment_intent.succeeded",
        json!({"id": charge, "metadata": {"paymentId": payment_id}}),
    );

    let reply = app.send_webhook(&body, Some(&signed_now(&body))).await;

    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let payment = app.payment_with_status(order_id, "refunded").await;
    assert_eq!(payment.stripe_id.as_deref(), Some(charge.as_str()));
    assert_eq!(app.refunds_of(&payment.id).await.len(), 1);
    assert!(
        app.sandbox_charges_of(order_id).await[0]
            .refund_id
            .is_some()
    );
    assert!(
        created
            .next_within(Duration::from_millis(500))
            .await
            .is_none(),
        "a payment for a cancelled order is never announced"
    );
}

async fn a_signed_charge_refunded_records_the_refund_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let order_id = app.place_order(alice.id, 2000).await;
    let paid = app.pay(&alice, order_id, "tok_visa").await;
    assert_eq!(paid.status, 201, "{:?}", paid.body);
    let stripe_id = app.payment_of(order_id).await.stripe_id.unwrap();
    // Refunded from the processor's dashboard.
    let body = event(
        "charge.refunded",
        json!({"id": "ch_dashboard", "object": "charge", "payment_intent": stripe_id,
               "amount": 2000, "amount_refunded": 2000, "refunded": true,
               "refunds": {"object": "list", "data": [{"id": "re_dashboard", "amount": 2000}]}}),
    );
    let signature = signed_now(&body);

    let first = app.send_webhook(&body, Some(&signature)).await;
    let replay = app.send_webhook(&body, Some(&signature)).await;

    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(replay.status, 200, "{:?}", replay.body);
    assert_eq!(replay.body["duplicate"], true);
    let payment = app.payment_of(order_id).await;
    assert_eq!(payment.id, id_of(&paid));
    assert_eq!(payment.status, "refunded");
    let refunds = app.refunds_of(&payment.id).await;
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert_eq!(refunds[0].stripe_refund_id, "re_dashboard");
    assert_eq!(refunds[0].amount_cents, 2000);
    assert_eq!(refunds[0].reason, "processor");

    // An event of a newer API version leaves the refunds out: nothing new is refunded.
    let later = event(
        "charge.refunded",
        json!({"id": "ch_dashboard", "payment_intent": stripe_id,
               "amount_refunded": 2000, "refunded": true}),
    );
    let reply = app.send_webhook(&later, Some(&signed_now(&later))).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(app.refunds_of(&payment.id).await.len(), 1);
}

async fn a_processing_charge_that_fails_releases_its_claim(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let order_id = app.place_order(alice.id, 2000).await;
    // Charged with an asynchronous method: accepted, not final.
    let claim = app.insert_claim(order_id, 2000, 0).await;
    let intent = format!("pi_{}", Uuid::now_v7().simple());
    app.mark_processing(claim, &intent).await;
    let meanwhile = app.pay(&alice, order_id, "tok_visa").await;
    assert_eq!(meanwhile.status, 400, "{:?}", meanwhile.body);
    assert_eq!(
        meanwhile.error_messages(),
        ["A payment for this order is already in progress"]
    );
    assert_eq!(meanwhile.error_codes(), ["payment_in_progress"]);
    let body = event(
        "payment_intent.payment_failed",
        json!({"id": intent, "object": "payment_intent", "status": "requires_payment_method"}),
    );

    let reply = app.send_webhook(&body, Some(&signed_now(&body))).await;

    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert!(app.payments_of(order_id).await.is_empty(), "claim released");
    let paid = app.pay(&alice, order_id, "tok_visa").await;
    assert_eq!(paid.status, 201, "{:?}", paid.body);
    assert_eq!(app.payment_of(order_id).await.attempt, 2);
}

async fn an_unsigned_or_wrongly_signed_webhook_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = event("charge.refunded", json!({"id": "ch_1"}));
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let wrong_secret = stripe_signature("whsec_someone_else", now, &body);
    let other_body = stripe_signature(WEBHOOK_SECRET, now, "{}");
    let cases = [
        ("missing", None),
        ("wrong secret", Some(wrong_secret.as_str())),
        ("another body's", Some(other_body.as_str())),
        ("malformed", Some("t=abc,v1=xyz")),
        ("empty", Some("")),
    ];

    for (case, signature) in cases {
        let reply = app.send_webhook(&body, signature).await;

        assert_eq!(reply.status, 400, "{case}: {:?}", reply.body);
        reply.assert_error_shape();
    }
    assert_eq!(app.webhook_events().await, 0);
}

async fn an_old_webhook_is_refused_even_correctly_signed(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = event("charge.refunded", json!({"id": "ch_1"}));
    let six_minutes_ago = OffsetDateTime::now_utc().unix_timestamp() - 360;

    let reply = app
        .send_webhook(
            &body,
            Some(&stripe_signature(WEBHOOK_SECRET, six_minutes_ago, &body)),
        )
        .await;

    assert_eq!(reply.status, 400, "{:?}", reply.body);
    reply.assert_error_shape();
    assert_eq!(app.webhook_events().await, 0);
}

async fn without_a_webhook_secret_the_endpoint_does_not_exist(backend: Backend) {
    let app = spawn_app_with(backend, Settings::default()).await;
    let body = event("charge.refunded", json!({"id": "ch_1"}));

    let reply = app.send_webhook(&body, Some(&signed_now(&body))).await;

    assert_eq!(reply.status, 404, "{:?}", reply.body);
    reply.assert_error_shape();
    assert_eq!(app.webhook_events().await, 0);
}
