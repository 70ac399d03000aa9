//! The tickets service's SQL (tickets and the events they are for), and the only place it lives.
//! One set of statements with `$1` placeholders serves SQLite and PostgreSQL; the differences
//! (row locks, and how words are matched: FTS5 or `tsvector`) are chosen by [`Dialect`]. Ids are UUID text, prices integer cents, times unix milliseconds.

use common::clock::{from_millis, millis, now_millis};
use common::events::OrderTicket;
use common::money::Cents;
use common::store::{
    Dialect, Store, cents_column, decode_error, optional_uuid_column, uuid_column,
};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, AnyPool, Executor, Row};
use uuid::Uuid;

use common::paging::{Cursor, Page};

use crate::domain::{NewTicket, Seat, Ticket};
use crate::event::{Event, on_venue_clocks};
use crate::sales::{ResaleCap, Sale};
use crate::search::{self, Search, Sort};
use crate::wallet::{Handover, HistoryEntry, HistoryView, LastSale, OwnedTicket};

/// The columns a [`Ticket`] is read from, as a literal so statements stay `&'static str`.
macro_rules! columns {
    () => {
        "id, title, price_cents, user_id, version, order_id, created_at, event_id, seat_section, \
         seat_row, seat, listing"
    };
}

/// The condition a ticket meets while its owner keeps it: bought (or sent since), and neither
/// listed again nor held by an order.
macro_rules! kept {
    () => {
        "bought_with IS NOT NULL AND order_id = bought_with"
    };
}

/// A value bound to a statement built from a search.
enum Bind {
    Int(i64),
    Text(String),
}

/// A statement's `$n` parameters, numbered as they are added.
#[derive(Default)]
struct Binds(Vec<Bind>);

impl Binds {
    /// Adds a value and names its parameter.
    fn add(&mut self, value: Bind) -> String {
        self.0.push(value);
        format!("${}", self.0.len())
    }

    /// A page's `LIMIT … OFFSET …`.
    fn limit_and_offset(&mut self, page: &Page) -> String {
        format!(
            "LIMIT {} OFFSET {}",
            self.add(Bind::Int(page.rows_to_read())),
            self.add(Bind::Int(i64::from(page.offset)))
        )
    }

    async fn fetch_all(self, pool: &AnyPool, sql: String) -> Result<Vec<AnyRow>, sqlx::Error> {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for value in self.0 {
            query = match value {
                Bind::Int(value) => query.bind(value),
                Bind::Text(value) => query.bind(value),
            };
        }
        query.fetch_all(pool).await
    }
}

/// How a list is ordered: the key (an expression over the row), and which way. The id breaks
/// ties, the same way.
struct Order {
    key: &'static str,
    descending: bool,
}

impl Order {
    /// The condition that starts a page after its cursor, and the `ORDER BY … LIMIT … OFFSET …`
    /// that reads it, with the key read as `sort_key`.
    fn page(&self, id: &str, page: &Page, binds: &mut Binds) -> (String, String) {
        let (after, op, direction) = if self.descending {
            (page.after, "<", "DESC")
        } else {
            (page.after_ascending(), ">", "ASC")
        };
        let condition = format!(
            "({}, {id}) {op} ({}, {})",
            self.key,
            binds.add(Bind::Int(after.key())),
            binds.add(Bind::Text(after.id_text()))
        );
        let order = format!(
            "ORDER BY sort_key {direction}, {id} {direction} {}",
            binds.limit_and_offset(page)
        );
        (condition, order)
    }
}

/// The key of tickets ordered by their event's start, tickets of no event last.
const TICKET_DATE_KEY: &str = "COALESCE(event_starts_at, 9223372036854775807)";
/// The key of events ordered by their cheapest ticket for sale, events with none last.
const EVENT_PRICE_KEY: &str = "COALESCE((SELECT MIN(t.price_cents) FROM tickets t \
     WHERE t.event_id = e.id AND t.order_id IS NULL), 9223372036854775807)";

