//! The payments service's SQL, and the only place it lives: the order replica, payments, refunds,
//! processed webhook events and the sandbox processor's books. One set of statements with `$1`
//! placeholders serves SQLite and PostgreSQL; row locks are chosen by [`Dialect`]. Ids are UUID
//! text, amounts integer cents, times unix milliseconds.

use common::clock::{from_millis, millis};
use common::events::OrderStatus;
use common::store::{Dialect, cents_column, decode_error, parse_uuid, uuid_column};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, AnyPool, Executor, Row};
use uuid::Uuid;

use crate::domain::{Currency, Order, Payment, PaymentStatus};

/// The columns an [`Order`] is read from.
macro_rules! order_columns {
    () => {
        "id, user_id, status, price_cents, expires_at, version, declined_attempts"
    };
}

/// The columns a [`Payment`] is read from.
macro_rules! payment_columns {
    () => {
        "id, order_id, status, stripe_id, amount_cents, currency, attempt, granted_at, \
         created_at, updated_at"
    };
}

/// Adds an order to the replica as order:created announced it; nothing if it is there already
/// (the same order announced twice). Returns whether it was added.
pub(crate) async fn insert_order(
    conn: &mut AnyConnection,
    order: &Order,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO orders (id, user_id, status, price_cents, expires_at, version, \
         declined_attempts) VALUES ($1, $2, $3, $4, $5, $6, 0) ON CONFLICT (id) DO NOTHING",
    )
    .bind(order.id.to_string())
    .bind(order.user_id.to_string())
    .bind(order.status.as_str())
    .bind(order.price.get())
    .bind(millis(order.expires_at))
    .bind(order.version)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// One order of the replica, read from the pool or inside a transaction.
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

/// One order, locked until the end of the transaction. Whatever decides on an order's status
/// together with its payment (claiming, settling a charge, applying a cancellation) takes this
/// lock first, so those decisions take turns. On SQLite the write transaction (`BEGIN
/// IMMEDIATE`) already keeps every other writer out; PostgreSQL needs the row lock.
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

/// Moves an order of the replica to a new status and version.
pub(crate) async fn set_order_status(
    conn: &mut AnyConnection,
    id: Uuid,
    status: OrderStatus,
    version: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE orders SET status = $2, version = $3 WHERE id = $1")
        .bind(id.to_string())
        .bind(status.as_str())
        .bind(version)
        .execute(conn)
        .await?;
    Ok(())
}

/// Counts a declined (or refused) attempt, so the next one gets a fresh idempotency key.
pub(crate) async fn count_declined_attempt(
    conn: &mut AnyConnection,
    order_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE orders SET declined_attempts = declined_attempts + 1 WHERE id = $1")
        .bind(order_id.to_string())
        .execute(conn)
        .await?;
    Ok(())
}

/// The payment of an order, whatever its status.
pub(crate) async fn payment_for_order(
    conn: &mut AnyConnection,
    order_id: Uuid,
) -> Result<Option<Payment>, sqlx::Error> {
    sqlx::query(concat!(
        "SELECT ",
        payment_columns!(),
        " FROM payments WHERE order_id = $1"
    ))
    .bind(order_id.to_string())
    .fetch_optional(conn)
    .await?
    .as_ref()
    .map(payment_from_row)
    .transpose()
}

/// One payment by id.
pub(crate) async fn find_payment<'c, E>(
    executor: E,
    id: Uuid,
) -> Result<Option<Payment>, sqlx::Error>
where
    E: Executor<'c, Database = Any>,
{
    sqlx::query(concat!(
        "SELECT ",
        payment_columns!(),
        " FROM payments WHERE id = $1"
    ))
    .bind(id.to_string())
    .fetch_optional(executor)
    .await?
    .as_ref()
    .map(payment_from_row)
    .transpose()
}

