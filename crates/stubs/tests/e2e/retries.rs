//! Writes sent again and again under one `Idempotency-Key`, end to end, embedded and distributed
//! (where the retries of one write land on different replicas, and a replica restarts): each
//! write acts once, and every retry is answered what the first was or told to wait (409).

use crate::support::{Marketplace, User};
use futures::future::join_all;
use serde_json::{Value, json};

fn email(who: &str) -> String {
    format!("{who}-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// Sends one write `times` at once under `key`; returns the one answer all of them that acted
/// were given, asserting that every other was told to wait.
async fn burst(
    user: &User<'_>,
    method: &str,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let send = || {
        let url = user.url(path);
        let request = match method {
            "POST" => user
                .http
                .post(url)
                .json(body.as_ref().unwrap_or(&Value::Null)),
            _ => user.http.delete(url),
        };
        user.send(request.header("idempotency-key", key))
    };
    let replies = join_all((0..5).map(|_| send())).await;
    let answered: Vec<_> = replies
        .iter()
        .filter(|(status, _)| *status != 409)
        .collect();
    assert!(!answered.is_empty(), "{replies:?}");
    for (status, body) in &replies {
        if *status == 409 {
            assert_eq!(
                body["errors"][0]["code"], "idempotency_key_in_use",
                "{body}"
            );
        }
    }
    assert!(
        answered.iter().all(|answer| *answer == answered[0]),
        "{replies:?}"
    );
    answered[0].clone()
}

async fn each_write_acts_once_however_often_it_is_sent(mut market: Marketplace) {
    let (seller, buyer) = (market.user(), market.user());
    seller.sign_up(&email("seller")).await;
    buyer.sign_up(&email("buyer")).await;
    let concert = json!({"title": "Concert", "price": 20});

    let (status, ticket) = burst(
        &seller,
        "POST",
        "/api/tickets",
        "list",
        Some(concert.clone()),
    )
    .await;
    assert_eq!(status, 201, "{ticket}");
    let (_, other) = seller
        .post("/api/tickets", json!({"title": "Other", "price": 5}))
        .await;
    let (_, listed) = seller.get("/api/tickets?limit=100").await;
    assert_eq!(listed.as_array().unwrap().len(), 2, "one listing per key");

    let order = json!({"ticketId": ticket["id"]});
    let (status, held) = burst(&buyer, "POST", "/api/orders", "order", Some(order)).await;
    assert_eq!(status, 201, "{held}");
    let payment = json!({"orderId": held["id"], "token": "tok_visa"});
    let (status, paid) = burst(&buyer, "POST", "/api/payments", "pay", Some(payment)).await;
    assert_eq!(status, 201, "{paid}");

    let second = json!({"ticketId": other["id"]});
    let (status, to_cancel) = buyer.post("/api/orders", second).await;
    assert_eq!(status, 201, "{to_cancel}");
    let path = format!("/api/orders/{}", to_cancel["id"].as_str().unwrap());
    let (status, _) = burst(&buyer, "DELETE", &path, "cancel", None).await;
    assert_eq!(status, 204);
    let (_, orders) = buyer.get("/api/orders").await;
    assert_eq!(orders.as_array().unwrap().len(), 2, "one order per key");

    if market.database_urls().is_empty() {
        return; // `stubs up` across a restart: tests/e2e/embedded.rs.
    }
    // Every replica that could answer is a new process: the answer comes from the database.
    let (session, listing) = (seller.http.clone(), market.url("/api/tickets"));
    market
        .restart_every_replica(cluster::Service::Tickets)
        .await;
    let retry = session
        .post(listing)
        .header("idempotency-key", "list")
        .json(&concert)
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.json::<Value>().await.unwrap(), ticket);
}

mod each_write_acts_once_however_often_it_is_sent {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded() {
        super::each_write_acts_once_however_often_it_is_sent(super::Marketplace::embedded("60s"))
            .await
    }
    testkit::distributed_test! {
        async fn distributed() {
            super::each_write_acts_once_however_often_it_is_sent(
                super::Marketplace::distributed("60s").await,
            )
            .await
        }
    }
}
