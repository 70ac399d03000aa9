//! The flash sale: many more buyers than tickets race for them at once. A buyer told "Ticket is
//! already reserved" tries another ticket they have not yet seen taken, until every ticket is
//! known to be taken; then a share of the winners pay. The headline figure is reserve attempts
//! per second: every `POST /api/orders`, 201 or 400.
//!
//! With `--best-available` each round's tickets are for an event of their own, and a buyer asks
//! for the event's best ticket instead of picking one: they are given one, or told it is sold
//! out and leave. Reservations per second (201s until every ticket is held) compare the two.
//!
//! With `--resell`, once every round's payments are in, the winners who paid sell their tickets
//! on to buyers who paid for nothing (see [`super::resale`]), within the resale cap.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, rng};
use tokio::task::JoinHandle;

use super::resale::{self, Sold};
use super::{Cast, Context, Listing, await_replication, unix_millis, unix_millis_at};
use crate::client::{Call, OrderView, Session, TicketView};
use crate::invariants::{Observations, SaleWin};
use crate::progress::Progress;
use crate::report::ScenarioReport;
use crate::stats::{Distribution, Operation, Pacer, per_second};

pub(super) const ALREADY_RESERVED: &str = "ticket_reserved";
const SOLD_OUT: &str = "sold_out";
/// How often a sampled order's ticket is read while waiting for the reservation to show.
const LAG_POLL: Duration = Duration::from_millis(5);
/// How long a sampled order is watched before its lag counts as lost.
const LAG_GIVE_UP: Duration = Duration::from_secs(10);
/// A sale with no 201, no "already reserved" and no "sold out" for this long is called off.
const STALL: Duration = Duration::from_secs(15);
/// Tries of a payment that orders' replica in payments does not know yet (404). Payments waits
/// for such an order itself, so these are counted: each is a buyer told "not found".
const PAYMENT_TRIES: usize = 50;

/// A buyer in the crowd and the tickets they have been told are taken.
struct Shopper {
    buyer: usize,
    known_taken: HashSet<usize>,
}

impl Shopper {
    /// A ticket this buyer has not seen taken, at random; `None` when they have seen all taken.
    fn pick(&self, rng: &mut impl Rng, tickets: usize) -> Option<usize> {
        let unknown = tickets.saturating_sub(self.known_taken.len());
        if unknown == 0 {
            return None;
        }
        if self.known_taken.len() * 2 <= tickets {
            loop {
                let ticket = rng.random_range(0..tickets);
                if !self.known_taken.contains(&ticket) {
                    return Some(ticket);
                }
            }
        }
        let nth = rng.random_range(0..unknown);
        (0..tickets)
            .filter(|t| !self.known_taken.contains(t))
            .nth(nth)
    }
}

struct Win {
    buyer: usize,
    ticket: usize,
    order_id: String,
    answered_at_ms: i64,
    expires_at_ms: i64,
}

/// What every round of the sale adds to.
struct Tally {
    reserve: Operation,
    reserved: AtomicU64,
    already_reserved: AtomicU64,
    sold_out: AtomicU64,
    other_answers: AtomicU64,
    lag: Arc<Distribution>,
    lag_lost: Arc<AtomicU64>,
    /// A win is timed for propagation every this many wins.
    lag_every: usize,
}

/// One round's shared state.
struct Sale {
    ctx: Arc<Context>,
    cast: Arc<Cast>,
    tally: Arc<Tally>,
    tickets: Vec<String>,
    /// Each ticket's place in `tickets`, by id: the ticket a best-available order was given.
    ticket_index: HashMap<String, usize>,
    /// With `--best-available`, the round's event.
    event: Option<String>,
    /// Someone has been told the ticket is taken (201 or 400).
    taken: Vec<AtomicBool>,
    taken_count: AtomicUsize,
    /// Buyers waiting for their next try, in turn.
    queue: Mutex<VecDeque<Shopper>>,
    /// Buyers who have neither won nor seen every ticket taken.
    still_shopping: AtomicUsize,
    wins: Mutex<Vec<Win>>,
    pacer: Pacer,
    deadline: Instant,
    started: Instant,
    /// Milliseconds from `started` to the latest 201, "already reserved" or "sold out".
    last_progress_ms: AtomicU64,
    lag_watchers: Mutex<Vec<JoinHandle<()>>>,
}

