//! The auth service over HTTP, on SQLite and on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::num::NonZeroU32;

use common::http::{Dependency, platform_routes};
use proptest::prelude::*;
use testkit::{
    Backend, BusKind, Client, TestBus, TestDatabase, TestServer, TestService, each_database,
    eventually, json, postgres_test,
};
use unicode_normalization::UnicodeNormalization;

mod announcements;

async fn spawn_app(backend: Backend) -> TestService {
    spawn_app_with(
        backend,
        auth::Settings {
            attempts_per_minute: None,
            trust_forwarded_for: false,
        },
    )
    .await
}

async fn spawn_app_with(backend: Backend, settings: auth::Settings) -> TestService {
    TestService::start(auth::NAME, backend, &auth::MIGRATIONS, |ctx| {
        auth::start(ctx, &settings).merge(platform_routes(vec![Dependency::Database(
            auth::NAME,
            ctx.store.clone(),
        )]))
    })
    .await
}

async fn sign_up(client: &Client, email: &str, password: &str) -> testkit::Reply {
    client
        .post(
            "/api/users/signup",
            json!({"email": email, "password": password}),
        )
        .await
}

fn set_cookie(reply: &testkit::Reply) -> String {
    reply
        .headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn signing_up_returns_201_the_user_and_a_session_cookie(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = app.server.client();

    let reply = sign_up(&client, "  Ada@Example.COM ", "correct horse").await;

    assert_eq!(reply.status, 201);
    assert_eq!(reply.body["email"], "ada@example.com");
    assert!(uuid::Uuid::try_parse(reply.body["id"].as_str().unwrap()).is_ok());
    let cookie = set_cookie(&reply);
    assert!(cookie.starts_with("session="), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    let me = client.get("/api/users/currentuser").await;
    assert_eq!(me.body["currentUser"]["email"], "ada@example.com");
    assert_eq!(me.body["currentUser"]["id"], reply.body["id"]);
}

async fn signing_up_with_bad_input_reports_every_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = app.server.client();

    let both_bad = sign_up(&client, "not-an-email", "short").await;
    let missing = client.post("/api/users/signup", json!({})).await;
    let too_long = sign_up(&client, "a@b.co", &"x".repeat(129)).await;

    assert_eq!(both_bad.status, 400);
    both_bad.assert_error_shape();
    assert_eq!(both_bad.error_fields(), ["email", "password"]);
    assert_eq!(both_bad.error_messages()[0], "Email must be valid");
    assert_eq!(missing.status, 400);
    assert_eq!(missing.error_fields(), ["email", "password"]);
    assert_eq!(too_long.status, 400);
    assert_eq!(too_long.error_fields(), ["password"]);
    assert!(set_cookie(&both_bad).is_empty());
}

async fn signing_up_with_a_password_easily_guessed_is_refused_on_that_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = app.server.client();

    for password in [
        "password",
        "12345678",
        "        ",
        "adalovelace!",
        "sunshine88",
    ] {
        let reply = sign_up(&client, "adalovelace@example.com", password).await;

        assert_eq!(reply.status, 400, "{password:?}: {:?}", reply.body);
        reply.assert_error_shape();
        assert_eq!(reply.error_fields(), ["password"], "{password:?}");
        assert!(set_cookie(&reply).is_empty());
    }
    // A common password with digits added passes every rule but the guesser's estimate, which
    // says why.
    let estimated = sign_up(&client, "adalovelace@example.com", "sunshine88").await;
    assert_eq!(
        estimated.error_messages(),
        ["Password is too easy to guess. This is similar to a commonly used password."]
    );
    // None of them made the account, and signing in with one is just wrong credentials.
    let sign_in = client
        .post(
            "/api/users/signin",
            json!({"email": "adalovelace@example.com", "password": "password"}),
        )
        .await;
    assert_eq!(sign_in.status, 400);
    assert_eq!(sign_in.error_messages(), ["Invalid credentials"]);
    assert_eq!(sign_in.error_codes(), ["invalid_credentials"]);
    assert!(sign_in.error_fields().is_empty());
    let accepted = sign_up(&client, "adalovelace@example.com", "correct horse").await;
    assert_eq!(accepted.status, 201, "{:?}", accepted.body);
}

