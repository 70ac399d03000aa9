//! The Stripe client against a Stripe-compatible server (localstripe): run when
//! `STUBS_TEST_STRIPE_API_BASE` was set at build time (see build.rs), skipped otherwise.
//! localstripe ignores `Idempotency-Key`, so the one-payment-per-order guarantee checked here is
//! our database's alone.

use std::time::Duration;

use common::events::PaymentCreated;
use futures::future::join_all;
use payments::processor::stripe::StripeClient;
use testkit::{Backend, Value};
use uuid::Uuid;

use crate::helpers::{
    STRIPE_TEST_KEY, Stage, TestApp, spawn_app_with, stripe_api_base, stripe_settings,
};

/// Like `testkit::each_database!`, for tests that also need the Stripe-compatible server.
macro_rules! each_database_with_stripe {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[cfg_attr(
                not(stubs_stripe),
                ignore = "skipped: set STUBS_TEST_STRIPE_API_BASE to run against a Stripe-compatible server"
            )]
            async fn sqlite() {
                super::$name(testkit::Backend::Sqlite).await
            }

            #[cfg(stubs_stripe)]
            testkit::postgres_test! {
                async fn postgres() {
                    super::$name(testkit::Backend::Postgres).await
                }
            }

            #[cfg(not(stubs_stripe))]
            #[tokio::test]
            #[ignore = "skipped: set STUBS_TEST_STRIPE_API_BASE to run against a Stripe-compatible server"]
            async fn postgres() {
                super::$name(testkit::Backend::Postgres).await
            }
        }
    )*};
}

each_database_with_stripe!(
    a_visa_payment_method_is_charged_at_stripe,
    a_card_stripe_declines_returns_402_and_another_card_succeeds,
    an_unknown_payment_method_is_refused_on_the_token_field,
    a_charged_then_cancelled_order_is_refunded_at_stripe,
    a_double_click_creates_one_payment_intent,
    a_charge_whose_request_died_is_settled_from_its_intent_at_stripe,
    an_intent_never_confirmed_is_cancelled_at_stripe,
);

/// GET from the Stripe-compatible server.
async fn stripe_get(path: &str) -> Value {
    let response = reqwest::Client::new()
        .get(format!("{}{path}", stripe_api_base()))
        .bearer_auth(STRIPE_TEST_KEY)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

/// Every payment intent the server holds for an order (by `metadata[orderId]`).
async fn intents_of(order_id: Uuid) -> Vec<Value> {
    // localstripe pages its lists; one page as large as its whole store is simplest.
    let list = stripe_get("/v1/payment_intents?limit=1000000").await;
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|intent| intent["metadata"]["orderId"] == order_id.to_string())
        .cloned()
        .collect()
}

async fn a_visa_payment_method_is_charged_at_stripe(backend: Backend) {
    let app = spawn_app_with(backend, stripe_settings()).await;
    let mut created = app.watch::<PaymentCreated>().await;
    let alice = app.sign_in();
    let order_id = app.place_order(alice.id, 1999).await;

    let reply = app.pay(&alice, order_id, "pm_card_visa").await;

    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let event = created.next().await;
    assert_eq!(event.data.order_id, order_id);
    assert!(event.data.stripe_id.starts_with("pi_"), "{event:?}");
    let intent = stripe_get(&format!("/v1/payment_intents/{}", event.data.stripe_id)).await;
    assert_eq!(intent["status"], "succeeded");
    assert_eq!(intent["amount"], 1999);
    assert_eq!(intent["currency"], "usd");
    assert_eq!(intent["metadata"]["orderId"], order_id.to_string());
    assert_eq!(intent["metadata"]["paymentId"], reply.body["id"]);
    let payment = app.payment_of(order_id).await;
    assert_eq!(payment.status, "succeeded");
    assert_eq!(payment.stripe_id, Some(event.data.stripe_id));
}

async fn a_card_stripe_declines_returns_402_and_another_card_succeeds(backend: Backend) {
    let app = spawn_app_with(backend, stripe_settings()).await;
    let alice = app.sign_in();
    let order_id = app.place_order(alice.id, 2500).await;

    let declined = app
        .pay(&alice, order_id, "pm_card_chargeCustomerFail")
        .await;

    assert_eq!(declined.status, 402, "{:?}", declined.body);
    declined.assert_error_shape();
    assert_eq!(declined.error_messages(), ["Your card was declined."]);
    assert!(app.payments_of(order_id).await.is_empty());

    let paid = app.pay(&alice, order_id, "pm_card_visa").await;

    assert_eq!(paid.status, 201, "{:?}", paid.body);
    let payment = app.payment_of(order_id).await;
    assert_eq!(payment.attempt, 2);
    let succeeded: Vec<_> = intents_of(order_id)
        .await
        .into_iter()
        .filter(|intent| intent["status"] == "succeeded")
        .collect();
    assert_eq!(succeeded.len(), 1, "{succeeded:?}");
    assert_eq!(payment.stripe_id.as_deref(), succeeded[0]["id"].as_str());
}