/// One payment by the processor's id of its charge.
pub(crate) async fn payment_by_stripe_id(
    conn: &mut AnyConnection,
    stripe_id: &str,
) -> Result<Option<Payment>, sqlx::Error> {
    sqlx::query(concat!(
        "SELECT ",
        payment_columns!(),
        " FROM payments WHERE stripe_id = $1"
    ))
    .bind(stripe_id)
    .fetch_optional(conn)
    .await?
    .as_ref()
    .map(payment_from_row)
    .transpose()
}

/// Inserts a claim (a pending payment). Fails with a unique violation if the order already has
/// a payment: the database, not a read before it, keeps one payment per order.
pub(crate) async fn insert_claim(
    conn: &mut AnyConnection,
    payment: &Payment,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO payments (id, order_id, status, stripe_id, amount_cents, currency, attempt, \
         created_at, updated_at) VALUES ($1, $2, $3, NULL, $4, $5, $6, $7, $8)",
    )
    .bind(payment.id.to_string())
    .bind(payment.order_id.to_string())
    .bind(PaymentStatus::Pending.as_str())
    .bind(payment.amount.get())
    .bind(payment.currency.as_str())
    .bind(payment.attempt)
    .bind(payment.created_at)
    .bind(payment.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Notes that orders granted the order to a pending claim, renewing the claim, so that the
/// reconciler's timeout counts from the grant. `false` when the claim is gone (withdrawn,
/// released) or settled: it will charge nothing.
pub(crate) async fn grant_claim(
    conn: &mut AnyConnection,
    id: Uuid,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    // COALESCE: a grant heard twice keeps the first time, and still finds the claim.
    let updated = sqlx::query(
        "UPDATE payments SET granted_at = COALESCE(granted_at, $2), updated_at = $2 \
         WHERE id = $1 AND status = 'pending'",
    )
    .bind(id.to_string())
    .bind(now_ms)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(updated == 1)
}

/// Deletes a claim not granted yet, so that it never charges. `false` when it was granted
/// meanwhile (or is gone already).
pub(crate) async fn withdraw_claim(
    conn: &mut AnyConnection,
    id: Uuid,
) -> Result<bool, sqlx::Error> {
    let deleted = sqlx::query(
        "DELETE FROM payments WHERE id = $1 AND status = 'pending' AND granted_at IS NULL",
    )
    .bind(id.to_string())
    .execute(conn)
    .await?
    .rows_affected();
    Ok(deleted == 1)
}

/// Deletes the claims of an order that orders will never grant (it is cancelled or paid), so
/// that a request waiting for the grant learns it at once. Returns how many there were.
pub(crate) async fn withdraw_claims_of(
    conn: &mut AnyConnection,
    order_id: Uuid,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM payments WHERE order_id = $1 AND status = 'pending' AND granted_at IS NULL",
    )
    .bind(order_id.to_string())
    .execute(conn)
    .await?
    .rows_affected())
}

/// Deletes a claim whose charge did not happen, so the buyer may try again.
pub(crate) async fn release_claim(conn: &mut AnyConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    let deleted = sqlx::query("DELETE FROM payments WHERE id = $1 AND status = 'pending'")
        .bind(id.to_string())
        .execute(conn)
        .await?
        .rows_affected();
    Ok(deleted == 1)
}

/// Records the id of a claim's intent, before it is confirmed. `false` when the claim is no
/// longer pending without one (the reconciler released it meanwhile): then the intent must not
/// be confirmed.
pub(crate) async fn record_intent(
    conn: &mut AnyConnection,
    id: Uuid,
    intent_id: &str,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE payments SET stripe_id = $2, updated_at = $3 \
         WHERE id = $1 AND status = 'pending' AND stripe_id IS NULL",
    )
    .bind(id.to_string())
    .bind(intent_id)
    .bind(now_ms)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(updated == 1)
}

/// Claims pending since before `stale_before_ms`, oldest first: the reconciler's work.
pub(crate) async fn stale_claims(
    pool: &AnyPool,
    stale_before_ms: i64,
    limit: i64,
) -> Result<Vec<Payment>, sqlx::Error> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        payment_columns!(),
        " FROM payments WHERE status = 'pending' AND updated_at < $1 ORDER BY updated_at LIMIT $2"
    ))
    .bind(stale_before_ms)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(payment_from_row).collect()
}

