//! The marketplace's promises, checked in every service's own database once the traffic has
//! stopped and the events have settled.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Row};

/// How long past its expiry an unpaid order may still be live: the scheduler's poll plus the
/// events' way to orders.
const EXPIRY_GRACE_MS: i64 = 10_000;

/// Waits up to `within` for every invariant to hold, and panics naming those that do not.
pub(crate) async fn assert_settled(
    databases: &BTreeMap<String, String>,
    paid: &[String],
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        let found = violations(databases, paid).await;
        if found.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{} invariant violations after {within:?}:\n{}",
                found.len(),
                found.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn pool(databases: &BTreeMap<String, String>, service: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(1)
        .connect(&databases[service])
        .await
        .unwrap()
}

struct Order {
    ticket_id: String,
    status: String,
    version: i64,
    expires_at: i64,
}

impl Order {
    fn live(&self) -> bool {
        self.status != "cancelled"
    }
}

/// Every broken promise, in words; empty when all hold.
pub(crate) async fn violations(
    databases: &BTreeMap<String, String>,
    paid: &[String],
) -> Vec<String> {
    let tickets_db = pool(databases, "tickets").await;
    let orders_db = pool(databases, "orders").await;
    let payments_db = pool(databases, "payments").await;
    let expiration_db = pool(databases, "expiration").await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let mut found = Vec::new();

    let orders: HashMap<String, Order> =
        sqlx::query("SELECT id, ticket_id, status, version, expires_at FROM orders")
            .fetch_all(&orders_db)
            .await
            .unwrap()
            .into_iter()
            .map(|row| {
                (
                    row.get("id"),
                    Order {
                        ticket_id: row.get("ticket_id"),
                        status: row.get("status"),
                        version: row.get("version"),
                        expires_at: row.get("expires_at"),
                    },
                )
            })
            .collect();
    let tickets: HashMap<String, (i64, Option<String>)> =
        sqlx::query("SELECT id, version, order_id FROM tickets")
            .fetch_all(&tickets_db)
            .await
            .unwrap()
            .into_iter()
            .map(|row| (row.get("id"), (row.get("version"), row.get("order_id"))))
            .collect();

    // No ticket sold twice: at most one live order per ticket.
    let mut live_by_ticket: HashMap<&str, Vec<&str>> = HashMap::new();
    for (id, order) in orders.iter().filter(|(_, order)| order.live()) {
        live_by_ticket.entry(&order.ticket_id).or_default().push(id);
    }
    for (ticket, live) in &live_by_ticket {
        if live.len() > 1 {
            found.push(format!(
                "ticket {ticket} has {} live orders: {live:?}",
                live.len()
            ));
        }
    }

    // Every expired order cancelled.
    for (id, order) in &orders {
        if matches!(order.status.as_str(), "created" | "awaiting:payment")
            && order.expires_at < now - EXPIRY_GRACE_MS
        {
            found.push(format!(
                "order {id} expired {} ms ago but is {}",
                now - order.expires_at,
                order.status
            ));
        }
    }

    // Reserved tickets are exactly the tickets of live orders.
    for (ticket_id, (_, holder)) in &tickets {
        let live = live_by_ticket
            .get(ticket_id.as_str())
            .and_then(|ids| ids.first());
        if holder.as_deref() != live.copied() {
            found.push(format!(
                "ticket {ticket_id} is held by {holder:?} but its live order is {live:?}"
            ));
        }
    }

    // The orders service's replica of tickets caught up with every ticket version.
    let replica: HashMap<String, i64> = sqlx::query("SELECT id, version FROM tickets")
        .fetch_all(&orders_db)
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.get("id"), row.get("version")))
        .collect();
    for (id, (version, _)) in &tickets {
        if replica.get(id) != Some(version) {
            found.push(format!(
                "orders' replica of ticket {id} is at {:?}, the ticket at {version}",
                replica.get(id)
            ));
        }
    }

    // The payments service's replica of orders caught up with every order's status and version.
    let replica: HashMap<String, (String, i64)> =
        sqlx::query("SELECT id, status, version FROM orders")
            .fetch_all(&payments_db)
            .await
            .unwrap()
            .into_iter()
            .map(|row| (row.get("id"), (row.get("status"), row.get("version"))))
            .collect();
    for (id, order) in &orders {
        let expected = (order.status.clone(), order.version);
        if replica.get(id) != Some(&expected) {
            found.push(format!(
                "payments' replica of order {id} is {:?}, the order {expected:?}",
                replica.get(id)
            ));
        }
    }

    // Every paid order complete; every complete order paid; no charge kept without a complete
    // order.
    let complete: HashSet<&str> = orders
        .iter()
        .filter(|(_, order)| order.status == "complete")
        .map(|(id, _)| id.as_str())
        .collect();
    // Payments charges only an order orders granted it, and orders neither cancels nor lets
    // lapse an order granted to a payment: a 201 always ends in a complete order, and nothing is
    // ever refunded for want of one.
    for id in paid {
        if !complete.contains(id.as_str()) {
            found.push(format!(
                "order {id} was paid (201) but is {:?}",
                orders.get(id).map(|o| &o.status)
            ));
        }
    }
    for id in refunded_orders(&payments_db).await {
        found.push(format!("the payment of order {id} was refunded"));
    }
    let succeeded: Vec<String> =
        sqlx::query_scalar("SELECT order_id FROM payments WHERE status = 'succeeded'")
            .fetch_all(&payments_db)
            .await
            .unwrap();
    for id in &succeeded {
        if !complete.contains(id.as_str()) {
            found.push(format!(
                "payment for order {id} succeeded but the order is not complete"
            ));
        }
    }
    // Every charge that went through and was not given back.
    let kept_charges: Vec<String> = sqlx::query_scalar(
        "SELECT order_id FROM sandbox_charges WHERE status = 'succeeded' AND refund_id IS NULL",
    )
    .fetch_all(&payments_db)
    .await
    .unwrap();
    let mut charged = HashSet::new();
    for id in &kept_charges {
        if !charged.insert(id.as_str()) {
            found.push(format!("order {id} was charged more than once"));
        }
        if !complete.contains(id.as_str()) {
            found.push(format!(
                "a charge for order {id} is kept but the order is not complete"
            ));
        }
    }
    for id in &complete {
        if !charged.contains(id) {
            found.push(format!("order {id} is complete without a charge"));
        }
    }

    // Nothing left to publish, and no expiry job forgotten.
    for (service, db) in [
        ("tickets", &tickets_db),
        ("orders", &orders_db),
        ("payments", &payments_db),
        ("expiration", &expiration_db),
    ] {
        let backlog: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(db)
            .await
            .unwrap();
        if backlog > 0 {
            found.push(format!("{service} has {backlog} events not yet published"));
        }
    }
    let overdue: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE due_at < $1")
        .bind(now - EXPIRY_GRACE_MS)
        .fetch_one(&expiration_db)
        .await
        .unwrap();
    if overdue > 0 {
        found.push(format!("{overdue} expiry jobs are overdue"));
    }
    found
}

async fn refunded_orders(payments_db: &PgPool) -> HashSet<String> {
    sqlx::query_scalar("SELECT order_id FROM payments WHERE status = 'refunded'")
        .fetch_all(payments_db)
        .await
        .unwrap()
        .into_iter()
        .collect()
}
