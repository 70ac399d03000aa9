//! Every refusal an integrator meets carries a stable machine `code` beside its message, end to
//! end through the real binary, embedded and distributed (where nginx answers some itself).

use crate::support::Marketplace;
use serde_json::{Value, json};

fn email(who: &str) -> String {
    format!("{who}-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// The status and the code of each error entry.
fn codes((status, body): (u16, Value)) -> (u16, Vec<String>) {
    let entries = body["errors"].as_array().cloned().unwrap_or_default();
    assert!(!entries.is_empty(), "{status} without errors: {body}");
    let codes = entries
        .iter()
        .map(|entry| {
            assert!(entry["message"].is_string(), "{entry}");
            entry["code"]
                .as_str()
                .unwrap_or_else(|| panic!("no code: {entry}"))
                .to_owned()
        })
        .collect();
    (status, codes)
}

async fn every_refusal_carries_its_code(mut market: Marketplace) {
    let (seller, buyer, rival) = (market.user(), market.user(), market.user());
    let seller_email = email("seller");
    seller.sign_up(&seller_email).await;
    buyer.sign_up(&email("buyer")).await;
    rival.sign_up(&email("rival")).await;
    let anonymous = market.user();
    let expect = |got: (u16, Vec<String>), status: u16, wanted: &[&str], what: &str| {
        assert_eq!(
            got,
            (status, wanted.iter().map(|c| c.to_string()).collect()),
            "{what}"
        );
    };

    let signup = json!({"email": "not an address", "password": "short"});
    let refused = codes(anonymous.post("/api/users/signup", signup).await);
    expect(
        refused,
        400,
        &["invalid_field", "invalid_field"],
        "a bad sign-up",
    );
    let again = json!({"email": seller_email, "password": "correct horse"});
    let refused = codes(anonymous.post("/api/users/signup", again).await);
    expect(refused, 400, &["email_in_use"], "an e-mail in use");
    let wrong = json!({"email": seller_email, "password": "wrong horse"});
    let refused = codes(anonymous.post("/api/users/signin", wrong).await);
    expect(refused, 400, &["invalid_credentials"], "a wrong password");

    let (status, ticket) = seller
        .post("/api/tickets", json!({"title": "Concert", "price": 20}))
        .await;
    assert_eq!(status, 201, "{ticket}");
    let ticket_path = format!("/api/tickets/{}", ticket["id"].as_str().unwrap());
    let listing = json!({"title": "Concert", "price": 20});
    let refused = codes(anonymous.post("/api/tickets", listing).await);
    expect(
        refused,
        401,
        &["not_authorized"],
        "listing without signing in",
    );
    let unread = seller
        .http
        .post(market.url("/api/tickets"))
        .body("{")
        .header("content-type", "application/json");
    expect(
        codes(seller.send(unread).await),
        400,
        &["malformed_request"],
        "a body cut short",
    );
    let missing = codes(
        buyer
            .get(&format!("/api/orders/{}", uuid::Uuid::now_v7()))
            .await,
    );
    expect(missing, 404, &["not_found"], "an unknown order");
    let order = json!({"ticketId": ticket["id"]});
    let refused = codes(seller.post("/api/orders", order.clone()).await);
    expect(refused, 400, &["own_ticket"], "ordering one's own ticket");

    let (status, held) = buyer.post("/api/orders", order.clone()).await;
    assert_eq!(status, 201, "{held}");
    let order_path = format!("/api/orders/{}", held["id"].as_str().unwrap());
    let refused = codes(rival.post("/api/orders", order.clone()).await);
    expect(refused, 400, &["ticket_reserved"], "ordering a held ticket");
    // The ticket is reserved once tickets hears of the order.
    testkit::eventually("the ticket to be held", || async {
        let (_, shown) = seller.get(&ticket_path).await;
        (shown["orderId"] == held["id"]).then_some(())
    })
    .await;
    let edit = codes(
        seller
            .put(&ticket_path, json!({"title": "Gig", "price": 5}))
            .await,
    );
    expect(edit, 400, &["ticket_reserved"], "editing a held ticket");
    let pay = |token: &'static str| {
        buyer.post(
            "/api/payments",
            json!({"orderId": held["id"], "token": token}),
        )
    };
    expect(
        codes(pay("tok_chargeDeclined").await),
        402,
        &["card_declined"],
        "a declined card",
    );
    let (status, paid) = pay("tok_visa").await;
    assert_eq!(status, 201, "{paid}");
    // Until orders hears of the payment the order is being paid; from then on it is paid.
    let (status, early) = codes(buyer.delete(&order_path).await);
    assert_eq!(status, 400);
    assert!(
        early == ["order_being_paid"] || early == ["order_paid"],
        "{early:?}"
    );
    testkit::eventually("the order to be paid", || async {
        let (_, shown) = buyer.get(&order_path).await;
        (shown["status"] == "complete").then_some(())
    })
    .await;
    let refused = codes(buyer.delete(&order_path).await);
    expect(refused, 400, &["order_paid"], "cancelling a paid order");

    if market.database_urls().is_empty() {
        return;
    }
    // A body past the ingress's limit, refused by nginx before any service reads it (a service
    // refuses a smaller one itself, and closes the connection: tests/http in common).
    let huge = format!(r#"{{"title":"{}","price":1}}"#, "x".repeat(2 << 20));
    let huge = seller.http.post(market.url("/api/tickets")).body(huge);
    let huge = huge.header("content-type", "application/json");
    expect(
        codes(seller.send(huge).await),
        400,
        &["malformed_request"],
        "a body too large",
    );
    // The ingress's own answer when no replica of a service is left.
    let listing = market.url("/api/tickets");
    market.kill_every_replica(cluster::Service::Tickets);
    let answer = reqwest::get(listing).await.unwrap();
    let status = answer.status().as_u16();
    let refused = codes((status, answer.json().await.unwrap()));
    expect(refused, 503, &["unavailable"], "no replica of tickets left");
}

mod every_refusal_carries_its_code {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded() {
        super::every_refusal_carries_its_code(super::Marketplace::embedded("60s")).await
    }
    testkit::distributed_test! {
        async fn distributed() {
            super::every_refusal_carries_its_code(super::Marketplace::distributed("60s").await).await
        }
    }
}
