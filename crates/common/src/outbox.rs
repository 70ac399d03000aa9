//! The transactional outbox and its relay.
//!
//! A change and the event announcing it are written in one transaction ([`enqueue`]); the relay
//! publishes outbox rows to the bus a batch at a time (one bus write, or every publish in flight
//! at once) and deletes the batch once the bus has stored all of it. So an event is
//! published if and only if its transaction committed. A crash between publish and delete
//! publishes the row again on restart; the bus drops the duplicate by message id and consumers'
//! inboxes drop what slips past the bus's window.
//!
//! Each row also keeps the trace context it was written in; the relay publishes the event from a
//! span that continues that trace, with the span's context in the message headers.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sqlx::{Any, AnyConnection, Row, Transaction};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::background::{Next, run_passes};
use crate::bus::{Bus, BusError, Headers, Message};
use crate::clock::now_millis;
use crate::events::{Envelope, EventData, EventType};
use crate::store::{Dialect, Migration, Migrations, Params, Store};
use crate::telemetry;

/// The platform tables every service database has: outbox, inbox, revoked sessions and
/// idempotency keys.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[
        Migration {
            version: 1,
            name: "outbox and inbox",
            sql: include_str!("../migrations/platform/sqlite/0001_outbox_inbox.sql"),
        },
        Migration {
            version: 2,
            name: "outbox headers",
            sql: include_str!("../migrations/platform/sqlite/0002_outbox_headers.sql"),
        },
        Migration {
            version: 3,
            name: "inbox by age",
            sql: include_str!("../migrations/platform/sqlite/0003_inbox_by_age.sql"),
        },
        Migration {
            version: 4,
            name: "revoked sessions",
            sql: include_str!("../migrations/platform/sqlite/0004_revocations.sql"),
        },
        Migration {
            version: 5,
            name: "idempotency keys",
            sql: include_str!("../migrations/platform/sqlite/0005_idempotency_keys.sql"),
        },
    ],
    postgres: &[
        Migration {
            version: 1,
            name: "outbox and inbox",
            sql: include_str!("../migrations/platform/postgres/0001_outbox_inbox.sql"),
        },
        Migration {
            version: 2,
            name: "outbox headers",
            sql: include_str!("../migrations/platform/postgres/0002_outbox_headers.sql"),
        },
        Migration {
            version: 3,
            name: "inbox by age",
            sql: include_str!("../migrations/platform/postgres/0003_inbox_by_age.sql"),
        },
        Migration {
            version: 4,
            name: "revoked sessions",
            sql: include_str!("../migrations/platform/postgres/0004_revocations.sql"),
        },
        Migration {
            version: 5,
            name: "idempotency keys",
            sql: include_str!("../migrations/platform/postgres/0005_idempotency_keys.sql"),
        },
    ],
};

const BATCH: i64 = 256;
/// How often the relay looks without being woken, to pick up rows left by a crash or written by
/// another replica.
const POLL: Duration = Duration::from_secs(1);

