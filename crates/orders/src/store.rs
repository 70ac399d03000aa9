//! The orders service's SQL, and the only place it lives. One set of statements with `$1`
//! placeholders serves SQLite and PostgreSQL; the differences (row locks, the per-buyer advisory
//! lock) are chosen by [`Dialect`]. Ids are UUID text, prices integer cents, times unix
//! milliseconds.

use common::clock::{from_millis, millis};
use common::events::{OrderStatus, TicketUpdated};
use common::money::Cents;
use common::paging::Page;
use common::store::{
    Dialect, cents_column, decode_error, is_unique_violation, optional_uuid_column, uuid_column,
};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, AnyPool, Executor, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{BuyerActivity, HoldLimits, LIVE, Order, Ticket};

/// The columns an [`Order`] is read from, as a literal so statements stay `&'static str`.
macro_rules! order_columns {
    () => {
        "orders.id, orders.user_id, orders.ticket_id, orders.title, orders.price_cents, \
         orders.ticket_version, orders.status, orders.payment_id, orders.payment_attempt, \
         orders.expires_at, orders.version, orders.created_at, orders.listing"
    };
}

/// The columns a replicated [`Ticket`] is read from.
macro_rules! ticket_columns {
    () => {
        "tickets.id, tickets.title, tickets.price_cents, tickets.user_id, tickets.version, \
         tickets.sale_ends_at, tickets.listing"
    };
}

/// What became of an attempt to insert an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placed {
    Placed,
    /// Another order that is not cancelled holds the ticket.
    TicketTaken,
}

/// One replicated ticket, read from the pool or inside a transaction.
pub(crate) async fn find_ticket<'c, E>(executor: E, id: Uuid) -> Result<Option<Ticket>, sqlx::Error>
where
    E: Executor<'c, Database = Any>,
{
    sqlx::query(concat!(
        "SELECT ",
        ticket_columns!(),
        " FROM tickets WHERE id = $1"
    ))
    .bind(id.to_string())
    .fetch_optional(executor)
    .await?
    .as_ref()
    .map(ticket_from_row)
    .transpose()
}

/// One replicated ticket, locked until the end of the transaction, so that two deliveries of
/// ticket events take turns. SQLite's write transaction (`BEGIN IMMEDIATE`) already keeps every
/// other writer out; PostgreSQL needs the row lock.
pub(crate) async fn lock_ticket(
    conn: &mut AnyConnection,
    dialect: Dialect,
    id: Uuid,
) -> Result<Option<Ticket>, sqlx::Error> {
    let sql = format!(
        concat!(
            "SELECT ",
            ticket_columns!(),
            " FROM tickets WHERE id = $1{}"
        ),
        dialect.for_update()
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.to_string())
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(ticket_from_row)
        .transpose()
}

/// Adds a ticket, and the event it is for if any, to the replica; `false` when it is there
/// already (a redelivered or republished ticket:created), in which case nothing changes.
pub(crate) async fn insert_ticket(
    conn: &mut AnyConnection,
    ticket: &Ticket,
    event_id: Option<Uuid>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO tickets (id, title, price_cents, user_id, version, event_id, sale_ends_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
    )
    .bind(ticket.id.to_string())
    .bind(&ticket.title)
    .bind(ticket.price.get())
    .bind(ticket.user_id.to_string())
    .bind(ticket.version)
    .bind(event_id.map(|id| id.to_string()))
    .bind(ticket.sale_ends_at.map(millis))
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Applies a ticket's next version to the replica, only if the replica holds the version right
/// before it; `false` when it does not (the caller decided under the row lock, so that is a bug).
pub(crate) async fn update_ticket(
    conn: &mut AnyConnection,
    ticket: &TicketUpdated,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE tickets SET title = $2, price_cents = $3, user_id = $4, version = $5, \
         listing = $6 WHERE id = $1 AND version = $5 - 1",
    )
    .bind(ticket.id.to_string())
    .bind(&ticket.title)
    .bind(ticket.price.get())
    .bind(ticket.user_id.to_string())
    .bind(ticket.version)
    .bind(ticket.listing)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(updated == 1)
}

/// What a buyer asking for the best ticket of an event may be given.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BestAvailable {
    pub event_id: Uuid,
    pub buyer: Uuid,
    /// The most the buyer will pay; `None`: any price.
    pub max_price: Option<Cents>,
    /// Tickets the buyer let go after this, cancelled or lapsed, are cooling down for them.
    pub cooling_since: OffsetDateTime,
    /// When the pick is made: tickets whose sale has ended by then are passed over.
    pub now: OffsetDateTime,
}

/// How [`pick_best_available`] treats tickets other buyers are picking at the same moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Contention {
    /// Only looks, locking nothing: a quick answer for the buyers who come after a sell-out.
    Look,
    /// Passes them by, so that buyers arriving together are spread over different tickets.
    Skip,
    /// Waits for them: whether one is left once its buyer is done is worth knowing before
    /// saying that none is.
    Wait,
}