/// Tickets for sale at `now_millis` (no order holds them, and their event, if any, has not
/// started) that match `search`, newest first unless it says otherwise, from just after the
/// page's cursor: as many as [`Page::rows_to_read`] says, each with its position in the list.
/// UUID v7 ids grow with creation time, so the id breaks ties between tickets listed in the
/// same millisecond.
pub async fn search_tickets(
    pool: &AnyPool,
    dialect: Dialect,
    search: &Search,
    page: &Page,
    now_millis: i64,
) -> Result<Vec<(Ticket, Cursor)>, sqlx::Error> {
    let mut binds = Binds::default();
    let mut conditions = vec![
        "order_id IS NULL".to_owned(),
        format!(
            "(event_starts_at IS NULL OR event_starts_at > {})",
            binds.add(Bind::Int(now_millis))
        ),
    ];
    let sort = search.sort.unwrap_or(Sort::Newest);
    // On SQLite, words found newest first are read in the FTS index's own order (the order the
    // tickets were listed in), stopping at the page's end, rather than gathering every match
    // and sorting them: a common word matches most of the catalogue.
    let in_index_order =
        dialect == Dialect::Sqlite && !search.words.is_empty() && sort == Sort::Newest;
    if in_index_order {
        conditions.push(format!(
            "tickets_search MATCH {}",
            binds.add(Bind::Text(search.fts5_query()))
        ));
    } else if !search.words.is_empty() {
        let words = ("id", "tickets_search", "ticket_id", "search");
        conditions.push(holds_words(dialect, search, words, &mut binds));
    }
    if search.needs_an_event() {
        let mut of_event = Vec::new();
        event_conditions(search, "events", &mut of_event, &mut binds);
        conditions.push(format!(
            "event_id IN (SELECT id FROM events WHERE {})",
            of_event.join(" AND ")
        ));
    }
    if let Some(max_price) = search.max_price {
        conditions.push(format!(
            "price_cents <= {}",
            binds.add(Bind::Int(max_price.get()))
        ));
    }
    if in_index_order {
        // An FTS row's rowid is the ticket's for good (see the migration), and unique: the
        // cursor needs no id beside it.
        conditions.push(format!(
            "tickets_search.rowid < {}",
            binds.add(Bind::Int(page.after.key()))
        ));
        let sql = format!(
            "SELECT {}, tickets_search.rowid AS sort_key FROM tickets_search \
             JOIN tickets ON tickets.id = tickets_search.ticket_id WHERE {} \
             ORDER BY tickets_search.rowid DESC {}",
            columns!(),
            conditions.join(" AND "),
            binds.limit_and_offset(page)
        );
        return read_tickets(pool, binds, sql).await;
    }
    let order = match sort {
        Sort::Newest => Order {
            key: "created_at",
            descending: true,
        },
        Sort::Price => Order {
            key: "price_cents",
            descending: false,
        },
        Sort::Date => Order {
            key: TICKET_DATE_KEY,
            descending: false,
        },
    };
    let (after, order_by) = order.page("id", page, &mut binds);
    conditions.push(after);
    let sql = format!(
        "SELECT {}, {} AS sort_key FROM tickets WHERE {} {order_by}",
        columns!(),
        order.key,
        conditions.join(" AND ")
    );
    read_tickets(pool, binds, sql).await
}

/// Tickets read with their `sort_key`, each with its position in the list.
async fn read_tickets(
    pool: &AnyPool,
    binds: Binds,
    sql: String,
) -> Result<Vec<(Ticket, Cursor)>, sqlx::Error> {
    binds
        .fetch_all(pool, sql)
        .await?
        .iter()
        .map(|row| Ok((ticket_from_row(row)?, cursor_from_row(row)?)))
        .collect()
}