async fn signing_up_with_an_email_in_use_returns_400(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = app.server.client();
    assert_eq!(
        sign_up(&client, "ada@example.com", "correct horse")
            .await
            .status,
        201
    );

    let again = sign_up(&client, "ADA@example.com ", "another password").await;

    assert_eq!(again.status, 400);
    again.assert_error_shape();
    assert_eq!(again.error_fields(), ["email"]);
    assert_eq!(again.error_messages(), ["Email in use"]);
    assert_eq!(again.error_codes(), ["email_in_use"]);
}

async fn concurrent_sign_ups_with_one_email_create_one_account(backend: Backend) {
    let app = spawn_app(backend).await;
    let attempts = (0..8).map(|i| {
        let client = app.server.client();
        async move { sign_up(&client, "race@example.com", &format!("correct horse {i}")).await }
    });

    let replies = futures::future::join_all(attempts).await;

    let created = replies.iter().filter(|r| r.status == 201).count();
    let in_use = replies
        .iter()
        .filter(|r| r.status == 400 && r.error_messages() == ["Email in use"])
        .count();
    assert_eq!((created, in_use), (1, 7), "{replies:?}");
}

async fn signing_in_returns_200_and_a_session(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = sign_up(&app.server.client(), "ada@example.com", "correct horse")
        .await
        .body["id"]
        .clone();
    let client = app.server.client();

    let reply = client
        .post(
            "/api/users/signin",
            json!({"email": " ADA@example.com", "password": "correct horse"}),
        )
        .await;

    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, json!({"id": id, "email": "ada@example.com"}));
    assert!(set_cookie(&reply).starts_with("session="));
    assert_eq!(
        client.get("/api/users/currentuser").await.body["currentUser"]["id"],
        id
    );
}

async fn a_wrong_password_and_an_unknown_email_get_the_same_answer(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = app.server.client();
    sign_up(&client, "ada@example.com", "correct horse").await;
    let fresh = app.server.client();

    let wrong = fresh
        .post(
            "/api/users/signin",
            json!({"email": "ada@example.com", "password": "wrong horse"}),
        )
        .await;
    let unknown = fresh
        .post(
            "/api/users/signin",
            json!({"email": "bob@example.com", "password": "correct horse"}),
        )
        .await;
    let invalid = fresh
        .post("/api/users/signin", json!({"email": " ", "password": ""}))
        .await;

    assert_eq!(wrong.status, 400);
    assert_eq!(wrong.body, unknown.body);
    assert_eq!(wrong.error_messages(), ["Invalid credentials"]);
    assert_eq!(wrong.error_codes(), ["invalid_credentials"]);
    assert!(wrong.error_fields().is_empty());
    assert!(set_cookie(&wrong).is_empty());
    assert_eq!(invalid.status, 400);
    assert_eq!(invalid.error_fields(), ["email", "password"]);
    assert_eq!(
        fresh.get("/api/users/currentuser").await.body,
        json!({"currentUser": null})
    );
}

async fn signing_out_clears_the_session(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = app.server.client();
    sign_up(&client, "ada@example.com", "correct horse").await;

    let reply = client.post("/api/users/signout", json!({})).await;

    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, json!({}));
    assert!(
        set_cookie(&reply).contains("Max-Age=0"),
        "{}",
        set_cookie(&reply)
    );
    assert_eq!(
        client.get("/api/users/currentuser").await.body,
        json!({"currentUser": null})
    );
}

/// The session token a sign-up or sign-in set in its cookie.
fn session_token(reply: &testkit::Reply) -> String {
    let cookie = set_cookie(reply);
    testkit::session_token(&cookie).unwrap_or_else(|| panic!("no session cookie in {cookie}"))
}

async fn sign_in_token(app: &TestService, email: &str) -> String {
    let body = json!({"email": email, "password": "correct horse"});
    let reply = app.server.client().post("/api/users/signin", body).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    session_token(&reply)
}

async fn current_user_of(app: &TestService, token: &str) -> serde_json::Value {
    let client = app.server.client();
    let url = app.server.url("/api/users/currentuser");
    client
        .send(client.http.get(&url).bearer_auth(token))
        .await
        .body["currentUser"]
        .clone()
}

