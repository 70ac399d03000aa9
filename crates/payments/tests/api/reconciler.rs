//! The reconciler, with the sandbox processor: a request that died between claiming an order and
//! settling its charge leaves the claim pending, and the reconciler ends it once the claim times
//! out, by asking the processor about the claim's intent. What the request left is made with the
//! same processor the service uses, exactly as far as the request got.

use std::time::Duration;

use common::events::PaymentCreated;
use payments::processor::sandbox::Sandbox;
use payments::processor::{ChargeOutcome, IntentStatus, PaymentProcessor};
use testkit::Backend;

use crate::helpers::{Stage, TestApp, sandbox_settings, spawn_app_with};

testkit::each_database!(
    a_charge_whose_request_died_before_settling_is_settled,
    a_charge_whose_order_was_cancelled_meanwhile_is_refunded,
    a_claim_that_never_reached_the_processor_is_released_and_paid_again,
    an_intent_never_confirmed_is_cancelled_and_its_late_confirmation_charges_nothing,
    a_claim_from_the_one_step_flow_is_settled_by_the_charge_under_its_key,
    a_claim_from_the_one_step_flow_that_never_charged_is_released,
);

/// Long enough that a buyer's retry right after the crash still finds the claim pending.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(2);

async fn spawn_reconciling(backend: Backend) -> (TestApp, Sandbox) {
    let settings = payments::Settings {
        claim_timeout: CLAIM_TIMEOUT,
        ..sandbox_settings()
    };
    let app = spawn_app_with(backend, settings).await;
    let sandbox = Sandbox::new(app.ctx.store.clone());
    (app, sandbox)
}

async fn a_charge_whose_request_died_before_settling_is_settled(backend: Backend) {
    let (app, sandbox) = spawn_reconciling(backend).await;
    let mut created = app.watch::<PaymentCreated>().await;
    let alice = app.sign_in();
    let order_id = app.place_order(alice.id, 2500).await;

    let (payment_id, intent) = app
        .crash_while_paying(&sandbox, order_id, 2500, "tok_visa", Stage::Confirmed)
        .await;

    let event = created.next().await;
    assert_eq!(event.data.id, payment_id);
    assert_eq!(event.data.order_id, order_id);
    assert_eq!(Some(event.data.stripe_id), intent);
    let payment = app.payment_of(order_id).await;
    assert_eq!(payment.status, "succeeded");
    assert_eq!(payment.stripe_id, intent);
    let charges = app.sandbox_charges_of(order_id).await;
    assert_eq!(charges.len(), 1, "{charges:?}");
    assert_eq!(
        charges[0].refund_id, None,
        "the charge is kept for the paid order"
    );
}

async fn a_charge_whose_order_was_cancelled_meanwhile_is_refunded(backend: Backend) {
    let (app, sandbox) = spawn_reconciling(backend).await;
    let alice = app.sign_in();
    let order_id = app.place_order(alice.id, 1800).await;
    app.crash_while_paying(&sandbox, order_id, 1800, "tok_visa", Stage::Confirmed)
        .await;

    // The order's window passed while nobody settled the charge.
    app.cancel_order(order_id, 1).await;

    let payment = app.payment_with_status(order_id, "refunded").await;
    let refunds = app.refunds_of(&payment.id).await;
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert_eq!(refunds[0].amount_cents, 1800);
    let charges = app.sandbox_charges_of(order_id).await;
    assert_eq!(charges.len(), 1, "{charges:?}");
    assert_eq!(
        charges[0].refund_id.as_deref(),
        Some(refunds[0].stripe_refund_id.as_str()),
        "the sandbox gave the money back"
    );
}

