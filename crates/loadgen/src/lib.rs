//! A load generator for a running Stubs marketplace, speaking only its public HTTP API.
//!
//! A run signs up buyers and sellers, lists tickets, and runs the chosen scenarios (browse,
//! flash sale, sign-up and sign-in, hold expiry), measuring rates, latency quantiles, answers by
//! status, event propagation lag and expiry lateness. Afterwards it reads every order of every
//! user it created and every ticket it listed, and checks the marketplace's invariants on what
//! it saw (see [`invariants`]); [`Report::passed`] says whether they all held.
//!
//! Against `stubs up --auth-attempts-per-minute 0 --order-expiration 20s`:
//!
//! ```text
//! loadgen --url http://127.0.0.1:3000 --metrics-url http://127.0.0.1:3000/metrics \
//!         --buyers 800 --tickets 400 --sale-rounds 4 --holds 10000 --json > report.json
//! loadgen --url http://127.0.0.1:3000 --scenario flash-sale --rate 1000
//! # against a marketplace started with --resale-cap 1.1: the sale's tickets sold on
//! loadgen --url http://127.0.0.1:3000 --scenario flash-sale --resell --resale-cap 1.1
//! ```
//!
//! The marketplace must not limit sign-ins per address (`--auth-attempts-per-minute 0`), and
//! its order window must be short for the hold-expiry scenario to end soon. `scripts/bench`
//! runs the whole benchmark.

mod client;
pub mod invariants;
mod progress;
mod prometheus;
pub mod report;
mod scenarios;
mod settings;
mod stats;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use rand::Rng;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub use report::{Report, ScenarioReport};
pub use settings::{Scenario, Settings};

use client::{Api, Call, OrderView, Session, TicketView};
use invariants::{InvariantResult, Observations, OrderSeen, TicketSeen};
use progress::Progress;
use scenarios::{Cast, Context, Listing};

/// Tries of the first request, half a second apart, before the marketplace counts as away.
const REACH_TRIES: usize = 10;

/// Tries of one request of the invariant check before it counts as unanswered.
const CHECK_TRIES: usize = 4;

/// Runs the scenarios the settings choose and checks the invariants afterwards. An error means
/// the run could not take place at all (bad settings, nobody could sign up); a marketplace that
/// misbehaves gives a report whose invariants failed.
pub async fn run(settings: Settings) -> anyhow::Result<Report> {
    settings.validate().map_err(anyhow::Error::msg)?;
    let api = Api::new(
        &settings.url,
        settings.request_timeout,
        settings.concurrency,
        settings.key_every_write,
    )
    .context("cannot build the HTTP client")?;
    let started_at = OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default();
    let ctx = Arc::new(Context {
        api,
        run_id: format!("{:08x}", rand::rng().random::<u32>()),
        settings,
    });
    reach(&ctx.api, &ctx.settings.url).await?;
    let planned = ctx.settings.planned();
    let needs_cast = planned.iter().any(|s| *s != Scenario::Auth);

    let mut setup = None;
    let mut cast = Arc::new(Cast::default());
    let mut listed: Vec<Listing> = Vec::new();
    if needs_cast {
        let sale_tickets =
            if planned.contains(&Scenario::FlashSale) || planned.contains(&Scenario::Browse) {
                ctx.settings.tickets
            } else {
                0
            };
        let (signed_up, listings, report) = scenarios::set_up(&ctx, sale_tickets).await;
        if signed_up.buyers.is_empty() || signed_up.sellers.is_empty() {
            let statuses = report
                .operations
                .first()
                .map(|op| format!("{:?}", op.statuses))
                .unwrap_or_default();
            anyhow::bail!(
                "nobody could sign up at {} (answers by status: {statuses})",
                ctx.settings.url
            );
        }
        eprint!("{}", report::render_scenario_text(&report));
        cast = Arc::new(signed_up);
        listed = listings;
        setup = Some(report);
    }
    let sale_listings = listed.clone();

    let mut observations = Observations {
        resale_cap: ctx.settings.resale_cap,
        ..Observations::default()
    };
    let mut reports = Vec::new();
    for scenario in planned {
        let report = match scenario {
            Scenario::Browse => scenarios::browse::run(&ctx, &sale_listings).await,
            Scenario::FlashSale => {
                let (report, more) =
                    scenarios::flash_sale::run(&ctx, &cast, &sale_listings, &mut observations)
                        .await;
                listed.extend(more);
                report
            }
            Scenario::Auth => scenarios::auth::run(&ctx).await,
            Scenario::Hoard => {
                let (report, hoarded, bot) = scenarios::hoard::run(&ctx, &cast).await;
                listed.extend(hoarded);
                Arc::make_mut(&mut cast).buyers.extend(bot);
                report
            }
            Scenario::HoldExpiry => {
                let (report, held) =
                    scenarios::hold_expiry::run(&ctx, &cast, &mut observations).await;
                listed.extend(held);
                report
            }
            // Its catalogue is never ordered from, so the invariants need not read it.
            Scenario::Search => scenarios::search::run(&ctx, &cast).await,
        };
        eprint!("{}", report::render_scenario_text(&report));
        reports.push(report);
    }

    let invariants = if needs_cast {
        check_invariants(&ctx, &cast, &listed, observations).await
    } else {
        Vec::new()
    };
    let passed = invariants.iter().all(|verdict| verdict.passed);
    Ok(Report {
        settings: ctx.settings.clone(),
        started_at,
        setup,
        scenarios: reports,
        invariants,
        passed,
    })
}

