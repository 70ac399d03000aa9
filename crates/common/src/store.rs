//! The store seam: one pool type that is SQLite (embedded mode) or PostgreSQL (distributed mode).
//!
//! Services write one set of SQL with `$1` placeholders, which both dialects accept (statements
//! built at run time take theirs from [`Params`]), and keep ids as text, money as integer cents
//! and times as unix milliseconds, the types the `Any` driver carries. Each dialect has its own
//! migrations, run at start.

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::any::AnyRow;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::{Migration as SqlxMigration, MigrationSource, MigrationType, Migrator};
use sqlx::postgres::PgListener;
use sqlx::{Any, AnyPool, Executor, Row, SqlSafeStr, Transaction};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::money::Cents;

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// What a `SELECT` of one row ends with to lock that row until the transaction ends: nothing
    /// on SQLite, where the write transaction (`BEGIN IMMEDIATE`) already keeps every other
    /// writer out.
    pub fn for_update(self) -> &'static str {
        match self {
            Self::Sqlite => "",
            Self::Postgres => " FOR UPDATE",
        }
    }

    pub fn of_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Some(Self::Postgres)
        } else {
            None
        }
    }
}

/// One migration: a version unique within the database, a name and its SQL.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// A service's migrations, one list per dialect. Platform tables (outbox, inbox) use versions
/// below 100; services number theirs from 100.
#[derive(Debug, Clone, Copy)]
pub struct Migrations {
    pub sqlite: &'static [Migration],
    pub postgres: &'static [Migration],
}

impl Migrations {
    fn for_dialect(&self, dialect: Dialect) -> &'static [Migration] {
        match dialect {
            Dialect::Sqlite => self.sqlite,
            Dialect::Postgres => self.postgres,
        }
    }
}

#[derive(Debug)]
struct Embedded(Vec<Migration>);

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(
        self,
    ) -> futures::future::BoxFuture<'s, Result<Vec<SqlxMigration>, sqlx::error::BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
                .into_iter()
                .map(|m| {
                    SqlxMigration::new(
                        m.version,
                        Cow::Borrowed(m.name),
                        MigrationType::Simple,
                        sqlx::AssertSqlSafe(m.sql).into_sql_str(),
                        false,
                    )
                })
                .collect())
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL (expected sqlite: or postgres:): {0}")]
    UnsupportedUrl(String),
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("cannot migrate the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// A pool on one service's database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    /// Reads; and, on PostgreSQL, writes too.
    pool: AnyPool,
    /// What writes. On SQLite a pool of one connection: the file has one writer at a time anyway,
    /// and writers that queue for this connection take their turns in order, where writers on
    /// connections of their own waited in SQLite's busy handler, which sleeps in steps of up to
    /// 100 ms and put those steps into the tail of every contended write. On PostgreSQL it is
    /// `pool` again.
    writer: AnyPool,
    dialect: Dialect,
    /// On PostgreSQL, where to open the connection that listens for notifications.
    listen_url: Option<SecretString>,
}

impl Store {
    /// Connects, creating a SQLite file if needed, and runs the migrations for the dialect.
    pub async fn connect(url: &str, migrations: &[&Migrations]) -> Result<Self, StoreError> {
        Self::connect_with(url, migrations, Self::DEFAULT_POSTGRES_CONNECTIONS).await
    }

    /// Connections a process keeps to PostgreSQL by default. Every replica of every service has
    /// its own pool, so the server's `max_connections` must cover the sum, plus one more for
    /// each replica of orders and payments, which listen for other replicas' arrivals.
    pub const DEFAULT_POSTGRES_CONNECTIONS: u32 = 16;

    /// [`Store::connect`] with at most `postgres_connections` connections on PostgreSQL (SQLite
    /// keeps its own small pools: one writer, a few readers).
    pub async fn connect_with(
        url: &str,
        migrations: &[&Migrations],
        postgres_connections: u32,
    ) -> Result<Self, StoreError> {
        install_default_drivers();
        let dialect =
            Dialect::of_url(url).ok_or_else(|| StoreError::UnsupportedUrl(redact(url)))?;
        let (pool, writer) = match dialect {
            Dialect::Sqlite => {
                let url = if url.contains('?') {
                    url.to_owned()
                } else {
                    format!("{url}?mode=rwc")
                };
                // The writer first: it creates the file and turns WAL on before readers open it.
                let writer = sqlite_pool(1, Access::Write).connect(&url).await;
                let readers = sqlite_pool(4, Access::Read).connect(&url).await;
                writer.and_then(|writer| Ok((readers?, writer)))
            }
            Dialect::Postgres => AnyPoolOptions::new()
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .max_connections(postgres_connections.max(1))
                .connect(url)
                .await
                .map(|pool| (pool.clone(), pool)),
        }
        .map_err(StoreError::Connect)?;

        let all: Vec<Migration> = migrations
            .iter()
            .flat_map(|m| m.for_dialect(dialect).iter().copied())
            .collect();
        Migrator::new(Embedded(all)).await?.run(&writer).await?;
        Ok(Self {
            pool,
            writer,
            dialect,
            listen_url: (dialect == Dialect::Postgres).then(|| SecretString::from(url)),
        })
    }