/// The cheapest ticket of an event that no order holds, not the buyer's own, within their price,
/// not cooling down for them and whose sale has not ended (the id breaks ties), locked until the
/// end of the transaction unless only looked for.
/// On PostgreSQL, with [`Contention::Skip`], tickets other transactions have locked are passed
/// by (`SKIP LOCKED`), so concurrent buyers each lock a different ticket instead of all racing
/// for the cheapest one. The lock is `NO KEY UPDATE`, which an order inserted on the ticket
/// (whose foreign key takes `KEY SHARE`) does not wait for. The orders read are as of the statement's start: a ticket whose order
/// was committed since may still be given, and [`insert_order`]'s unique index turns it away.
/// SQLite's one writer (`BEGIN IMMEDIATE`) needs no lock.
pub(crate) async fn pick_best_available(
    conn: &mut AnyConnection,
    dialect: Dialect,
    wanted: &BestAvailable,
    contention: Contention,
) -> Result<Option<Ticket>, sqlx::Error> {
    let lock = match (dialect, contention) {
        (Dialect::Sqlite, _) | (_, Contention::Look) => "",
        (Dialect::Postgres, Contention::Skip) => " FOR NO KEY UPDATE OF tickets SKIP LOCKED",
        (Dialect::Postgres, Contention::Wait) => " FOR NO KEY UPDATE OF tickets",
    };
    let sql = format!(
        concat!(
            "SELECT ",
            ticket_columns!(),
            " FROM tickets WHERE tickets.event_id = $1 AND tickets.user_id <> $2 \
             AND tickets.price_cents <= $3 \
             AND (tickets.sale_ends_at IS NULL OR tickets.sale_ends_at > $5) \
             AND NOT EXISTS (SELECT 1 FROM orders WHERE orders.ticket_id = tickets.id \
                 AND orders.listing = tickets.listing AND orders.status <> 'cancelled') \
             AND NOT EXISTS (SELECT 1 FROM orders WHERE orders.ticket_id = tickets.id \
                 AND orders.user_id = $2 AND orders.status = 'cancelled' \
                 AND orders.finished_at > $4) \
             ORDER BY tickets.price_cents, tickets.id LIMIT 1{}"
        ),
        lock
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(wanted.event_id.to_string())
        .bind(wanted.buyer.to_string())
        .bind(wanted.max_price.map_or(i64::MAX, Cents::get))
        .bind(millis(wanted.cooling_since))
        .bind(millis(wanted.now))
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(ticket_from_row)
        .transpose()
}

/// Whether an order that is not cancelled holds the ticket's listing now (or bought it). Only a
/// quick answer for the buyers who come too late (most of a sale's attempts): it decides nothing,
/// since the ticket may be taken the moment after; [`insert_order`] under the unique index
/// decides for everyone else.
pub(crate) async fn is_held<'c, E>(executor: E, ticket_id: Uuid) -> Result<bool, sqlx::Error>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let held: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM orders WHERE ticket_id = $1 AND status <> 'cancelled' \
         AND listing = (SELECT listing FROM tickets WHERE id = $1) LIMIT 1",
    )
    .bind(ticket_id.to_string())
    .fetch_optional(executor)
    .await?;
    Ok(held.is_some())
}

/// Stores a new order, on the listing of the ticket it was placed on: the one read with its title
/// and price. The unique index over
/// the ticket and listing of orders that are not cancelled decides between racing buyers: the
/// loser's insert fails (on PostgreSQL after waiting for the winner's transaction) and comes back
/// as [`Placed::TicketTaken`], as does an order on a listing already sold. On PostgreSQL the
/// caller's transaction is then aborted and must be dropped.
pub(crate) async fn insert_order(
    conn: &mut AnyConnection,
    order: &Order,
) -> Result<Placed, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO orders (id, user_id, ticket_id, title, price_cents, ticket_version, status, \
         expires_at, version, created_at, listing) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(order.id.to_string())
    .bind(order.user_id.to_string())
    .bind(order.ticket_id.to_string())
    .bind(order.title.as_str())
    .bind(order.price.get())
    .bind(order.ticket_version)
    .bind(order.status.as_str())
    .bind(millis(order.expires_at))
    .bind(order.version)
    .bind(millis(order.created_at))
    .bind(order.listing)
    .execute(conn)
    .await;
    match inserted {
        Ok(_) => Ok(Placed::Placed),
        // The order's id is a fresh UUID v7, so the only unique index it can break is the
        // one-live-order-per-listing guard.
        Err(err) if is_unique_violation(&err) => Ok(Placed::TicketTaken),
        Err(err) => Err(err),
    }
}