async fn signing_out_revokes_that_session_and_no_other(backend: Backend) {
    let app = spawn_app(backend).await;
    let email = "ada@example.com";
    sign_up(&app.server.client(), email, "correct horse").await;
    let (laptop, phone) = (
        sign_in_token(&app, email).await,
        sign_in_token(&app, email).await,
    );

    let client = app.server.client();
    let url = app.server.url("/api/users/signout");
    let reply = client
        .send(client.http.post(&url).bearer_auth(&laptop))
        .await;

    assert_eq!(reply.status, 200, "{}", reply.body);
    // Kept by a client that ignores the cleared cookie, the token is refused all the same.
    assert_eq!(
        current_user_of(&app, &laptop).await,
        serde_json::Value::Null
    );
    assert_eq!(current_user_of(&app, &phone).await["email"], email);
    let again = client
        .send(client.http.post(&url).bearer_auth(&laptop))
        .await;
    assert_eq!(again.status, 200, "signing out twice is no error");
}

async fn signing_out_everywhere_revokes_every_session_begun_before(backend: Backend) {
    let app = spawn_app(backend).await;
    let (email, other) = ("ada@example.com", "bob@example.com");
    sign_up(&app.server.client(), email, "correct horse").await;
    sign_up(&app.server.client(), other, "correct horse").await;
    let (laptop, phone) = (
        sign_in_token(&app, email).await,
        sign_in_token(&app, email).await,
    );
    let someone_else = sign_in_token(&app, other).await;

    let client = app.server.client();
    let url = app.server.url("/api/users/signout/everywhere");
    let reply = client
        .send(client.http.post(&url).bearer_auth(&phone))
        .await;

    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body, json!({}));
    assert!(set_cookie(&reply).contains("Max-Age=0"));
    assert_eq!(
        current_user_of(&app, &laptop).await,
        serde_json::Value::Null
    );
    assert_eq!(current_user_of(&app, &phone).await, serde_json::Value::Null);
    assert_eq!(current_user_of(&app, &someone_else).await["email"], other);
    let fresh = sign_in_token(&app, email).await;
    assert_eq!(current_user_of(&app, &fresh).await["email"], email);
    let revoked = client
        .send(client.http.post(&url).bearer_auth(&phone))
        .await;
    assert_eq!(
        revoked.status, 401,
        "a revoked session cannot sign out everywhere"
    );
    let anonymous = app
        .server
        .client()
        .post("/api/users/signout/everywhere", json!({}))
        .await;
    assert_eq!(anonymous.status, 401);
}

/// An auth replica on a database another replica uses too.
async fn replica(db: &TestDatabase, bus: &TestBus) -> TestServer {
    let ctx = testkit::context(auth::NAME, db, bus.bus.clone(), &auth::MIGRATIONS).await;
    TestServer::start(auth::start(&ctx, &auth::Settings::default())).await
}

async fn is_refused_by(server: &TestServer, token: &str) -> bool {
    let client = server.client();
    let url = server.url("/api/users/currentuser");
    let reply = client.send(client.http.get(&url).bearer_auth(token)).await;
    reply.body["currentUser"].is_null()
}

async fn a_revocation_survives_a_restart(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let bus = TestBus::create(BusKind::Embedded).await;
    let first = replica(&db, &bus).await;
    let reply = sign_up(&first.client(), "ada@example.com", "correct horse").await;
    let token = session_token(&reply);
    let client = first.client();
    let signed_out = client
        .send(
            client
                .http
                .post(first.url("/api/users/signout"))
                .bearer_auth(&token),
        )
        .await;
    assert_eq!(signed_out.status, 200);
    drop(first);

    let restarted = replica(&db, &bus).await;
    // A process starting reads what was revoked before it; nothing else could tell it.
    eventually("the restarted replica to refuse the token", || async {
        is_refused_by(&restarted, &token).await.then_some(())
    })
    .await;
}

