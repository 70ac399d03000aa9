//! Sessions ending, end to end through the real binary, embedded and distributed: a token that
//! was signed out is refused by every service that verifies tokens, and signing out everywhere
//! refuses every token its user had, while other sessions and new ones go on working.

use std::time::{Duration, Instant};

use crate::support::Marketplace;
use serde_json::json;
use testkit::eventually;

/// Every service a session is shown to, with a request that needs it and does nothing else.
const SERVICES: [&str; 4] = ["auth", "tickets", "orders", "payments"];

/// A session of `email`'s account, as an API client keeps it: the bearer token.
async fn sign_in(market: &Marketplace, email: &str) -> String {
    let reply = reqwest::Client::new()
        .post(market.url("/api/users/signin"))
        .json(&json!({"email": email, "password": "correct horse"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    testkit::session_token(reply.headers()["set-cookie"].to_str().unwrap()).unwrap()
}

/// Whether the replica of `service` at `base` takes the token as a session.
async fn accepts(base: &str, service: &str, token: &str) -> bool {
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{base}{path}");
    let request = match service {
        "auth" => http.get(url("/api/users/currentuser")),
        // An empty body: a 400 for a session it takes, a 401 for one it refuses; nothing is made.
        "tickets" => http.post(url("/api/tickets")).json(&json!({})),
        "orders" => http.get(url("/api/orders")),
        "payments" => http.post(url("/api/payments")).json(&json!({})),
        _ => unreachable!("{service}"),
    };
    let reply = request.bearer_auth(token).send().await.unwrap();
    let status = reply.status().as_u16();
    let body: serde_json::Value = reply.json().await.unwrap_or_default();
    match service {
        "auth" => !body["currentUser"].is_null(),
        _ => {
            assert!(
                [400, 200, 401].contains(&status),
                "{service}: {status} {body}"
            );
            status != 401
        }
    }
}

/// The replicas (`service@address`) that take the token as a session. Each replica is asked
/// itself, not through the ingress, so that one that never heard of a revocation cannot hide.
async fn accepted_by(market: &Marketplace, token: &str) -> Vec<String> {
    let mut accepting = Vec::new();
    for service in SERVICES {
        let bases = market.replica_bases(service);
        assert!(!bases.is_empty(), "{service} runs somewhere");
        for base in bases {
            if accepts(&base, service, token).await {
                accepting.push(format!("{service}@{base}"));
            }
        }
    }
    accepting
}

/// Every replica of every service.
fn every_replica(market: &Marketplace) -> Vec<String> {
    SERVICES
        .iter()
        .flat_map(|service| {
            market
                .replica_bases(service)
                .into_iter()
                .map(move |base| format!("{service}@{base}"))
        })
        .collect()
}

/// Waits until no replica takes the token, and says how long that took.
async fn until_refused_everywhere(market: &Marketplace, token: &str) -> Duration {
    let started = Instant::now();
    eventually("every replica to refuse the token", || async {
        accepted_by(market, token).await.is_empty().then_some(())
    })
    .await;
    started.elapsed()
}

async fn a_session_ended_is_refused_by_every_service(market: Marketplace) {
    let email = format!("traveller-{}@example.com", uuid::Uuid::new_v4().simple());
    market.user().sign_up(&email).await;
    let (laptop, phone) = (
        sign_in(&market, &email).await,
        sign_in(&market, &email).await,
    );
    assert_eq!(accepted_by(&market, &laptop).await, every_replica(&market));
    assert_eq!(accepted_by(&market, &phone).await, every_replica(&market));

    let http = reqwest::Client::new();
    let signed_out = http
        .post(market.url("/api/users/signout"))
        .bearer_auth(&laptop)
        .send()
        .await
        .unwrap();
    assert_eq!(signed_out.status(), 200);
    let took = until_refused_everywhere(&market, &laptop).await;
    println!("signed out: refused by every replica after {took:?}");
    assert_eq!(
        accepted_by(&market, &phone).await,
        every_replica(&market),
        "the other session goes on"
    );

    let everywhere = http
        .post(market.url("/api/users/signout/everywhere"))
        .bearer_auth(&phone)
        .send()
        .await
        .unwrap();
    assert_eq!(everywhere.status(), 200);
    let took = until_refused_everywhere(&market, &phone).await;
    println!("signed out everywhere: refused by every replica after {took:?}");
    let fresh = sign_in(&market, &email).await;
    assert_eq!(accepted_by(&market, &fresh).await, every_replica(&market));
}

mod a_session_ended_is_refused_by_every_service {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded() {
        super::a_session_ended_is_refused_by_every_service(super::Marketplace::embedded("60s"))
            .await
    }
    testkit::distributed_test! {
        async fn distributed() {
            super::a_session_ended_is_refused_by_every_service(
                super::Marketplace::distributed("60s").await,
            )
            .await
        }
    }
}
