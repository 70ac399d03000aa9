//! Hold expiry: `--holds` orders on fresh tickets, placed as fast as the marketplace takes them
//! so that they all fall due within a short span (or at `--hold-rate`, so they fall due at that
//! rate), and then how late their cancellation comes.
//!
//! Watching every hold would be a load of its own, so a sample of them (every so many placed) is
//! read every [`SWEEP`] once due, from the moment the first is placed, until each is seen
//! cancelled and its ticket seen released; lateness is when that was seen minus the order's
//! `expiresAt`. Watching starts with placing: at a fixed rate the first holds fall due while the
//! last are still being placed, and a watcher that began only afterwards would count the wait as
//! lateness. With `--metrics-url`, the expiration
//! service's own lateness histogram over the scenario is reported beside it. At the end every
//! buyer's orders are read to check that every hold was cancelled.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::{
    Cast, Context, Listing, list_tickets, retry_pause, unix_millis, unix_millis_at, unix_millis_now,
};
use crate::client::{OrderView, TicketView};
use crate::invariants::Observations;
use crate::progress::Progress;
use crate::prometheus::Histogram;
use crate::report::ScenarioReport;
use crate::stats::{Distribution, Operation, Pacer, per_second};

/// How often the sampled holds that are due are read.
const SWEEP: Duration = Duration::from_millis(20);
/// Sampled holds read at once within a sweep.
const SWEEP_CONCURRENCY: usize = 32;
/// How often every buyer's orders are read while waiting for all holds to lapse.
const ROUND_PAUSE: Duration = Duration::from_secs(1);
const LATENESS_METRIC: &str = "stubs_expiration_lateness_seconds";

/// Which holds are watched: every `every`th placed, handed to the watcher as they are placed.
struct Sampling {
    every: usize,
    sampled: Mutex<Vec<Hold>>,
    placing_done: AtomicBool,
}

/// A placed hold.
#[derive(Debug, Clone)]
struct Hold {
    order_id: String,
    ticket_id: String,
    buyer: usize,
    answered_at_ms: i64,
    expires_at_ms: i64,
}

/// What was seen of a sampled hold, in unix milliseconds.
#[derive(Debug, Clone, Default)]
struct Watch {
    cancelled_seen_ms: Option<i64>,
    released_seen_ms: Option<i64>,
}

