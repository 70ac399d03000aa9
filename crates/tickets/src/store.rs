//! The tickets service's SQL, and the only place it lives. One set of statements with `$1`
//! placeholders serves SQLite and PostgreSQL; the one difference (row locks) is chosen by
//! [`Dialect`]. Ids are UUID text, prices integer cents, times unix milliseconds.

use common::clock::{from_millis, millis, now_millis};
use common::events::OrderTicket;
use common::store::{Dialect, cents_column, parse_uuid, uuid_column};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, AnyPool, Executor, Row};
use uuid::Uuid;

use common::paging::Page;

use crate::domain::{NewTicket, Ticket};

/// The columns a [`Ticket`] is read from, as a literal so statements stay `&'static str`.
macro_rules! columns {
    () => {
        "id, title, price_cents, user_id, version, order_id, created_at"
    };
}

/// Tickets for sale (not reserved), newest first, from just after the page's cursor: as many as
/// [`Page::rows_to_read`] says. UUID v7 ids grow with creation time, so the id breaks ties
/// between tickets listed in the same millisecond.
pub async fn list_for_sale(pool: &AnyPool, page: &Page) -> Result<Vec<Ticket>, sqlx::Error> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM tickets WHERE order_id IS NULL AND (created_at, id) < ($1, $2) \
         ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
    ))
    .bind(page.after.created_at_millis())
    .bind(page.after.id_text())
    .bind(page.rows_to_read())
    .bind(i64::from(page.offset))
    .fetch_all(pool)
    .await?;
    rows.iter().map(ticket_from_row).collect()
}

/// One ticket, reserved or not, read from the pool or inside a transaction.
pub async fn find<'c, E>(executor: E, id: Uuid) -> Result<Option<Ticket>, sqlx::Error>
where
    E: Executor<'c, Database = Any>,
{
    sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM tickets WHERE id = $1"
    ))
    .bind(id.to_string())
    .fetch_optional(executor)
    .await?
    .as_ref()
    .map(ticket_from_row)
    .transpose()
}

/// Stores a newly listed ticket (not reserved).
pub async fn insert(conn: &mut AnyConnection, ticket: &Ticket) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO tickets (id, title, price_cents, user_id, version, order_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, NULL, $6)",
    )
    .bind(ticket.id.to_string())
    .bind(&ticket.title)
    .bind(ticket.price.get())
    .bind(ticket.user_id.to_string())
    .bind(ticket.version)
    .bind(millis(ticket.created_at))
    .execute(conn)
    .await?;
    Ok(())
}

/// Edits a ticket only if `seller` owns it and no order holds it, in one statement, so that a
/// reservation racing the edit is never overwritten. `None` when no row matched; the caller finds
/// out why.
pub async fn edit_unreserved(
    conn: &mut AnyConnection,
    id: Uuid,
    seller: Uuid,
    changes: &NewTicket,
) -> Result<Option<Ticket>, sqlx::Error> {
    sqlx::query(concat!(
        "UPDATE tickets SET title = $3, price_cents = $4, version = version + 1 \
         WHERE id = $1 AND user_id = $2 AND order_id IS NULL RETURNING ",
        columns!(),
        ""
    ))
    .bind(id.to_string())
    .bind(seller.to_string())
    .bind(changes.title.as_str())
    .bind(changes.price.get())
    .fetch_optional(conn)
    .await?
    .as_ref()
    .map(ticket_from_row)
    .transpose()
}

/// Marks the ticket an order was placed on as held by it, if no order holds it, at the price
/// and title the buyer saw (the title only when the order names it): an edit that crossed the
/// order is undone. `None` when the ticket was taken.
pub async fn reserve(
    conn: &mut AnyConnection,
    order_id: Uuid,
    seen: &OrderTicket,
) -> Result<Option<Ticket>, sqlx::Error> {
    sqlx::query(concat!(
        "UPDATE tickets SET order_id = $2, price_cents = $3, title = COALESCE($4, title), \
         version = version + 1 WHERE id = $1 AND order_id IS NULL RETURNING ",
        columns!(),
        ""
    ))
    .bind(seen.id.to_string())
    .bind(order_id.to_string())
    .bind(seen.price.get())
    .bind(seen.title.as_deref())
    .fetch_optional(conn)
    .await?
    .as_ref()
    .map(ticket_from_row)
    .transpose()
}

/// Puts a ticket back on sale, but only if this very order holds it: a late cancellation of an
/// older order must not release a ticket a newer order holds. `None` when nothing changed.
pub async fn release(
    conn: &mut AnyConnection,
    id: Uuid,
    order_id: Uuid,
) -> Result<Option<Ticket>, sqlx::Error> {
    sqlx::query(concat!(
        "UPDATE tickets SET order_id = NULL, version = version + 1 \
         WHERE id = $1 AND order_id = $2 RETURNING ",
        columns!(),
        ""
    ))
    .bind(id.to_string())
    .bind(order_id.to_string())
    .fetch_optional(conn)
    .await?
    .as_ref()
    .map(ticket_from_row)
    .transpose()
}

/// Remembers that an order was cancelled (once; a second record changes nothing).
pub async fn record_cancelled_order(
    conn: &mut AnyConnection,
    order_id: Uuid,
    ticket_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO cancelled_orders (order_id, ticket_id, cancelled_at) VALUES ($1, $2, $3) \
         ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(order_id.to_string())
    .bind(ticket_id.to_string())
    .bind(now_millis())
    .execute(conn)
    .await?;
    Ok(())
}

/// One ticket, locked until the end of the transaction so that the listeners deciding whether
/// to reserve or release it take turns.
pub async fn lock(
    conn: &mut AnyConnection,
    dialect: Dialect,
    id: Uuid,
) -> Result<Option<Ticket>, sqlx::Error> {
    let sql = format!(
        "SELECT {} FROM tickets WHERE id = $1{}",
        columns!(),
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

/// [`lock`], and whether `order_id`'s cancellation has been applied already (its tombstone):
/// what a reservation needs to know first.
pub async fn lock_for_order(
    conn: &mut AnyConnection,
    dialect: Dialect,
    id: Uuid,
    order_id: Uuid,
) -> Result<Option<(Ticket, bool)>, sqlx::Error> {
    // The lock first, then the tombstone, in a statement of its own: a PostgreSQL statement sees
    // what was committed when it began, so a statement that waited for the lock while the
    // cancellation was being committed would not see its tombstone, and would reserve the ticket
    // for an order already cancelled, holding it for good.
    let Some(ticket) = lock(&mut *conn, dialect, id).await? else {
        return Ok(None);
    };
    let tombstones: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM cancelled_orders WHERE order_id = $1")
            .bind(order_id.to_string())
            .fetch_one(&mut *conn)
            .await?;
    Ok(Some((ticket, tombstones > 0)))
}

fn ticket_from_row(row: &AnyRow) -> Result<Ticket, sqlx::Error> {
    let order_id: Option<String> = row.try_get("order_id")?;
    Ok(Ticket {
        id: uuid_column(row, "id")?,
        title: row.try_get("title")?,
        price: cents_column(row, "price_cents")?,
        user_id: uuid_column(row, "user_id")?,
        version: row.try_get("version")?,
        order_id: order_id
            .map(|raw| parse_uuid("order_id", &raw))
            .transpose()?,
        created_at: from_millis(row.try_get("created_at")?),
    })
}
