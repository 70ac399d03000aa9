//! `POST /api/orders` and `DELETE /api/orders/{id}` with an `Idempotency-Key`: a retry, however
//! many at once, holds or cancels once and is answered what the first was.

use std::time::Duration;

use common::events::OrderCancelled;
use common::idempotency::KEEP;
use futures::future::join_all;
use testkit::{Backend, json};

use crate::helpers::{id_of, spawn_app};

testkit::each_database!(
    retries_of_an_order_hold_the_ticket_once_and_answer_alike,
    an_order_key_used_for_another_ticket_is_refused,
    another_replica_replays_an_order_from_the_database,
    retries_of_a_cancellation_cancel_once_and_answer_alike,
    an_order_key_past_its_day_acts_anew,
);

async fn retries_of_an_order_hold_the_ticket_once_and_answer_alike(backend: Backend) {
    let app = spawn_app(backend).await;
    let (seller, buyer) = (app.sign_in(), app.sign_in());
    let ticket = app.list_ticket(seller.id, "Concert", 2000).await;
    let body = json!({"ticketId": ticket.id.to_string()});

    let tries = (0..8).map(|_| buyer.post_with_key("/api/orders", "hold", body.clone()));
    let replies = join_all(tries).await;

    // Without the key, all but one would be told the ticket is already reserved.
    let created: Vec<_> = replies.iter().filter(|r| r.status == 201).collect();
    assert!(!created.is_empty());
    for reply in &replies {
        assert!([201, 409].contains(&reply.status), "{reply:?}");
    }
    assert!(created.iter().all(|r| r.body == created[0].body));
    let listed = buyer.get("/api/orders").await;
    assert_eq!(
        listed.body.as_array().unwrap().len(),
        1,
        "exactly one order"
    );
    let later = buyer.post_with_key("/api/orders", "hold", body).await;
    assert_eq!((later.status, &later.body), (201, &created[0].body));
    assert!(later.replayed());
}

async fn an_order_key_used_for_another_ticket_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let (seller, buyer) = (app.sign_in(), app.sign_in());
    let first = app.list_ticket(seller.id, "First", 2000).await;
    let second = app.list_ticket(seller.id, "Second", 2000).await;
    let order = |id: uuid::Uuid| json!({"ticketId": id.to_string()});
    assert_eq!(
        buyer
            .post_with_key("/api/orders", "k", order(first.id))
            .await
            .status,
        201
    );

    let refused = buyer
        .post_with_key("/api/orders", "k", order(second.id))
        .await;

    assert_eq!(refused.status, 400, "{:?}", refused.body);
    assert_eq!(refused.error_codes(), ["idempotency_key_reused"]);
    let listed = buyer.get("/api/orders").await;
    assert_eq!(listed.body.as_array().unwrap().len(), 1);
}

async fn another_replica_replays_an_order_from_the_database(backend: Backend) {
    let app = spawn_app(backend).await;
    let (seller, buyer) = (app.sign_in(), app.sign_in());
    let ticket = app.list_ticket(seller.id, "Concert", 2000).await;
    let body = json!({"ticketId": ticket.id.to_string()});
    let first = buyer
        .post_with_key("/api/orders", "restart", body.clone())
        .await;
    assert_eq!(first.status, 201);

    let settings = orders::Settings::default();
    let restarted = app
        .another_replica(&orders::MIGRATIONS, |ctx| orders::start(ctx, &settings))
        .await;
    let client = testkit::Client {
        base: restarted.client().base,
        http: buyer.http.clone(),
    };
    let retry = client.post_with_key("/api/orders", "restart", body).await;

    assert_eq!((retry.status, &retry.body), (201, &first.body));
    assert!(retry.replayed());
}

async fn retries_of_a_cancellation_cancel_once_and_answer_alike(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut cancelled = app.watch::<OrderCancelled>().await;
    let (seller, buyer) = (app.sign_in(), app.sign_in());
    let ticket = app.list_ticket(seller.id, "Concert", 2000).await;
    let id = id_of(&app.place_order(&buyer, ticket.id).await);
    let path = format!("/api/orders/{id}");

    let replies = join_all((0..6).map(|_| buyer.delete_with_key(&path, "cancel"))).await;

    for reply in &replies {
        assert!([204, 409].contains(&reply.status), "{reply:?}");
    }
    assert!(replies.iter().any(|r| r.status == 204));
    assert_eq!(cancelled.next().await.data.id, id);
    assert!(
        cancelled
            .next_within(Duration::from_millis(300))
            .await
            .is_none(),
        "announced once"
    );
    let later = buyer.delete_with_key(&path, "cancel").await;
    assert_eq!(later.status, 204);
    assert!(later.replayed());
    let other = buyer
        .delete_with_key(&format!("/api/orders/{}", uuid::Uuid::now_v7()), "cancel")
        .await;
    assert_eq!(
        other.error_codes(),
        ["idempotency_key_reused"],
        "another path"
    );
}

async fn an_order_key_past_its_day_acts_anew(backend: Backend) {
    let app = spawn_app(backend).await;
    let (seller, buyer) = (app.sign_in(), app.sign_in());
    let ticket = app.list_ticket(seller.id, "Concert", 2000).await;
    let body = json!({"ticketId": ticket.id.to_string()});
    assert_eq!(
        buyer
            .post_with_key("/api/orders", "old", body.clone())
            .await
            .status,
        201
    );
    app.age_idempotency_keys(None, KEEP + Duration::from_millis(1))
        .await;

    let again = buyer.post_with_key("/api/orders", "old", body).await;

    // Not a replay: the request runs again, and finds the ticket held by the first order.
    assert!(!again.replayed());
    assert_eq!(again.error_codes(), ["ticket_reserved"]);
}