pub(crate) async fn run(
    ctx: &Arc<Context>,
    cast: &Arc<Cast>,
    observations: &mut Observations,
) -> (ScenarioReport, Vec<Listing>) {
    let settings = &ctx.settings;
    let mut report = ScenarioReport::new("hold_expiry", "hold expiry");
    let started = Instant::now();

    let listing = Arc::new(Operation::new("POST /api/tickets", &[201]));
    let progress = Progress::start("hold expiry: listing", {
        let listing = Arc::clone(&listing);
        let holds = settings.holds;
        move || format!("listed {}/{holds}", listing.count())
    });
    let listings = list_tickets(ctx, cast, settings.holds, "Held seat", None, &listing).await;
    progress.finish().await;
    // The last ticket each seller listed is the latest its events carried; once orders knows
    // it, the few earlier ones still in flight are waited for by orders itself.
    let mut last_per_seller: HashMap<usize, Listing> = HashMap::new();
    for listing in &listings {
        last_per_seller.insert(listing.seller, listing.clone());
    }
    let probes: Vec<Listing> = last_per_seller.into_values().collect();
    super::await_replication(ctx, cast, &probes).await;

    let before = scrape_lateness(ctx).await;
    let place = Arc::new(Operation::new("POST /api/orders", &[201]));
    let retries = Arc::new(AtomicU64::new(0));
    let placed_count = Arc::new(AtomicUsize::new(0));
    let watched = Arc::new(AtomicUsize::new(0));
    let progress = Progress::start("hold expiry: placing and watching", {
        let place = Arc::clone(&place);
        let placed_count = Arc::clone(&placed_count);
        let watched = Arc::clone(&watched);
        let holds = listings.len();
        move || {
            format!(
                "placed {}/{holds}, errors {}; {} sampled seen released",
                placed_count.load(Ordering::Relaxed),
                place.errors(),
                watched.load(Ordering::Relaxed)
            )
        }
    });
    // Every so many holds is watched from the moment it falls due, while the others are still
    // being placed: at a fixed rate the first fall due long before the last is placed.
    let sampling = Sampling {
        every: (listings.len() / settings.hold_sample.max(1)).max(1),
        sampled: Mutex::new(Vec::new()),
        placing_done: AtomicBool::new(false),
    };
    let sweeps = Distribution::default();
    let ((holds, placing_time), sample) = tokio::join!(
        async {
            let placing_started = Instant::now();
            let holds = place_holds(
                ctx,
                cast,
                &listings,
                &sampling,
                &place,
                &retries,
                &placed_count,
            )
            .await;
            sampling.placing_done.store(true, Ordering::SeqCst);
            (holds, placing_started.elapsed())
        },
        watch_sample(ctx, cast, &sampling, &sweeps, &watched),
    );
    progress.finish().await;
    observations
        .holds
        .extend(holds.iter().map(|h| h.order_id.clone()));

    let first_due = holds.iter().map(|h| h.expires_at_ms).min();
    let last_due = holds.iter().map(|h| h.expires_at_ms).max();
    let window_ms = holds
        .iter()
        .min_by_key(|h| h.answered_at_ms)
        .map(|h| h.expires_at_ms - h.answered_at_ms);
    let (Some(first_due), Some(last_due), Some(window_ms)) = (first_due, last_due, window_ms)
    else {
        report.notes.push("no hold could be placed".into());
        report.operations = vec![listing.summary(), place.summary()];
        return (report, listings);
    };
    let deadline_ms = last_due + millis(settings.expiry_timeout);

    let cancelled = Distribution::default();
    let released = Distribution::default();
    for (hold, watch) in &sample {
        if let Some(seen) = watch.cancelled_seen_ms {
            cancelled.record(lateness(seen, hold.expires_at_ms));
        }
        if let Some(seen) = watch.released_seen_ms {
            released.record(lateness(seen, hold.expires_at_ms));
        }
    }

    let ids: HashSet<&str> = holds.iter().map(|h| h.order_id.as_str()).collect();
    let buyers: HashSet<usize> = holds.iter().map(|h| h.buyer).collect();
    let (all_cancelled, seen_all_ms) =
        await_all_cancelled(ctx, cast, &ids, &buyers, deadline_ms).await;
    let after = scrape_lateness(ctx).await;

    report.elapsed_s = started.elapsed().as_secs_f64();
    report.operations = vec![listing.summary(), place.summary()];
    report.distributions = vec![
        ("cancelled after due (sample)", cancelled.quantiles_ms()),
        ("released after due (sample)", released.quantiles_ms()),
        ("sweep interval", sweeps.quantiles_ms()),
    ];
    let mut figures = vec![
        ("holds", holds.len() as f64),
        ("holds_per_s", per_second(holds.len() as u64, placing_time)),
        ("window_s", window_ms as f64 / 1000.0),
        ("due_span_s", (last_due - first_due) as f64 / 1000.0),
        ("sample", sample.len() as f64),
        (
            "sample_not_seen_cancelled",
            (sample.len() as u64 - cancelled.count()) as f64,
        ),
        ("holds_cancelled", all_cancelled as f64),
        (
            "place_retries_ticket_unknown",
            retries.load(Ordering::Relaxed) as f64,
        ),
    ];
    if let Some(seen) = seen_all_ms {
        figures.push((
            "all_cancelled_after_last_due_s",
            (seen - last_due) as f64 / 1000.0,
        ));
    }
    report.figures = figures;
    match (before, after) {
        (Some(before), Some(after)) => {
            report.server_lateness = Some(after.since(&before).summary());
            report.notes.push(
                "server lateness counts every expiry during the scenario, the flash sale's unpaid \
                 orders included"
                    .into(),
            );
        }
        _ if !settings.metrics_urls.is_empty() => report.notes.push(format!(
            "{LATENESS_METRIC} could not be read from --metrics-url"
        )),
        _ => {}
    }
    report.notes.push(format!(
        "lateness is when the sample was seen cancelled (or its ticket released) minus expiresAt, \
         read every {} ms once due: an upper bound",
        SWEEP.as_millis()
    ));
    (report, listings)
}