    /// For reads. (On PostgreSQL it is also the [`Store::writer`].)
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// For a statement that writes outside a transaction. Never while this task holds a
    /// transaction of the same store: on SQLite that waits for itself until the pool times out.
    pub fn writer(&self) -> &AnyPool {
        &self.writer
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// On PostgreSQL, the URL to open a connection for `LISTEN` with.
    pub fn listen_url(&self) -> Option<&SecretString> {
        self.listen_url.as_ref()
    }

    /// Begins a transaction that will write. On SQLite it takes the write lock up front
    /// (`BEGIN IMMEDIATE`): a deferred transaction that reads and then writes can fail at once
    /// with "database is locked" instead of waiting its turn. On PostgreSQL it is READ
    /// COMMITTED whatever the server's default: the row locks the services take rely on each
    /// statement seeing what was committed before it began (a cancellation's tombstone written
    /// while a reservation waited for the ticket, say), which a snapshot held for the whole
    /// transaction would hide.
    pub async fn begin(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        match self.dialect {
            Dialect::Sqlite => self.writer.begin_with("BEGIN IMMEDIATE").await,
            Dialect::Postgres => {
                self.writer
                    .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
                    .await
            }
        }
    }

    /// Answers whether the database can run a query now.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    pub async fn close(&self) {
        self.pool.close().await;
        self.writer.close().await;
    }
}

/// How long a request waits for a connection before it is told the database is unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// What a SQLite pool's connections may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Read only, so that a write sent to the readers by mistake fails at once rather than
    /// quietly bringing back writers that wait in the busy handler.
    Read,
    Write,
}

/// A pool of up to `connections` to one SQLite file.
fn sqlite_pool(connections: u32, access: Access) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .max_connections(connections)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                // WAL lets readers run beside the one writer; NORMAL sync is durable across
                // process crashes, which is what embedded mode promises.
                conn.execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                     PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;",
                )
                .await?;
                if access == Access::Read {
                    conn.execute("PRAGMA query_only = ON;").await?;
                }
                Ok(())
            })
        })
}

/// Rows a background delete removes per statement, so that it never holds a writer for long.
pub const DELETE_CHUNK: i64 = 5_000;

/// Runs `delete`, a statement that deletes at most [`DELETE_CHUNK`] rows, until it deletes fewer;
/// other writers get their turn between chunks. Returns how many rows went.
pub async fn delete_in_chunks<F, Fut>(mut delete: F) -> Result<u64, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, sqlx::Error>>,
{
    let mut removed = 0;
    loop {
        let deleted = delete().await?;
        removed += deleted;
        if deleted < DELETE_CHUNK as u64 {
            return Ok(removed);
        }
        tokio::task::yield_now().await;
    }
}

/// True when the error means the database is out of reach (or too busy) rather than that the
/// query was wrong: the caller should answer 503 and the client may retry.
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // PostgreSQL: connection exceptions, shutdown, too many connections.
            // SQLite: SQLITE_BUSY (5) and SQLITE_LOCKED (6) after the busy timeout.
            code.starts_with("08")
                || code.starts_with("57P")
                || code.starts_with("53")
                || code == "5"
                || code == "6"
        }),
        _ => false,
    }
}

/// True when an insert or update broke a unique index.
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// The parameters of a statement built at run time, such as an `IN` list or the rows of a
/// multi-row insert, written in the order they are bound: `$1, $2, …` on PostgreSQL and plain `?`
/// on SQLite. SQLite looks a numbered parameter up by name in a list as long as the statement's,
/// so a statement of a few hundred numbered parameters spent longer binding than running; plain
/// ones are found at once. Every parameter of such a statement must come from here.
///
/// Run these statements with `.persistent(false)`: their text varies with the count, and each
/// would otherwise take a place in the connection's statement cache.
#[derive(Debug)]
pub struct Params {
    dialect: Dialect,
    taken: usize,
}

impl Params {
    pub fn new(dialect: Dialect) -> Self {
        Self { dialect, taken: 0 }
    }