impl Sale {
    fn is_over(&self) -> bool {
        self.taken_count.load(Ordering::Relaxed) >= self.tickets.len()
            || Instant::now() >= self.deadline
            || self.stalled()
    }

    /// No attempt has been answered 201, "already reserved" or "sold out" for a while: the
    /// marketplace is away or failing, and the sale would only spin until its timeout.
    fn stalled(&self) -> bool {
        let last = Duration::from_millis(self.last_progress_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last) > STALL
    }

    fn progressed(&self) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_progress_ms.fetch_max(now, Ordering::Relaxed);
    }

    fn mark_taken(&self, ticket: usize) {
        if let Some(flag) = self.taken.get(ticket)
            && !flag.swap(true, Ordering::Relaxed)
        {
            self.taken_count.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn next_shopper(&self) -> Option<Shopper> {
        self.queue.lock().ok()?.pop_front()
    }

    fn queue_again(&self, shopper: Shopper) {
        if let Ok(mut queue) = self.queue.lock() {
            queue.push_back(shopper);
        }
    }

    fn leaves(&self) {
        self.still_shopping.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs `--sale-rounds` sales (or more, until `--sale-for` has passed), the first over the
/// listed tickets and each later one over as many fresh tickets, every buyer racing again each
/// round. Returns the report and the
/// tickets listed for the later rounds.
pub(crate) async fn run(
    ctx: &Arc<Context>,
    cast: &Arc<Cast>,
    listings: &[Listing],
    observations: &mut Observations,
) -> (ScenarioReport, Vec<Listing>) {
    let settings = &ctx.settings;
    let least_rounds = settings.sale_rounds.max(1);
    let mut report = ScenarioReport::new("flash_sale", "flash sale");
    let started = Instant::now();
    let tally = Arc::new(Tally {
        reserve: Operation::new("POST /api/orders", &[201, 400]),
        reserved: AtomicU64::new(0),
        already_reserved: AtomicU64::new(0),
        sold_out: AtomicU64::new(0),
        other_answers: AtomicU64::new(0),
        lag: Arc::new(Distribution::default()),
        lag_lost: Arc::new(AtomicU64::new(0)),
        // A sale that runs for a time samples as if it ran its least rounds.
        lag_every: (listings.len() * least_rounds / settings.lag_samples.max(1)).max(1),
    });
    let payment = Operation::new("POST /api/payments", &[201]);
    let listing = Operation::new("POST /api/tickets", &[201]);
    let mut extra_listings = Vec::new();
    let mut sale_time = Duration::ZERO;
    let mut pay_time = Duration::ZERO;
    let mut tickets_sold_out = 0;
    let mut tickets_total = 0;
    let mut payments_tried = 0;
    let mut payments_ok = 0;
    let mut payment_retries = 0;
    // Every paid win of every round: what the resale round sells on.
    let mut sold: Vec<Sold> = Vec::new();

    let mut round = 0;
    loop {
        let time_left = settings
            .sale_for
            .is_some_and(|sale_for| started.elapsed() < sale_for);
        if round >= least_rounds && !time_left {
            break;
        }
        let event = if settings.best_available {
            let event = create_event(ctx, cast, round).await;
            if event.is_none() {
                report.notes.push(format!(
                    "round {}: the sale's event could not be created",
                    round + 1
                ));
                break;
            }
            event
        } else {
            None
        };
        let fresh;
        let round_listings = if round == 0 && event.is_none() {
            listings
        } else {
            fresh = super::list_tickets(
                ctx,
                cast,
                listings.len(),
                "Flash sale seat",
                event.as_deref(),
                &listing,
            )
            .await;
            extra_listings.extend(fresh.iter().cloned());
            &fresh[..]
        };
        let unknown = await_replication(ctx, cast, round_listings).await;
        if unknown > 0 {
            report.notes.push(format!(
                "round {}: {unknown} tickets were still unknown to orders after {:?}",
                round + 1,
                settings.settle_timeout
            ));
        }
        let outcome = sell(
            ctx,
            cast,
            &tally,
            round_listings,
            event,
            round,
            least_rounds.max(round + 1),
        )
        .await;
        sale_time += outcome.time;
        tickets_total += round_listings.len();
        tickets_sold_out += outcome.taken;
        if outcome.stalled {
            report.notes.push(format!(
                "round {}: called off after {} s without a 201, an \"already reserved\" or a \"sold out\"",
                round + 1,
                STALL.as_secs()
            ));
        }
        if outcome.taken < round_listings.len() {
            report.notes.push(format!(
                "round {}: the sale was called off with {} of {} tickets seen taken",
                round + 1,
                outcome.taken,
                round_listings.len()
            ));
        }
        observations
            .sale_wins
            .extend(outcome.wins.iter().map(|win| {
                SaleWin {
                    ticket_id: round_listings
                        .get(win.ticket)
                        .map(|l| l.id.clone())
                        .unwrap_or_default(),
                    order_id: win.order_id.clone(),
                    answered_at_ms: win.answered_at_ms,
                    expires_at_ms: win.expires_at_ms,
                }
            }));
        // Paid at once, while the orders are well within their window.
        let paying_started = Instant::now();
        let payments = pay(ctx, cast, &outcome.wins, &payment).await;
        pay_time += paying_started.elapsed();
        payments_tried += payments.tried;
        payments_ok += payments.paid.len();
        payment_retries += payments.retries;
        let paid: HashSet<&str> = payments.paid.iter().map(String::as_str).collect();
        sold.extend(
            outcome
                .wins
                .iter()
                .filter(|win| paid.contains(win.order_id.as_str()))
                .filter_map(|win| {
                    Some(Sold {
                        buyer: win.buyer,
                        ticket_id: round_listings.get(win.ticket)?.id.clone(),
                    })
                }),
        );
        observations.paid_orders.extend(payments.paid);
        round += 1;
        if outcome.stalled {
            break;
        }
    }

    let resold = if settings.resell {
        Some(resale::run(ctx, cast, &sold, observations).await)
    } else {
        None
    };

    let attempts = tally.reserve.count();
    let reserved = tally.reserved.load(Ordering::Relaxed);
    report.elapsed_s = started.elapsed().as_secs_f64();
    // Rates over the time the races (and the payments) ran, not over the rounds' listing.
    let mut reserve = tally.reserve.summary();
    reserve.elapsed_s = sale_time.as_secs_f64();
    reserve.rate_per_s = per_second(reserve.count, sale_time);
    let mut paying = payment.summary();
    paying.elapsed_s = pay_time.as_secs_f64();
    paying.rate_per_s = per_second(paying.count, pay_time);
    report.operations = vec![reserve, paying];
    if listing.count() > 0 {
        report.operations.push(listing.summary());
    }
    report.distributions = vec![("propagation lag", tally.lag.quantiles_ms())];
    report.figures = vec![
        ("rounds", round as f64),
        ("tickets", tickets_total as f64),
        ("buyers", cast.buyers.len() as f64),
        ("reserve_attempts", attempts as f64),
        ("reserve_attempts_per_s", per_second(attempts, sale_time)),
        ("reservations_per_s", per_second(reserved, sale_time)),
        ("sale_s", sale_time.as_secs_f64()),
        ("tickets_seen_taken", tickets_sold_out as f64),
        ("reserved_201", reserved as f64),
        (
            "already_reserved_400",
            tally.already_reserved.load(Ordering::Relaxed) as f64,
        ),
        (
            "sold_out_400",
            tally.sold_out.load(Ordering::Relaxed) as f64,
        ),
        (
            "other_answers",
            tally.other_answers.load(Ordering::Relaxed) as f64,
        ),
        ("payments_tried", payments_tried as f64),
        ("payments_201", payments_ok as f64),
        ("payment_retries_order_unknown", payment_retries as f64),
        (
            "lag_samples_lost",
            tally.lag_lost.load(Ordering::Relaxed) as f64,
        ),
    ];
    if settings.best_available {
        report.notes.push(
            "best available: each buyer asked for the best ticket of the round's event".into(),
        );
    }
    if let Some(resold) = resold {
        report.operations.extend(resold.operations);
        report.figures.extend(resold.figures);
        report.notes.extend(resold.notes);
    }
    report.notes.push(format!(
        "reserve attempts per second count every POST /api/orders (201 and 400) over the time \
         the races ran, reservations per second the 201s; propagation lag: from an order's 201 to GET /api/tickets/{{id}} showing \
         it, polled every {} ms (an upper bound)",
        LAG_POLL.as_millis()
    ));
    (report, extra_listings)
}

struct RoundOutcome {
    wins: Vec<Win>,
    taken: usize,
    time: Duration,
    stalled: bool,
}

/// Creates the event of a best-available round, as the first seller; `None` if it cannot be.
async fn create_event(ctx: &Context, cast: &Cast, round: usize) -> Option<String> {
    let seller = cast.sellers.first()?;
    let name = format!("Flash sale {} round {}", ctx.run_id, round + 1);
    // Its name, unique to the run and round, keeps it from being another round's event.
    let call = ctx.api.create_event(seller, &name, 30).await;
    #[derive(serde::Deserialize)]
    struct Created {
        id: String,
    }
    call.answer_with(201)
        .and_then(|answer| answer.json::<Created>())
        .map(|event| event.id)
}

/// One race: every buyer against the round's tickets until all are seen taken.
async fn sell(
    ctx: &Arc<Context>,
    cast: &Arc<Cast>,
    tally: &Arc<Tally>,
    listings: &[Listing],
    event: Option<String>,
    round: usize,
    rounds: usize,
) -> RoundOutcome {
    let mut shoppers: Vec<Shopper> = (0..cast.buyers.len())
        .map(|buyer| Shopper {
            buyer,
            known_taken: HashSet::new(),
        })
        .collect();
    shoppers.shuffle(&mut rng());
    let sale = Arc::new(Sale {
        ctx: Arc::clone(ctx),
        cast: Arc::clone(cast),
        tally: Arc::clone(tally),
        tickets: listings.iter().map(|l| l.id.clone()).collect(),
        ticket_index: listings
            .iter()
            .enumerate()
            .map(|(n, l)| (l.id.clone(), n))
            .collect(),
        event,
        taken: listings.iter().map(|_| AtomicBool::new(false)).collect(),
        taken_count: AtomicUsize::new(0),
        still_shopping: AtomicUsize::new(shoppers.len()),
        queue: Mutex::new(shoppers.into()),
        wins: Mutex::new(Vec::new()),
        pacer: Pacer::new(ctx.settings.rate),
        deadline: Instant::now() + ctx.settings.sale_timeout,
        started: Instant::now(),
        last_progress_ms: AtomicU64::new(0),
        lag_watchers: Mutex::new(Vec::new()),
    });

    let started = Instant::now();
    let attempts_before = tally.reserve.count();
    let label = if rounds > 1 {
        format!("flash sale {}/{rounds}", round + 1)
    } else {
        "flash sale".to_owned()
    };
    let progress = Progress::start_named(label, {
        let sale = Arc::clone(&sale);
        move || {
            let attempts = sale.tally.reserve.count() - attempts_before;
            format!(
                "attempts {attempts} ({:.0}/s), taken {}/{}, errors {}",
                per_second(attempts, started.elapsed()),
                sale.taken_count.load(Ordering::Relaxed),
                sale.tickets.len(),
                sale.tally.reserve.errors()
            )
        }
    });
    let workers: Vec<_> = (0..ctx.settings.concurrency)
        .map(|_| tokio::spawn(shop(Arc::clone(&sale))))
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
    let time = started.elapsed();
    progress.finish().await;
    let watchers = sale
        .lag_watchers
        .lock()
        .map(|mut w| std::mem::take(&mut *w))
        .unwrap_or_default();
    for watcher in watchers {
        let _ = watcher.await;
    }
    let wins = sale
        .wins
        .lock()
        .map(|mut w| std::mem::take(&mut *w))
        .unwrap_or_default();
    RoundOutcome {
        wins,
        taken: sale.taken_count.load(Ordering::Relaxed),
        time,
        stalled: sale.stalled(),
    }
}

/// One worker: takes the next buyer in turn and makes one reserve attempt for them.
async fn shop(sale: Arc<Sale>) {
    let mut rng = StdRng::from_rng(&mut rng());
    let tickets = sale.tickets.len();
    while !sale.is_over() {
        let Some(mut shopper) = sale.next_shopper() else {
            if sale.still_shopping.load(Ordering::Relaxed) == 0 {
                break;
            }
            // Every remaining buyer has a request in flight; wait for one to come back.
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        };
        // The ticket a buyer picks, or, asking for the event's best, none yet.
        let picked = match &sale.event {
            Some(_) => None,
            None => {
                let Some(ticket) = shopper.pick(&mut rng, tickets) else {
                    sale.leaves();
                    continue;
                };
                Some(ticket)
            }
        };
        let due = sale.pacer.next_slot().await;
        if sale.is_over() {
            break;
        }
        let Some(buyer) = sale.cast.buyers.get(shopper.buyer) else {
            sale.leaves();
            continue;
        };
        let call = match (&sale.event, picked.and_then(|t| sale.tickets.get(t))) {
            (Some(event), _) => sale.ctx.api.order_best_available(buyer, event).await,
            (None, Some(ticket_id)) => sale.ctx.api.create_order(buyer, ticket_id).await,
            (None, None) => {
                sale.leaves();
                continue;
            }
        };
        sale.tally.reserve.record_since(due, &call);
        match attempt_result(&call) {
            Attempt::Won(order) => {
                let Some(ticket) =
                    picked.or_else(|| sale.ticket_index.get(&order.ticket.id).copied())
                else {
                    // A ticket of the event that this round did not list: not ours to count.
                    sale.tally.other_answers.fetch_add(1, Ordering::Relaxed);
                    sale.leaves();
                    continue;
                };
                sale.progressed();
                sale.mark_taken(ticket);
                sale.leaves();
                let wins = sale.tally.reserved.fetch_add(1, Ordering::Relaxed) as usize;
                if wins.is_multiple_of(sale.tally.lag_every) {
                    watch_propagation(&sale, &call, &order, &order.ticket.id);
                }
                let win = Win {
                    buyer: shopper.buyer,
                    ticket,
                    answered_at_ms: unix_millis_at(call.finished),
                    expires_at_ms: unix_millis(&order.expires_at).unwrap_or(i64::MAX),
                    order_id: order.id,
                };
                if let Ok(mut wins) = sale.wins.lock() {
                    wins.push(win);
                }
            }
            Attempt::SoldOut => {
                sale.progressed();
                sale.tally.sold_out.fetch_add(1, Ordering::Relaxed);
                sale.leaves();
            }
            Attempt::Taken => {
                let Some(ticket) = picked else {
                    sale.tally.other_answers.fetch_add(1, Ordering::Relaxed);
                    sale.queue_again(shopper);
                    continue;
                };
                sale.progressed();
                sale.mark_taken(ticket);
                sale.tally.already_reserved.fetch_add(1, Ordering::Relaxed);
                shopper.known_taken.insert(ticket);
                sale.queue_again(shopper);
            }
            Attempt::Other { failing } => {
                sale.tally.other_answers.fetch_add(1, Ordering::Relaxed);
                sale.queue_again(shopper);
                if failing {
                    // No answer or a 5xx: the marketplace may be down; do not spin on it.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

enum Attempt {
    Won(OrderView),
    Taken,
    /// Asked for an event's best ticket: none is left.
    SoldOut,
    Other {
        failing: bool,
    },
}

fn attempt_result(call: &Call) -> Attempt {
    match &call.outcome {
        Ok(answer) if answer.status == 201 => match answer.json::<OrderView>() {
            Some(order) => Attempt::Won(order),
            None => Attempt::Other { failing: false },
        },
        Ok(answer)
            if answer.status == 400 && answer.error_code().as_deref() == Some(ALREADY_RESERVED) =>
        {
            Attempt::Taken
        }
        Ok(answer) if answer.status == 400 && answer.error_code().as_deref() == Some(SOLD_OUT) => {
            Attempt::SoldOut
        }
        Ok(answer) => Attempt::Other {
            failing: answer.status >= 500,
        },
        Err(_) => Attempt::Other { failing: true },
    }
}

/// Times how long the tickets service takes to show an order's reservation, in a task of its
/// own so the buyer's worker goes on shopping.
fn watch_propagation(sale: &Arc<Sale>, call: &Call, order: &OrderView, ticket_id: &str) {
    if sale.tally.lag.count() as usize >= sale.ctx.settings.lag_samples {
        return;
    }
    let api = sale.ctx.api.clone();
    let lag = Arc::clone(&sale.tally.lag);
    let lost = Arc::clone(&sale.tally.lag_lost);
    let answered = call.finished;
    let order_id = order.id.clone();
    let ticket_id = ticket_id.to_owned();
    let watcher = tokio::spawn(async move {
        loop {
            let poll = api.show_ticket(&ticket_id).await;
            let shown = poll
                .answer_with(200)
                .and_then(|a| a.json::<TicketView>())
                .and_then(|t| t.order_id);
            if shown.as_deref() == Some(order_id.as_str()) {
                lag.record(poll.finished.saturating_duration_since(answered));
                return;
            }
            if answered.elapsed() >= LAG_GIVE_UP {
                lost.fetch_add(1, Ordering::Relaxed);
                return;
            }
            tokio::time::sleep(LAG_POLL).await;
        }
    });
    if let Ok(mut watchers) = sale.lag_watchers.lock() {
        watchers.push(watcher);
    }
}

struct Payments {
    tried: usize,
    paid: Vec<String>,
    retries: u64,
}

/// A share of the winners pay, chosen at random.
async fn pay(ctx: &Context, cast: &Cast, wins: &[Win], operation: &Operation) -> Payments {
    let share = ctx.settings.pay_share;
    let count = ((wins.len() as f64) * share).round() as usize;
    let payers: Vec<&Win> = wins.choose_multiple(&mut rng(), count).collect();
    let retries = AtomicU64::new(0);
    let progress_count = payers.len();
    let paid: Vec<String> = futures::stream::iter(payers)
        .map(|win| {
            let retries = &retries;
            async move {
                let buyer = cast.buyers.get(win.buyer)?;
                pay_order(ctx, buyer, &win.order_id, operation, retries)
                    .await
                    .then(|| win.order_id.clone())
            }
        })
        .buffer_unordered(ctx.settings.concurrency)
        .filter_map(|paid| async move { paid })
        .collect()
        .await;
    Payments {
        tried: progress_count,
        paid,
        retries: retries.into_inner(),
    }
}

/// Pays for one order, under one key, trying again while payments does not know the order yet
/// (each such try counted in `retries`); whether the payment answered 201.
pub(super) async fn pay_order(
    ctx: &Context,
    buyer: &Session,
    order_id: &str,
    operation: &Operation,
    retries: &AtomicU64,
) -> bool {
    let key = crate::client::new_key();
    for _ in 0..PAYMENT_TRIES {
        let call = ctx.api.pay(buyer, order_id, &key).await;
        // 404: payments did not hear of the order within its wait, or too many
        // requests were waiting already.
        if call.status() == Some(404) {
            retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        operation.record(&call);
        return call.answer_with(201).is_some();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shopper_only_picks_tickets_they_have_not_seen_taken() {
        let mut rng = StdRng::seed_from_u64(7);
        let shopper = Shopper {
            buyer: 0,
            known_taken: [0, 1, 2, 4].into_iter().collect(),
        };
        for _ in 0..100 {
            assert_eq!(shopper.pick(&mut rng, 5), Some(3));
        }
        let sated = Shopper {
            buyer: 0,
            known_taken: (0..5).collect(),
        };
        assert_eq!(sated.pick(&mut rng, 5), None);
    }

    #[test]
    fn only_the_already_reserved_answer_counts_as_taken_and_sold_out_as_sold_out() {
        let answer = |status, body: &'static str| Call {
            started: Instant::now(),
            finished: Instant::now(),
            outcome: Ok(crate::client::Answer {
                status,
                body: bytes::Bytes::from_static(body.as_bytes()),
                session: None,
                next_page: None,
            }),
        };
        let taken = answer(
            400,
            r#"{"errors":[{"message":"Ticket is already reserved","code":"ticket_reserved"}]}"#,
        );
        let own = answer(
            400,
            r#"{"errors":[{"message":"You cannot buy your own ticket","code":"own_ticket"}]}"#,
        );
        let sold_out = answer(
            400,
            r#"{"errors":[{"message":"No ticket of this event is for sale at your price","code":"sold_out"}]}"#,
        );
        assert!(matches!(attempt_result(&taken), Attempt::Taken));
        assert!(matches!(attempt_result(&sold_out), Attempt::SoldOut));
        assert!(matches!(
            attempt_result(&own),
            Attempt::Other { failing: false }
        ));
    }
}