/// The condition that a row holds every word of `search`, given as `(row_id, fts, fts_row_id,
/// tsvector)`: on SQLite its `row_id` is among the `fts_row_id`s the FTS5 table `fts` matches,
/// on PostgreSQL its `tsvector` column matches.
fn holds_words(
    dialect: Dialect,
    search: &Search,
    (row_id, fts, fts_row_id, tsvector): (&str, &str, &str, &str),
    binds: &mut Binds,
) -> String {
    match dialect {
        Dialect::Sqlite => format!(
            "{row_id} IN (SELECT {fts_row_id} FROM {fts} WHERE {fts} MATCH {})",
            binds.add(Bind::Text(search.fts5_query()))
        ),
        Dialect::Postgres => format!(
            "{tsvector} @@ to_tsquery('simple', {})",
            binds.add(Bind::Text(search.tsquery()))
        ),
    }
}

/// The conditions of `search` on an event's city and day, on the events table as `alias`.
fn event_conditions(search: &Search, alias: &str, conditions: &mut Vec<String>, binds: &mut Binds) {
    if let Some(city) = &search.city {
        conditions.push(format!(
            "{alias}.city_key = {}",
            binds.add(Bind::Text(city.clone()))
        ));
    }
    if let Some(from) = search.from {
        conditions.push(format!(
            "{alias}.local_date >= {}",
            binds.add(Bind::Text(from.to_string()))
        ));
    }
    if let Some(to) = search.to {
        conditions.push(format!(
            "{alias}.local_date <= {}",
            binds.add(Bind::Text(to.to_string()))
        ));
    }
}

/// The position of a row read with its `sort_key`.
fn cursor_from_row(row: &AnyRow) -> Result<Cursor, sqlx::Error> {
    Ok(Cursor::at(
        row.try_get("sort_key")?,
        uuid_column(row, "id")?,
    ))
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

/// What a ticket being listed takes from its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedEvent {
    pub starts_at: i64,
    /// Its name, venue and city, as search finds them.
    pub words: String,
}

/// What a ticket of event `id` takes from it, if there is such an event. The words are reduced
/// from the event's own text, not read from its `words`, which an event stored before search
/// has only once the fill reaches it.
pub async fn event_for_listing<'c, E>(
    executor: E,
    id: Uuid,
) -> Result<Option<ListedEvent>, sqlx::Error>
where
    E: Executor<'c, Database = Any>,
{
    let row = sqlx::query("SELECT starts_at, name, venue, city FROM events WHERE id = $1")
        .bind(id.to_string())
        .fetch_optional(executor)
        .await?;
    row.map(|row| {
        Ok(ListedEvent {
            starts_at: row.try_get("starts_at")?,
            words: search::event_words(
                row.try_get("name")?,
                row.try_get("venue")?,
                row.try_get("city")?,
            ),
        })
    })
    .transpose()
}

/// Stores a newly listed ticket (not reserved), with what search finds it by.
pub async fn insert(
    conn: &mut AnyConnection,
    ticket: &Ticket,
    event: Option<&ListedEvent>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO tickets (id, title, price_cents, user_id, version, order_id, created_at, \
         event_id, seat_section, seat_row, seat, title_words, event_words, event_starts_at) \
         VALUES ($1, $2, $3, $4, $5, NULL, $6, $7, $8, $9, $10, $11, $12, $13)",
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
    .bind(search::words(&ticket.title))
    .bind(event.map_or_else(String::new, |event| event.words.clone()))
    .bind(event.map(|event| event.starts_at))
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
        "UPDATE tickets SET title = $3, price_cents = $4, title_words = $5, \
         version = version + 1 WHERE id = $1 AND user_id = $2 AND order_id IS NULL RETURNING ",
        columns!(),
        ""
    ))
    .bind(id.to_string())
    .bind(seller.to_string())
    .bind(changes.title.as_str())
    .bind(changes.price.get())
    .bind(search::words(changes.title.as_str()))
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
         title_words = COALESCE($5, title_words), version = version + 1 \
         WHERE id = $1 AND order_id IS NULL RETURNING ",
        columns!(),
        ""
    ))
    .bind(seen.id.to_string())
    .bind(order_id.to_string())
    .bind(seen.price.get())
    .bind(seen.title.as_deref())
    .bind(seen.title.as_deref().map(search::words))
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
        listing: row.try_get("listing")?,
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
         duplicate_key, words, city_key, local_date) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
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
    .bind(search::event_words(&event.name, &event.venue, &event.city))
    .bind(search::words(&event.city))
    .bind(search::local_date(&event.local_starts_at))
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
    .map(|row| event_from_row(row, now_millis()))
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
    .map(|row| event_from_row(row, now_millis()))
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