    /// The next `count` parameters, comma-separated.
    pub fn take(&mut self, count: usize) -> String {
        let first = self.taken + 1;
        self.taken += count;
        match self.dialect {
            Dialect::Sqlite => vec!["?"; count].join(", "),
            Dialect::Postgres => (first..first + count)
                .map(|n| format!("${n}"))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// `rows` rows of `width` parameters each: `(…), (…)`.
    pub fn rows(&mut self, rows: usize, width: usize) -> String {
        (0..rows)
            .map(|_| format!("({})", self.take(width)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Notifies every listener on a PostgreSQL `channel` when the transaction `tx` commits (and
/// never, if it rolls back).
pub async fn notify_on_commit(
    tx: &mut sqlx::AnyConnection,
    channel: &str,
    payload: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel)
        .bind(payload)
        .execute(tx)
        .await?;
    Ok(())
}

/// What a listener on a PostgreSQL channel hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// The LISTEN holds, from now on (again, after a lost connection).
    Listening,
    /// The connection was lost: whatever was notified meanwhile is lost too.
    Missed,
    /// A notification's payload.
    Notice(String),
}

/// Listens on a PostgreSQL `channel` until shutdown, telling `heard` what it hears. On any error
/// (of the connection or of `heard`) it logs one warning naming `what` it listens for, and
/// listens again a second later.
pub async fn listen<F, Fut>(
    url: &SecretString,
    channel: &str,
    what: &str,
    shutdown: &CancellationToken,
    mut heard: F,
) where
    F: FnMut(Heard) -> Fut,
    Fut: Future<Output = Result<(), sqlx::Error>>,
{
    loop {
        let listened = async {
            let mut listener = PgListener::connect(url.expose_secret()).await?;
            // After a lost connection, listen again before saying so: then whatever `heard`
            // reads on `Missed` cannot miss a notice of what commits next.
            listener.eager_reconnect(true);
            listener.listen(channel).await?;
            heard(Heard::Listening).await?;
            loop {
                match listener.try_recv().await? {
                    Some(notification) => {
                        heard(Heard::Notice(notification.payload().to_owned())).await?;
                    }
                    // Connected and listening again already (eagerly, as set above).
                    None => heard(Heard::Missed).await?,
                }
            }
        };
        let result: Result<(), sqlx::Error> = tokio::select! {
            result = listened => result,
            () = shutdown.cancelled() => return,
        };
        if let Err(err) = result {
            tracing::warn!(error = %err, "cannot listen for {what}; retrying");
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// A UUID the store keeps as text in `column`.
pub fn uuid_column(row: &AnyRow, column: &str) -> Result<Uuid, sqlx::Error> {
    parse_uuid(column, &row.try_get::<String, _>(column)?)
}

/// A UUID the store keeps as text in `column`, or NULL.
pub fn optional_uuid_column(row: &AnyRow, column: &str) -> Result<Option<Uuid>, sqlx::Error> {
    row.try_get::<Option<String>, _>(column)?
        .map(|raw| parse_uuid(column, &raw))
        .transpose()
}

/// Text read from `column` (by a scalar query, say) as a UUID.
pub fn parse_uuid(column: &str, raw: &str) -> Result<Uuid, sqlx::Error> {
    Uuid::try_parse(raw).map_err(|err| decode_error(column, err.to_string()))
}

/// An amount the store keeps as integer cents in `column`.
pub fn cents_column(row: &AnyRow, column: &str) -> Result<Cents, sqlx::Error> {
    Cents::new(row.try_get(column)?).map_err(|reason| decode_error(column, reason))
}

/// A value in `column` that is not what it must be (a status no version knows, say).
pub fn decode_error(column: &str, reason: String) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: reason.into(),
    }
}

/// A database URL with its password replaced, safe to print.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_print() {
        assert_eq!(
            redact("postgres://app:hunter2@db:5432/tickets"),
            "postgres://app:***@db:5432/tickets"
        );
        assert_eq!(redact("sqlite:///data/x.sqlite"), "sqlite:///data/x.sqlite");
    }

    #[test]
    fn parameters_are_numbered_in_order_on_postgres_and_plain_on_sqlite() {
        let mut postgres = Params::new(Dialect::Postgres);
        assert_eq!(postgres.take(1), "$1");
        assert_eq!(postgres.rows(2, 2), "($2, $3), ($4, $5)");
        let mut sqlite = Params::new(Dialect::Sqlite);
        assert_eq!(sqlite.take(1), "?");
        assert_eq!(sqlite.rows(2, 2), "(?, ?), (?, ?)");
        assert_eq!(sqlite.take(0), "");
    }
}