async fn a_claim_that_never_reached_the_processor_is_released_and_paid_again(backend: Backend) {
    let (app, sandbox) = spawn_reconciling(backend).await;
    let alice = app.sign_in();
    let order_id = app.place_order(alice.id, 2000).await;
    app.crash_while_paying(&sandbox, order_id, 2000, "tok_visa", Stage::Claimed)
        .await;

    let retry = app.pay(&alice, order_id, "tok_visa").await;
    assert_eq!(retry.status, 400, "{:?}", retry.body);
    retry.assert_error_shape();
    assert_eq!(
        retry.error_messages(),
        ["A payment for this order is already in progress"]
    );

    testkit::eventually("the stale claim released", || async {
        app.payments_of(order_id).await.is_empty().then_some(())
    })
    .await;
    let paid = app.pay(&alice, order_id, "tok_visa").await;
    assert_eq!(paid.status, 201, "{:?}", paid.body);
    let payment = app.payment_of(order_id).await;
    assert_eq!(payment.attempt, 2, "a fresh idempotency key");
    let charges = app.sandbox_charges_of(order_id).await;
    assert_eq!(charges.len(), 1, "{charges:?}");
    assert_eq!(
        charges[0].idempotency_key,
        format!("order-{order_id}-attempt-2")
    );
}

async fn an_intent_never_confirmed_is_cancelled_and_its_late_confirmation_charges_nothing(
    backend: Backend,
) {
    let (app, sandbox) = spawn_reconciling(backend).await;
    let alice = app.sign_in();
    let order_id = app.place_order(alice.id, 2000).await;
    let (_, intent) = app
        .crash_while_paying(&sandbox, order_id, 2000, "tok_visa", Stage::Prepared)
        .await;
    let intent = intent.unwrap();

    testkit::eventually("the stale claim released", || async {
        app.payments_of(order_id).await.is_empty().then_some(())
    })
    .await;

    assert_eq!(
        sandbox.look_up(&intent).await.unwrap(),
        IntentStatus::Canceled
    );
    // The request that made the intent wakes up at last and confirms it: nothing moves.
    assert_eq!(
        sandbox.confirm(&intent).await.unwrap(),
        ChargeOutcome::Canceled
    );
    assert!(app.sandbox_charges_of(order_id).await.is_empty());
    let paid = app.pay(&alice, order_id, "tok_visa").await;
    assert_eq!(paid.status, 201, "{:?}", paid.body);
    assert_eq!(app.payment_of(order_id).await.attempt, 2);
}

async fn a_claim_from_the_one_step_flow_is_settled_by_the_charge_under_its_key(backend: Backend) {
    let (app, _) = spawn_reconciling(backend).await;
    let mut created = app.watch::<PaymentCreated>().await;
    let alice = app.sign_in();
    let order_id = app.place_order(alice.id, 1900).await;
    // Charged in one step under the claim's key, then the request died: no intent on the claim.
    let claim = app.insert_legacy_claim(order_id, 1900).await;
    let charge = app
        .insert_sandbox_charge(order_id, &format!("order-{order_id}-attempt-1"), 1900)
        .await;

    let event = created.next().await;

    assert_eq!(
        (event.data.id, event.data.stripe_id),
        (claim, charge.clone())
    );
    let payment = app.payment_of(order_id).await;
    assert_eq!(payment.status, "succeeded");
    assert_eq!(payment.stripe_id, Some(charge));
    assert_eq!(
        app.sandbox_charges_of(order_id).await.len(),
        1,
        "charged once"
    );
}

async fn a_claim_from_the_one_step_flow_that_never_charged_is_released(backend: Backend) {
    let (app, _) = spawn_reconciling(backend).await;
    let alice = app.sign_in();
    let order_id = app.place_order(alice.id, 1900).await;
    app.insert_legacy_claim(order_id, 1900).await;

    testkit::eventually("the stale claim released", || async {
        app.payments_of(order_id).await.is_empty().then_some(())
    })
    .await;

    assert!(app.sandbox_charges_of(order_id).await.is_empty());
    let paid = app.pay(&alice, order_id, "tok_visa").await;
    assert_eq!(paid.status, 201, "{:?}", paid.body);
    assert_eq!(app.payment_of(order_id).await.attempt, 2);
}
