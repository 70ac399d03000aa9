//! The limits on one buyer's holds, against a bot that takes a sale off the market: a cap on live
//! holds, a cool-down before holding a released ticket again, and an hourly number of orders.
//! Each is checked in the database, so many requests at once (as from many replicas) cannot
//! get past it either.

use std::time::Duration;

use futures::future::join_all;
use orders::domain::HoldLimits;
use testkit::{Backend, Reply, json};
use uuid::Uuid;

use crate::helpers::{TestApp, expiration_complete, id_of, payment_created, spawn_app_with};

testkit::each_database!(
    a_buyer_at_the_cap_is_refused_until_one_of_their_holds_ends,
    one_buyer_ordering_many_tickets_at_once_gets_no_more_than_the_cap,
    a_buyer_who_lets_a_ticket_go_waits_before_holding_it_again,
    a_buyer_who_placed_the_hourly_number_of_orders_is_told_when_to_come_back,
);

/// The service with only the given limits on.
async fn spawn_limited(backend: Backend, hold_limits: HoldLimits) -> TestApp {
    let settings = orders::Settings {
        hold_limits,
        ..orders::Settings::default()
    };
    spawn_app_with(backend, &settings, testkit::quick_listeners()).await
}

const NO_LIMITS: HoldLimits = HoldLimits {
    max_live: 0,
    cooldown: Duration::ZERO,
    max_per_hour: 0,
};

/// Lists `count` tickets by one seller.
async fn list_tickets(app: &TestApp, count: usize) -> Vec<Uuid> {
    let seller = app.sign_in();
    let mut tickets = Vec::new();
    for n in 0..count {
        tickets.push(
            app.list_ticket(seller.id, &format!("Seat {n}"), 2000)
                .await
                .id,
        );
    }
    tickets
}

fn order_body(ticket: Uuid) -> testkit::Value {
    json!({"ticketId": ticket.to_string()})
}

