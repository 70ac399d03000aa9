//! Requests that cross, at random: buyers order, pay (now and then with a card that is declined)
//! and cancel, sellers list and edit their prices, all at once on a handful of tickets, through
//! the local cluster, while short payment windows lapse. At the end every answer agrees with
//! where its order ended, and the money agrees with the orders: each complete order was charged
//! once, its snapshot price; nothing else was charged or refunded; no order was paid and
//! cancelled.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::Marketplace;
use crate::support::invariants::assert_settled;
use rand::Rng;
use rand::seq::IndexedRandom;
use serde_json::{Value, json};
use sqlx::Row;
use tokio::time::{Instant, sleep};

/// Short, so that orders lapse while others are paid and cancelled.
const WINDOW: &str = "3s";
const SELLERS: usize = 2;
const BUYERS: usize = 6;
const RUN: Duration = Duration::from_secs(10);

/// What the API answered about one order.
#[derive(Debug, Default, Clone)]
struct Answers {
    /// The price the order was placed at, in cents, as its 201 said.
    price_cents: i64,
    payments: Vec<u16>,
    cancellations: Vec<u16>,
}

type Ledger = Arc<Mutex<BTreeMap<String, Answers>>>;

fn email(who: &str) -> String {
    format!("{who}-{}@example.com", uuid::Uuid::new_v4().simple())
}

fn cents(price: &Value) -> i64 {
    (price.as_f64().unwrap() * 100.0).round() as i64
}