/// One order, as the buyer placed it.
pub(crate) async fn find_order<'c, E>(executor: E, id: Uuid) -> Result<Option<Order>, sqlx::Error>
where
    E: Executor<'c, Database = Any>,
{
    sqlx::query(concat!(
        "SELECT ",
        order_columns!(),
        " FROM orders WHERE id = $1"
    ))
    .bind(id.to_string())
    .fetch_optional(executor)
    .await?
    .as_ref()
    .map(order_from_row)
    .transpose()
}

/// A buyer's orders, newest first, from just after the page's cursor: as many as
/// [`Page::rows_to_read`] says. UUID v7 ids grow with creation time, so the id breaks ties between
/// orders placed in the same millisecond.
pub(crate) async fn list_orders(
    pool: &AnyPool,
    user_id: Uuid,
    page: &Page,
) -> Result<Vec<Order>, sqlx::Error> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        order_columns!(),
        " FROM orders WHERE user_id = $1 AND (created_at, id) < ($2, $3) \
         ORDER BY created_at DESC, id DESC LIMIT $4 OFFSET $5"
    ))
    .bind(user_id.to_string())
    .bind(page.after.key())
    .bind(page.after.id_text())
    .bind(page.rows_to_read())
    .bind(i64::from(page.offset))
    .fetch_all(pool)
    .await?;
    rows.iter().map(order_from_row).collect()
}

/// One order, locked until the end of the transaction, so that an owner's cancellation, an
/// expiry and a payment of the same order take turns and each decides on the status the one
/// before left. SQLite's write transaction already serialises them; PostgreSQL needs the lock.
pub(crate) async fn lock_order(
    conn: &mut AnyConnection,
    dialect: Dialect,
    id: Uuid,
) -> Result<Option<Order>, sqlx::Error> {
    let sql = format!(
        concat!("SELECT ", order_columns!(), " FROM orders WHERE id = $1{}"),
        dialect.for_update()
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.to_string())
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(order_from_row)
        .transpose()
}

/// Moves a live order to `status` and bumps its version, in one conditional statement: an order
/// that is no longer live is left alone (`None`), so even without the row lock no final status
/// is ever overwritten.
pub(crate) async fn finish_order(
    conn: &mut AnyConnection,
    id: Uuid,
    status: OrderStatus,
    now: OffsetDateTime,
) -> Result<Option<Order>, sqlx::Error> {
    let [live_a, live_b] = LIVE;
    sqlx::query(concat!(
        "UPDATE orders SET status = $2, version = version + 1, finished_at = $5 \
         WHERE id = $1 AND status IN ($3, $4) RETURNING ",
        order_columns!(),
        ""
    ))
    .bind(id.to_string())
    .bind(status.as_str())
    .bind(live_a.as_str())
    .bind(live_b.as_str())
    .bind(millis(now))
    .fetch_optional(conn)
    .await?
    .as_ref()
    .map(order_from_row)
    .transpose()
}

/// Grants a live order to attempt `attempt` of paying it, by `payment` (`awaiting:payment`),
/// and bumps its version, in one conditional statement: `None` when the order is no longer
/// live.
pub(crate) async fn grant_order(
    conn: &mut AnyConnection,
    id: Uuid,
    payment: Uuid,
    attempt: i64,
) -> Result<Option<Order>, sqlx::Error> {
    let [live_a, live_b] = LIVE;
    sqlx::query(concat!(
        "UPDATE orders SET status = $2, payment_id = $3, payment_attempt = $4, \
         version = version + 1 WHERE id = $1 AND status IN ($5, $6) RETURNING ",
        order_columns!(),
        ""
    ))
    .bind(id.to_string())
    .bind(OrderStatus::AwaitingPayment.as_str())
    .bind(payment.to_string())
    .bind(attempt)
    .bind(live_a.as_str())
    .bind(live_b.as_str())
    .fetch_optional(conn)
    .await?
    .as_ref()
    .map(order_from_row)
    .transpose()
}

/// Takes an order's grant back (`created`, no payment; the attempt is kept) and bumps its
/// version: `None` when the order is not awaiting payment.
pub(crate) async fn reopen_order(
    conn: &mut AnyConnection,
    id: Uuid,
) -> Result<Option<Order>, sqlx::Error> {
    sqlx::query(concat!(
        "UPDATE orders SET status = $2, payment_id = NULL, version = version + 1 \
         WHERE id = $1 AND status = $3 RETURNING ",
        order_columns!(),
        ""
    ))
    .bind(id.to_string())
    .bind(OrderStatus::Created.as_str())
    .bind(OrderStatus::AwaitingPayment.as_str())
    .fetch_optional(conn)
    .await?
    .as_ref()
    .map(order_from_row)
    .transpose()
}