/// Waits up to [`REACH_TRIES`] half-seconds for the marketplace to answer, so that a wrong URL
/// or a stopped server ends the run at once with one clear line.
async fn reach(api: &Api, url: &str) -> anyhow::Result<()> {
    let mut last = String::new();
    for _ in 0..REACH_TRIES {
        let call = api.current_user().await;
        if call.status() == Some(200) {
            return Ok(());
        }
        last = call.label();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::bail!("the marketplace at {url} does not answer GET /api/users/currentuser ({last})")
}

/// Reads every user's orders and every listed ticket and checks the invariants, reading again
/// while the verdicts that events can still change are not in, up to `--settle-timeout`.
///
/// The reads are not one snapshot: reading every ticket of a long run takes longer than a
/// payment window, and an order read live may have lapsed by the time its ticket is read. So a
/// second look reads every user's orders again but, of the tickets, only those in question,
/// right after them. And while unpaid orders are still lapsing, some releases are always on
/// their way: the check goes on until the settle timeout has passed after the last order's
/// window closed.
async fn check_invariants(
    ctx: &Context,
    cast: &Cast,
    listed: &[Listing],
    recorded: Observations,
) -> Vec<InvariantResult> {
    let last_due = recorded
        .sale_wins
        .iter()
        .chain(&recorded.resale_wins)
        .map(|win| win.expires_at_ms)
        .max();
    let until_last_due = last_due.map_or(0, |due| due - scenarios::unix_millis_now());
    let deadline = Instant::now()
        + Duration::from_millis(u64::try_from(until_last_due).unwrap_or(0))
        + ctx.settings.settle_timeout;
    let mut observed = observe(ctx, cast, listed, recorded.clone(), 1).await;
    let mut round = 1;
    loop {
        let verdicts = invariants::check(&observed);
        if invariants::settled(&verdicts) || Instant::now() >= deadline {
            return verdicts;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        round += 1;
        let in_question = invariants::tickets_in_question(&observed);
        let again: Vec<Listing> = listed
            .iter()
            .filter(|listing| in_question.contains(&listing.id))
            .cloned()
            .collect();
        let fresh = observe(ctx, cast, &again, recorded.clone(), round).await;
        // The tickets read before and not in question stand; the rest is as read now.
        let mut tickets: Vec<TicketSeen> = observed
            .tickets
            .into_iter()
            .filter(|ticket| !in_question.contains(&ticket.id))
            .collect();
        tickets.extend(fresh.tickets.iter().cloned());
        observed = Observations { tickets, ..fresh };
    }
}

async fn observe(
    ctx: &Context,
    cast: &Cast,
    listed: &[Listing],
    mut observed: Observations,
    round: usize,
) -> Observations {
    let users: Vec<&Session> = cast.everyone().collect();
    let orders_read = Arc::new(AtomicUsize::new(0));
    let tickets_read = Arc::new(AtomicUsize::new(0));
    let label = if round == 1 { "check" } else { "check (again)" };
    let progress = Progress::start(label, {
        let (orders_read, tickets_read) = (Arc::clone(&orders_read), Arc::clone(&tickets_read));
        let (users, tickets) = (users.len(), listed.len());
        move || {
            format!(
                "orders of {}/{users} users, {}/{tickets} tickets read",
                orders_read.load(Ordering::Relaxed),
                tickets_read.load(Ordering::Relaxed)
            )
        }
    });
    let concurrency = ctx.settings.concurrency;
    let orders: Vec<Result<Vec<OrderView>, String>> = futures::stream::iter(&users)
        .map(|user| {
            let orders_read = &orders_read;
            async move {
                let read = read_all_orders(&ctx.api, user).await;
                orders_read.fetch_add(1, Ordering::Relaxed);
                read.map_err(|why| format!("GET /api/orders as {}: {why}", user.email))
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let tickets: Vec<Result<TicketSeen, String>> = futures::stream::iter(listed)
        .map(|listing| {
            let tickets_read = &tickets_read;
            async move {
                let read = read_with_retries(
                    || ctx.api.show_ticket(&listing.id),
                    |a| a.json::<TicketView>(),
                )
                .await;
                tickets_read.fetch_add(1, Ordering::Relaxed);
                // The API shows the owner; who listed it only the run knows.
                read.map(|ticket| TicketSeen {
                    id: ticket.id,
                    order_id: ticket.order_id,
                    user_id: ticket.user_id,
                    seller_id: listing.seller_id.clone(),
                })
                .map_err(|why| format!("GET /api/tickets/{}: {why}", listing.id))
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    progress.finish().await;

    for read in orders {
        match read {
            Ok(list) => observed
                .orders
                .extend(list.into_iter().map(|order| OrderSeen {
                    price_cents: order.ticket.price.as_ref().and_then(invariants::cents_of),
                    id: order.id,
                    ticket_id: order.ticket.id,
                    status: order.status,
                    user_id: order.user_id,
                })),
            Err(why) => observed.unanswered.push(why),
        }
    }
    for read in tickets {
        match read {
            Ok(ticket) => observed.tickets.push(ticket),
            Err(why) => observed.unanswered.push(why),
        }
    }
    observed
}

/// Every order of `buyer`, page after page, each page retried as [`read_with_retries`] does.
pub(crate) async fn read_all_orders(api: &Api, buyer: &Session) -> Result<Vec<OrderView>, String> {
    let mut orders = Vec::new();
    let mut next = Some("/api/orders?limit=100".to_owned());
    while let Some(path) = next {
        let (page, after) = read_with_retries(
            || api.list_orders(buyer, &path),
            |answer| Some((answer.json::<Vec<OrderView>>()?, answer.next_page.clone())),
        )
        .await?;
        orders.extend(page);
        next = after;
    }
    Ok(orders)
}

/// Sends a read until it answers 200 with a body `parse` accepts, a few times at most.
async fn read_with_retries<T, F, Fut>(
    send: F,
    parse: impl Fn(&client::Answer) -> Option<T>,
) -> Result<T, String>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Call>,
{
    let mut last = String::new();
    for attempt in 0..CHECK_TRIES {
        let call = send().await;
        if let Some(value) = call.answer_with(200).and_then(&parse) {
            return Ok(value);
        }
        last = call.label();
        scenarios::retry_pause(attempt).await;
    }
    Err(last)
}
