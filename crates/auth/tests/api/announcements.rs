//! user:created: every account is announced once, with its e-mail as stored, whether it is made
//! now or was stored before the event existed; a sign-up that makes no account announces nothing.

use common::events::{Envelope, EventType, UserCreated};
use common::outbox::Outbox;
use common::store::Store;
use testkit::{Backend, BusKind, TestBus, TestDatabase, Watcher, eventually};
use uuid::Uuid;

use crate::{replica, sign_up, spawn_app};

testkit::each_database!(
    signing_up_announces_the_account_with_its_email_as_stored,
    a_sign_up_refused_as_email_in_use_announces_nothing,
    concurrent_sign_ups_with_one_email_announce_one_account,
    accounts_stored_before_are_announced_once,
    replicas_announcing_together_announce_each_account_once,
);

fn id_of(reply: &testkit::Reply) -> Uuid {
    Uuid::try_parse(reply.body["id"].as_str().unwrap()).unwrap()
}

/// Stores an account as it was stored before user:created existed: never announced.
async fn store_unannounced(store: &Store, id: Uuid, email: &str) {
    sqlx::query(
        "INSERT INTO users (id, email, password_hash, created_at) VALUES ($1, $2, 'hash', $3)",
    )
    .bind(id.to_string())
    .bind(email)
    .bind(common::clock::now_millis())
    .execute(store.writer())
    .await
    .unwrap();
}

/// The `(id, email)` the events carry, sorted.
fn accounts(events: &[Envelope<UserCreated>]) -> Vec<(Uuid, String)> {
    let mut accounts: Vec<_> = events
        .iter()
        .map(|event| (event.data.id, event.data.email.clone()))
        .collect();
    accounts.sort();
    accounts
}

/// The next `count` events, and then every other one left once `outbox` is empty.
async fn every_event(
    watcher: &mut Watcher<UserCreated>,
    count: usize,
    outbox: &Outbox,
) -> Vec<Envelope<UserCreated>> {
    let mut events = Vec::new();
    for _ in 0..count {
        events.push(watcher.next().await);
    }
    eventually("the outbox to be empty", || async {
        (outbox.backlog().await.unwrap() == 0).then_some(())
    })
    .await;
    events.extend(watcher.rest().await);
    events
}

async fn signing_up_announces_the_account_with_its_email_as_stored(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut created = app.watch::<UserCreated>().await;

    let reply = sign_up(&app.server.client(), "  Ana@Example.COM ", "correct horse").await;

    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let event = created.next().await;
    assert_eq!(event.event_type, EventType::UserCreated);
    assert_eq!(
        event.data,
        UserCreated {
            id: id_of(&reply),
            email: "ana@example.com".into(),
        }
    );
    app.flushed().await;
    assert!(created.rest().await.is_empty(), "announced once");
}

async fn a_sign_up_refused_as_email_in_use_announces_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut created = app.watch::<UserCreated>().await;
    let first = sign_up(&app.server.client(), "ana@example.com", "correct horse").await;
    assert_eq!(first.status, 201, "{:?}", first.body);

    let again = sign_up(&app.server.client(), " ANA@example.com", "another password").await;

    assert_eq!(again.status, 400);
    assert_eq!(again.error_messages(), ["Email in use"]);
    let events = every_event(&mut created, 1, &app.ctx.outbox).await;
    assert_eq!(
        accounts(&events),
        [(id_of(&first), "ana@example.com".to_owned())],
        "only the account made is announced"
    );
}

async fn concurrent_sign_ups_with_one_email_announce_one_account(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut created = app.watch::<UserCreated>().await;
    let attempts = (0..8).map(|i| {
        let client = app.server.client();
        async move { sign_up(&client, "race@example.com", &format!("correct horse {i}")).await }
    });

    let replies = futures::future::join_all(attempts).await;

    let made: Vec<_> = replies.iter().filter(|r| r.status == 201).collect();
    assert_eq!(made.len(), 1, "{replies:?}");
    let events = every_event(&mut created, 1, &app.ctx.outbox).await;
    assert_eq!(
        accounts(&events),
        [(id_of(made[0]), "race@example.com".to_owned())]
    );
}

async fn accounts_stored_before_are_announced_once(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let bus = TestBus::create(BusKind::Embedded).await;
    let mut created = bus.watch::<UserCreated>().await;
    let store = db.store(&auth::MIGRATIONS).await;
    let outbox = Outbox::new(store.clone(), auth::NAME);
    let mut before = vec![
        (Uuid::now_v7(), "ana@example.com".to_owned()),
        (Uuid::now_v7(), "bob@example.com".to_owned()),
    ];
    for (id, email) in &before {
        store_unannounced(&store, *id, email).await;
    }
    // An account announced already, as a sign-up is.
    sqlx::query(
        "INSERT INTO users (id, email, password_hash, created_at, announced_at) \
         VALUES ($1, 'cy@example.com', 'hash', $2, $2)",
    )
    .bind(Uuid::now_v7().to_string())
    .bind(common::clock::now_millis())
    .execute(store.writer())
    .await
    .unwrap();

    let announced = auth::announce_stored_users(&store, &outbox).await.unwrap();
    let again = auth::announce_stored_users(&store, &outbox).await.unwrap();

    assert_eq!((announced, again), (2, 0));
    // One more stored before, left to the pass every start makes; the replica's relay publishes
    // all that was announced.
    let late = (Uuid::now_v7(), "dee@example.com".to_owned());
    store_unannounced(&store, late.0, &late.1).await;
    before.push(late);
    before.sort();
    let _replica = replica(&db, &bus).await;
    let events = every_event(&mut created, 3, &outbox).await;
    assert_eq!(accounts(&events), before, "each once, with its address");
    assert_eq!(
        auth::announce_stored_users(&store, &outbox).await.unwrap(),
        0
    );
}

async fn replicas_announcing_together_announce_each_account_once(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let (one, other) = (
        db.store(&auth::MIGRATIONS).await,
        db.store(&auth::MIGRATIONS).await,
    );
    // More than a batch, so that the two pass each other.
    let mut stored = Vec::new();
    let mut tx = one.begin().await.unwrap();
    for i in 0..1200 {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, created_at) VALUES ($1, $2, 'hash', 0)",
        )
        .bind(id.to_string())
        .bind(format!("user{i}@example.com"))
        .execute(&mut *tx)
        .await
        .unwrap();
        stored.push(id.to_string());
    }
    tx.commit().await.unwrap();
    stored.sort();

    let announce = |store: &Store| {
        let store = store.clone();
        tokio::spawn(async move {
            let outbox = Outbox::new(store.clone(), auth::NAME);
            auth::announce_stored_users(&store, &outbox).await.unwrap()
        })
    };
    let (by_one, by_other) = (announce(&one), announce(&other));

    assert_eq!(by_one.await.unwrap() + by_other.await.unwrap(), 1200);
    let payloads: Vec<String> =
        sqlx::query_scalar("SELECT payload FROM outbox WHERE event_type = 'user:created'")
            .fetch_all(one.pool())
            .await
            .unwrap();
    let mut announced: Vec<String> = payloads
        .iter()
        .map(|payload| {
            let event = Envelope::<UserCreated>::decode(payload.as_bytes()).unwrap();
            event.data.id.to_string()
        })
        .collect();
    announced.sort();
    assert_eq!(announced, stored, "each account once");
}