testkit::distributed_test! {
    async fn orders_edits_payments_and_cancellations_at_random_end_consistently() {
        let market = Arc::new(Marketplace::distributed(WINDOW).await);
        let tickets: Arc<Mutex<Vec<String>>> = Arc::default();
        let ledger: Ledger = Arc::default();
        let deadline = Instant::now() + RUN;

        let mut tasks = Vec::new();
        for seller in 0..SELLERS {
            let (market, tickets) = (market.clone(), tickets.clone());
            tasks.push(tokio::spawn(async move {
                let user = market.user();
                user.sign_up(&email(&format!("seller{seller}"))).await;
                let mut own: Vec<String> = Vec::new();
                while Instant::now() < deadline {
                    let price = rand::rng().random_range(5..50);
                    if own.len() < 3 || rand::rng().random_bool(0.2) {
                        let (status, ticket) = user
                            .post("/api/tickets", json!({"title": "Concert", "price": price}))
                            .await;
                        assert_eq!(status, 201, "{ticket}");
                        let id = ticket["id"].as_str().unwrap().to_owned();
                        tickets.lock().unwrap().push(id.clone());
                        own.push(id);
                    } else {
                        let id = own.choose(&mut rand::rng()).unwrap().clone();
                        let (status, body) = user
                            .put(
                                &format!("/api/tickets/{id}"),
                                json!({"title": "Concert", "price": price}),
                            )
                            .await;
                        // Refused once the ticket is reserved; once sold, it is its buyer's.
                        assert!(matches!(status, 200 | 400 | 401), "{status} {body}");
                    }
                    let pause = rand::rng().random_range(20..120);
                    sleep(Duration::from_millis(pause)).await;
                }
            }));
        }
        for buyer in 0..BUYERS {
            let (market, tickets, ledger) = (market.clone(), tickets.clone(), ledger.clone());
            tasks.push(tokio::spawn(async move {
                let user = market.user();
                user.sign_up(&email(&format!("buyer{buyer}"))).await;
                let mut own: Vec<String> = Vec::new();
                while Instant::now() < deadline {
                    let roll = rand::rng().random_range(0..100);
                    let ticket = tickets.lock().unwrap().choose(&mut rand::rng()).cloned();
                    let order = own.choose(&mut rand::rng()).cloned();
                    match (roll, ticket, order) {
                        (0..50, Some(ticket), _) => {
                            let (status, order) =
                                user.post("/api/orders", json!({"ticketId": ticket})).await;
                            // Taken, or past one of the hold limits.
                            assert!(matches!(status, 201 | 400 | 429), "{status} {order}");
                            if status == 201 {
                                let id = order["id"].as_str().unwrap().to_owned();
                                ledger.lock().unwrap().insert(
                                    id.clone(),
                                    Answers {
                                        price_cents: cents(&order["ticket"]["price"]),
                                        ..Answers::default()
                                    },
                                );
                                own.push(id);
                            }
                        }
                        (50..80, _, Some(order)) => {
                            let token = if rand::rng().random_bool(0.2) {
                                "tok_chargeDeclined"
                            } else {
                                "tok_visa"
                            };
                            let (status, body) = user
                                .post("/api/payments", json!({"orderId": order, "token": token}))
                                .await;
                            assert!(
                                matches!(status, 201 | 400 | 402 | 503),
                                "{status} {body}"
                            );
                            ledger.lock().unwrap().get_mut(&order).unwrap().payments.push(status);
                        }
                        (80.., _, Some(order)) => {
                            let (status, body) = user.delete(&format!("/api/orders/{order}")).await;
                            assert!(status == 204 || status == 400, "{status} {body}");
                            ledger
                                .lock()
                                .unwrap()
                                .get_mut(&order)
                                .unwrap()
                                .cancellations
                                .push(status);
                        }
                        _ => {}
                    }
                    let pause = rand::rng().random_range(0..60);
                    sleep(Duration::from_millis(pause)).await;
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }

        let ledger = ledger.lock().unwrap().clone();
        let paid: Vec<String> = ledger
            .iter()
            .filter(|(_, answers)| answers.payments.contains(&201))
            .map(|(id, _)| id.clone())
            .collect();
        let databases = market.database_urls();
        let orders_db = sqlx::PgPool::connect(&databases["orders"]).await.unwrap();
        // Every order ends: paid, cancelled, or lapsed once its window passed.
        testkit::eventually("every order to end", || async {
            let live: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM orders WHERE status NOT IN ('complete', 'cancelled')",
            )
            .fetch_one(&orders_db)
            .await
            .unwrap();
            (live == 0).then_some(())
        })
        .await;
        assert_settled(databases, &paid, Duration::from_secs(60)).await;

        let ends: HashMap<String, (String, i64)> =
            sqlx::query("SELECT id, status, price_cents FROM orders")
                .fetch_all(&orders_db)
                .await
                .unwrap()
                .into_iter()
                .map(|row| (row.get("id"), (row.get("status"), row.get("price_cents"))))
                .collect();
        let payments_db = sqlx::PgPool::connect(&databases["payments"]).await.unwrap();
        let mut charges: HashMap<String, Vec<(i64, Option<String>)>> = HashMap::new();
        for row in sqlx::query(
            "SELECT order_id, amount_cents, refund_id FROM sandbox_charges \
             WHERE status = 'succeeded'",
        )
        .fetch_all(&payments_db)
        .await
        .unwrap()
        {
            charges
                .entry(row.get("order_id"))
                .or_default()
                .push((row.get("amount_cents"), row.get("refund_id")));
        }

        let mut tally: BTreeMap<&str, usize> = BTreeMap::new();
        for (id, answers) in &ledger {
            let (end, price_cents) = &ends[id];
            assert_eq!(*price_cents, answers.price_cents, "order {id}: the snapshot moved");
            let paid = answers.payments.iter().filter(|s| **s == 201).count();
            let cancelled = answers.cancellations.contains(&204);
            match end.as_str() {
                "complete" => {
                    // A 201, or a 503 whose charge the reconciler settled after the request
                    // lost the processor's answer.
                    assert!(
                        paid == 1 || (paid == 0 && answers.payments.contains(&503)),
                        "order {id} is complete: {answers:?}"
                    );
                    assert!(!cancelled, "order {id} was paid and cancelled: {answers:?}");
                    assert_eq!(
                        charges.get(id).map(Vec::as_slice),
                        Some(&[(answers.price_cents, None)][..]),
                        "order {id}: one charge of its snapshot price, kept"
                    );
                }
                "cancelled" => {
                    assert_eq!(paid, 0, "order {id} was paid and cancelled: {answers:?}");
                    assert!(!charges.contains_key(id), "order {id} was charged: {:?}", charges[id]);
                }
                other => panic!("order {id} ended {other}"),
            }
            *tally.entry(end.as_str()).or_default() += 1;
            if cancelled {
                *tally.entry("cancelled by the buyer").or_default() += 1;
            }
            if answers.payments.contains(&402) {
                *tally.entry("declined at least once").or_default() += 1;
            }
        }
        assert!(
            charges.keys().all(|id| ledger.contains_key(id)),
            "a charge for an order nobody placed"
        );
        eprintln!("{} orders: {tally:?}", ledger.len());
        assert!(tally.get("complete").is_some_and(|n| *n > 0), "{tally:?}");
        assert!(tally.get("cancelled by the buyer").is_some_and(|n| *n > 0), "{tally:?}");
    }
}
