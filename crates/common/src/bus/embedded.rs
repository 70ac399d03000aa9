//! The embedded bus: a durable log in one SQLite file, for running every service in one process.
//!
//! `messages` is the log, each message with its headers, de-duplicated by message id. Each
//! durable consumer (group and type) has a cursor into the log and a `pending` row per message it
//! has handed out but not had acked; a pending row whose `due_at` has passed is handed out again.
//! The delivery count in the pending row doubles as the delivery's token, so an ack from a
//! delivery that already timed out and went to someone else changes nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::Row;
use tokio::sync::Notify;

use super::{
    Acker, Bus, BusError, ConsumerConfig, DeadLetter, Delivery, Headers, Message, Subscription,
};
use crate::events::EventType;
use crate::store::{Migration, Migrations, Store, now_millis};

const MIGRATIONS: Migrations = Migrations {
    sqlite: &[
        Migration {
            version: 1,
            name: "bus",
            sql: include_str!("../../migrations/bus/sqlite/0001_bus.sql"),
        },
        Migration {
            version: 2,
            name: "message headers",
            sql: include_str!("../../migrations/bus/sqlite/0002_headers.sql"),
        },
    ],
    postgres: &[],
};

/// The longest a waiting consumer sleeps before looking again, as a guard against a missed wake.
const MAX_IDLE: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct EmbeddedBus {
    store: Store,
    /// One wake-up per event type, so a publish wakes only the consumers of its type.
    wake: Arc<HashMap<EventType, Notify>>,
}

impl EmbeddedBus {
    /// Opens (creating if needed) the bus log at a SQLite URL such as `sqlite://data/bus.sqlite`.
    pub async fn open(url: &str) -> Result<Self, crate::store::StoreError> {
        let store = Store::connect(url, &[&MIGRATIONS]).await?;
        Ok(Self {
            store,
            wake: Arc::new(
                EventType::ALL
                    .into_iter()
                    .map(|kind| (kind, Notify::new()))
                    .collect(),
            ),
        })
    }

    fn wake(&self, event_type: EventType) {
        if let Some(notify) = self.wake.get(&event_type) {
            notify.notify_waiters();
        }
    }

    pub async fn close(&self) {
        self.store.close().await;
    }
}

#[async_trait]
impl Bus for EmbeddedBus {
    async fn publish(&self, message: &Message) -> Result<(), BusError> {
        sqlx::query(
            "INSERT INTO messages (id, subject, payload, published_at, headers) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&message.id)
        .bind(message.event_type.as_str())
        .bind(message.payload.to_vec())
        .bind(now_millis())
        .bind(message.headers.to_json())
        .execute(self.store.pool())
        .await?;
        self.wake(message.event_type);
        Ok(())
    }

    async fn subscribe(&self, config: &ConsumerConfig) -> Result<Box<dyn Subscription>, BusError> {
        // A new durable consumer starts at the beginning of the log, as JetStream's DeliverAll.
        sqlx::query(
            "INSERT INTO consumers (name, subject, cursor) VALUES ($1, $2, 0) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(config.durable_name())
        .bind(config.event_type.as_str())
        .execute(self.store.pool())
        .await?;
        Ok(Box::new(EmbeddedSubscription {
            bus: self.clone(),
            name: config.durable_name(),
            config: config.clone(),
        }))
    }

    async fn dead_letters(&self, config: &ConsumerConfig) -> Result<Vec<DeadLetter>, BusError> {
        let rows = sqlx::query(
            "SELECT message_id, payload, deliveries, reason FROM dead_letters \
             WHERE consumer = $1 ORDER BY dead_at, seq",
        )
        .bind(config.durable_name())
        .fetch_all(self.store.pool())
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(DeadLetter {
                    message_id: row.try_get("message_id")?,
                    event_type: config.event_type,
                    payload: Bytes::from(row.try_get::<Vec<u8>, _>("payload")?),
                    deliveries: u32::try_from(row.try_get::<i64, _>("deliveries")?).unwrap_or(0),
                    reason: row.try_get("reason")?,
                })
            })
            .collect()
    }