postgres_test! {
    async fn another_replica_refuses_a_revoked_session_once_it_commits() {
        let db = TestDatabase::create(Backend::Postgres).await;
        let bus = TestBus::create(BusKind::Embedded).await;
        let (one, other) = (replica(&db, &bus).await, replica(&db, &bus).await);
        let reply = sign_up(&one.client(), "ada@example.com", "correct horse").await;
        let token = session_token(&reply);
        assert!(!is_refused_by(&other, &token).await);
        // Both replicas have read the tables and listen by now; a refusal within the test's
        // bound, well inside the minute between reads, comes from the notification.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;

        let client = one.client();
        let url = one.url("/api/users/signout/everywhere");
        assert_eq!(client.send(client.http.post(url).bearer_auth(&token)).await.status, 200);

        eventually("the other replica to refuse the token", || async {
            is_refused_by(&other, &token).await.then_some(())
        })
        .await;
    }
}

async fn emails_stored_before_composing_are_composed_at_start(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let bus = TestBus::create(BusKind::Embedded).await;
    let first = replica(&db, &bus).await;
    let (composed, decomposed) = ("jos\u{e9}@example.com", "jose\u{301}@example.com");
    let (taken, clashing) = ("ren\u{e9}@example.com", "rene\u{301}@example.com");
    for email in [composed, taken] {
        assert_eq!(
            sign_up(&first.client(), email, "correct horse")
                .await
                .status,
            201
        );
    }
    // Stored as an earlier version stored them: trimmed and lower-cased, but not composed. The
    // second is another account whose address, composed, is the first's.
    let store = db.store(&auth::MIGRATIONS).await;
    sqlx::query("UPDATE users SET email = $1 WHERE email = $2")
        .bind(decomposed)
        .bind(composed)
        .execute(store.writer())
        .await
        .unwrap();
    let clash_id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO users (id, email, password_hash, created_at) \
         SELECT $1, $2, password_hash, created_at FROM users WHERE email = $3",
    )
    .bind(clash_id.to_string())
    .bind(clashing)
    .bind(taken)
    .execute(store.writer())
    .await
    .unwrap();
    let sign_in = |server: &TestServer, email: &str| {
        let (client, body) = (
            server.client(),
            json!({"email": email, "password": "correct horse"}),
        );
        async move { client.post("/api/users/signin", body).await.status }
    };
    assert_eq!(sign_in(&first, composed).await, 400, "not found as stored");

    let restarted = replica(&db, &bus).await;

    eventually("the stored address to be composed", || async {
        (sign_in(&restarted, decomposed).await == 200).then_some(())
    })
    .await;
    assert_eq!(sign_in(&restarted, composed).await, 200);
    let left: String = sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
        .bind(clash_id.to_string())
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(left, clashing, "a clash is left for the operator");
    assert_eq!(sign_in(&restarted, taken).await, 200);
}

async fn the_current_user_comes_from_a_valid_cookie_or_bearer_token_only(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = uuid::Uuid::now_v7();
    let (token, claims) = app.ctx.sessions.issue(id, "ada@example.com", 0).unwrap();
    let client = app.server.client();
    let url = app.server.url("/api/users/currentuser");

    let bearer = client.send(client.http.get(&url).bearer_auth(&token)).await;
    let tampered = client
        .send(client.http.get(&url).bearer_auth(format!("{token}x")))
        .await;
    let foreign = testkit::test_sessions();
    let other_key = common::Sessions::new(
        &secrecy::SecretString::from("some other secret entirely"),
        std::time::Duration::from_secs(60),
        false,
    );
    let (forged, _) = other_key.issue(id, "ada@example.com", 0).unwrap();
    let forged_cookie = client
        .send(
            client
                .http
                .get(&url)
                .header("cookie", format!("session={forged}")),
        )
        .await;
    let anonymous = client.get("/api/users/currentuser").await;

    assert_eq!(bearer.status, 200);
    assert_eq!(bearer.body["currentUser"]["id"], id.to_string());
    assert_eq!(bearer.body["currentUser"]["email"], "ada@example.com");
    assert_eq!(bearer.body["currentUser"]["iat"], claims.iat);
    assert_eq!(bearer.body["currentUser"]["exp"], claims.exp);
    assert!(foreign.verify(&token).is_some());
    assert_eq!(tampered.body, json!({"currentUser": null}));
    assert_eq!(forged_cookie.body, json!({"currentUser": null}));
    assert_eq!(anonymous.body, json!({"currentUser": null}));
}

