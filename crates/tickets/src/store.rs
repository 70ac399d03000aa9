//! The tickets service's SQL (tickets and the events they are for), and the only place it lives.
//! One set of statements with `$1` placeholders serves SQLite and PostgreSQL; the one difference
//! (row locks) is chosen by [`Dialect`]. Ids are UUID text, prices integer cents, times unix milliseconds.

use common::clock::{from_millis, millis, now_millis};
use common::events::OrderTicket;
use common::money::Cents;
use common::store::{Dialect, cents_column, decode_error, optional_uuid_column, uuid_column};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, AnyPool, Executor, Row};
use uuid::Uuid;

use common::paging::Page;

use crate::domain::{NewTicket, Seat, Ticket};
use crate::event::{Event, on_venue_clocks};

/// The columns a [`Ticket`] is read from, as a literal so statements stay `&'static str`.
macro_rules! columns {
    () => {
        "id, title, price_cents, user_id, version, order_id, created_at, event_id, seat_section, \
         seat_row, seat"
    };
}

/// Tickets for sale at `now_millis` (not reserved, and not of an event that has started),
/// newest first, from just after the page's cursor: as many as [`Page::rows_to_read`] says.
/// UUID v7 ids grow with creation time, so the id breaks ties between tickets listed in the same
/// millisecond.
pub async fn list_for_sale(
    pool: &AnyPool,
    page: &Page,
    now_millis: i64,
) -> Result<Vec<Ticket>, sqlx::Error> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM tickets WHERE order_id IS NULL AND (created_at, id) < ($1, $2) \
         AND NOT EXISTS (SELECT 1 FROM events \
             WHERE events.id = tickets.event_id AND events.starts_at <= $5) \
         ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
    ))
    .bind(page.after.key())
    .bind(page.after.id_text())
    .bind(page.rows_to_read())
    .bind(i64::from(page.offset))
    .bind(now_millis)
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
        "INSERT INTO tickets (id, title, price_cents, user_id, version, order_id, created_at, \
         event_id, seat_section, seat_row, seat) \
         VALUES ($1, $2, $3, $4, $5, NULL, $6, $7, $8, $9, $10)",
    )
    .bind(ticket.id.to_string())
    .bind(&ticket.title)
    .bind(ticket.price.get())
    .bind(ticket.user_id.to_string())
    .bind(ticket.version)
    .bind(millis(ticket.created_at))
    .bind(ticket.event_id.map(|id| id.to_string()))
    .bind(ticket.seat.section.as_deref())
    .bind(ticket.seat.row.as_deref())
    .bind(ticket.seat.seat.as_deref())
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
    Ok(Ticket {
        id: uuid_column(row, "id")?,
        title: row.try_get("title")?,
        price: cents_column(row, "price_cents")?,
        user_id: uuid_column(row, "user_id")?,
        version: row.try_get("version")?,
        order_id: optional_uuid_column(row, "order_id")?,
        created_at: from_millis(row.try_get("created_at")?),
        event_id: optional_uuid_column(row, "event_id")?,
        seat: Seat {
            section: row.try_get("seat_section")?,
            row: row.try_get("seat_row")?,
            seat: row.try_get("seat")?,
        },
    })
}

/// An event's columns, with how many of its tickets are for sale and the cheapest price, as a
/// literal so statements stay `&'static str`.
macro_rules! event_columns {
    () => {
        "e.id, e.name, e.venue, e.city, e.starts_at, e.time_zone, e.user_id, e.created_at, \
         (SELECT COUNT(*) FROM tickets t WHERE t.event_id = e.id AND t.order_id IS NULL) \
         AS tickets_for_sale, \
         (SELECT MIN(t.price_cents) FROM tickets t WHERE t.event_id = e.id AND t.order_id IS NULL) \
         AS lowest_price_cents"
    };
}