/// Deletes a claim the reconciler found could not have charged, only if it is still as the
/// reconciler saw it (`seen`): pending, with the same intent or none, not renewed since.
pub(crate) async fn release_stale_claim(
    conn: &mut AnyConnection,
    seen: &Payment,
) -> Result<bool, sqlx::Error> {
    let deleted = sqlx::query(
        "DELETE FROM payments WHERE id = $1 AND status = 'pending' AND updated_at = $2 \
         AND COALESCE(stripe_id, '') = $3",
    )
    .bind(seen.id.to_string())
    .bind(seen.updated_at)
    .bind(seen.stripe_id.as_deref().unwrap_or_default())
    .execute(conn)
    .await?
    .rows_affected();
    Ok(deleted == 1)
}

/// Puts off a pending claim's next look by the reconciler (its charge is still processing).
pub(crate) async fn touch_claim(
    conn: &mut AnyConnection,
    id: Uuid,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE payments SET updated_at = $2 WHERE id = $1 AND status = 'pending'")
        .bind(id.to_string())
        .bind(now_ms)
        .execute(conn)
        .await?;
    Ok(())
}

/// Settles a pending payment as charged: `succeeded`, or `refund_due` when its order was
/// cancelled meanwhile. `None` when it was not pending (settled already, by a webhook or the
/// request).
pub(crate) async fn settle(
    conn: &mut AnyConnection,
    id: Uuid,
    stripe_id: &str,
    status: PaymentStatus,
    now_ms: i64,
) -> Result<Option<Payment>, sqlx::Error> {
    sqlx::query(concat!(
        "UPDATE payments SET status = $3, stripe_id = $2, updated_at = $4 \
         WHERE id = $1 AND status = 'pending' RETURNING ",
        payment_columns!()
    ))
    .bind(id.to_string())
    .bind(stripe_id)
    .bind(status.as_str())
    .bind(now_ms)
    .fetch_optional(conn)
    .await?
    .as_ref()
    .map(payment_from_row)
    .transpose()
}

/// Marks the succeeded payment of a just-cancelled order as owing a refund. Returns whether
/// there was one.
pub(crate) async fn mark_refund_due(
    conn: &mut AnyConnection,
    order_id: Uuid,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE payments SET status = 'refund_due', updated_at = $2 \
         WHERE order_id = $1 AND status = 'succeeded'",
    )
    .bind(order_id.to_string())
    .bind(now_ms)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(updated > 0)
}

/// Payments owing a refund, and refunds in flight for longer than they should be, oldest first.
pub(crate) async fn refunds_to_make(
    pool: &AnyPool,
    stale_before_ms: i64,
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM payments WHERE status = 'refund_due' \
         OR (status = 'refunding' AND updated_at < $1) ORDER BY updated_at LIMIT $2",
    )
    .bind(stale_before_ms)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    ids.iter().map(|raw| parse_uuid("id", raw)).collect()
}

/// Claims a payment's refund for one refunder: `refund_due` (or a stale `refunding`) becomes
/// `refunding`. `None` when another refunder has it or nothing is owed.
pub(crate) async fn claim_refund(
    conn: &mut AnyConnection,
    id: Uuid,
    now_ms: i64,
    stale_before_ms: i64,
) -> Result<Option<Payment>, sqlx::Error> {
    sqlx::query(concat!(
        "UPDATE payments SET status = 'refunding', updated_at = $2 WHERE id = $1 \
         AND (status = 'refund_due' OR (status = 'refunding' AND updated_at < $3)) RETURNING ",
        payment_columns!()
    ))
    .bind(id.to_string())
    .bind(now_ms)
    .bind(stale_before_ms)
    .fetch_optional(conn)
    .await?
    .as_ref()
    .map(payment_from_row)
    .transpose()
}