/// Notes that an order's expiry came at `now`, bringing its expiry forward to then if it lay
/// later (the expiration service's clock ahead of this one's).
pub(crate) async fn note_expiry(
    conn: &mut AnyConnection,
    id: Uuid,
    now: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE orders SET expires_at = $2 WHERE id = $1 AND expires_at > $2")
        .bind(id.to_string())
        .bind(millis(now))
        .execute(conn)
        .await?;
    Ok(())
}

/// Makes a buyer's order placements take turns until the end of the transaction, so that the
/// limits are checked against every order placed before, whichever replica placed it. SQLite's
/// write transaction already keeps every other writer out; PostgreSQL takes a transaction-scoped
/// advisory lock keyed by the buyer (two buyers sharing a key only wait for each other).
pub(crate) async fn lock_buyer(
    conn: &mut AnyConnection,
    dialect: Dialect,
    buyer: Uuid,
) -> Result<(), sqlx::Error> {
    if dialect == Dialect::Postgres {
        // Both halves: the high one of a UUID v7 is mostly its creation time.
        let (high, low) = buyer.as_u64_pair();
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind((high ^ low).cast_signed())
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// What a buyer about to hold a ticket finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outlook {
    /// Whether an order that is not cancelled holds the ticket now (see [`is_held`]).
    pub ticket_held: bool,
    /// What the hold limits need to know of the buyer.
    pub activity: BuyerActivity,
}

/// Whether `ticket_id` is held, and what the hold limits need to know of `buyer` at `now`: all
/// in one statement, one round trip, since under a flash sale the order path is bound by
/// statements. [`HoldLimits::check`] looks only at the figures of the limits that are on.
pub(crate) async fn outlook(
    conn: &mut AnyConnection,
    limits: &HoldLimits,
    buyer: Uuid,
    ticket_id: Uuid,
    now: OffsetDateTime,
) -> Result<Outlook, sqlx::Error> {
    // The live statuses are written out, as in the partial index, so that the planner can use it.
    let row = sqlx::query(
        "SELECT \
         (SELECT COUNT(*) FROM (SELECT 1 FROM orders WHERE ticket_id = $2 \
          AND listing = (SELECT listing FROM tickets WHERE id = $2) \
          AND status <> 'cancelled' LIMIT 1) AS live) AS held, \
         (SELECT COUNT(*) FROM orders \
          WHERE user_id = $1 AND status IN ('created', 'awaiting:payment')) AS live_holds, \
         (SELECT MAX(finished_at) FROM orders \
          WHERE user_id = $1 AND ticket_id = $2 AND status = 'cancelled') AS released_at, \
         (SELECT created_at FROM orders WHERE user_id = $1 AND created_at > $3 \
          ORDER BY created_at DESC LIMIT 1 OFFSET $4) AS counted_at",
    )
    .bind(buyer.to_string())
    .bind(ticket_id.to_string())
    .bind(millis(HoldLimits::counted_since(now)))
    .bind(i64::from(limits.max_per_hour.saturating_sub(1)))
    .fetch_one(conn)
    .await?;
    let held: i64 = row.try_get("held")?;
    let released: Option<i64> = row.try_get("released_at")?;
    let counted: Option<i64> = row.try_get("counted_at")?;
    Ok(Outlook {
        ticket_held: held > 0,
        activity: BuyerActivity {
            live_holds: row.try_get("live_holds")?,
            released_ticket_at: released.map(from_millis),
            oldest_counted_order_at: counted.map(from_millis),
        },
    })
}

fn ticket_from_row(row: &AnyRow) -> Result<Ticket, sqlx::Error> {
    Ok(Ticket {
        id: uuid_column(row, "id")?,
        title: row.try_get("title")?,
        price: cents_column(row, "price_cents")?,
        user_id: uuid_column(row, "user_id")?,
        version: row.try_get("version")?,
        sale_ends_at: row
            .try_get::<Option<i64>, _>("sale_ends_at")?
            .map(from_millis),
        listing: row.try_get("listing")?,
    })
}

fn order_from_row(row: &AnyRow) -> Result<Order, sqlx::Error> {
    let status: String = row.try_get("status")?;
    Ok(Order {
        id: uuid_column(row, "id")?,
        user_id: uuid_column(row, "user_id")?,
        ticket_id: uuid_column(row, "ticket_id")?,
        title: row.try_get("title")?,
        price: cents_column(row, "price_cents")?,
        ticket_version: row.try_get("ticket_version")?,
        status: OrderStatus::parse(&status)
            .ok_or_else(|| decode_error("status", format!("unknown order status {status:?}")))?,
        payment_id: optional_uuid_column(row, "payment_id")?,
        payment_attempt: row.try_get("payment_attempt")?,
        expires_at: from_millis(row.try_get("expires_at")?),
        version: row.try_get("version")?,
        created_at: from_millis(row.try_get("created_at")?),
        listing: row.try_get("listing")?,
    })
}