/// Events that start after `now_millis` and match `search`, soonest first unless it says
/// otherwise, from just after the page's cursor, each with its position in the list.
pub async fn search_events(
    pool: &AnyPool,
    dialect: Dialect,
    search: &Search,
    page: &Page,
    now_millis: i64,
) -> Result<Vec<(Event, Cursor)>, sqlx::Error> {
    let mut binds = Binds::default();
    let mut conditions = vec![format!(
        "e.starts_at > {}",
        binds.add(Bind::Int(now_millis))
    )];
    if !search.words.is_empty() {
        let words = ("e.id", "events_search", "event_id", "e.search");
        conditions.push(holds_words(dialect, search, words, &mut binds));
    }
    event_conditions(search, "e", &mut conditions, &mut binds);
    if let Some(max_price) = search.max_price {
        conditions.push(format!(
            "EXISTS (SELECT 1 FROM tickets t WHERE t.event_id = e.id AND t.order_id IS NULL \
             AND t.price_cents <= {})",
            binds.add(Bind::Int(max_price.get()))
        ));
    }
    let order = match search.sort.unwrap_or(Sort::Date) {
        Sort::Date => Order {
            key: "e.starts_at",
            descending: false,
        },
        Sort::Newest => Order {
            key: "e.created_at",
            descending: true,
        },
        Sort::Price => Order {
            key: EVENT_PRICE_KEY,
            descending: false,
        },
    };
    let (after, order_by) = order.page("e.id", page, &mut binds);
    conditions.push(after);
    let sql = format!(
        "SELECT {}, {} AS sort_key FROM events e WHERE {} {order_by}",
        event_columns!(),
        order.key,
        conditions.join(" AND ")
    );
    binds
        .fetch_all(pool, sql)
        .await?
        .iter()
        .map(|row| Ok((event_from_row(row, now_millis)?, cursor_from_row(row)?)))
        .collect()
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

/// How many rows [`fill_search_words`] reads at a time.
const FILL_BATCH: i64 = 500;

/// Gives the events and tickets stored before search their words, and a ticket its event's
/// words and start, which the service reduces and so no migration could. Returns how many rows
/// it filled. Safe beside the requests and on several replicas at once: a row is filled only as
/// long as it still holds what was read.
pub async fn fill_search_words(store: &Store) -> Result<u64, sqlx::Error> {
    let mut filled = 0;
    // In id order, a batch at a time, so that it ends even if some text has no words.
    let mut after = String::new();
    while let Some((last, rows)) = unfilled(
        store,
        "SELECT id, name, venue, city, starts_at, time_zone FROM events \
         WHERE local_date = '' AND id > $1 ORDER BY id LIMIT $2",
        &after,
    )
    .await?
    {
        let mut tx = store.begin().await?;
        for row in &rows {
            let (name, venue, city): (String, String, String) = (
                row.try_get("name")?,
                row.try_get("venue")?,
                row.try_get("city")?,
            );
            let time_zone: String = row.try_get("time_zone")?;
            let local_starts_at = on_venue_clocks(row.try_get("starts_at")?, &time_zone);
            filled += sqlx::query(
                "UPDATE events SET words = $2, city_key = $3, local_date = $4 \
                 WHERE id = $1 AND local_date = ''",
            )
            .bind(row.try_get::<String, _>("id")?)
            .bind(search::event_words(&name, &venue, &city))
            .bind(search::words(&city))
            .bind(search::local_date(&local_starts_at))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        after = last;
    }
    let mut after = String::new();
    while let Some((last, rows)) = unfilled(
        store,
        "SELECT id, title FROM tickets WHERE title_words = '' AND id > $1 ORDER BY id LIMIT $2",
        &after,
    )
    .await?
    {
        let mut tx = store.begin().await?;
        for row in &rows {
            let title: String = row.try_get("title")?;
            // Only while the title is the one read: an edit since has set its words.
            filled += sqlx::query(
                "UPDATE tickets SET title_words = $2 WHERE id = $1 AND title = $3 \
                 AND title_words = ''",
            )
            .bind(row.try_get::<String, _>("id")?)
            .bind(search::words(&title))
            .bind(&title)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        after = last;
    }
    // A ticket edited or reserved before it was filled has its title's words, but still needs
    // its event's. Only from an event already given its words: another replica's fill may be
    // between its events and its tickets, and will copy them itself once it has filled them.
    filled += sqlx::query(
        "UPDATE tickets SET \
         event_words = (SELECT words FROM events WHERE events.id = tickets.event_id), \
         event_starts_at = (SELECT starts_at FROM events WHERE events.id = tickets.event_id) \
         WHERE event_id IS NOT NULL AND event_starts_at IS NULL AND EXISTS \
         (SELECT 1 FROM events WHERE events.id = tickets.event_id AND events.local_date <> '')",
    )
    .execute(store.writer())
    .await?
    .rows_affected();
    Ok(filled)
}

/// The next batch of rows `select` finds after id `after` (its `$1`; `$2` is the batch's size),
/// with the last one's id; `None` when there are no more.
async fn unfilled(
    store: &Store,
    select: &'static str,
    after: &str,
) -> Result<Option<(String, Vec<AnyRow>)>, sqlx::Error> {
    let rows = sqlx::query(select)
        .bind(after)
        .bind(FILL_BATCH)
        .fetch_all(store.pool())
        .await?;
    match rows.last() {
        Some(last) => Ok(Some((last.try_get("id")?, rows))),
        None => Ok(None),
    }
}

/// An event as read at `now_millis`, which says whether its tickets are still for sale.
fn event_from_row(row: &AnyRow, now_millis: i64) -> Result<Event, sqlx::Error> {
    let starts_at: i64 = row.try_get("starts_at")?;
    let time_zone: String = row.try_get("time_zone")?;
    let lowest: Option<i64> = row.try_get("lowest_price_cents")?;
    // Once the event starts its tickets' sale is over, whatever their rows say.
    let on_sale = starts_at > now_millis;
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

/// Hands the ticket `order_id` holds to `buyer`, who paid for it, at `at` (unix milliseconds):
/// theirs to keep off the market. `None` when that order does not hold it, or it is handed over
/// already.
pub async fn hand_over(
    conn: &mut AnyConnection,
    id: Uuid,
    order_id: Uuid,
    buyer: Uuid,
    at: i64,
) -> Result<Option<Ticket>, sqlx::Error> {
    sqlx::query(concat!(
        "UPDATE tickets SET user_id = $3, bought_with = $2, acquired_at = $4, \
         version = version + 1 \
         WHERE id = $1 AND order_id = $2 AND (bought_with IS NULL OR bought_with <> $2) \
         RETURNING ",
        columns!(),
        ""
    ))
    .bind(id.to_string())
    .bind(order_id.to_string())
    .bind(buyer.to_string())
    .bind(at)
    .fetch_optional(conn)
    .await?
    .as_ref()
    .map(ticket_from_row)
    .transpose()
}

/// Gives a ticket `from` keeps (bought, neither listed again nor held) to `to`, at `at` (unix
/// milliseconds), in one statement: an order or a listing racing it is never overwritten. `None`
/// when no row matched; the caller finds out why.
pub async fn send(
    conn: &mut AnyConnection,
    id: Uuid,
    from: Uuid,
    to: Uuid,
    at: i64,
) -> Result<Option<Ticket>, sqlx::Error> {
    sqlx::query(concat!(
        "UPDATE tickets SET user_id = $3, acquired_at = $4, version = version + 1 \
         WHERE id = $1 AND user_id = $2 AND ",
        kept!(),
        " RETURNING ",
        columns!(),
    ))
    .bind(id.to_string())
    .bind(from.to_string())
    .bind(to.to_string())
    .bind(at)
    .fetch_optional(conn)
    .await?
    .as_ref()
    .map(ticket_from_row)
    .transpose()
}

/// Adds a change of hands to the ticket's history.
pub async fn record_handover(
    conn: &mut AnyConnection,
    entry: &HistoryEntry,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO ticket_history (id, ticket_id, kind, from_user_id, to_user_id, \
         price_cents, order_id, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(Uuid::now_v7().to_string())
    .bind(entry.ticket_id.to_string())
    .bind(entry.handover.as_str())
    .bind(entry.from_user_id.to_string())
    .bind(entry.to_user_id.to_string())
    .bind(entry.price_cents)
    .bind(entry.order_id.map(|id| id.to_string()))
    .bind(millis(entry.at))
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether the ticket was sold through `order_id` already.
pub async fn sold_through(
    conn: &mut AnyConnection,
    ticket_id: Uuid,
    order_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let row = sqlx::query(
        "SELECT 1 AS found FROM ticket_history \
         WHERE ticket_id = $1 AND kind = 'sold' AND order_id = $2",
    )
    .bind(ticket_id.to_string())
    .bind(order_id.to_string())
    .fetch_optional(conn)
    .await?;
    Ok(row.is_some())
}

/// The tickets `owner` bought or was sent, whatever they have done with them since (but sold or
/// sent on), last acquired first, from just after the page's cursor, each with the most it may
/// be listed for again under `cap`.
pub async fn owned_tickets(
    pool: &AnyPool,
    owner: Uuid,
    page: &Page,
    cap: ResaleCap,
) -> Result<Vec<OwnedTicket>, sqlx::Error> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        ", acquired_at, CASE WHEN order_id IS NULL THEN 'listed' WHEN ",
        kept!(),
        " THEN 'kept' ELSE 'held' END AS standing, \
         (SELECT h.price_cents FROM ticket_history h \
         WHERE h.ticket_id = tickets.id AND h.kind = 'sold' ORDER BY h.at DESC, h.id DESC LIMIT 1) \
         AS paid_cents FROM tickets WHERE user_id = $1 AND bought_with IS NOT NULL \
         AND (acquired_at, id) < ($2, $3) ORDER BY acquired_at DESC, id DESC LIMIT $4 OFFSET $5"
    ))
    .bind(owner.to_string())
    .bind(page.after.key())
    .bind(page.after.id_text())
    .bind(page.rows_to_read())
    .bind(i64::from(page.offset))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let standing: String = row.try_get("standing")?;
            Ok(OwnedTicket {
                ticket: ticket_from_row(row)?,
                acquired_at: from_millis(row.try_get("acquired_at")?),
                status: match standing.as_str() {
                    "listed" => "listed",
                    "kept" => "kept",
                    _ => "held",
                },
                max_resale_price: cap.highest(cents_column(row, "paid_cents")?),
            })
        })
        .collect()
}

/// Keeps an account as auth announced it (once; a second announcement changes nothing).
pub async fn remember_user(
    conn: &mut AnyConnection,
    id: Uuid,
    email: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO users (id, email) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(id.to_string())
        .bind(email)
        .execute(conn)
        .await?;
    Ok(())
}

/// The account with this (normalised) e-mail, if auth has announced it.
pub async fn user_by_email(
    conn: &mut AnyConnection,
    email: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query("SELECT id FROM users WHERE email = $1")
        .bind(email)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(|row| uuid_column(row, "id"))
        .transpose()
}

/// Records what the sale of `ticket` (as its order held it: the seller, and the title and price
/// the buyer paid) through `order_id` owes its seller, less `fee_cents`.
pub async fn record_payout(
    conn: &mut AnyConnection,
    ticket: &Ticket,
    order_id: Uuid,
    fee_cents: i64,
    sold_at: time::OffsetDateTime,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO payouts (order_id, ticket_id, seller_id, title, price_cents, fee_cents, \
         owed_cents, sold_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(order_id.to_string())
    .bind(ticket.id.to_string())
    .bind(ticket.user_id.to_string())
    .bind(&ticket.title)
    .bind(ticket.price.get())
    .bind(fee_cents)
    .bind(ticket.price.get() - fee_cents)
    .bind(millis(sold_at))
    .execute(conn)
    .await?;
    Ok(())
}

/// What `seller` sold, last sold first, from just after the page's cursor.
pub async fn sales(pool: &AnyPool, seller: Uuid, page: &Page) -> Result<Vec<Sale>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT order_id, ticket_id, title, price_cents, fee_cents, owed_cents, sold_at, status \
         FROM payouts WHERE seller_id = $1 AND (sold_at, order_id) < ($2, $3) \
         ORDER BY sold_at DESC, order_id DESC LIMIT $4 OFFSET $5",
    )
    .bind(seller.to_string())
    .bind(page.after.key())
    .bind(page.after.id_text())
    .bind(page.rows_to_read())
    .bind(i64::from(page.offset))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Sale {
                order_id: uuid_column(row, "order_id")?,
                ticket_id: uuid_column(row, "ticket_id")?,
                title: row.try_get("title")?,
                price: cents_column(row, "price_cents")?,
                fee: row.try_get("fee_cents")?,
                owed: row.try_get("owed_cents")?,
                sold_at: from_millis(row.try_get("sold_at")?),
                payout: row.try_get("status")?,
            })
        })
        .collect()
}