/// Gives a refund that failed back to the refunder's queue.
pub(crate) async fn release_refund(
    conn: &mut AnyConnection,
    id: Uuid,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE payments SET status = 'refund_due', updated_at = $2 \
         WHERE id = $1 AND status = 'refunding'",
    )
    .bind(id.to_string())
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// A refund as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RefundRecord {
    pub payment_id: Uuid,
    pub stripe_refund_id: String,
    pub amount_cents: i64,
    /// `order_cancelled` (ours) or `processor` (seen in a webhook).
    pub reason: &'static str,
}

/// Records a refund once; the processor's refund id is unique. Returns whether it was new.
pub(crate) async fn record_refund(
    conn: &mut AnyConnection,
    refund: &RefundRecord,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO refunds (id, payment_id, stripe_refund_id, amount_cents, reason, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (stripe_refund_id) DO NOTHING",
    )
    .bind(Uuid::now_v7().to_string())
    .bind(refund.payment_id.to_string())
    .bind(&refund.stripe_refund_id)
    .bind(refund.amount_cents)
    .bind(refund.reason)
    .bind(now_ms)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// How much of a payment the recorded refunds give back, in cents.
pub(crate) async fn refunded_cents(
    conn: &mut AnyConnection,
    payment_id: Uuid,
) -> Result<i64, sqlx::Error> {
    // PostgreSQL sums BIGINT into NUMERIC, which the Any driver cannot carry: cast it back.
    sqlx::query_scalar(
        "SELECT COALESCE(CAST(SUM(amount_cents) AS BIGINT), 0) FROM refunds WHERE payment_id = $1",
    )
    .bind(payment_id.to_string())
    .fetch_one(conn)
    .await
}

/// Marks a charged payment refunded, whichever way it got there.
pub(crate) async fn mark_refunded(
    conn: &mut AnyConnection,
    id: Uuid,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE payments SET status = 'refunded', updated_at = $2 \
         WHERE id = $1 AND status IN ('succeeded', 'refund_due', 'refunding')",
    )
    .bind(id.to_string())
    .bind(now_ms)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(updated == 1)
}

/// Records a webhook event's id; `false` when it was processed before.
pub(crate) async fn record_webhook_event(
    conn: &mut AnyConnection,
    id: &str,
    event_type: &str,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO webhook_events (id, event_type, received_at) VALUES ($1, $2, $3) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(event_type)
    .bind(now_ms)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// A charge in the sandbox processor's books: an intent, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SandboxCharge {
    pub id: String,
    pub idempotency_key: String,
    pub amount_cents: i64,
    pub currency: String,
    pub token: String,
    pub order_id: Uuid,
    /// Stripe's names: `requires_confirmation`, `succeeded`, `requires_payment_method`,
    /// `canceled`.
    pub status: String,
}