/// Stores a new event unless one with its duplicate key exists: `false` when one did, even if
/// it was being created at the same moment.
pub async fn insert_event(
    conn: &mut AnyConnection,
    event: &Event,
    duplicate_key: &str,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO events (id, name, venue, city, starts_at, time_zone, user_id, created_at, \
         duplicate_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (duplicate_key) DO NOTHING",
    )
    .bind(event.id.to_string())
    .bind(&event.name)
    .bind(&event.venue)
    .bind(&event.city)
    .bind(millis(event.starts_at))
    .bind(&event.time_zone)
    .bind(event.user_id.to_string())
    .bind(millis(event.created_at))
    .bind(duplicate_key)
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// The event stored under a duplicate key.
pub async fn find_event_by_duplicate_key<'c, E>(
    executor: E,
    duplicate_key: &str,
) -> Result<Option<Event>, sqlx::Error>
where
    E: Executor<'c, Database = Any>,
{
    sqlx::query(concat!(
        "SELECT ",
        event_columns!(),
        " FROM events e WHERE e.duplicate_key = $1"
    ))
    .bind(duplicate_key)
    .fetch_optional(executor)
    .await?
    .as_ref()
    .map(event_from_row)
    .transpose()
}

/// One event, started or not.
pub async fn find_event<'c, E>(executor: E, id: Uuid) -> Result<Option<Event>, sqlx::Error>
where
    E: Executor<'c, Database = Any>,
{
    sqlx::query(concat!(
        "SELECT ",
        event_columns!(),
        " FROM events e WHERE e.id = $1"
    ))
    .bind(id.to_string())
    .fetch_optional(executor)
    .await?
    .as_ref()
    .map(event_from_row)
    .transpose()
}

/// When an event starts, in unix milliseconds, if there is such an event.
pub async fn event_start<'c, E>(executor: E, id: Uuid) -> Result<Option<i64>, sqlx::Error>
where
    E: Executor<'c, Database = Any>,
{
    sqlx::query_scalar("SELECT starts_at FROM events WHERE id = $1")
        .bind(id.to_string())
        .fetch_optional(executor)
        .await
}

/// Events that start after `now_millis`, soonest first, from just after the page's cursor.
pub async fn list_upcoming_events(
    pool: &AnyPool,
    page: &Page,
    now_millis: i64,
) -> Result<Vec<Event>, sqlx::Error> {
    let after = page.after_ascending();
    let rows = sqlx::query(concat!(
        "SELECT ",
        event_columns!(),
        " FROM events e WHERE e.starts_at > $1 AND (e.starts_at, e.id) > ($2, $3) \
         ORDER BY e.starts_at, e.id LIMIT $4 OFFSET $5"
    ))
    .bind(now_millis)
    .bind(after.key())
    .bind(after.id_text())
    .bind(page.rows_to_read())
    .bind(i64::from(page.offset))
    .fetch_all(pool)
    .await?;
    rows.iter().map(event_from_row).collect()
}

/// An event's tickets no order holds, cheapest first (the id breaks ties), from just after the
/// page's cursor. Whether the event has started is the caller's to ask.
pub async fn list_event_tickets_for_sale(
    pool: &AnyPool,
    event_id: Uuid,
    page: &Page,
) -> Result<Vec<Ticket>, sqlx::Error> {
    let after = page.after_ascending();
    let rows = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM tickets WHERE event_id = $1 AND order_id IS NULL \
         AND (price_cents, id) > ($2, $3) ORDER BY price_cents, id LIMIT $4 OFFSET $5"
    ))
    .bind(event_id.to_string())
    .bind(after.key())
    .bind(after.id_text())
    .bind(page.rows_to_read())
    .bind(i64::from(page.offset))
    .fetch_all(pool)
    .await?;
    rows.iter().map(ticket_from_row).collect()
}

fn event_from_row(row: &AnyRow) -> Result<Event, sqlx::Error> {
    let starts_at: i64 = row.try_get("starts_at")?;
    let time_zone: String = row.try_get("time_zone")?;
    let lowest: Option<i64> = row.try_get("lowest_price_cents")?;
    // Once the event starts its tickets' sale is over, whatever their rows say.
    let on_sale = starts_at > now_millis();
    Ok(Event {
        id: uuid_column(row, "id")?,
        name: row.try_get("name")?,
        venue: row.try_get("venue")?,
        city: row.try_get("city")?,
        starts_at: from_millis(starts_at),
        local_starts_at: on_venue_clocks(starts_at, &time_zone),
        time_zone,
        user_id: uuid_column(row, "user_id")?,
        created_at: from_millis(row.try_get("created_at")?),
        tickets_for_sale: if on_sale {
            row.try_get("tickets_for_sale")?
        } else {
            0
        },
        lowest_price: lowest
            .filter(|_| on_sale)
            .map(|cents| {
                Cents::new(cents).map_err(|reason| decode_error("lowest_price_cents", reason))
            })
            .transpose()?,
    })
}
