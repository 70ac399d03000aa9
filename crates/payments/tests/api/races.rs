//! Payments that race: a double click, which must charge once, and a payment racing its order's
//! cancellation, which must be refused before any card is charged.

use std::time::Duration;

use common::events::PaymentCreated;
use futures::future::join_all;
use testkit::Backend;

use crate::helpers::{spawn_app, spawn_app_ungranted};

testkit::each_database!(
    a_double_click_charges_the_card_once,
    a_payment_racing_its_cancellation_is_refused_before_any_charge,
);

async fn a_double_click_charges_the_card_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut created = app.watch::<PaymentCreated>().await;
    let alice = app.sign_in();
    let order_id = app.place_order(alice.id, 2000).await;

    let replies = join_all((0..10).map(|_| app.pay(&alice, order_id, "tok_visa"))).await;

    let paid: Vec<_> = replies.iter().filter(|reply| reply.status == 201).collect();
    assert_eq!(paid.len(), 1, "{replies:?}");
    for reply in replies.iter().filter(|reply| reply.status != 201) {
        assert_eq!(reply.status, 400, "{:?}", reply.body);
        reply.assert_error_shape();
        // Refused while the winner charges, or once it has paid.
        let message = reply.error_messages().concat();
        assert!(
            message == "A payment for this order is already in progress"
                || message == "Order already paid",
            "{message}"
        );
    }
    assert_eq!(app.sandbox_charges_of(order_id).await.len(), 1);
    assert_eq!(app.payment_of(order_id).await.status, "succeeded");
    assert_eq!(created.next().await.data.order_id, order_id);
    assert!(
        created
            .next_within(Duration::from_millis(500))
            .await
            .is_none(),
        "announced once"
    );
}

async fn a_payment_racing_its_cancellation_is_refused_before_any_charge(backend: Backend) {
    const ROUNDS: usize = 20;
    // Orders cancelled each order before it heard the payment's request, so it grants nothing:
    // the cancellation is all payments hears of it.
    let app = spawn_app_ungranted(backend).await;
    let alice = app.sign_in();
    let mut orders = Vec::new();
    for _ in 0..ROUNDS {
        orders.push(app.place_order(alice.id, 2000).await);
    }

    // Each round pays for an order while its cancellation arrives, at the same moment: the
    // cancellation comes before the claim, or while the claim waits for its grant.
    for order_id in &orders {
        let both = async {
            tokio::join!(
                app.pay(&alice, *order_id, "tok_visa"),
                app.cancel_order(*order_id, 1)
            )
        };
        let (reply, _) = tokio::time::timeout(Duration::from_secs(20), both)
            .await
            .expect("the cancellation wakes the payment waiting for its grant");
        assert_eq!(reply.status, 400, "{:?}", reply.body);
        reply.assert_error_shape();
        assert_eq!(reply.error_messages(), ["Cannot pay for a cancelled order"]);
    }

    for order_id in &orders {
        assert_eq!(app.replica(*order_id).await, Some(("cancelled".into(), 1)));
        assert!(app.payments_of(*order_id).await.is_empty());
        assert!(app.sandbox_charges_of(*order_id).await.is_empty());
    }
}
