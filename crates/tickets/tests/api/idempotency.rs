//! `POST /api/tickets` with an `Idempotency-Key`: a retry lists nothing more and is answered what
//! the first was; the rules of keys themselves (reuse, owners, lapsed claims, expiry) are tested
//! here, on the simplest write, and each other write has its own retries tested in its service.

use std::time::Duration;

use common::clock::now_millis;
use common::idempotency::{IDEMPOTENCY_KEYS, KEEP};
use testkit::{Backend, json};

use crate::helpers::{TestApp, spawn_app};

testkit::each_database!(
    a_retry_is_answered_the_first_answer_and_lists_nothing_more,
    concurrent_retries_of_one_key_list_one_ticket,
    a_key_used_for_another_body_is_refused,
    a_key_is_its_users_own,
    a_refusal_is_replayed_too,
    another_replica_replays_the_answer_from_the_database,
    a_retry_while_the_first_runs_gets_409_until_its_claim_lapses,
    a_key_past_its_day_acts_anew_and_is_pruned,
    a_malformed_key_is_refused,
);

const CONCERT: fn() -> testkit::Value = || json!({"title": "Concert", "price": 20});

async fn listed(app: &TestApp) -> usize {
    app.listed_ids("?limit=100").await.len()
}

async fn a_retry_is_answered_the_first_answer_and_lists_nothing_more(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();

    let first = alice
        .post_with_key("/api/tickets", "list-1", CONCERT())
        .await;
    let retry = alice
        .post_with_key("/api/tickets", "list-1", CONCERT())
        .await;

    assert_eq!(first.status, 201, "{:?}", first.body);
    assert!(!first.replayed());
    assert_eq!((retry.status, &retry.body), (201, &first.body));
    assert!(retry.replayed());
    assert_eq!(listed(&app).await, 1);
    let other = alice
        .post_with_key("/api/tickets", "list-2", CONCERT())
        .await;
    assert_eq!(other.status, 201);
    assert_ne!(
        other.body["id"], first.body["id"],
        "a new key is a new listing"
    );
}

async fn concurrent_retries_of_one_key_list_one_ticket(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();

    let tries = (0..12).map(|_| alice.post_with_key("/api/tickets", "burst", CONCERT()));
    let replies = futures::future::join_all(tries).await;

    let created: Vec<_> = replies.iter().filter(|r| r.status == 201).collect();
    assert!(!created.is_empty());
    for reply in &replies {
        assert!([201, 409].contains(&reply.status), "{reply:?}");
        if reply.status == 409 {
            reply.assert_error_shape();
            assert_eq!(reply.error_codes(), ["idempotency_key_in_use"]);
        }
    }
    assert!(created.iter().all(|r| r.body == created[0].body));
    assert_eq!(listed(&app).await, 1, "exactly one effect");
    let after = alice
        .post_with_key("/api/tickets", "burst", CONCERT())
        .await;
    assert_eq!((after.status, &after.body), (201, &created[0].body));
}

async fn a_key_used_for_another_body_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    alice.post_with_key("/api/tickets", "k", CONCERT()).await;

    let other = json!({"title": "Concert", "price": 25});
    let refused = alice.post_with_key("/api/tickets", "k", other).await;

    assert_eq!(refused.status, 400, "{:?}", refused.body);
    refused.assert_error_shape();
    assert_eq!(refused.error_codes(), ["idempotency_key_reused"]);
    assert_eq!(listed(&app).await, 1);
}

async fn a_key_is_its_users_own(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, bob) = (app.sign_in(), app.sign_in());

    let hers = alice.post_with_key("/api/tickets", "mine", CONCERT()).await;
    let his = bob.post_with_key("/api/tickets", "mine", CONCERT()).await;

    assert_eq!((hers.status, his.status), (201, 201));
    assert!(!his.replayed());
    assert_ne!(hers.body["id"], his.body["id"]);
    assert_eq!(listed(&app).await, 2);
}

async fn a_refusal_is_replayed_too(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let bad = json!({"title": "", "price": 20});

    let first = alice
        .post_with_key("/api/tickets", "bad", bad.clone())
        .await;
    let retry = alice.post_with_key("/api/tickets", "bad", bad).await;

    assert_eq!(first.status, 400);
    assert_eq!((retry.status, &retry.body), (400, &first.body));
    assert!(retry.replayed());
}

