//! The embedded bus: a durable log in one SQLite file, for running every service in one process.
//!
//! `messages` is the log, each message with its headers, de-duplicated by message id. Each
//! durable consumer (group and type) has a cursor into the log and a `pending` row per message it
//! has handed out but not had acked; a pending row whose `due_at` has passed is handed out again.
//! The delivery count in the pending row doubles as the delivery's token, so an ack from a
//! delivery that already timed out and went to someone else changes nothing.
//!
//! Everything one SQLite writer does is paid per transaction far more than per row, so the bus
//! works in batches: one transaction claims up to K messages for a consumer (its pending rows are
//! written by one statement), one statement acknowledges a whole batch, and one transaction
//! stores a relay's batch of publishes. A hold placed and lapsed, nine deliveries and five
//! publishes, costs a handful of writes rather than the two dozen that one claim and one ack per
//! delivery took.
//!
//! The log is compacted: a message every consumer of its type has acknowledged leaves it once
//! it is older than [`super::DEDUPLICATION_WINDOW`], during which a second publish of its id is
//! still recognised as a copy. Dead letters keep their own copy of the payload until an operator clears
//! them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::{AnyConnection, Row};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{
    Acker, Batch, BatchAcker, Bus, BusError, ConsumerConfig, DeadLetter, Delivery, Headers,
    Message, Subscription,
};
use crate::clock::now_millis;
use crate::events::EventType;
use crate::store::{DELETE_CHUNK, Dialect, Migration, Migrations, Params, Store, delete_in_chunks};

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

/// How often the log is compacted.
const COMPACTION_PERIOD: Duration = Duration::from_secs(30);

/// Rows named per statement when a batch is acknowledged or published; well under SQLite's limit
/// on bound parameters.
const ROWS_PER_STATEMENT: usize = 400;

#[derive(Clone)]
pub struct EmbeddedBus {
    store: Store,
    /// One wake-up per event type, so a publish wakes only the consumers of its type.
    wake: Arc<HashMap<EventType, Notify>>,
}

/// What the log holds, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSize {
    pub messages: i64,
    pub dead_letters: i64,
    /// The file's size as SQLite sees it (pages in use and free).
    pub bytes: i64,
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

    /// Deletes from the log every message that each consumer of its type has acknowledged (or
    /// dead-lettered) and that was published before `published_before` (unix milliseconds).
    /// Returns how many left. A type no consumer reads yet keeps all its messages, so a group
    /// created late still finds them; a new group of a type others read finds only what they
    /// have not all acknowledged, and a group that no longer runs keeps its type's messages
    /// until its row in `consumers` is deleted.
    pub async fn compact(&self, published_before: i64) -> Result<u64, BusError> {
        let subjects: Vec<String> = sqlx::query_scalar("SELECT DISTINCT subject FROM consumers")
            .fetch_all(self.store.pool())
            .await?;
        let mut removed = 0;
        for subject in subjects {
            // Under the type's consumers' lowest mark: nothing past a cursor (unread), nothing
            // pending (handed out, not acknowledged). Read in the delete itself, so a consumer
            // that joins meanwhile holds back what it has not read.
            removed += delete_in_chunks(|| async {
                Ok(sqlx::query(
                    "DELETE FROM messages WHERE seq IN (SELECT seq FROM messages \
                     WHERE subject = $1 AND published_at < $2 AND seq <= ( \
                         SELECT MIN(MIN(c.cursor, COALESCE( \
                             (SELECT MIN(p.seq) - 1 FROM pending p WHERE p.consumer = c.name), \
                             c.cursor))) \
                         FROM consumers c WHERE c.subject = $1) \
                     ORDER BY seq LIMIT $3)",
                )
                .bind(&subject)
                .bind(published_before)
                .bind(DELETE_CHUNK)
                .execute(self.store.writer())
                .await?
                .rows_affected())
            })
            .await?;
        }
        Ok(removed)
    }

    /// How many messages and dead letters the log holds, and its file's size.
    pub async fn size(&self) -> Result<LogSize, BusError> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM messages) AS messages, \
             (SELECT COUNT(*) FROM dead_letters) AS dead_letters, \
             (SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()) \
             AS bytes",
        )
        .fetch_one(self.store.pool())
        .await?;
        Ok(LogSize {
            messages: row.try_get("messages")?,
            dead_letters: row.try_get("dead_letters")?,
            bytes: row.try_get("bytes")?,
        })
    }

    /// Compacts the log every [`COMPACTION_PERIOD`] until shut down, and publishes its size in
    /// the metrics.
    pub async fn run_compaction(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(COMPACTION_PERIOD) => {}
                () = shutdown.cancelled() => return,
            }
            let window = i64::try_from(super::DEDUPLICATION_WINDOW.as_millis()).unwrap_or(i64::MAX);
            match self.compact(now_millis().saturating_sub(window)).await {
                Ok(removed) => {
                    metrics::counter!("stubs_bus_compacted_total").increment(removed);
                }
                Err(err) => tracing::warn!(error = %err, "cannot compact the bus log"),
            }
            match self.size().await {
                Ok(size) => {
                    metrics::gauge!("stubs_bus_log_messages").set(size.messages as f64);
                    metrics::gauge!("stubs_bus_dead_letters").set(size.dead_letters as f64);
                    metrics::gauge!("stubs_bus_log_bytes").set(size.bytes as f64);
                }
                Err(err) => tracing::warn!(error = %err, "cannot read the bus log's size"),
            }
        }
    }
}