async fn too_many_attempts_from_one_address_get_429(backend: Backend) {
    let app = spawn_app_with(
        backend,
        auth::Settings {
            attempts_per_minute: NonZeroU32::new(3),
            trust_forwarded_for: false,
        },
    )
    .await;
    let client = app.server.client();
    let attempt = || {
        client.post(
            "/api/users/signin",
            json!({"email": "ada@example.com", "password": "wrong horse"}),
        )
    };

    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(attempt().await);
    }

    assert_eq!(
        statuses.iter().map(|r| r.status).collect::<Vec<_>>(),
        [400, 400, 400, 429]
    );
    statuses[3].assert_error_shape();
    // The limit guards credential guessing only; reading the session is not limited.
    assert_eq!(client.get("/api/users/currentuser").await.status, 200);
}

async fn behind_an_ingress_each_client_address_has_its_own_limit(backend: Backend) {
    let app = spawn_app_with(
        backend,
        auth::Settings {
            attempts_per_minute: NonZeroU32::new(2),
            trust_forwarded_for: true,
        },
    )
    .await;
    let client = app.server.client();
    let url = app.server.url("/api/users/signin");
    // What the ingress forwards: whatever the client claimed, then the address it saw.
    let attempt = |forwarded_for: String| {
        client.send(
            client
                .http
                .post(&url)
                .header("x-forwarded-for", forwarded_for)
                .json(&json!({"email": "ada@example.com", "password": "wrong horse"})),
        )
    };

    let mut first = Vec::new();
    for claimed in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
        // A made-up leading address does not buy a fresh budget.
        first.push(attempt(format!("{claimed}, 203.0.113.7")).await.status);
    }
    let second = attempt("203.0.113.8".to_owned()).await.status;

    assert_eq!(first, [400, 400, 429]);
    assert_eq!(
        second, 400,
        "another client behind the same ingress is not limited"
    );
}

async fn malformed_requests_get_the_error_shape(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = app.server.client();
    let url = app.server.url("/api/users/signup");

    let bad_json = client
        .post_raw_json("/api/users/signup", "{\"email\":")
        .await;
    let wrong_type = client
        .send(client.http.post(&url).body("email=a@b.co"))
        .await;
    let wrong_shape = client.post("/api/users/signup", json!({"email": 5})).await;
    let huge = client
        .post(
            "/api/users/signup",
            json!({"email": "a@b.co", "password": "x".repeat(200_000)}),
        )
        .await;
    // The server closes a connection whose body it did not read, and says so, so that the
    // client's next request goes out on another.
    assert_eq!(huge.headers["connection"], "close");
    let unknown_route = client.get("/api/users/nope").await;
    let wrong_method = client.get("/api/users/signup").await;

    // Only the statuses of the contract: what HTTP would call 415, 413 or 405 is a 400 that says
    // which.
    for (reply, status, message) in [
        (&bad_json, 400, "Request body is not valid JSON"),
        (
            &wrong_type,
            400,
            "Expected a JSON body with Content-Type: application/json",
        ),
        (
            &wrong_shape,
            400,
            "Request body has the wrong shape: email: invalid type: integer `5`, expected a \
             string at line 1 column 10",
        ),
        (&huge, 400, "Request body is too large"),
        (&unknown_route, 404, "Not found"),
        (
            &wrong_method,
            400,
            "Method not allowed on this path; the Allow header lists those that are",
        ),
    ] {
        assert_eq!(reply.status, status, "{reply:?}");
        reply.assert_error_shape();
        assert_eq!(reply.error_messages(), [message], "{reply:?}");
    }
}

async fn a_database_that_is_down_gives_503_not_success(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = app.server.client();
    assert_eq!(client.get("/readyz").await.status, 200);

    app.ctx.store.close().await;

    let reply = sign_up(&client, "ada@example.com", "correct horse").await;
    assert_eq!(reply.status, 503);
    reply.assert_error_shape();
    let ready = client.get("/readyz").await;
    assert_eq!(ready.status, 503);
    ready.assert_error_shape();
    assert_eq!(client.get("/healthz").await.status, 200);
}

