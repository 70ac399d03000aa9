//! Races the database must settle: many buyers of one ticket at once,
//! and an owner's cancellation, an expiry and a payment of one order at once. Each scenario runs
//! several rounds, as the interleaving differs from one round to the next.

use common::events::{OrderCancelled, OrderCompleted, OrderCreated};
use futures::future::join_all;
use testkit::{Backend, User, json};
use uuid::Uuid;

use crate::helpers::{expiration_complete, id_of, payment_created, spawn_app};

testkit::each_database!(
    fifty_concurrent_buyers_of_one_ticket_get_exactly_one_order,
    a_cancellation_an_expiry_and_a_payment_at_once_have_one_outcome_and_one_event,
);

const BUYERS: usize = 50;
const ROUNDS: usize = 5;

async fn fifty_concurrent_buyers_of_one_ticket_get_exactly_one_order(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut created = app.watch::<OrderCreated>().await;
    let seller = app.sign_in();
    let buyers: Vec<User> = (0..BUYERS).map(|_| app.sign_in()).collect();
    let mut placed = Vec::new();

    for round in 0..ROUNDS {
        let ticket = app
            .list_ticket(seller.id, &format!("Round {round}"), 2000)
            .await;
        let body = json!({"ticketId": ticket.id.to_string()});

        let replies = join_all(
            buyers
                .iter()
                .map(|buyer| buyer.post("/api/orders", body.clone())),
        )
        .await;

        let statuses: Vec<u16> = replies.iter().map(|reply| reply.status).collect();
        let winners: Vec<_> = replies.iter().filter(|reply| reply.status == 201).collect();
        assert_eq!(winners.len(), 1, "round {round}: {statuses:?}");
        for reply in replies.iter().filter(|reply| reply.status != 201) {
            assert_eq!(reply.status, 400, "round {round}: {:?}", reply.body);
            reply.assert_error_shape();
            assert_eq!(reply.error_messages(), ["Ticket is already reserved"]);
        }
        let order = &winners[0].body;
        assert_eq!(order["ticket"]["id"], ticket.id.to_string());
        placed.push(id_of(order));
    }

    // One order per ticket is stored, and one order:created per ticket is announced.
    let mut stored = Vec::new();
    for buyer in &buyers {
        let reply = buyer.get("/api/orders").await;
        stored.extend(reply.body.as_array().unwrap().iter().map(id_of));
    }
    stored.sort();
    app.flushed().await;
    let mut announced: Vec<Uuid> = created.rest().await.iter().map(|e| e.data.id).collect();
    announced.sort();
    placed.sort();
    assert_eq!(stored, placed);
    assert_eq!(announced, placed);
}

async fn a_cancellation_an_expiry_and_a_payment_at_once_have_one_outcome_and_one_event(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let mut cancelled = app.watch::<OrderCancelled>().await;
    let mut completed = app.watch::<OrderCompleted>().await;
    let seller = app.sign_in();
    let mut outcomes = Vec::new();

    for round in 0..ROUNDS {
        let buyer = app.sign_in();
        let ticket = app
            .list_ticket(seller.id, &format!("Round {round}"), 2000)
            .await;
        let id = id_of(&app.place_order(&buyer, ticket.id).await);
        let path = format!("/api/orders/{id}");

        let (expiry, payment) = (expiration_complete(id), payment_created(id));

        let (deleted, expiry, payment) = tokio::join!(
            buyer.delete(&path),
            app.publish(&expiry),
            app.publish(&payment),
        );
        app.handled(expiry).await;
        app.handled(payment).await;

        let order = app.order(&buyer, id).await;
        assert_eq!(order["version"], 1, "round {round}: changed once");
        match order["status"].as_str().unwrap() {
            // Cancelled by the owner or by the expiry: the owner was told 204 either way.
            "cancelled" => assert_eq!(deleted.status, 204, "{:?}", deleted.body),
            // Paid first: the owner could no longer cancel.
            "complete" => {
                assert_eq!(deleted.status, 400, "{:?}", deleted.body);
                deleted.assert_error_shape();
                assert_eq!(deleted.error_messages(), ["Cannot cancel a paid order"]);
            }
            other => panic!("round {round}: order left {other}"),
        }
        outcomes.push((id, order["status"].as_str().unwrap().to_owned()));
    }

    app.flushed().await;
    let cancellations = cancelled.rest().await;
    let completions = completed.rest().await;
    for (id, status) in outcomes {
        let cancels: Vec<i64> = cancellations
            .iter()
            .filter(|e| e.data.id == id)
            .map(|e| e.data.version)
            .collect();
        let completes: Vec<i64> = completions
            .iter()
            .filter(|e| e.data.id == id)
            .map(|e| e.data.version)
            .collect();
        let expected = (
            if status == "cancelled" {
                vec![1]
            } else {
                vec![]
            },
            if status == "complete" {
                vec![1]
            } else {
                vec![]
            },
        );
        assert_eq!((cancels, completes), expected, "order {id} ended {status}");
    }
}