/// The last sale of a ticket, if it was ever sold.
pub async fn last_sale(
    conn: &mut AnyConnection,
    ticket_id: Uuid,
) -> Result<Option<LastSale>, sqlx::Error> {
    sqlx::query(
        "SELECT price_cents, order_id FROM ticket_history \
         WHERE ticket_id = $1 AND kind = 'sold' ORDER BY at DESC, id DESC LIMIT 1",
    )
    .bind(ticket_id.to_string())
    .fetch_optional(conn)
    .await?
    .map(|row| {
        Ok(LastSale {
            price: cents_column(&row, "price_cents")?,
            order_id: uuid_column(&row, "order_id")?,
        })
    })
    .transpose()
}

/// Lists a ticket `owner` keeps (bought, neither listed again nor held) for sale again at
/// `price`, as a new listing, in one statement: a send racing it is never overwritten. `None`
/// when no row matched; the caller finds out why.
pub async fn list_again(
    conn: &mut AnyConnection,
    id: Uuid,
    owner: Uuid,
    price: Cents,
) -> Result<Option<Ticket>, sqlx::Error> {
    sqlx::query(concat!(
        "UPDATE tickets SET order_id = NULL, price_cents = $3, listing = listing + 1, \
         version = version + 1 WHERE id = $1 AND user_id = $2 AND ",
        kept!(),
        " RETURNING ",
        columns!(),
    ))
    .bind(id.to_string())
    .bind(owner.to_string())
    .bind(price.get())
    .fetch_optional(conn)
    .await?
    .as_ref()
    .map(ticket_from_row)
    .transpose()
}

/// A ticket's changes of hands, oldest first.
pub async fn history<'c, E>(executor: E, ticket_id: Uuid) -> Result<Vec<HistoryView>, sqlx::Error>
where
    E: Executor<'c, Database = Any>,
{
    let rows = sqlx::query(
        "SELECT kind, price_cents, at FROM ticket_history WHERE ticket_id = $1 ORDER BY at, id",
    )
    .bind(ticket_id.to_string())
    .fetch_all(executor)
    .await?;
    rows.iter()
        .map(|row| {
            let kind: String = row.try_get("kind")?;
            let kind = Handover::parse(&kind)
                .ok_or_else(|| decode_error("kind", format!("unknown change of hands {kind:?}")))?;
            let price: Option<i64> = row.try_get("price_cents")?;
            Ok(HistoryView {
                kind: kind.as_str(),
                price: price
                    .map(Cents::new)
                    .transpose()
                    .map_err(|err| decode_error("price_cents", err))?,
                at: from_millis(row.try_get("at")?),
            })
        })
        .collect()
}