/// The `Retry-After` of a refusal, in seconds.
fn retry_after(reply: &Reply) -> u64 {
    reply.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn a_buyer_at_the_cap_is_refused_until_one_of_their_holds_ends(backend: Backend) {
    let app = spawn_limited(
        backend,
        HoldLimits {
            max_live: 2,
            ..NO_LIMITS
        },
    )
    .await;
    let tickets = list_tickets(&app, 5).await;
    let buyer = app.sign_in();
    let first = id_of(&app.place_order(&buyer, tickets[0]).await);
    let second = id_of(&app.place_order(&buyer, tickets[1]).await);

    let refused = buyer.post("/api/orders", order_body(tickets[2])).await;
    assert_eq!(refused.status, 400, "{:?}", refused.body);
    refused.assert_error_shape();
    assert_eq!(
        refused.error_messages(),
        [
            "You already hold as many tickets as you may at once (2): pay for or cancel one \
             before holding another"
        ]
    );
    assert_eq!(refused.error_codes(), ["hold_limit_reached"]);
    // The cap is the buyer's, not the ticket's.
    app.place_order(&app.sign_in(), tickets[2]).await;

    // A cancellation, a payment and an expiry each end a hold and free a place under the cap.
    assert_eq!(
        buyer.delete(&format!("/api/orders/{first}")).await.status,
        204
    );
    let third = id_of(&app.place_order(&buyer, tickets[3]).await);
    let paid = app.publish(&payment_created(second)).await;
    app.handled(paid).await;
    let fourth = id_of(&app.place_order(&buyer, tickets[4]).await);
    let refused = buyer.post("/api/orders", order_body(tickets[0])).await;
    assert_eq!(refused.status, 400, "{:?}", refused.body);
    let expired = app.publish(&expiration_complete(third)).await;
    app.handled(expired).await;
    app.place_order(&buyer, tickets[0]).await;
    app.order_in_status(&buyer, fourth, "created").await;
}

async fn one_buyer_ordering_many_tickets_at_once_gets_no_more_than_the_cap(backend: Backend) {
    const CAP: u32 = 3;
    let app = spawn_limited(
        backend,
        HoldLimits {
            max_live: CAP,
            ..NO_LIMITS
        },
    )
    .await;
    let tickets = list_tickets(&app, 16).await;
    let buyer = app.sign_in();

    let replies = join_all(
        tickets
            .iter()
            .map(|ticket| buyer.post("/api/orders", order_body(*ticket))),
    )
    .await;

    let statuses: Vec<u16> = replies.iter().map(|reply| reply.status).collect();
    let placed = statuses.iter().filter(|status| **status == 201).count();
    assert_eq!(placed, CAP as usize, "{statuses:?}");
    assert!(
        statuses.iter().all(|status| [201, 400].contains(status)),
        "{statuses:?}"
    );
    let live = buyer.get("/api/orders").await.body;
    assert_eq!(live.as_array().unwrap().len(), CAP as usize);
}

async fn a_buyer_who_lets_a_ticket_go_waits_before_holding_it_again(backend: Backend) {
    let app = spawn_limited(
        backend,
        HoldLimits {
            cooldown: Duration::from_secs(60 * 60),
            ..NO_LIMITS
        },
    )
    .await;
    let tickets = list_tickets(&app, 2).await;
    let buyer = app.sign_in();

    // Cancelled by the buyer.
    let order = id_of(&app.place_order(&buyer, tickets[0]).await);
    assert_eq!(
        buyer.delete(&format!("/api/orders/{order}")).await.status,
        204
    );
    let refused = buyer.post("/api/orders", order_body(tickets[0])).await;
    assert_eq!(refused.status, 429, "{:?}", refused.body);
    refused.assert_error_shape();
    assert_eq!(
        refused.error_messages(),
        ["You let this ticket go recently: you can hold it again in 60 minutes"]
    );
    assert_eq!(refused.error_codes(), ["ticket_cooling_down"]);
    let wait = retry_after(&refused);
    assert!((3590..=3600).contains(&wait), "Retry-After {wait}");
    // Other tickets, and other buyers of this one, are not held back.
    app.place_order(&buyer, tickets[1]).await;
    let other = app.sign_in();
    let taken = id_of(&app.place_order(&other, tickets[0]).await);

    // Let lapse: the same wait.
    let expired = app.publish(&expiration_complete(taken)).await;
    app.handled(expired).await;
    let refused = other.post("/api/orders", order_body(tickets[0])).await;
    assert_eq!(refused.status, 429, "{:?}", refused.body);
    let wait = retry_after(&refused);
    assert!((3590..=3600).contains(&wait), "Retry-After {wait}");
}

async fn a_buyer_who_placed_the_hourly_number_of_orders_is_told_when_to_come_back(
    backend: Backend,
) {
    let app = spawn_limited(
        backend,
        HoldLimits {
            max_per_hour: 3,
            ..NO_LIMITS
        },
    )
    .await;
    let tickets = list_tickets(&app, 4).await;
    let buyer = app.sign_in();
    // Cancelling does not give an order back: churning holds is what the number limits.
    for ticket in &tickets[..3] {
        let order = id_of(&app.place_order(&buyer, *ticket).await);
        assert_eq!(
            buyer.delete(&format!("/api/orders/{order}")).await.status,
            204
        );
    }

    let refused = buyer.post("/api/orders", order_body(tickets[3])).await;
    assert_eq!(refused.status, 429, "{:?}", refused.body);
    refused.assert_error_shape();
    assert_eq!(
        refused.error_messages(),
        ["You have placed 3 orders in the last hour: you can place another in 60 minutes"]
    );
    assert_eq!(refused.error_codes(), ["rate_limited"]);
    let wait = retry_after(&refused);
    assert!((3590..=3600).contains(&wait), "Retry-After {wait}");
    app.place_order(&app.sign_in(), tickets[3]).await;
}