/// Writes an event into the outbox inside the caller's transaction, with the trace context of
/// the current span (the request or the event being handled), so the trace goes on through
/// whatever the event causes.
pub async fn enqueue<T: EventData>(
    conn: &mut AnyConnection,
    data: T,
) -> Result<Envelope<T>, sqlx::Error> {
    let envelope = Envelope::new(data);
    let payload = envelope
        .encode()
        .map_err(|err| sqlx::Error::Encode(Box::new(err)))?;
    sqlx::query(
        "INSERT INTO outbox (id, event_type, payload, created_at, headers) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(envelope.id.to_string())
    .bind(T::TYPE.as_str())
    .bind(String::from_utf8_lossy(&payload).into_owned())
    .bind(now_millis())
    .bind(telemetry::current_trace_headers().to_json())
    .execute(&mut *conn)
    .await?;
    Ok(envelope)
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Store(#[from] sqlx::Error),
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// A service's outbox: commit helpers and the relay. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    store: Store,
    service: &'static str,
    wake: Arc<Notify>,
}

impl Outbox {
    pub fn new(store: Store, service: &'static str) -> Self {
        Self {
            store,
            service,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Commits a transaction that may hold outbox rows, then wakes the relay so that the events
    /// leave at once rather than at the next poll.
    pub async fn commit(&self, tx: Transaction<'static, Any>) -> Result<(), sqlx::Error> {
        tx.commit().await?;
        self.wake.notify_one();
        Ok(())
    }

    /// Events written and not yet published.
    pub async fn backlog(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
            .fetch_one(self.store.pool())
            .await
    }

    /// Publishes up to one batch of waiting events, oldest first; returns how many left.
    pub async fn relay_once(&self, bus: &dyn Bus) -> Result<usize, RelayError> {
        match self.store.dialect() {
            // Replicas share the table: each claims rows the others are not publishing.
            Dialect::Postgres => {
                let mut tx = self.store.begin().await?;
                let rows = sqlx::query(
                    "SELECT seq, id, event_type, payload, headers FROM outbox ORDER BY seq \
                     LIMIT $1 FOR UPDATE SKIP LOCKED",
                )
                .bind(BATCH)
                .fetch_all(&mut *tx)
                .await?;
                let published = self.publish_rows(bus, rows).await?;
                self.delete_rows(&mut *tx, &published).await?;
                tx.commit().await?;
                Ok(published.len())
            }
            // One process owns the file. The writer is taken for the delete alone, so that
            // nothing waits for it while the bus is asked.
            Dialect::Sqlite => {
                let rows = sqlx::query(
                    "SELECT seq, id, event_type, payload, headers FROM outbox \
                     ORDER BY seq LIMIT $1",
                )
                .bind(BATCH)
                .fetch_all(self.store.pool())
                .await?;
                let published = self.publish_rows(bus, rows).await?;
                self.delete_rows(self.store.writer(), &published).await?;
                Ok(published.len())
            }
        }
    }

    /// Deletes published rows, with one statement.
    async fn delete_rows<'c, E>(&self, executor: E, seqs: &[i64]) -> Result<(), sqlx::Error>
    where
        E: sqlx::Executor<'c, Database = Any>,
    {
        if seqs.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "DELETE FROM outbox WHERE seq IN ({})",
            Params::new(self.store.dialect()).take(seqs.len())
        );
        let mut delete = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
        for seq in seqs {
            delete = delete.bind(*seq);
        }
        delete.execute(executor).await?;
        Ok(())
    }

    /// Publishes the rows as one batch; returns the sequence numbers of those published.
    async fn publish_rows(
        &self,
        bus: &dyn Bus,
        rows: Vec<sqlx::any::AnyRow>,
    ) -> Result<Vec<i64>, RelayError> {
        let mut messages = Vec::with_capacity(rows.len());
        let mut seqs = Vec::with_capacity(rows.len());
        let mut spans = Vec::with_capacity(rows.len());
        for row in rows {
            let seq: i64 = row.try_get("seq")?;
            let name: String = row.try_get("event_type")?;
            let payload: String = row.try_get("payload")?;
            let Some(event_type) = EventType::parse(&name) else {
                // Only this code writes the outbox; an unknown type is a bug worth shouting about,
                // and the row stays for someone to look at.
                tracing::error!(seq, event_type = %name, "outbox row with an unknown event type");
                continue;
            };
            let id: String = row.try_get("id")?;
            let stored =
                Headers::from_json(row.try_get::<Option<String>, _>("headers")?.as_deref());
            // Each publish is a span of the trace its event was written in, open until the batch
            // is stored; the listener's span continues from it.
            let span =
                tracing::info_span!(parent: None, "publish", event_type = %event_type, id = %id);
            telemetry::continue_trace(&span, &stored);
            messages.push(Message {
                headers: telemetry::trace_headers(&span),
                id,
                event_type,
                payload: Bytes::from(payload),
            });
            seqs.push(seq);
            spans.push(span);
        }
        if messages.is_empty() {
            return Ok(seqs);
        }
        bus.publish_batch(&messages).await?;
        drop(spans);
        for message in &messages {
            metrics::counter!("stubs_events_published_total", "service" => self.service, "type" => message.event_type.as_str())
                .increment(1);
        }
        Ok(seqs)
    }

    /// Publishes until shut down: at once when woken, every second otherwise, backing off while
    /// the bus or the database is away. On shutdown it makes one last attempt to empty the table.
    pub async fn run_relay(self, bus: Arc<dyn Bus>, shutdown: CancellationToken) {
        let task = format!("{} outbox relay", self.service);
        run_passes(&task, &self.wake, &shutdown, || async {
            let relayed = self.relay_once(bus.as_ref()).await;
            if matches!(relayed, Ok(n) if n as i64 >= BATCH) {
                return Ok(Next::Again);
            }
            if let Ok(backlog) = self.backlog().await {
                metrics::gauge!("stubs_outbox_backlog", "service" => self.service)
                    .set(backlog as f64);
            }
            relayed.map(|_| Next::Pause(POLL))
        })
        .await;
        while let Ok(n) = self.relay_once(bus.as_ref()).await {
            if n == 0 {
                break;
            }
        }
    }
}