/// Places one hold per listed ticket, buyers taken in turn, as fast as they are taken (or at
/// `--hold-rate`), handing every sampled one to the watcher as soon as it is placed. A 404 means
/// orders did not hear of the ticket within its wait; it is asked again.
async fn place_holds(
    ctx: &Context,
    cast: &Cast,
    listings: &[Listing],
    sampling: &Sampling,
    place: &Operation,
    retries: &AtomicU64,
    placed: &AtomicUsize,
) -> Vec<Hold> {
    let deadline = Instant::now() + ctx.settings.settle_timeout;
    let pacer = &Pacer::new(ctx.settings.hold_rate);
    futures::stream::iter(listings.iter().enumerate())
        .map(|(n, listing)| async move {
            let buyer_index = n % cast.buyers.len().max(1);
            let buyer = cast.buyers.get(buyer_index)?;
            let mut attempt = 0;
            let due = pacer.next_slot().await;
            loop {
                let call = ctx.api.create_order(buyer, &listing.id).await;
                if call.status() == Some(404) && Instant::now() < deadline {
                    retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                place.record_since(due, &call);
                if let Some(order) = call.answer_with(201).and_then(|a| a.json::<OrderView>()) {
                    placed.fetch_add(1, Ordering::Relaxed);
                    let hold = Hold {
                        answered_at_ms: unix_millis_at(call.finished),
                        expires_at_ms: unix_millis(&order.expires_at)?,
                        order_id: order.id,
                        ticket_id: listing.id.clone(),
                        buyer: buyer_index,
                    };
                    if n % sampling.every == 0
                        && let Ok(mut sampled) = sampling.sampled.lock()
                    {
                        sampled.push(hold.clone());
                    }
                    return Some(hold);
                }
                // No answer or a 5xx: the order may or may not exist; trying again is safe,
                // since a second order on the same ticket is refused by the marketplace.
                if call.status().is_some_and(|s| s < 500) || attempt >= 3 {
                    return None;
                }
                retry_pause(attempt).await;
                attempt += 1;
            }
        })
        .buffer_unordered(ctx.settings.concurrency)
        .filter_map(|hold| async move { hold })
        .collect()
        .await
}

/// Reads the sampled holds that are due and not yet settled every [`SWEEP`], from the first
/// one placed, until placing is over and each is seen cancelled and released, or
/// `--expiry-timeout` has passed since the last one fell due.
async fn watch_sample(
    ctx: &Context,
    cast: &Cast,
    sampling: &Sampling,
    sweeps: &Distribution,
    settled: &AtomicUsize,
) -> Vec<(Hold, Watch)> {
    let mut watches: Vec<(Hold, Mutex<Watch>)> = Vec::new();
    let mut last_sweep: Option<Instant> = None;
    loop {
        let sweep_started = Instant::now();
        // Read before the new holds are taken: once it says done, every hold is among them.
        let placing_done = sampling.placing_done.load(Ordering::SeqCst);
        if let Ok(mut sampled) = sampling.sampled.lock() {
            watches.extend(sampled.drain(..).map(|hold| (hold, Mutex::default())));
        }
        let now = unix_millis_now();
        if placing_done {
            let last_due = watches.iter().map(|(hold, _)| hold.expires_at_ms).max();
            let open = watches
                .iter()
                .filter(|(_, w)| w.lock().is_ok_and(|w| w.released_seen_ms.is_none()))
                .count();
            let timed_out =
                last_due.is_none_or(|due| now > due + millis(ctx.settings.expiry_timeout));
            if open == 0 || timed_out {
                break;
            }
        }
        let pending: Vec<usize> = (0..watches.len())
            .filter(|&i| {
                let (hold, watch) = &watches[i];
                let open = watch.lock().is_ok_and(|w| w.released_seen_ms.is_none());
                hold.expires_at_ms <= now && open
            })
            .collect();
        if !pending.is_empty() {
            if let Some(previous) = last_sweep {
                sweeps.record(sweep_started - previous);
            }
            last_sweep = Some(sweep_started);
        }
        futures::stream::iter(pending)
            .for_each_concurrent(SWEEP_CONCURRENCY, |i| {
                let (hold, watch) = &watches[i];
                async move {
                    if look_at(ctx, cast, hold, watch).await {
                        settled.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
            .await;
        tokio::time::sleep_until((sweep_started + SWEEP).into()).await;
    }
    watches
        .into_iter()
        .map(|(hold, w)| (hold, w.into_inner().unwrap_or_default()))
        .collect()
}

/// Reads a hold (and, once it is cancelled, its ticket); true when the ticket is seen released.
async fn look_at(ctx: &Context, cast: &Cast, hold: &Hold, watch: &Mutex<Watch>) -> bool {
    let cancelled = watch.lock().is_ok_and(|w| w.cancelled_seen_ms.is_some());
    if !cancelled {
        let Some(buyer) = cast.buyers.get(hold.buyer) else {
            return false;
        };
        let call = ctx.api.show_order(buyer, &hold.order_id).await;
        let status = call
            .answer_with(200)
            .and_then(|a| a.json::<OrderView>())
            .map(|o| o.status);
        if status.as_deref() != Some("cancelled") {
            return false;
        }
        if let Ok(mut watch) = watch.lock() {
            watch.cancelled_seen_ms = Some(unix_millis_at(call.finished));
        }
    }
    let call = ctx.api.show_ticket(&hold.ticket_id).await;
    let Some(ticket) = call.answer_with(200).and_then(|a| a.json::<TicketView>()) else {
        return false;
    };
    if ticket.order_id.as_deref() == Some(hold.order_id.as_str()) {
        return false;
    }
    if let Ok(mut watch) = watch.lock() {
        watch.released_seen_ms = Some(unix_millis_at(call.finished));
    }
    true
}

/// Reads the holders' orders every [`ROUND_PAUSE`] until every hold is cancelled or the
/// deadline passes. Returns how many were seen cancelled, and when all were (unix ms).
async fn await_all_cancelled(
    ctx: &Context,
    cast: &Cast,
    holds: &HashSet<&str>,
    buyers: &HashSet<usize>,
    deadline_ms: i64,
) -> (usize, Option<i64>) {
    let progress_seen = Arc::new(AtomicUsize::new(0));
    let progress = Progress::start("hold expiry: all lapsed?", {
        let seen = Arc::clone(&progress_seen);
        let total = holds.len();
        move || {
            format!(
                "{}/{total} holds seen cancelled",
                seen.load(Ordering::Relaxed)
            )
        }
    });
    let mut remaining: HashSet<usize> = buyers.clone();
    let mut cancelled = 0;
    let outcome = loop {
        let round = futures::stream::iter(remaining.iter().copied())
            .map(|buyer| async move {
                let session = cast.buyers.get(buyer)?;
                let orders = crate::read_all_orders(&ctx.api, session).await.ok()?;
                let open = orders
                    .iter()
                    .filter(|o| holds.contains(o.id.as_str()) && o.status != "cancelled")
                    .count();
                let done = orders
                    .iter()
                    .filter(|o| holds.contains(o.id.as_str()) && o.status == "cancelled")
                    .count();
                Some((buyer, open, done))
            })
            .buffer_unordered(ctx.settings.concurrency)
            .collect::<Vec<_>>()
            .await;
        for (buyer, open, done) in round.into_iter().flatten() {
            if open == 0 {
                remaining.remove(&buyer);
                cancelled += done;
            }
        }
        progress_seen.store(cancelled, Ordering::Relaxed);
        if remaining.is_empty() {
            break (cancelled, Some(unix_millis_now()));
        }
        if unix_millis_now() > deadline_ms {
            break (cancelled, None);
        }
        tokio::time::sleep(ROUND_PAUSE).await;
    };
    progress.finish().await;
    outcome
}

/// The expiration service's lateness histogram, summed over every `--metrics-url`.
async fn scrape_lateness(ctx: &Context) -> Option<Histogram> {
    if ctx.settings.metrics_urls.is_empty() {
        return None;
    }
    let mut page = String::new();
    for url in &ctx.settings.metrics_urls {
        let call = ctx.api.scrape(url).await;
        let answer = call.answer_with(200)?;
        page.push_str(std::str::from_utf8(&answer.body).ok()?);
        page.push('\n');
    }
    // Before the first expiry the page has no such histogram yet: that is an empty one.
    Some(Histogram::parse(&page, LATENESS_METRIC).unwrap_or_default())
}

fn lateness(seen_ms: i64, due_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(seen_ms - due_ms).unwrap_or(0))
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
