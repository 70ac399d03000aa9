//! The flash sale's resale round (`--resell`), once every round's payments are in. Each winner
//! who paid waits, a bounded while, for the ticket to show in their wallet, kept; then lists it
//! again: one in four first a cent over the wallet's `maxResalePrice`, which must be refused on
//! `price`, then every one at that most or, one in three, half a unit under. Then buyers who paid
//! for nothing in the sale (or, if there are none, the next buyer round the crowd) order the
//! tickets listed again and pay. Orders takes an order on a ticket listed again only once it has
//! heard of the new listing, so "already reserved" is tried again for a few seconds.
//!
//! What was resold, and the orders and payments of the resale, go into the observations: each
//! listing again lets its ticket be sold once more, and the invariants check that every sale of
//! a ticket after the first was within the cap of the one before.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::flash_sale::{ALREADY_RESERVED, pay_order};
use super::{Cast, Context, retry_pause, unix_millis, unix_millis_at};
use crate::client::{Call, OrderView, Session, WalletEntry};
use crate::invariants::{Observations, SaleWin, cents_of};
use crate::progress::Progress;
use crate::stats::{Operation, OperationSummary};

/// Every this many tickets, the owner first asks a cent over the cap.
const OVER_CAP_EVERY: usize = 4;
/// Every this many tickets, the owner asks [`UNDER_CAP_CENTS`] under the cap.
const UNDER_CAP_EVERY: usize = 3;
const UNDER_CAP_CENTS: i64 = 50;
/// Wallet pages read looking for one ticket (the newest tickets come first).
const WALLET_PAGES: usize = 10;
/// Tries of a listing that got no answer or a 5xx.
const LIST_TRIES: usize = 5;
/// How long a resale buyer tries again while orders has not heard of the new listing.
const ORDER_WAIT: Duration = Duration::from_secs(10);
const TICKET_LISTED: &str = "ticket_listed";

/// A ticket a winner of the sale paid for, and which buyer they are.
pub(crate) struct Sold {
    /// The buyer's place in [`Cast::buyers`].
    pub buyer: usize,
    pub ticket_id: String,
}

