//! The scenarios, and the setup they share: the buyers and sellers, and the tickets listed for
//! the flash sale.

pub(crate) mod auth;
pub(crate) mod browse;
pub(crate) mod flash_sale;
pub(crate) mod hoard;
pub(crate) mod hold_expiry;
pub(crate) mod resale;
pub(crate) mod search;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::client::{Api, Session, TicketView};
use crate::progress::Progress;
use crate::report::ScenarioReport;
use crate::settings::Settings;
use crate::stats::Operation;

/// Tries of a setup request (sign-up, listing) before its user or ticket is left out.
const SETUP_TRIES: usize = 5;

/// What every scenario works with.
#[derive(Debug)]
pub(crate) struct Context {
    pub api: Api,
    pub settings: Settings,
    /// Distinguishes this run's e-mail addresses and titles from earlier runs' on the same data.
    pub run_id: String,
}

/// The signed-in users of the run.
#[derive(Debug, Default, Clone)]
pub(crate) struct Cast {
    pub buyers: Vec<Session>,
    pub sellers: Vec<Session>,
}

impl Cast {
    pub(crate) fn everyone(&self) -> impl Iterator<Item = &Session> {
        self.buyers.iter().chain(&self.sellers)
    }
}

/// A ticket the run listed, and which seller listed it.
#[derive(Debug, Clone)]
pub(crate) struct Listing {
    pub id: String,
    /// The seller's place in [`Cast::sellers`].
    pub seller: usize,
    /// The seller's user id, as the listing answer's `userId` gave it.
    pub seller_id: String,
}

/// Signs up the buyers and sellers and lists the flash-sale tickets.
pub(crate) async fn set_up(ctx: &Context, tickets: usize) -> (Cast, Vec<Listing>, ScenarioReport) {
    let started = Instant::now();
    let signup = Arc::new(Operation::new("POST /api/users/signup", &[201]));
    let listing = Arc::new(Operation::new("POST /api/tickets", &[201]));
    let people = ctx.settings.buyers + ctx.settings.sellers;
    let progress = Progress::start("setup", {
        let signup = Arc::clone(&signup);
        let listing = Arc::clone(&listing);
        move || {
            format!(
                "signed up {}/{people}, listed {}/{tickets}, errors {}",
                signup.count(),
                listing.count(),
                signup.errors() + listing.errors()
            )
        }
    });
    let buyers = sign_up_many(ctx, "buyer", ctx.settings.buyers, &signup).await;
    let sellers = sign_up_many(ctx, "seller", ctx.settings.sellers, &signup).await;
    let cast = Cast { buyers, sellers };
    let listings = list_tickets(ctx, &cast, tickets, "Flash sale seat", None, &listing).await;
    progress.finish().await;

    let mut report = ScenarioReport::new("setup", "setup: sign-ups and listings");
    report.elapsed_s = started.elapsed().as_secs_f64();
    report.figures = vec![
        ("buyers", cast.buyers.len() as f64),
        ("sellers", cast.sellers.len() as f64),
        ("tickets", listings.len() as f64),
        ("signup_per_s", signup.summary().rate_per_s),
    ];
    report
        .notes
        .push("every sign-up hashes its password with argon2id on the server".into());
    report.operations = vec![signup.summary(), listing.summary()];
    (cast, listings, report)
}

/// Signs up `count` users named `<role>-<run>-<n>@loadgen.test`; one that still fails after a
/// few tries is left out (and its answers counted).
async fn sign_up_many(ctx: &Context, role: &str, count: usize, op: &Operation) -> Vec<Session> {
    let emails = (0..count).map(|n| format!("{role}-{}-{n}@loadgen.test", ctx.run_id));
    futures::stream::iter(emails)
        .map(|email| async move {
            for attempt in 0..SETUP_TRIES {
                let call = ctx.api.sign_up(&email).await;
                op.record(&call);
                if let Some(token) = call.answer_with(201).and_then(|a| a.session.clone()) {
                    return Some(Session { email, token });
                }
                retry_pause(attempt).await;
            }
            None
        })
        .buffer_unordered(ctx.settings.concurrency)
        .filter_map(|session| async move { session })
        .collect()
        .await
}

