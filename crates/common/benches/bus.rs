//! The bus end to end: events waiting in a service's outbox are published by its relay,
//! delivered through the bus and applied by a real listener (one upsert per event, as a replica
//! keeps, with its inbox record, acknowledged after the commit). Reports deliveries per second
//! from the relay's start until the last event is applied.
//!
//!     cargo bench -p common --bench bus                        # the embedded bus on SQLite
//!     STUBS_TEST_DATABASE_URL=postgres://… STUBS_TEST_NATS_URL=nats://… \
//!         cargo bench -p common --bench bus                    # and JetStream on PostgreSQL
//!
//! After `--`: `--events N` (default 20000), `--json` for one JSON line per bus on stdout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::ServiceContext;
use common::events::{Envelope, TicketCreated};
use common::listener::{self, HandleError, Handler};
use common::money::Cents;
use common::outbox;
use common::store::{Migration, Migrations, Store};
use sqlx::AnyConnection;
use testkit::{Backend, BusKind, TestBus, TestDatabase};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

const REPLICA_SQL: &str = "CREATE TABLE replica (id TEXT PRIMARY KEY, title TEXT NOT NULL, \
                           price_cents BIGINT NOT NULL, version BIGINT NOT NULL)";
const REPLICA: Migrations = Migrations {
    sqlite: &[Migration {
        version: 100,
        name: "replica",
        sql: REPLICA_SQL,
    }],
    postgres: &[Migration {
        version: 100,
        name: "replica",
        sql: REPLICA_SQL,
    }],
};

/// Keeps a replica of listed tickets, as the orders service does.
struct KeepReplica;

#[async_trait]
impl Handler<TicketCreated> for KeepReplica {
    async fn handle(
        &self,
        tx: &mut AnyConnection,
        event: Envelope<TicketCreated>,
    ) -> Result<(), HandleError> {
        let ticket = event.data;
        sqlx::query(
            "INSERT INTO replica (id, title, price_cents, version) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(ticket.id.to_string())
        .bind(ticket.title)
        .bind(ticket.price.get())
        .bind(ticket.version)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

async fn is_applied(store: &Store, id: Uuid) -> bool {
    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM replica WHERE id = $1")
        .bind(id.to_string())
        .fetch_one(store.pool())
        .await
        .unwrap()
        > 0
}

async fn applied(store: &Store) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM replica")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// Fills the outbox with `events` events, 500 to a transaction; returns the last one's id.
async fn fill_outbox(store: &Store, events: usize) -> Uuid {
    let mut last = Uuid::nil();
    let mut left = events;
    while left > 0 {
        let mut tx = store.begin().await.unwrap();
        for _ in 0..left.min(500) {
            let ticket = TicketCreated {
                id: Uuid::now_v7(),
                version: 0,
                title: "Bench seat".to_owned(),
                price: Cents::new(2500).unwrap(),
                user_id: Uuid::now_v7(),
                event_id: None,
                event_starts_at: None,
            };
            last = ticket.id;
            outbox::enqueue(&mut tx, ticket).await.unwrap();
        }
        tx.commit().await.unwrap();
        left -= left.min(500);
    }
    last
}

async fn run(kind: BusKind, backend: Backend, events: usize) -> (Duration, f64) {
    let database = TestDatabase::create(backend).await;
    let bus = TestBus::create(kind).await;
    let store = database.store(&[&outbox::MIGRATIONS, &REPLICA]).await;
    let last = fill_outbox(&store, events).await;

    let ctx = ServiceContext::new(
        "bench",
        store.clone(),
        bus.bus.clone(),
        testkit::test_sessions(),
        CancellationToken::new(),
        TaskTracker::new(),
    );
    let started = Instant::now();
    ctx.spawn_relay();
    listener::spawn::<TicketCreated, _>(&ctx, KeepReplica);
    // The last event written is the last one to look for; then every one is counted.
    let expected = i64::try_from(events).unwrap();
    while !is_applied(&store, last).await || applied(&store).await < expected {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "not every event was applied within ten minutes"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    ctx.shutdown.cancel();
    ctx.tasks.close();
    ctx.tasks.wait().await;
    store.close().await;
    (elapsed, events as f64 / elapsed.as_secs_f64())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let json = args.iter().any(|arg| arg == "--json");
    let events = args
        .iter()
        .position(|arg| arg == "--events")
        .and_then(|i| args.get(i + 1))
        .map_or(20_000, |n| n.parse().expect("--events takes a number"));
    // `cargo bench` passes `--bench`; a filter that names no bus runs them all.
    let mut runs = vec![("embedded", BusKind::Embedded, Backend::Sqlite)];
    let distributed = std::env::var_os("STUBS_TEST_DATABASE_URL").is_some()
        && std::env::var_os("STUBS_TEST_NATS_URL").is_some();
    if distributed {
        runs.push(("jetstream", BusKind::Nats, Backend::Postgres));
    } else if !json {
        eprintln!(
            "jetstream: skipped (set STUBS_TEST_DATABASE_URL and STUBS_TEST_NATS_URL to run it)"
        );
    }
    for (name, kind, backend) in runs {
        let (elapsed, rate) = run(kind, backend, events).await;
        if json {
            println!(
                "{{\"bus\":\"{name}\",\"events\":{events},\"seconds\":{:.3},\"deliveries_per_second\":{rate:.0}}}",
                elapsed.as_secs_f64()
            );
        } else {
            println!(
                "{name}: {events} events published, delivered and applied in {:.2} s: {rate:.0} deliveries/s",
                elapsed.as_secs_f64()
            );
        }
    }
}
