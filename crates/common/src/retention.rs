//! Bounded storage: the rows a service keeps only to recognise an event that comes late or comes
//! again (its inbox, and tombstones such as the orders it saw cancelled) are deleted once they are
//! older than the retention, on a timer.
//!
//! The retention must outlast every way an event can still arrive: a delivery not acknowledged
//! comes back after the ack wait, at most `max_deliver` times, each try after a retry delay of at
//! most `max_retry_delay`; and a publish repeated after a relay crashed is dropped by the bus's
//! own duplicate window (two minutes on either bus) before the inbox is asked. So the retention
//! must be at least [`ListenerSettings::redelivery_span`](crate::listener::ListenerSettings), and
//! the process refuses to start when it is not.

use std::time::Duration;

use crate::ServiceContext;
use crate::store::{Dialect, Store, now_millis};

/// How often old rows are deleted.
const PERIOD: Duration = Duration::from_secs(60);

/// Rows deleted per statement, so that no writer is held for long.
const CHUNK: i64 = 5_000;

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
    // Each dialect's own name for a row's address, so a chunk can be picked with LIMIT.
    let row = match store.dialect() {
        Dialect::Sqlite => "rowid",
        Dialect::Postgres => "ctid",
    };
    let Dated { table, column } = dated;
    let sql = format!(
        "DELETE FROM {table} WHERE {row} IN \
         (SELECT {row} FROM {table} WHERE {column} < $1 LIMIT $2)"
    );
    let mut removed = 0;
    loop {
        let deleted = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(before)
            .bind(CHUNK)
            .execute(store.writer())
            .await?
            .rows_affected();
        removed += deleted;
        if deleted < CHUNK as u64 {
            return Ok(removed);
        }
        // Let the service's own writes in between chunks.
        tokio::task::yield_now().await;
    }
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
/// than the service's retention, and publishes each table's size in the metrics.
pub async fn run(ctx: ServiceContext, tombstones: &'static [Dated]) {
    let retention = ctx.listeners.retention;
    let keep = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let tables = std::iter::once(INBOX).chain(tombstones.iter().copied());
    let tables: Vec<Dated> = tables.collect();
    loop {
        tokio::select! {
            () = tokio::time::sleep(PERIOD) => {}
            () = ctx.shutdown.cancelled() => return,
        }
        let before = now_millis().saturating_sub(keep);
        for dated in &tables {
            let labels = [("service", ctx.name), ("table", dated.table)];
            match prune(&ctx.store, *dated, before).await {
                Ok(removed) => {
                    metrics::counter!("stubs_pruned_rows_total", &labels).increment(removed)
                }
                Err(err) => {
                    tracing::warn!(table = dated.table, error = %err, "cannot prune old rows");
                }
            }
            match rows(&ctx.store, *dated).await {
                Ok(count) => metrics::gauge!("stubs_retained_rows", &labels).set(count as f64),
                Err(err) => tracing::warn!(table = dated.table, error = %err, "cannot count rows"),
            }
        }
    }
}
