//! The load generator against the real `stubs up`: a small flash sale and a few holds, with the
//! marketplace's invariants checked from its API afterwards. A double sale fails this test.

use crate::support::Marketplace;
use clap::Parser;
use loadgen::Settings;

const TICKETS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flash_sale_sells_every_ticket_exactly_once_and_every_hold_lapses() {
    let marketplace = Marketplace::embedded("5s");
    let base = marketplace.base();
    let metrics = format!("{base}/metrics");
    let settings = Settings::parse_from([
        "loadgen",
        "--url",
        &base,
        "--metrics-url",
        &metrics,
        "--scenario",
        "flash-sale",
        "--scenario",
        "hold-expiry",
        "--buyers",
        "40",
        "--sellers",
        "2",
        "--tickets",
        &TICKETS.to_string(),
        "--concurrency",
        "16",
        "--holds",
        "12",
        "--hold-sample",
        "6",
        "--expiry-timeout",
        "60s",
    ]);

    let report = run_keeping_invariants(settings).await;
    assert!(report.passed);

    let sale = report.scenario("flash_sale").expect("the sale ran");
    let figure = |key: &str| sale.figure(key).unwrap_or_else(|| panic!("no {key}"));
    assert_eq!(figure("tickets_seen_taken"), TICKETS as f64);
    assert_eq!(figure("reserved_201"), TICKETS as f64, "{sale:#?}");
    assert!(figure("reserve_attempts") >= TICKETS as f64);
    let reserve = sale.operation("POST /api/orders").unwrap();
    assert_eq!(reserve.statuses.get("201"), Some(&(TICKETS as u64)));

    // Every 201 is a sale: one more than the tickets would be a ticket sold twice.
    let wins = report
        .invariants
        .iter()
        .find(|v| v.name == loadgen::invariants::NO_OVERLAPPING_SALES)
        .unwrap();
    assert_eq!(wins.checked, TICKETS);
    // Winners pay at once: payments waits for an order it has not heard of yet, never 404s.
    assert_eq!(figure("payment_retries_order_unknown"), 0.0, "{sale:#?}");

    let holds = report.scenario("hold_expiry").expect("the holds ran");
    assert_eq!(holds.figure("holds"), Some(12.0));
    assert_eq!(holds.figure("holds_cancelled"), Some(12.0));
    let server = holds.server_lateness.as_ref().expect("lateness scraped");
    assert!(server.count >= 12.0, "{server:?}");

    assert!(marketplace.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_best_available_flash_sale_holds_every_ticket_exactly_once() {
    let marketplace = Marketplace::embedded("5m");
    let base = marketplace.base();
    let settings = Settings::parse_from([
        "loadgen",
        "--url",
        &base,
        "--scenario",
        "flash-sale",
        "--best-available",
        "--buyers",
        "30",
        "--sellers",
        "2",
        "--tickets",
        &TICKETS.to_string(),
        "--sale-rounds",
        "2",
        "--concurrency",
        "16",
    ]);

    let report = run_keeping_invariants(settings).await;
    let sale = report.scenario("flash_sale").expect("the sale ran");
    let figure = |key: &str| sale.figure(key).unwrap_or_else(|| panic!("no {key}"));
    // Each round's event had its own tickets, and every one was held once, by asking for the best.
    assert_eq!(figure("reserved_201"), 2.0 * TICKETS as f64, "{sale:#?}");
    assert_eq!(figure("tickets_seen_taken"), 2.0 * TICKETS as f64);
    assert_eq!(figure("already_reserved_400"), 0.0, "{sale:#?}");
    assert_eq!(figure("other_answers"), 0.0, "{sale:#?}");
    let wins = report
        .invariants
        .iter()
        .find(|v| v.name == loadgen::invariants::NO_OVERLAPPING_SALES)
        .unwrap();
    assert_eq!(wins.checked, 2 * TICKETS);

    assert!(marketplace.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hoarding_bot_gets_no_more_than_the_limits_allow() {
    let marketplace = Marketplace::embedded("5m");
    let base = marketplace.base();
    let settings = Settings::parse_from([
        "loadgen",
        "--url",
        &base,
        "--scenario",
        "hoard",
        "--buyers",
        "1",
        "--sellers",
        "2",
        "--hoard-tickets",
        "80",
        "--concurrency",
        "16",
    ]);

    let report = run_keeping_invariants(settings).await;
    let hoard = report.scenario("hoard").expect("the bot ran");
    let figure = |key: &str| hoard.figure(key).unwrap_or_else(|| panic!("no {key}"));
    assert_eq!(figure("tickets"), 80.0, "{hoard:#?}");
    // The default cap of 10 live holds, whatever the 80 requests at once.
    assert_eq!(figure("held_at_once"), 10.0, "{hoard:#?}");
    // A released ticket cools down for its buyer: no hold is renewed.
    assert_eq!(figure("renewals_tried"), 10.0);
    assert_eq!(figure("renewed"), 0.0, "{hoard:#?}");
    // 60 orders an hour: 10 grabbed, then 50 held and let go, then a 429.
    assert_eq!(figure("churned"), 50.0, "{hoard:#?}");
    let churn = hoard.operation("POST /api/orders (churn)").unwrap();
    assert_eq!(churn.statuses.get("429"), Some(&1), "{churn:?}");

    assert!(marketplace.stop().await);
}

/// Runs loadgen, asserting that every invariant it checks afterwards held.
async fn run_keeping_invariants(settings: Settings) -> loadgen::Report {
    let report = loadgen::run(settings).await.expect("the run takes place");
    let failed: Vec<_> = report.invariants.iter().filter(|v| !v.passed).collect();
    assert!(failed.is_empty(), "invariants failed: {failed:#?}");
    report
}