#[async_trait]
impl Bus for EmbeddedBus {
    async fn publish(&self, message: &Message) -> Result<(), BusError> {
        self.publish_batch(std::slice::from_ref(message)).await
    }

    async fn publish_batch(&self, messages: &[Message]) -> Result<(), BusError> {
        let now = now_millis();
        let mut tx = self.store.begin().await?;
        for chunk in messages.chunks(ROWS_PER_STATEMENT / 5) {
            let sql = format!(
                "INSERT INTO messages (id, subject, payload, published_at, headers) VALUES {} \
                 ON CONFLICT (id) DO NOTHING",
                Params::new(Dialect::Sqlite).rows(chunk.len(), 5)
            );
            let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
            for message in chunk {
                insert = insert
                    .bind(message.id.clone())
                    .bind(message.event_type.as_str())
                    .bind(message.payload.to_vec())
                    .bind(now)
                    .bind(message.headers.to_json());
            }
            insert.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        let mut woken = Vec::new();
        for message in messages {
            if !woken.contains(&message.event_type) {
                woken.push(message.event_type);
                self.wake(message.event_type);
            }
        }
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
        .execute(self.store.writer())
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
    Batch(Batch),
    WaitUntil(Option<i64>),
}

/// A message taken for delivery, with the delivery count that is also its token.
struct Taken {
    seq: i64,
    id: String,
    payload: Vec<u8>,
    headers: Option<String>,
    attempt: i64,
}

impl Taken {
    fn from_row(row: &sqlx::any::AnyRow, attempt: i64) -> Result<Self, sqlx::Error> {
        Ok(Self {
            seq: row.try_get("seq")?,
            id: row.try_get("id")?,
            payload: row.try_get("payload")?,
            headers: row.try_get("headers")?,
            attempt,
        })
    }
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

    /// Claims up to `max` deliveries in one transaction: first those due again, then new ones.
    async fn fetch(&self, max: usize) -> Result<Fetched, BusError> {
        let now = now_millis();
        let (work, next_due) = self.probe(now).await?;
        if !work {
            return Ok(Fetched::WaitUntil(next_due));
        }
        let ack_wait = i64::try_from(self.config.ack_wait.as_millis()).unwrap_or(i64::MAX / 4);
        let due_at = now.saturating_add(ack_wait);
        let mut tx = self.bus.store.begin().await?;
        let mut taken = self.redeliveries(&mut tx, now, due_at, max).await?;
        let room = max.saturating_sub(taken.len());
        if room > 0 {
            taken.extend(self.fresh(&mut tx, due_at, room).await?);
        }
        if taken.is_empty() {
            let next_due: Option<i64> =
                sqlx::query_scalar("SELECT MIN(due_at) FROM pending WHERE consumer = $1")
                    .bind(&self.name)
                    .fetch_one(&mut *tx)
                    .await?;
            tx.commit().await?;
            return Ok(Fetched::WaitUntil(next_due));
        }
        tx.commit().await?;
        Ok(Fetched::Batch(self.batch(taken)))
    }

    /// Up to `max` deliveries due again (unacked past their ack wait, or nak'ed and their delay
    /// over), each counted as one more attempt and due again at `due_at`; those past the maximum
    /// number of deliveries go to the dead letters instead.
    async fn redeliveries(
        &self,
        tx: &mut AnyConnection,
        now: i64,
        due_at: i64,
        max: usize,
    ) -> Result<Vec<Taken>, BusError> {
        let limit = i64::try_from(max.max(1)).unwrap_or(i64::MAX);
        let due = sqlx::query(
            "SELECT p.seq, p.attempts, m.id, m.payload, m.headers FROM pending p \
             JOIN messages m ON m.seq = p.seq \
             WHERE p.consumer = $1 AND p.due_at <= $2 ORDER BY p.due_at, p.seq LIMIT $3",
        )
        .bind(&self.name)
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let mut taken = Vec::new();
        for row in &due {
            let seq: i64 = row.try_get("seq")?;
            let attempts: i64 = row.try_get("attempts")?;
            if attempts >= i64::from(self.config.max_deliver) {
                move_to_dead_letters(&mut *tx, &self.name, seq, "maximum deliveries reached")
                    .await?;
                metrics::counter!(
                    "stubs_bus_dead_letters_total",
                    "type" => self.config.event_type.as_str()
                )
                .increment(1);
                continue;
            }
            taken.push(Taken::from_row(row, attempts + 1)?);
        }
        if !taken.is_empty() {
            let mut params = Params::new(Dialect::Sqlite);
            let sql = format!(
                "UPDATE pending SET attempts = attempts + 1, due_at = {} \
                 WHERE consumer = {} AND seq IN ({})",
                params.take(1),
                params.take(1),
                params.take(taken.len())
            );
            let mut again = sqlx::query(sqlx::AssertSqlSafe(sql))
                .persistent(false)
                .bind(due_at)
                .bind(&self.name);
            for message in &taken {
                again = again.bind(message.seq);
            }
            again.execute(&mut *tx).await?;
        }
        Ok(taken)
    }

    /// Up to `room` messages new past the consumer's cursor, all claimed by one insert (due at
    /// `due_at`) and the cursor moved past them.
    async fn fresh(
        &self,
        tx: &mut AnyConnection,
        due_at: i64,
        room: usize,
    ) -> Result<Vec<Taken>, BusError> {
        let cursor: i64 = sqlx::query_scalar("SELECT cursor FROM consumers WHERE name = $1")
            .bind(&self.name)
            .fetch_one(&mut *tx)
            .await?;
        let fresh = sqlx::query(
            "SELECT seq, id, payload, headers FROM messages \
             WHERE subject = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(self.config.event_type.as_str())
        .bind(cursor)
        .bind(i64::try_from(room).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
        if let Some(last) = fresh.last() {
            let last: i64 = last.try_get("seq")?;
            // The messages of this type in (cursor, last] are exactly those just read.
            sqlx::query(
                "INSERT INTO pending (consumer, seq, attempts, due_at) \
                 SELECT $1, seq, 1, $2 FROM messages \
                 WHERE subject = $3 AND seq > $4 AND seq <= $5",
            )
            .bind(&self.name)
            .bind(due_at)
            .bind(self.config.event_type.as_str())
            .bind(cursor)
            .bind(last)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE consumers SET cursor = $2 WHERE name = $1")
                .bind(&self.name)
                .bind(last)
                .execute(&mut *tx)
                .await?;
        }
        fresh
            .iter()
            .map(|row| Taken::from_row(row, 1).map_err(BusError::from))
            .collect()
    }

    fn batch(&self, taken: Vec<Taken>) -> Batch {
        let tokens = taken.iter().map(|t| (t.seq, t.attempt)).collect();
        let deliveries = taken
            .into_iter()
            .map(|t| {
                Delivery::new(
                    t.id,
                    self.config.event_type,
                    Bytes::from(t.payload),
                    u32::try_from(t.attempt).unwrap_or(u32::MAX),
                    Box::new(EmbeddedAcker {
                        bus: self.bus.clone(),
                        event_type: self.config.event_type,
                        consumer: self.name.clone(),
                        seq: t.seq,
                        token: t.attempt,
                    }),
                )
                .with_headers(Headers::from_json(t.headers.as_deref()))
            })
            .collect();
        Batch::new(
            deliveries,
            Box::new(EmbeddedBatchAcker {
                bus: self.bus.clone(),
                consumer: self.name.clone(),
                tokens,
            }),
        )
    }
}

#[async_trait]
impl Subscription for EmbeddedSubscription {
    async fn next_batch(&mut self, max: usize) -> Result<Batch, BusError> {
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

            let wait = match self.fetch(max).await? {
                Fetched::Batch(batch) => return Ok(batch),
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
    conn: &mut AnyConnection,
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

/// Acknowledges a batch's deliveries with one statement per few hundred. Each pending row is
/// matched with its delivery's token, as a single ack is.
struct EmbeddedBatchAcker {
    bus: EmbeddedBus,
    consumer: String,
    /// (sequence number, token) of each delivery of the batch, by position.
    tokens: Vec<(i64, i64)>,
}

#[async_trait]
impl BatchAcker for EmbeddedBatchAcker {
    async fn ack(&self, positions: &[usize]) -> Result<(), BusError> {
        let acked: Vec<(i64, i64)> = positions
            .iter()
            .filter_map(|&position| self.tokens.get(position).copied())
            .collect();
        for chunk in acked.chunks(ROWS_PER_STATEMENT / 2) {
            let mut params = Params::new(Dialect::Sqlite);
            let sql = format!(
                "DELETE FROM pending WHERE consumer = {} AND (seq, attempts) IN (VALUES {})",
                params.take(1),
                params.rows(chunk.len(), 2)
            );
            let mut delete = sqlx::query(sqlx::AssertSqlSafe(sql))
                .persistent(false)
                .bind(&self.consumer);
            for (seq, token) in chunk {
                delete = delete.bind(*seq).bind(*token);
            }
            delete.execute(self.bus.store.writer()).await?;
        }
        Ok(())
    }
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
            .execute(self.bus.store.writer())
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
        .execute(self.bus.store.writer())
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