/// Lists `count` tickets, spread over the sellers, titled `<title> <n>`, for `event` if given.
pub(crate) async fn list_tickets(
    ctx: &Context,
    cast: &Cast,
    count: usize,
    title: &str,
    event: Option<&str>,
    op: &Operation,
) -> Vec<Listing> {
    if cast.sellers.is_empty() {
        return Vec::new();
    }
    futures::stream::iter(0..count)
        .map(|n| async move {
            let name = format!("{title} {n} ({})", ctx.run_id);
            // Prices from 20.00 to 69.50 in half-dollar steps, so money crosses the wire as
            // both whole and fractional numbers.
            let price = 20.0 + (n % 100) as f64 / 2.0;
            list_ticket(ctx, cast, n, &name, price, event, op).await
        })
        .buffer_unordered(ctx.settings.concurrency)
        .filter_map(|listing| async move { listing })
        .collect()
        .await
}

/// Lists the `n`th ticket of a batch, as the `n`th seller round the cast, trying again a few
/// times; `None` if it still failed (its answers counted).
pub(crate) async fn list_ticket(
    ctx: &Context,
    cast: &Cast,
    n: usize,
    title: &str,
    price: f64,
    event: Option<&str>,
    op: &Operation,
) -> Option<Listing> {
    let seller = n % cast.sellers.len();
    for attempt in 0..SETUP_TRIES {
        let call = ctx
            .api
            .create_ticket(&cast.sellers[seller], title, price, event)
            .await;
        op.record(&call);
        if let Some(ticket) = call.answer_with(201).and_then(|a| a.json::<TicketView>()) {
            return Some(Listing {
                id: ticket.id,
                seller,
                seller_id: ticket.user_id,
            });
        }
        retry_pause(attempt).await;
    }
    None
}

/// What orders answered when a seller tried to order their own ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replicated {
    /// Orders knows the ticket.
    Yes,
    /// Orders still did not know it when the time ran out.
    No,
}

/// Waits until the orders service knows each listed ticket (it learns of tickets from
/// ticket:created). The seller asks to buy their own ticket: orders answers 400 once it knows the
/// ticket, so the probe reserves nothing, and 404 if the ticket did not arrive within its wait
/// (or too many requests were waiting already), when it is asked again.
pub(crate) async fn await_replication(ctx: &Context, cast: &Cast, listings: &[Listing]) -> usize {
    let unknown = AtomicUsize::new(0);
    let deadline = Instant::now() + ctx.settings.settle_timeout;
    futures::stream::iter(listings)
        .for_each_concurrent(ctx.settings.concurrency, |listing| {
            let unknown = &unknown;
            async move {
                if known_to_orders(ctx, cast, listing, deadline).await == Replicated::No {
                    unknown.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .await;
    unknown.into_inner()
}

async fn known_to_orders(
    ctx: &Context,
    cast: &Cast,
    listing: &Listing,
    deadline: Instant,
) -> Replicated {
    let Some(seller) = cast.sellers.get(listing.seller) else {
        return Replicated::No;
    };
    loop {
        let call = ctx.api.create_order(seller, &listing.id).await;
        // Anything but "no such ticket" (400 for the seller's own ticket) means orders has it.
        if matches!(call.status(), Some(status) if status != 404 && status < 500) {
            return Replicated::Yes;
        }
        if Instant::now() >= deadline {
            return Replicated::No;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A growing pause between tries of a request that failed.
pub(crate) async fn retry_pause(attempt: usize) {
    let millis = 50u64 << attempt.min(5);
    tokio::time::sleep(Duration::from_millis(millis)).await;
}

/// Now, in unix milliseconds.
pub(crate) fn unix_millis_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// An RFC 3339 time in unix milliseconds.
pub(crate) fn unix_millis(rfc3339: &str) -> Option<i64> {
    let time = OffsetDateTime::parse(rfc3339, &Rfc3339).ok()?;
    i64::try_from(time.unix_timestamp_nanos() / 1_000_000).ok()
}

/// The unix-milliseconds time of an `Instant` that has passed.
pub(crate) fn unix_millis_at(instant: Instant) -> i64 {
    let ago = i64::try_from(instant.elapsed().as_millis()).unwrap_or(0);
    unix_millis_now() - ago
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_times_read_as_unix_milliseconds() {
        assert_eq!(unix_millis("1970-01-01T00:00:01.5Z"), Some(1_500));
        assert_eq!(
            unix_millis("2026-11-26T00:00:00.123Z"),
            Some(1_795_651_200_123)
        );
        assert_eq!(unix_millis("not a time"), None);
    }
}
