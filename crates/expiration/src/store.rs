//! The expiration service's SQL, and the only place it lives. One set of statements with `$1`
//! placeholders serves SQLite and PostgreSQL; they differ only in how concurrent writers are kept
//! apart (row and advisory locks on PostgreSQL, the single writer of `BEGIN IMMEDIATE` on SQLite),
//! chosen by [`Dialect`]. Order ids are UUID text, times unix milliseconds.

use common::clock::now_millis;
use common::store::{Dialect, Store, uuid_column};
use sqlx::{AnyConnection, Row};
use uuid::Uuid;

/// The PostgreSQL advisory lock that order:created transactions hold (shared) while they schedule
/// a job, and that the scheduler takes (exclusive) to wait for them: see [`wait_for_scheduling`].
/// Advisory locks are per database, and this database is the expiration service's own. The
/// value is "StubsExp" in ASCII, chosen only to be recognisable in `pg_locks`.
const SCHEDULING_LOCK: i64 = 0x5374_7562_7345_7870;

/// A job taken off the table because its time has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DueJob {
    pub order_id: Uuid,
    /// When it was due, in unix milliseconds.
    pub due_at: i64,
}

/// Why an order's window is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finish {
    Cancelled,
    Completed,
    Expired,
}

impl Finish {
    fn as_str(self) -> &'static str {
        match self {
            Self::Cancelled => "cancelled",
            Self::Completed => "completed",
            Self::Expired => "expired",
        }
    }
}

/// Schedules the order's expiry unless it is scheduled already (a redelivered or republished
/// order:created). Returns whether a job was added.
pub(crate) async fn insert_job(
    conn: &mut AnyConnection,
    order_id: Uuid,
    due_at: i64,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO jobs (order_id, due_at, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(order_id.to_string())
    .bind(due_at)
    .bind(now_millis())
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Removes an order's job, if it has one. Returns whether there was one.
pub(crate) async fn delete_job(
    conn: &mut AnyConnection,
    order_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let deleted = sqlx::query("DELETE FROM jobs WHERE order_id = $1")
        .bind(order_id.to_string())
        .execute(conn)
        .await?
        .rows_affected();
    Ok(deleted > 0)
}

/// Records that an order's window is over. Returns `false` when it was over already (the first
/// reason stays), which the scheduler reads as "do not announce this one".
pub(crate) async fn record_finished(
    conn: &mut AnyConnection,
    order_id: Uuid,
    reason: Finish,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO finished_orders (order_id, reason, finished_at) VALUES ($1, $2, $3) \
         ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(order_id.to_string())
    .bind(reason.as_str())
    .bind(now_millis())
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Whether the order's window is over (cancelled, completed or expired).
pub(crate) async fn is_finished(
    conn: &mut AnyConnection,
    order_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let found: Option<String> =
        sqlx::query_scalar("SELECT reason FROM finished_orders WHERE order_id = $1")
            .bind(order_id.to_string())
            .fetch_optional(conn)
            .await?;
    Ok(found.is_some())
}

/// Held by a transaction that schedules a job, until it ends; see [`wait_for_scheduling`].
/// On SQLite the transaction's write lock (`BEGIN IMMEDIATE`) already does this.
pub(crate) async fn hold_scheduling_lock(
    conn: &mut AnyConnection,
    dialect: Dialect,
) -> Result<(), sqlx::Error> {
    if dialect == Dialect::Postgres {
        // `SELECT 1 FROM`: the lock function returns `void`, which the `Any` driver cannot carry.
        sqlx::query("SELECT 1 FROM pg_advisory_xact_lock_shared($1)")
            .bind(SCHEDULING_LOCK)
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// Returns once every transaction that was scheduling a job when it was called has ended.
///
/// The order:created listener wakes the scheduler from inside its transaction (the listener
/// framework commits after the handler returns), so the scheduler could look before the new job
/// is visible and go back to sleep without it. Waiting here first closes that gap. On SQLite
/// there is nothing to do: the scheduler's own `BEGIN IMMEDIATE` waits for the writer.
pub(crate) async fn wait_for_scheduling(store: &Store) -> Result<(), sqlx::Error> {
    if store.dialect() == Dialect::Postgres {
        let mut tx = store.begin().await?;
        sqlx::query("SELECT 1 FROM pg_advisory_xact_lock($1)")
            .bind(SCHEDULING_LOCK)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(())
}

/// Takes up to `limit` jobs due at `now` off the table, earliest first, inside the caller's
/// transaction: if it rolls back, they are due again. On PostgreSQL replicas skip the rows
/// another replica has claimed, so each claims different jobs and none waits; even without that,
/// a row can be deleted only once, so no job is claimed twice.
pub(crate) async fn claim_due(
    conn: &mut AnyConnection,
    dialect: Dialect,
    now: i64,
    limit: i64,
) -> Result<Vec<DueJob>, sqlx::Error> {
    let sql = match dialect {
        Dialect::Postgres => {
            "DELETE FROM jobs WHERE order_id IN (SELECT order_id FROM jobs WHERE due_at <= $1 \
             ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING order_id, due_at"
        }
        Dialect::Sqlite => {
            "DELETE FROM jobs WHERE order_id IN (SELECT order_id FROM jobs WHERE due_at <= $1 \
             ORDER BY due_at LIMIT $2) RETURNING order_id, due_at"
        }
    };
    let rows = sqlx::query(sql)
        .bind(now)
        .bind(limit)
        .fetch_all(conn)
        .await?;
    let mut jobs = rows
        .iter()
        .map(|row| {
            Ok(DueJob {
                order_id: uuid_column(row, "order_id")?,
                due_at: row.try_get("due_at")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    // RETURNING gives no order; announce the most overdue first.
    jobs.sort_by_key(|job| job.due_at);
    Ok(jobs)
}

/// When the earliest job not claimed by anyone is due, if there is one. On PostgreSQL the rows
/// other replicas are firing right now are skipped (their deletion is not visible yet, and
/// counting them would have this replica spin until they commit); the row read stays locked
/// until the caller's transaction ends.
pub(crate) async fn next_due(
    conn: &mut AnyConnection,
    dialect: Dialect,
) -> Result<Option<i64>, sqlx::Error> {
    let sql = match dialect {
        Dialect::Postgres => {
            "SELECT due_at FROM jobs ORDER BY due_at LIMIT 1 FOR UPDATE SKIP LOCKED"
        }
        Dialect::Sqlite => "SELECT due_at FROM jobs ORDER BY due_at LIMIT 1",
    };
    sqlx::query_scalar(sql).fetch_optional(conn).await
}