/// Creates a sandbox intent, unconfirmed, or returns the one already created under the same
/// idempotency key.
pub(crate) async fn sandbox_prepare(
    pool: &AnyPool,
    charge: &SandboxCharge,
    now_ms: i64,
) -> Result<SandboxCharge, sqlx::Error> {
    sqlx::query(
        "INSERT INTO sandbox_charges (id, idempotency_key, amount_cents, currency, token, \
         order_id, created_at, status) VALUES ($1, $2, $3, $4, $5, $6, $7, 'requires_confirmation') \
         ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(&charge.id)
    .bind(&charge.idempotency_key)
    .bind(charge.amount_cents)
    .bind(&charge.currency)
    .bind(&charge.token)
    .bind(charge.order_id.to_string())
    .bind(now_ms)
    .execute(pool)
    .await?;
    let row = sqlx::query(
        "SELECT id, idempotency_key, amount_cents, currency, token, order_id, status \
         FROM sandbox_charges WHERE idempotency_key = $1",
    )
    .bind(&charge.idempotency_key)
    .fetch_one(pool)
    .await?;
    Ok(SandboxCharge {
        id: row.try_get("id")?,
        idempotency_key: row.try_get("idempotency_key")?,
        amount_cents: row.try_get("amount_cents")?,
        currency: row.try_get("currency")?,
        token: row.try_get("token")?,
        order_id: uuid_column(&row, "order_id")?,
        status: row.try_get("status")?,
    })
}

/// The token and status of a sandbox intent; `None` when there is no such intent.
pub(crate) async fn sandbox_intent(
    pool: &AnyPool,
    id: &str,
) -> Result<Option<(String, String)>, sqlx::Error> {
    let row = sqlx::query("SELECT token, status FROM sandbox_charges WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.map(|row| Ok((row.try_get("token")?, row.try_get("status")?)))
        .transpose()
}

/// The id of the sandbox intent made under an idempotency key, if any.
pub(crate) async fn sandbox_intent_by_key(
    pool: &AnyPool,
    idempotency_key: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM sandbox_charges WHERE idempotency_key = $1")
        .bind(idempotency_key)
        .fetch_optional(pool)
        .await
}

/// Moves a sandbox intent that is still unconfirmed to `status` (confirmed one way or the other,
/// or cancelled), in one conditional statement, so that a confirmation and a cancellation racing
/// each other end one way. Returns the status it is in afterwards; `None` when there is no such
/// intent.
pub(crate) async fn sandbox_settle_intent(
    pool: &AnyPool,
    id: &str,
    status: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query(
        "UPDATE sandbox_charges SET status = $2 WHERE id = $1 AND status = 'requires_confirmation'",
    )
    .bind(id)
    .bind(status)
    .execute(pool)
    .await?;
    sqlx::query_scalar("SELECT status FROM sandbox_charges WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Refunds a sandbox charge in full, once: a second refund of the same charge returns the first
/// refund's id. `None` when there is no such charge, or when it never went through.
pub(crate) async fn sandbox_refund(
    pool: &AnyPool,
    charge_id: &str,
    new_refund_id: &str,
    now_ms: i64,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query(
        "UPDATE sandbox_charges SET refund_id = $2, refunded_at = $3 \
         WHERE id = $1 AND refund_id IS NULL AND status = 'succeeded'",
    )
    .bind(charge_id)
    .bind(new_refund_id)
    .bind(now_ms)
    .execute(pool)
    .await?;
    let refund_id: Option<Option<String>> = sqlx::query_scalar(
        "SELECT refund_id FROM sandbox_charges WHERE id = $1 AND status = 'succeeded'",
    )
    .bind(charge_id)
    .fetch_optional(pool)
    .await?;
    Ok(refund_id.flatten())
}

fn order_from_row(row: &AnyRow) -> Result<Order, sqlx::Error> {
    let status: String = row.try_get("status")?;
    Ok(Order {
        id: uuid_column(row, "id")?,
        user_id: uuid_column(row, "user_id")?,
        status: OrderStatus::parse(&status)
            .ok_or_else(|| decode_error("status", format!("unknown order status {status}")))?,
        price: cents_column(row, "price_cents")?,
        expires_at: from_millis(row.try_get("expires_at")?),
        version: row.try_get("version")?,
        declined_attempts: row.try_get("declined_attempts")?,
    })
}

fn payment_from_row(row: &AnyRow) -> Result<Payment, sqlx::Error> {
    let status: String = row.try_get("status")?;
    Ok(Payment {
        id: uuid_column(row, "id")?,
        order_id: uuid_column(row, "order_id")?,
        status: PaymentStatus::parse(&status)
            .ok_or_else(|| decode_error("status", format!("unknown payment status {status}")))?,
        stripe_id: row.try_get("stripe_id")?,
        amount: cents_column(row, "amount_cents")?,
        currency: currency_column(row)?,
        attempt: row.try_get("attempt")?,
        granted_at: row.try_get("granted_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn currency_column(row: &AnyRow) -> Result<Currency, sqlx::Error> {
    let code: String = row.try_get("currency")?;
    Currency::parse(&code).map_err(|why| decode_error("currency", why))
}