each_database!(
    signing_up_returns_201_the_user_and_a_session_cookie,
    signing_up_with_bad_input_reports_every_field,
    signing_up_with_a_password_easily_guessed_is_refused_on_that_field,
    signing_up_with_an_email_in_use_returns_400,
    concurrent_sign_ups_with_one_email_create_one_account,
    signing_in_returns_200_and_a_session,
    a_wrong_password_and_an_unknown_email_get_the_same_answer,
    signing_out_clears_the_session,
    signing_out_revokes_that_session_and_no_other,
    signing_out_everywhere_revokes_every_session_begun_before,
    a_revocation_survives_a_restart,
    emails_stored_before_composing_are_composed_at_start,
    the_current_user_comes_from_a_valid_cookie_or_bearer_token_only,
    too_many_attempts_from_one_address_get_429,
    behind_an_ingress_each_client_address_has_its_own_limit,
    malformed_requests_get_the_error_shape,
    a_database_that_is_down_gives_503_not_success,
    any_email_or_password_signs_up_normalised_or_is_refused_on_its_field,
);

/// Text that reaches the interesting cases: anything at all, and short mixes of letters, an at
/// sign, dots, combining accents, spaces, invisible characters, controls and direction overrides.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-zA-Zé@.+\\x{301}\\x{200B}\\x{202E}\\x{0}\\x{1B} ]{0,16}",
        "[a-z]{1,8}[\\x{301}\\x{200B}\\x{202E}\\x{0}]?@[a-z]{1,8}\\.[a-z]{2,3}",
    ]
}

/// `name@domain.tld` in lower-case ASCII letters.
fn is_plain_address(email: &str) -> bool {
    let letters = |part: &str| !part.is_empty() && part.chars().all(|c| c.is_ascii_lowercase());
    match email.split_once('@') {
        Some((name, domain)) => match domain.split_once('.') {
            Some((host, tld)) => letters(name) && letters(host) && letters(tld) && tld.len() >= 2,
            None => false,
        },
        None => false,
    }
}

/// That an answer is a 400 in the error shape about `field` alone.
fn refused_on(reply: &testkit::Reply, field: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(reply.status, 400, "{:?}", reply.body);
    let errors = reply.body["errors"].as_array().cloned().unwrap_or_default();
    prop_assert!(!errors.is_empty(), "{:?}", reply.body);
    for error in errors {
        prop_assert_eq!(error["field"].as_str(), Some(field), "{:?}", reply.body);
    }
    Ok(())
}

/// Random Unicode through the e-mail and the password: a sign-up succeeds, and then the same
/// text signs in and the address reads back composed, trimmed and lower-cased; or it is refused
/// on that field, and refused at sign-in too. Never a server error.
async fn any_email_or_password_signs_up_normalised_or_is_refused_on_its_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let app = &app;
    testkit::check_property(32, (text(), text()), |(email, password)| async move {
        let client = app.server.client();
        let reply = sign_up(&client, &email, "correct horse").await;
        // A plain address is taken (or already taken): the property is not met by refusing all.
        if is_plain_address(&email) {
            let taken = reply.error_messages() == ["Email in use"];
            prop_assert!(reply.status == 201 || taken, "{email:?}: {:?}", reply.body);
        }
        if reply.status == 201 {
            let stored = email.nfc().collect::<String>().trim().to_lowercase();
            prop_assert_eq!(reply.body["email"].as_str(), Some(stored.as_str()));
            let body = json!({"email": email, "password": "correct horse"});
            let signed_in = app.server.client().post("/api/users/signin", body).await;
            prop_assert_eq!(signed_in.status, 200, "{:?}", signed_in.body);
        } else {
            refused_on(&reply, "email")?;
            // Nor can the refused address sign in: a 400, whatever it holds.
            let body = json!({"email": email, "password": "correct horse"});
            let signed_in = app.server.client().post("/api/users/signin", body).await;
            prop_assert_eq!(signed_in.status, 400, "{:?}: {:?}", email, signed_in.body);
        }

        let fresh = format!("{}@example.com", uuid::Uuid::new_v4().simple());
        let reply = sign_up(&client, &fresh, &password).await;
        if reply.status == 201 {
            let body = json!({"email": fresh, "password": password});
            let signed_in = app.server.client().post("/api/users/signin", body).await;
            prop_assert_eq!(signed_in.status, 200, "{:?}", signed_in.body);
        } else {
            refused_on(&reply, "password")?;
        }
        Ok(())
    });
}
