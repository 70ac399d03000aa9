//! Bounded storage: the rows a service keeps only to recognise an event that comes late or comes
//! again (its inbox, and tombstones such as the orders it saw end) are deleted once they are
//! older than the retention, on a timer.
//!
//! The retention must outlast every way an event can still arrive again: a delivery not
//! acknowledged comes back after the ack wait, at most `max_deliver` times, each try after a
//! retry delay of at most `max_retry_delay`; and a publish repeated after a relay crashed is
//! dropped by the bus's own duplicate window (two minutes on either bus) before the inbox is
//! asked. So the retention must be at least
//! [`ListenerSettings::redelivery_span`](crate::listener::ListenerSettings), and the process
//! refuses to start when it is not.
//!
//! What the inbox then forgets can still come back in two ways: a consumer that runs further
//! behind than the retention, and a consumer created anew that replays the whole stream. Every
//! handler is safe against both by its own state and versions, bar one: a ticket reserved for an
//! order that was cancelled long ago would stay reserved. So the tickets service keeps its
//! tombstones of cancelled orders for good, and only tombstones whose loss is harmless are pruned.

use std::time::Duration;

use crate::ServiceContext;
use crate::clock::{now_millis, span_millis};
use crate::idempotency::{self, IDEMPOTENCY_KEYS};
use crate::store::{DELETE_CHUNK, Dialect, Store, delete_in_chunks};

/// How often old rows are deleted.
const PERIOD: Duration = Duration::from_secs(60);

/// A table whose rows are dated by a column of unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dated {
    pub table: &'static str,
    pub column: &'static str,
}

/// Every service's inbox: the events it applied, by consumer.
pub const INBOX: Dated = Dated {
    table: "inbox",
    column: "handled_at",
};

/// Deletes the rows of `dated` older than `before` (unix milliseconds), a chunk at a time.
/// Returns how many went.
pub async fn prune(store: &Store, dated: Dated, before: i64) -> Result<u64, sqlx::Error> {
    let Dated { table, column } = dated;
    // A chunk is picked by each dialect's own address of a row.
    let sql = match store.dialect() {
        Dialect::Sqlite => format!(
            "DELETE FROM {table} WHERE rowid IN \
             (SELECT rowid FROM {table} WHERE {column} < $1 LIMIT $2)"
        ),
        Dialect::Postgres => format!(
            "DELETE FROM {table} WHERE ctid = ANY(ARRAY( \
             SELECT ctid FROM {table} WHERE {column} < $1 LIMIT $2))"
        ),
    };
    delete_in_chunks(|| async {
        Ok(sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(before)
            .bind(DELETE_CHUNK)
            .execute(store.writer())
            .await?
            .rows_affected())
    })
    .await
}

/// How many rows a table holds.
pub async fn rows(store: &Store, dated: Dated) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM {}",
        dated.table
    )))
    .fetch_one(store.pool())
    .await
}

/// Prunes the inbox and `tombstones` every [`PERIOD`] until shutdown, keeping what is younger
/// than the service's retention, and idempotency keys younger than a day; publishes each table's
/// size in the metrics.
pub async fn run(ctx: ServiceContext, tombstones: &'static [Dated]) {
    let retention = span_millis(ctx.listeners.retention);
    // Idempotency keys are kept for the day a client may retry in, whatever the retention.
    let tables: Vec<(Dated, i64)> = std::iter::once(INBOX)
        .chain(tombstones.iter().copied())
        .map(|dated| (dated, retention))
        .chain([(IDEMPOTENCY_KEYS, span_millis(idempotency::KEEP))])
        .collect();
    loop {
        tokio::select! {
            () = tokio::time::sleep(PERIOD) => {}
            () = ctx.shutdown.cancelled() => return,
        }
        for &(dated, keep) in &tables {
            let before = now_millis().saturating_sub(keep);
            let labels = [("service", ctx.name), ("table", dated.table)];
            match prune(&ctx.store, dated, before).await {
                Ok(removed) => {
                    metrics::counter!("stubs_pruned_rows_total", &labels).increment(removed)
                }
                Err(err) => {
                    tracing::warn!(table = dated.table, error = %err, "cannot prune old rows");
                }
            }
            match rows(&ctx.store, dated).await {
                Ok(count) => metrics::gauge!("stubs_retained_rows", &labels).set(count as f64),
                Err(err) => tracing::warn!(table = dated.table, error = %err, "cannot count rows"),
            }
        }
    }
}