async fn an_unknown_payment_method_is_refused_on_the_token_field(backend: Backend) {
    let app = spawn_app_with(backend, stripe_settings()).await;
    let alice = app.sign_in();
    let order_id = app.place_order(alice.id, 2000).await;

    let reply = app
        .pay(&alice, order_id, &format!("pm_{}", Uuid::now_v7().simple()))
        .await;

    assert_eq!(reply.status, 400, "{:?}", reply.body);
    reply.assert_error_shape();
    assert_eq!(reply.error_fields(), ["token"]);
    assert!(app.payments_of(order_id).await.is_empty());
}

async fn a_charged_then_cancelled_order_is_refunded_at_stripe(backend: Backend) {
    let app = spawn_app_with(backend, stripe_settings()).await;
    let alice = app.sign_in();
    let order_id = app.place_order(alice.id, 3000).await;
    let paid = app.pay(&alice, order_id, "pm_card_visa").await;
    assert_eq!(paid.status, 201, "{:?}", paid.body);

    // After the grant (version 1).
    app.cancel_order(order_id, 2).await;

    let payment = app.payment_with_status(order_id, "refunded").await;
    let intent = payment.stripe_id.clone().unwrap();
    let refunds = app.refunds_of(&payment.id).await;
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert!(
        refunds[0].stripe_refund_id.starts_with("re_"),
        "{refunds:?}"
    );
    let at_stripe = stripe_get(&format!("/v1/refunds?payment_intent={intent}")).await;
    let listed = at_stripe["data"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{at_stripe}");
    assert_eq!(listed[0]["id"], refunds[0].stripe_refund_id);
    assert_eq!(listed[0]["amount"], 3000);
    assert_eq!(listed[0]["status"], "succeeded");
}

async fn a_double_click_creates_one_payment_intent(backend: Backend) {
    let app = spawn_app_with(backend, stripe_settings()).await;
    let alice = app.sign_in();
    let order_id = app.place_order(alice.id, 4200).await;

    let replies = join_all((0..10).map(|_| app.pay(&alice, order_id, "pm_card_visa"))).await;

    let statuses: Vec<u16> = replies.iter().map(|reply| reply.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 400).count(),
        9,
        "{statuses:?}"
    );
    let intents = intents_of(order_id).await;
    assert_eq!(intents.len(), 1, "charged once: {intents:?}");
    assert_eq!(intents[0]["amount"], 4200);
    assert_eq!(
        app.payment_of(order_id).await.stripe_id.as_deref(),
        intents[0]["id"].as_str()
    );
}

/// A service that reconciles claims pending for more than a second, and a client of the same
/// Stripe to play a request that died half-way.
async fn spawn_reconciling(backend: Backend) -> (TestApp, StripeClient) {
    let settings = payments::Settings {
        claim_timeout: Duration::from_secs(1),
        ..stripe_settings()
    };
    let stripe = StripeClient::new(settings.stripe.as_ref().unwrap()).unwrap();
    (spawn_app_with(backend, settings).await, stripe)
}

async fn a_charge_whose_request_died_is_settled_from_its_intent_at_stripe(backend: Backend) {
    let (app, stripe) = spawn_reconciling(backend).await;
    let mut created = app.watch::<PaymentCreated>().await;
    let alice = app.sign_in();
    let order_id = app.place_order(alice.id, 2600).await;

    let (payment_id, intent) = app
        .crash_while_paying(&stripe, order_id, 2600, "pm_card_visa", Stage::Confirmed)
        .await;

    let event = created.next().await;
    assert_eq!(event.data.id, payment_id);
    assert_eq!(Some(event.data.stripe_id.clone()), intent);
    assert_eq!(app.payment_of(order_id).await.status, "succeeded");
    let at_stripe = stripe_get(&format!("/v1/payment_intents/{}", event.data.stripe_id)).await;
    assert_eq!(at_stripe["status"], "succeeded");
    assert_eq!(at_stripe["amount"], 2600);
}

async fn an_intent_never_confirmed_is_cancelled_at_stripe(backend: Backend) {
    let (app, stripe) = spawn_reconciling(backend).await;
    let alice = app.sign_in();
    let order_id = app.place_order(alice.id, 2700).await;
    let (_, intent) = app
        .crash_while_paying(&stripe, order_id, 2700, "pm_card_visa", Stage::Prepared)
        .await;

    testkit::eventually("the stale claim released", || async {
        app.payments_of(order_id).await.is_empty().then_some(())
    })
    .await;

    let at_stripe = stripe_get(&format!("/v1/payment_intents/{}", intent.unwrap())).await;
    assert_eq!(at_stripe["status"], "canceled");
    let paid = app.pay(&alice, order_id, "pm_card_visa").await;
    assert_eq!(paid.status, 201, "{:?}", paid.body);
    assert_eq!(app.payment_of(order_id).await.attempt, 2);
}