async fn another_replica_replays_the_answer_from_the_database(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let first = alice
        .post_with_key("/api/tickets", "restart", CONCERT())
        .await;
    assert_eq!(first.status, 201);

    let restarted = app
        .another_replica(&tickets::MIGRATIONS, |ctx| {
            tickets::start(ctx, &tickets::Settings::default())
        })
        .await;
    let client = testkit::Client {
        base: restarted.client().base,
        http: alice.http.clone(),
    };
    let retry = client
        .post_with_key("/api/tickets", "restart", CONCERT())
        .await;

    assert_eq!((retry.status, &retry.body), (201, &first.body));
    assert!(retry.replayed());
    assert_eq!(listed(&app).await, 1);
}

/// Stores a claim of `key` as a request that is still running (or died) would have left it.
async fn leave_claim(
    app: &TestApp,
    user: uuid::Uuid,
    key: &str,
    body: &testkit::Value,
    lease_left: i64,
) {
    // The fingerprint of the request the retry will send, taken from a request that records it.
    let probe = app.sign_in();
    let probe_key = format!("probe-{key}");
    let reply = probe
        .post_with_key("/api/tickets", &probe_key, body.clone())
        .await;
    assert_eq!(reply.status, 201);
    let now = now_millis();
    sqlx::query(
        "INSERT INTO idempotency_keys \
         (user_id, idempotency_key, fingerprint, token, locked_until, status, body, created_at) \
         SELECT $1, $2, fingerprint, 'a request that never answered', $3, NULL, NULL, $4 \
         FROM idempotency_keys WHERE idempotency_key = $5",
    )
    .bind(user.to_string())
    .bind(key)
    .bind(now + lease_left)
    .bind(now)
    .bind(&probe_key)
    .execute(app.ctx.store.writer())
    .await
    .unwrap();
}

async fn a_retry_while_the_first_runs_gets_409_until_its_claim_lapses(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    leave_claim(&app, alice.id, "running", &CONCERT(), 60_000).await;
    leave_claim(&app, alice.id, "died", &CONCERT(), -1).await;
    let before = listed(&app).await;

    let running = alice
        .post_with_key("/api/tickets", "running", CONCERT())
        .await;
    let after_death = alice.post_with_key("/api/tickets", "died", CONCERT()).await;

    assert_eq!(running.status, 409, "{:?}", running.body);
    running.assert_error_shape();
    assert_eq!(running.error_codes(), ["idempotency_key_in_use"]);
    assert_eq!(after_death.status, 201, "a lapsed claim is taken over");
    assert_eq!(listed(&app).await, before + 1);
}

async fn a_key_past_its_day_acts_anew_and_is_pruned(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let first = alice.post_with_key("/api/tickets", "old", CONCERT()).await;
    let past_its_day = KEEP + Duration::from_millis(1);
    app.age_idempotency_keys(None, past_its_day).await;

    let again = alice.post_with_key("/api/tickets", "old", CONCERT()).await;

    assert_eq!(again.status, 201);
    assert!(!again.replayed());
    assert_ne!(again.body["id"], first.body["id"]);
    assert_eq!(listed(&app).await, 2);

    let store = &app.ctx.store;
    alice
        .post_with_key("/api/tickets", "young", CONCERT())
        .await;
    app.age_idempotency_keys(Some("old"), past_its_day).await;
    let horizon = now_millis() - common::clock::span_millis(KEEP);
    let pruned = common::retention::prune(store, IDEMPOTENCY_KEYS, horizon)
        .await
        .unwrap();
    assert_eq!(pruned, 1);
    assert_eq!(
        common::retention::rows(store, IDEMPOTENCY_KEYS)
            .await
            .unwrap(),
        1
    );
}

async fn a_malformed_key_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();

    for key in ["two words", &"k".repeat(256)] {
        let refused = alice.post_with_key("/api/tickets", key, CONCERT()).await;
        assert_eq!(refused.status, 400, "{key}");
        assert_eq!(refused.error_codes(), ["malformed_request"]);
    }
    assert_eq!(listed(&app).await, 0);
}