    async fn ping(&self) -> Result<(), BusError> {
        Ok(self.store.ping().await?)
    }
}

struct EmbeddedSubscription {
    bus: EmbeddedBus,
    name: String,
    config: ConsumerConfig,
}

enum Fetched {
    Delivery(Delivery),
    WaitUntil(Option<i64>),
}

impl EmbeddedSubscription {
    /// A look without the write lock: whether anything is due or new, and when the next pending
    /// delivery falls due. Idle consumers then wait without queueing for the writer.
    async fn probe(&self, now: i64) -> Result<(bool, Option<i64>), BusError> {
        let row = sqlx::query(
            "SELECT (SELECT MIN(due_at) FROM pending WHERE consumer = $1) AS next_due, \
             EXISTS (SELECT 1 FROM messages WHERE subject = $2 \
                     AND seq > (SELECT cursor FROM consumers WHERE name = $1)) AS fresh",
        )
        .bind(&self.name)
        .bind(self.config.event_type.as_str())
        .fetch_one(self.bus.store.pool())
        .await?;
        let next_due: Option<i64> = row.try_get("next_due")?;
        let fresh: i64 = row.try_get("fresh")?;
        let work = fresh != 0 || next_due.is_some_and(|due| due <= now);
        Ok((work, next_due))
    }