/// What the round adds to the flash sale's report.
pub(crate) struct ResaleReport {
    pub operations: Vec<OperationSummary>,
    pub figures: Vec<(&'static str, f64)>,
    pub notes: Vec<String>,
}

/// A ticket listed again.
struct Relisted {
    ticket_id: String,
    /// The owner who listed it, by place in [`Cast::buyers`].
    owner: usize,
}

struct Operations {
    wallet: Operation,
    resale: Operation,
    order: Operation,
    payment: Operation,
}

#[derive(Default)]
struct Counts {
    in_wallet: AtomicU64,
    wallet_timeouts: AtomicU64,
    over_cap_tried: AtomicU64,
    over_cap_refused: AtomicU64,
    over_cap_accepted: AtomicU64,
    over_cap_other: AtomicU64,
    listed: AtomicU64,
    listed_under_cap: AtomicU64,
    not_listed: AtomicU64,
    orders_won: AtomicU64,
    order_retries_reserved: AtomicU64,
    orders_lost: AtomicU64,
    paid: AtomicU64,
    payment_retries: AtomicU64,
}

impl Counts {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn get(counter: &AtomicU64) -> f64 {
        counter.load(Ordering::Relaxed) as f64
    }
}

/// Lists every sold ticket again and sells it on, recording what happened in `observations`.
pub(crate) async fn run(
    ctx: &Context,
    cast: &Cast,
    sold: &[Sold],
    observations: &mut Observations,
) -> ResaleReport {
    let started = Instant::now();
    let ops = Operations {
        wallet: Operation::new("GET /api/users/me/tickets", &[200]),
        resale: Operation::new("POST /api/tickets/{id}/resale", &[200, 400]),
        order: Operation::new("POST /api/orders (resale)", &[201, 400]),
        payment: Operation::new("POST /api/payments (resale)", &[201]),
    };
    let counts = Arc::new(Counts::default());
    let progress = Progress::start("resale", {
        let counts = Arc::clone(&counts);
        let total = sold.len();
        move || {
            format!(
                "in wallet {}/{total}, listed again {}, bought {}, paid {}",
                Counts::get(&counts.in_wallet),
                Counts::get(&counts.listed),
                Counts::get(&counts.orders_won),
                Counts::get(&counts.paid),
            )
        }
    });
    let concurrency = ctx.settings.concurrency;

    let relisted: Vec<Relisted> = futures::stream::iter(sold.iter().enumerate())
        .map(|(n, sold)| relist(ctx, cast, n, sold, &ops, &counts))
        .buffer_unordered(concurrency)
        .filter_map(|relisted| async move { relisted })
        .collect()
        .await;
    observations
        .resold
        .extend(relisted.iter().map(|r| r.ticket_id.clone()));

    // Buyers who paid for nothing in the sale buy what was listed again, in turn.
    let sellers: HashSet<usize> = sold.iter().map(|s| s.buyer).collect();
    let fresh: Vec<usize> = (0..cast.buyers.len())
        .filter(|buyer| !sellers.contains(buyer))
        .collect();
    let bought: Vec<(SaleWin, bool)> = futures::stream::iter(relisted.iter().enumerate())
        .map(|(n, relisted)| {
            let buyer = match fresh.get(n % fresh.len().max(1)) {
                Some(buyer) => *buyer,
                None => (relisted.owner + 1) % cast.buyers.len().max(1),
            };
            buy(ctx, cast, buyer, &relisted.ticket_id, &ops, &counts)
        })
        .buffer_unordered(concurrency)
        .filter_map(|bought| async move { bought })
        .collect()
        .await;
    progress.finish().await;
    for (win, paid) in bought {
        if paid {
            observations.paid_orders.push(win.order_id.clone());
        }
        observations.resale_wins.push(win);
    }

    let mut notes = vec![format!(
        "resale: every paying winner lists their ticket again once it is in their wallet, one in \
         {OVER_CAP_EVERY} first a cent over its maxResalePrice (to be refused on price), then at \
         it or, one in {UNDER_CAP_EVERY}, {} under; buyers who paid for nothing buy them",
        UNDER_CAP_CENTS as f64 / 100.0
    )];
    if counts.over_cap_accepted.load(Ordering::Relaxed) > 0 {
        notes.push(format!(
            "resale: {} listings a cent over maxResalePrice were accepted",
            counts.over_cap_accepted.load(Ordering::Relaxed)
        ));
    }
    if counts.wallet_timeouts.load(Ordering::Relaxed) > 0 {
        notes.push(format!(
            "resale: {} paid tickets were not seen kept in their buyer's wallet within {:?}",
            counts.wallet_timeouts.load(Ordering::Relaxed),
            ctx.settings.settle_timeout
        ));
    }
    let c = &counts;
    ResaleReport {
        operations: vec![
            ops.wallet.summary(),
            ops.resale.summary(),
            ops.order.summary(),
            ops.payment.summary(),
        ],
        figures: vec![
            ("resale_s", started.elapsed().as_secs_f64()),
            ("resale_tickets", sold.len() as f64),
            ("resale_in_wallet", Counts::get(&c.in_wallet)),
            ("resale_wallet_timeouts", Counts::get(&c.wallet_timeouts)),
            ("resale_over_cap_tried", Counts::get(&c.over_cap_tried)),
            (
                "resale_over_cap_refused_400",
                Counts::get(&c.over_cap_refused),
            ),
            (
                "resale_over_cap_accepted_200",
                Counts::get(&c.over_cap_accepted),
            ),
            (
                "resale_over_cap_other_answers",
                Counts::get(&c.over_cap_other),
            ),
            ("resale_listed", Counts::get(&c.listed)),
            ("resale_listed_under_cap", Counts::get(&c.listed_under_cap)),
            ("resale_not_listed", Counts::get(&c.not_listed)),
            ("resale_orders_201", Counts::get(&c.orders_won)),
            (
                "resale_order_retries_reserved",
                Counts::get(&c.order_retries_reserved),
            ),
            ("resale_orders_lost", Counts::get(&c.orders_lost)),
            ("resale_payments_201", Counts::get(&c.paid)),
            (
                "resale_payment_retries_order_unknown",
                Counts::get(&c.payment_retries),
            ),
        ],
        notes,
    }
}

/// The `n`th sold ticket, listed again by its owner once it is in their wallet; `None` if it
/// never showed there kept, or was not listed.
async fn relist(
    ctx: &Context,
    cast: &Cast,
    n: usize,
    sold: &Sold,
    ops: &Operations,
    counts: &Counts,
) -> Option<Relisted> {
    let owner = cast.buyers.get(sold.buyer)?;
    let Some(cap) = await_kept(ctx, owner, &sold.ticket_id, &ops.wallet).await else {
        Counts::add(&counts.wallet_timeouts);
        return None;
    };
    Counts::add(&counts.in_wallet);
    let relisted = Relisted {
        ticket_id: sold.ticket_id.clone(),
        owner: sold.buyer,
    };
    if n.is_multiple_of(OVER_CAP_EVERY) {
        Counts::add(&counts.over_cap_tried);
        match list_again(ctx, owner, &sold.ticket_id, cap + 1, &ops.resale).await {
            // Listed over the cap: whoever buys it pays over the cap, which the check reports.
            Relisting::Listed => {
                Counts::add(&counts.over_cap_accepted);
                return Some(relisted);
            }
            Relisting::Refused { field, .. } if field.as_deref() == Some("price") => {
                Counts::add(&counts.over_cap_refused);
            }
            // Listed before, at a price it did not say: it is for sale, to be bought as any.
            Relisting::AlreadyListed => {
                Counts::add(&counts.over_cap_other);
                return Some(relisted);
            }
            Relisting::Refused { .. } | Relisting::Unanswered => {
                Counts::add(&counts.over_cap_other)
            }
        }
    }
    let under = n % UNDER_CAP_EVERY == 1 && cap > UNDER_CAP_CENTS;
    let price = if under { cap - UNDER_CAP_CENTS } else { cap };
    match list_again(ctx, owner, &sold.ticket_id, price, &ops.resale).await {
        Relisting::Listed | Relisting::AlreadyListed => {
            Counts::add(&counts.listed);
            if under {
                Counts::add(&counts.listed_under_cap);
            }
            Some(relisted)
        }
        Relisting::Refused { .. } | Relisting::Unanswered => {
            Counts::add(&counts.not_listed);
            None
        }
    }
}

/// Reads the owner's wallet, a growing pause apart, until it shows the ticket kept, up to
/// `--settle-timeout`: its `maxResalePrice` in cents, or `None` if it never did.
async fn await_kept(
    ctx: &Context,
    owner: &Session,
    ticket_id: &str,
    op: &Operation,
) -> Option<i64> {
    let deadline = Instant::now() + ctx.settings.settle_timeout;
    let mut attempt = 0;
    loop {
        if let Some(entry) = find_in_wallet(ctx, owner, ticket_id, op).await
            && entry.status == "kept"
            && let Some(cap) = cents_of(&entry.max_resale_price)
        {
            return Some(cap);
        }
        if Instant::now() >= deadline {
            return None;
        }
        retry_pause(attempt).await;
        attempt += 1;
    }
}

/// The ticket as the owner's wallet shows it, looking through its first pages.
async fn find_in_wallet(
    ctx: &Context,
    owner: &Session,
    ticket_id: &str,
    op: &Operation,
) -> Option<WalletEntry> {
    let mut path = "/api/users/me/tickets?limit=100".to_owned();
    for _ in 0..WALLET_PAGES {
        let call = ctx.api.wallet(owner, &path).await;
        op.record(&call);
        let answer = call.answer_with(200)?;
        let page: Vec<WalletEntry> = answer.json()?;
        if let Some(entry) = page.into_iter().find(|entry| entry.id == ticket_id) {
            return Some(entry);
        }
        path = answer.next_page.clone()?;
    }
    None
}

/// What came of listing a ticket again.
#[derive(Debug, PartialEq, Eq)]
enum Relisting {
    /// 200.
    Listed,
    /// 400 `ticket_listed`: only its owner lists it, so an earlier try of theirs did, whatever
    /// its answer.
    AlreadyListed,
    Refused {
        code: Option<String>,
        field: Option<String>,
    },
    Unanswered,
}

/// Lists the ticket again at `price_cents`, under one key, trying again on no answer or a 5xx.
async fn list_again(
    ctx: &Context,
    owner: &Session,
    ticket_id: &str,
    price_cents: i64,
    op: &Operation,
) -> Relisting {
    let key = crate::client::new_key();
    for attempt in 0..LIST_TRIES {
        let call = ctx.api.resell(owner, ticket_id, price_cents, &key).await;
        op.record(&call);
        if let Some(listing) = listing_result(&call) {
            return listing;
        }
        retry_pause(attempt).await;
    }
    Relisting::Unanswered
}

/// A listing's answer, or `None` for one worth trying again (no answer, a 5xx).
fn listing_result(call: &Call) -> Option<Relisting> {
    let answer = call.outcome.as_ref().ok()?;
    match answer.status {
        200 => Some(Relisting::Listed),
        status if status >= 500 => None,
        _ => {
            let code = answer.error_code();
            if code.as_deref() == Some(TICKET_LISTED) {
                return Some(Relisting::AlreadyListed);
            }
            Some(Relisting::Refused {
                code,
                field: answer.error_field(),
            })
        }
    }
}

/// `buyer` orders a ticket listed again, trying again while orders has not heard of the new
/// listing, and pays: the win and whether its payment answered 201, or `None` if no order was
/// placed.
async fn buy(
    ctx: &Context,
    cast: &Cast,
    buyer: usize,
    ticket_id: &str,
    ops: &Operations,
    counts: &Counts,
) -> Option<(SaleWin, bool)> {
    let Some(session) = cast.buyers.get(buyer) else {
        Counts::add(&counts.orders_lost);
        return None;
    };
    let deadline = Instant::now() + ORDER_WAIT;
    let mut attempt = 0;
    let (order, answered) = loop {
        let call = ctx.api.create_order(session, ticket_id).await;
        ops.order.record(&call);
        match order_result(&call) {
            OrderAttempt::Placed(order) => break (order, call.finished),
            OrderAttempt::NotYet { reserved } => {
                if reserved {
                    Counts::add(&counts.order_retries_reserved);
                }
            }
            OrderAttempt::Refused => {
                Counts::add(&counts.orders_lost);
                return None;
            }
        }
        if Instant::now() >= deadline {
            Counts::add(&counts.orders_lost);
            return None;
        }
        // 20 ms, doubling to 320 ms.
        tokio::time::sleep(Duration::from_millis(20 << attempt.min(4))).await;
        attempt += 1;
    };
    Counts::add(&counts.orders_won);
    let win = SaleWin {
        ticket_id: order.ticket.id.clone(),
        answered_at_ms: unix_millis_at(answered),
        expires_at_ms: unix_millis(&order.expires_at).unwrap_or(i64::MAX),
        order_id: order.id,
    };
    let paid = pay_order(
        ctx,
        session,
        &win.order_id,
        &ops.payment,
        &counts.payment_retries,
    )
    .await;
    if paid {
        Counts::add(&counts.paid);
    }
    Some((win, paid))
}

enum OrderAttempt {
    Placed(OrderView),
    /// Worth trying again: "already reserved" while orders has not heard of the listing, a
    /// ticket it does not know yet, or no answer.
    NotYet {
        reserved: bool,
    },
    Refused,
}

fn order_result(call: &Call) -> OrderAttempt {
    let Ok(answer) = &call.outcome else {
        return OrderAttempt::NotYet { reserved: false };
    };
    match answer.status {
        201 => answer
            .json::<OrderView>()
            .map_or(OrderAttempt::Refused, OrderAttempt::Placed),
        400 if answer.error_code().as_deref() == Some(ALREADY_RESERVED) => {
            OrderAttempt::NotYet { reserved: true }
        }
        404 => OrderAttempt::NotYet { reserved: false },
        status if status >= 500 => OrderAttempt::NotYet { reserved: false },
        _ => OrderAttempt::Refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(status: u16, body: &'static str) -> Call {
        Call {
            started: Instant::now(),
            finished: Instant::now(),
            outcome: Ok(crate::client::Answer {
                status,
                body: bytes::Bytes::from_static(body.as_bytes()),
                session: None,
                next_page: None,
            }),
        }
    }

    #[test]
    fn a_listing_over_the_cap_is_refused_on_price_and_one_already_listed_counts_as_listed() {
        let over = call(
            400,
            r#"{"errors":[{"field":"price","message":"Price must be at most 45.50, the resale cap on what was paid for it","code":"invalid_field"}]}"#,
        );
        assert_eq!(
            listing_result(&over),
            Some(Relisting::Refused {
                code: Some("invalid_field".into()),
                field: Some("price".into())
            })
        );
        let listed = call(
            400,
            r#"{"errors":[{"message":"The ticket is for sale already","code":"ticket_listed"}]}"#,
        );
        assert_eq!(listing_result(&listed), Some(Relisting::AlreadyListed));
        assert_eq!(listing_result(&call(200, "{}")), Some(Relisting::Listed));
        assert_eq!(listing_result(&call(503, "")), None);
    }

    #[test]
    fn an_order_on_a_listing_orders_has_not_heard_of_is_tried_again() {
        let reserved = call(
            400,
            r#"{"errors":[{"message":"Ticket is already reserved","code":"ticket_reserved"}]}"#,
        );
        assert!(matches!(
            order_result(&reserved),
            OrderAttempt::NotYet { reserved: true }
        ));
        let own = call(
            400,
            r#"{"errors":[{"message":"You cannot buy your own ticket","code":"own_ticket"}]}"#,
        );
        assert!(matches!(order_result(&own), OrderAttempt::Refused));
    }
}