    async fn fetch(&self) -> Result<Fetched, BusError> {
        let now = now_millis();
        let (work, next_due) = self.probe(now).await?;
        if !work {
            return Ok(Fetched::WaitUntil(next_due));
        }
        let store = &self.bus.store;
        let mut tx = store.begin().await?;
        let ack_wait = i64::try_from(self.config.ack_wait.as_millis()).unwrap_or(i64::MAX / 4);

        // First anything due again: unacked past its ack wait, or nak'ed and its delay over.
        loop {
            let due = sqlx::query(
                "SELECT p.seq, p.attempts, m.id, m.payload, m.headers FROM pending p \
                 JOIN messages m ON m.seq = p.seq \
                 WHERE p.consumer = $1 AND p.due_at <= $2 ORDER BY p.due_at, p.seq LIMIT 1",
            )
            .bind(&self.name)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = due else { break };
            let seq: i64 = row.try_get("seq")?;
            let attempts: i64 = row.try_get("attempts")?;
            if attempts >= i64::from(self.config.max_deliver) {
                move_to_dead_letters(&mut tx, &self.name, seq, "maximum deliveries reached")
                    .await?;
                metrics::counter!(
                    "stubs_bus_dead_letters_total",
                    "type" => self.config.event_type.as_str()
                )
                .increment(1);
                continue;
            }
            sqlx::query(
                "UPDATE pending SET attempts = attempts + 1, due_at = $3 \
                 WHERE consumer = $1 AND seq = $2",
            )
            .bind(&self.name)
            .bind(seq)
            .bind(now + ack_wait)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(Fetched::Delivery(self.delivery(
                seq,
                row.try_get("id")?,
                row.try_get("payload")?,
                row.try_get("headers")?,
                attempts + 1,
            )));
        }

        // Then the next message past the cursor.
        let next = sqlx::query(
            "SELECT m.seq, m.id, m.payload, m.headers FROM messages m \
             WHERE m.subject = $2 AND m.seq > (SELECT cursor FROM consumers WHERE name = $1) \
             ORDER BY m.seq LIMIT 1",
        )
        .bind(&self.name)
        .bind(self.config.event_type.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = next {
            let seq: i64 = row.try_get("seq")?;
            sqlx::query(
                "INSERT INTO pending (consumer, seq, attempts, due_at) VALUES ($1, $2, 1, $3)",
            )
            .bind(&self.name)
            .bind(seq)
            .bind(now + ack_wait)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE consumers SET cursor = $2 WHERE name = $1")
                .bind(&self.name)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(Fetched::Delivery(self.delivery(
                seq,
                row.try_get("id")?,
                row.try_get("payload")?,
                row.try_get("headers")?,
                1,
            )));
        }

        let next_due: Option<i64> =
            sqlx::query_scalar("SELECT MIN(due_at) FROM pending WHERE consumer = $1")
                .bind(&self.name)
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(Fetched::WaitUntil(next_due))
    }

    fn delivery(
        &self,
        seq: i64,
        id: String,
        payload: Vec<u8>,
        headers: Option<String>,
        attempt: i64,
    ) -> Delivery {
        Delivery::new(
            id,
            self.config.event_type,
            Bytes::from(payload),
            u32::try_from(attempt).unwrap_or(u32::MAX),
            Box::new(EmbeddedAcker {
                bus: self.bus.clone(),
                event_type: self.config.event_type,
                consumer: self.name.clone(),
                seq,
                token: attempt,
            }),
        )
        .with_headers(Headers::from_json(headers.as_deref()))
    }
}

#[async_trait]
impl Subscription for EmbeddedSubscription {
    async fn next(&mut self) -> Result<Delivery, BusError> {
        loop {
            // Register for a wake-up before looking, so a publish between the look and the wait
            // is not missed.
            let wake = self.bus.wake.clone();
            let Some(notify) = wake.get(&self.config.event_type) else {
                return Err(BusError::Closed);
            };
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let wait = match self.fetch().await? {
                Fetched::Delivery(delivery) => return Ok(delivery),
                Fetched::WaitUntil(None) => MAX_IDLE,
                Fetched::WaitUntil(Some(due)) => {
                    let millis = u64::try_from(due - now_millis()).unwrap_or(0);
                    Duration::from_millis(millis).min(MAX_IDLE)
                }
            };
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

async fn move_to_dead_letters(
    conn: &mut sqlx::AnyConnection,
    consumer: &str,
    seq: i64,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO dead_letters (consumer, seq, message_id, payload, deliveries, reason, dead_at) \
         SELECT p.consumer, p.seq, m.id, m.payload, p.attempts, $3, $4 \
         FROM pending p JOIN messages m ON m.seq = p.seq WHERE p.consumer = $1 AND p.seq = $2 \
         ON CONFLICT (consumer, seq) DO NOTHING",
    )
    .bind(consumer)
    .bind(seq)
    .bind(reason)
    .bind(now_millis())
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM pending WHERE consumer = $1 AND seq = $2")
        .bind(consumer)
        .bind(seq)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

struct EmbeddedAcker {
    bus: EmbeddedBus,
    event_type: EventType,
    consumer: String,
    seq: i64,
    token: i64,
}

#[async_trait]
impl Acker for EmbeddedAcker {
    async fn ack(&self) -> Result<(), BusError> {
        sqlx::query("DELETE FROM pending WHERE consumer = $1 AND seq = $2 AND attempts = $3")
            .bind(&self.consumer)
            .bind(self.seq)
            .bind(self.token)
            .execute(self.bus.store.pool())
            .await?;
        Ok(())
    }

    async fn nak(&self, delay: Duration) -> Result<(), BusError> {
        let delay = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 4);
        sqlx::query(
            "UPDATE pending SET due_at = $4 WHERE consumer = $1 AND seq = $2 AND attempts = $3",
        )
        .bind(&self.consumer)
        .bind(self.seq)
        .bind(self.token)
        .bind(now_millis() + delay)
        .execute(self.bus.store.pool())
        .await?;
        // Waiting consumers recompute how long to sleep.
        self.bus.wake(self.event_type);
        Ok(())
    }

    async fn reject(&self, reason: &str) -> Result<(), BusError> {
        let mut tx = self.bus.store.begin().await?;
        let still_ours: Option<i64> = sqlx::query_scalar(
            "SELECT seq FROM pending WHERE consumer = $1 AND seq = $2 AND attempts = $3",
        )
        .bind(&self.consumer)
        .bind(self.seq)
        .bind(self.token)
        .fetch_optional(&mut *tx)
        .await?;
        if still_ours.is_some() {
            move_to_dead_letters(&mut tx, &self.consumer, self.seq, reason).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
