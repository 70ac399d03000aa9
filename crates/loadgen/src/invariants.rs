//! The marketplace's invariants, checked from what its API showed after a run. The checker is a
//! pure function over [`Observations`], so each rule is tested here against a constructed
//! violation.
//!
//! A ticket may be sold more than once: its owner lists it again (`--resell`), and each listing
//! is sold at most once, one after the other. The run cannot see listings, but it knows how many
//! it made: a ticket has one listing, and one more for each resale the run saw answered. The
//! orders of a ticket are taken in the order they were placed, by id: order ids are UUID v7,
//! time-ordered as text.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::{Serialize, Serializer};

/// Violations listed by name in the report; the rest are only counted.
const LISTED_VIOLATIONS: usize = 20;

/// A ticket as `GET /api/tickets/{id}` showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketSeen {
    pub id: String,
    pub order_id: Option<String>,
    /// The owner, as the ticket shows it (`userId`).
    pub user_id: String,
    /// Who listed it, as the listing answer showed it.
    pub seller_id: String,
}

/// An order as its buyer's `GET /api/orders` showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderSeen {
    pub id: String,
    pub ticket_id: String,
    pub status: String,
    /// The buyer.
    pub user_id: String,
    /// The price it was placed at (`ticket.price`), in cents; `None` if that was not a whole
    /// number of cents.
    pub price_cents: Option<i64>,
}

impl OrderSeen {
    /// Created, awaiting payment or complete: the order holds its listing of the ticket.
    pub fn is_live(&self) -> bool {
        self.is_unfinished() || self.is_paid()
    }

    /// Created or awaiting payment: the order holds its ticket, and may still be paid.
    pub fn is_unfinished(&self) -> bool {
        matches!(self.status.as_str(), "created" | "awaiting:payment")
    }

    /// Complete: paid for.
    pub fn is_paid(&self) -> bool {
        self.status == "complete"
    }
}

/// How far above what was last paid for a ticket its owner may list it again: a factor of that
/// price in hundredths (100: face value), as the marketplace's `--resale-cap` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResaleCap {
    hundredths: u32,
}

impl Default for ResaleCap {
    /// Face value, the marketplace's default.
    fn default() -> Self {
        Self { hundredths: 100 }
    }
}

impl ResaleCap {
    /// A factor as `--resale-cap` takes it: more than 0, at most 100, at most two decimals.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (whole, fraction) = decimal_parts(text.trim())
            .filter(|(whole, _)| whole.len() <= 3)
            .ok_or_else(|| Self::refusal(text))?;
        let hundredths = whole
            .parse::<u32>()
            .ok()
            .zip(fraction.parse::<u32>().ok())
            .map(|(whole, fraction)| whole * 100 + fraction)
            .filter(|hundredths| (1..=10_000).contains(hundredths))
            .ok_or_else(|| Self::refusal(text))?;
        Ok(Self { hundredths })
    }

    fn refusal(text: &str) -> String {
        format!("{text:?} is not a factor above 0, at most 100, with at most two decimals")
    }

    /// Whether a ticket last sold at `paid_cents` may sell next at `price_cents`:
    /// `price × 100 <= paid × cap in hundredths`, in whole cents.
    pub fn allows(self, paid_cents: i64, price_cents: i64) -> bool {
        i128::from(price_cents) * 100 <= i128::from(paid_cents) * i128::from(self.hundredths)
    }
}

impl fmt::Display for ResaleCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.hundredths / 100, self.hundredths % 100)
    }
}

impl Serialize for ResaleCap {
    /// As the factor it is, `1.1`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(f64::from(self.hundredths) / 100.0)
    }
}

/// A non-negative decimal written with at most two decimals, as its whole digits and its
/// fraction padded to two digits (`"45.5"` is `("45", "50")`); `None` for anything else.
fn decimal_parts(text: &str) -> Option<(&str, String)> {
    let (whole, fraction) = match text.split_once('.') {
        Some((_, "")) => return None,
        Some(parts) => parts,
        None => (text, ""),
    };
    let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || fraction.len() > 2 || !digits(whole) || !digits(fraction) {
        return None;
    }
    Some((whole, format!("{fraction:0<2}")))
}

/// A JSON amount in major units as cents, read exactly from the number's shortest decimal form:
/// `45.5` is 4550. `None` for a negative amount, one with a fraction of a cent, or one too large.
pub fn cents_of(number: &serde_json::Number) -> Option<i64> {
    let text = number.to_string();
    let (whole, fraction) = decimal_parts(&text)?;
    // A whole amount sent as a float reads `30.0`: one decimal, no fraction of a cent.
    let whole: i64 = whole.parse().ok()?;
    let fraction: i64 = fraction.parse().ok()?;
    whole.checked_mul(100)?.checked_add(fraction)
}

/// Cents as a person reads them: `45.50`.
fn plain(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, (cents % 100).abs())
}

/// A 201 to `POST /api/orders` during the flash sale, with its times in unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleWin {
    pub ticket_id: String,
    pub order_id: String,
    pub answered_at_ms: i64,
    pub expires_at_ms: i64,
}

/// Everything the checks look at.
#[derive(Debug, Clone, Default)]
pub struct Observations {
    /// Every ticket the run listed, as last seen.
    pub tickets: Vec<TicketSeen>,
    /// Every order of every user of the run.
    pub orders: Vec<OrderSeen>,
    /// Orders whose payment answered 201.
    pub paid_orders: Vec<String>,
    pub sale_wins: Vec<SaleWin>,
    /// 201s to `POST /api/orders` for tickets listed again in the resale round.
    pub resale_wins: Vec<SaleWin>,
    /// The tickets the run listed again (`POST /api/tickets/{id}/resale` answered 200), once per
    /// listing: each is one more listing of its ticket, to be sold once.
    pub resold: Vec<String>,
    /// The resale cap the marketplace runs with, as `--resale-cap` says.
    pub resale_cap: ResaleCap,
    /// Orders placed as holds, which must all lapse.
    pub holds: Vec<String>,
    /// Requests of the check itself that got no usable answer: what they would have shown is
    /// unknown.
    pub unanswered: Vec<String>,
}

/// The verdict on one invariant.
#[derive(Debug, Clone, Serialize)]
pub struct InvariantResult {
    pub name: &'static str,
    pub passed: bool,
    /// How many things were checked (tickets, orders, payments).
    pub checked: usize,
    pub violation_count: usize,
    /// The first violations, described.
    pub violations: Vec<String>,
}

impl InvariantResult {
    fn new(name: &'static str, checked: usize, violations: Vec<String>) -> Self {
        Self {
            name,
            passed: violations.is_empty(),
            checked,
            violation_count: violations.len(),
            violations: violations.into_iter().take(LISTED_VIOLATIONS).collect(),
        }
    }
}

pub const ONE_LIVE_ORDER: &str =
    "every ticket has at most one live order per listing, and at most one unpaid, placed last";
pub const RESERVED_MATCHES_LIVE: &str = "reserved tickets are exactly the tickets of live orders";
pub const PAID_ARE_COMPLETE: &str = "every paid order is complete";
pub const NO_OVERLAPPING_SALES: &str =
    "no ticket was sold to two buyers at once in the flash sale or its resale round";
pub const HOLDS_LAPSED: &str = "every hold was cancelled when its window passed";
pub const ONE_OWNER: &str =
    "every ticket has exactly one owner: its last paid order's buyer, or its seller";
pub const RESALE_CAP: &str = "a resale chain never breaks the cap";
pub const ALL_ANSWERED: &str = "the marketplace answered every request of the check";

/// Checks every invariant over what was observed.
pub fn check(observed: &Observations) -> Vec<InvariantResult> {
    vec![
        one_live_order_per_ticket(observed),
        reserved_tickets_match_live_orders(observed),
        paid_orders_are_complete(observed),
        no_overlapping_sales(observed),
        holds_lapsed(observed),
        one_owner_per_ticket(observed),
        resales_within_cap(observed),
        InvariantResult::new(
            ALL_ANSWERED,
            observed.tickets.len() + observed.orders.len(),
            observed.unanswered.clone(),
        ),
    ]
}

/// Whether the verdicts that events may still change (the tickets service catching up with
/// orders) are all in; the others would not change by waiting.
pub fn settled(results: &[InvariantResult]) -> bool {
    results
        .iter()
        .filter(|r| {
            [
                RESERVED_MATCHES_LIVE,
                HOLDS_LAPSED,
                PAID_ARE_COMPLETE,
                ONE_OWNER,
            ]
            .contains(&r.name)
        })
        .all(|r| r.passed)
}

/// Each ticket's live orders, in the order they were placed.
fn live_orders_by_ticket(orders: &[OrderSeen]) -> HashMap<&str, Vec<&OrderSeen>> {
    let mut by_ticket: HashMap<&str, Vec<&OrderSeen>> = HashMap::new();
    for order in orders.iter().filter(|o| o.is_live()) {
        by_ticket.entry(&order.ticket_id).or_default().push(order);
    }
    for orders in by_ticket.values_mut() {
        orders.sort_by(|a, b| a.id.cmp(&b.id));
    }
    by_ticket
}

/// Each ticket's paid orders, in the order they were placed.
fn paid_orders_by_ticket(orders: &[OrderSeen]) -> HashMap<&str, Vec<&OrderSeen>> {
    let mut by_ticket = live_orders_by_ticket(orders);
    for orders in by_ticket.values_mut() {
        orders.retain(|o| o.is_paid());
    }
    by_ticket.retain(|_, orders| !orders.is_empty());
    by_ticket
}

/// How many times the run listed each ticket it resold: one listing more each.
fn resales_by_ticket(observed: &Observations) -> HashMap<&str, usize> {
    let mut resales: HashMap<&str, usize> = HashMap::new();
    for ticket in &observed.resold {
        *resales.entry(ticket).or_default() += 1;
    }
    resales
}

/// Why a ticket's live orders, in the order they were placed, cannot all stand, if they cannot.
/// Each of its `listings` is sold once, one after the other, so at most that many orders are
/// live; at most one of them is unpaid (the other listings were paid for before the next was
/// made); and that one was placed after every paid one.
fn live_orders_problem(ticket: &str, live: &[&OrderSeen], listings: usize) -> Option<String> {
    let unfinished = live.iter().filter(|o| o.is_unfinished()).count();
    if live.len() > listings || unfinished > 1 {
        let ids: Vec<String> = live
            .iter()
            .map(|o| format!("{} ({})", o.id, o.status))
            .collect();
        let of = if listings > 1 {
            format!(" over its {listings} listings")
        } else {
            String::new()
        };
        return Some(format!(
            "ticket {ticket} has live orders {}{of}",
            ids.join(", ")
        ));
    }
    let first_unfinished = live.iter().position(|o| o.is_unfinished())?;
    let unfinished = live.get(first_unfinished)?;
    let later_paid = live
        .iter()
        .skip(first_unfinished + 1)
        .find(|o| o.is_paid())?;
    Some(format!(
        "ticket {ticket} has unpaid order {} ({}) placed before its paid order {}",
        unfinished.id, unfinished.status, later_paid.id
    ))
}

fn one_live_order_per_ticket(observed: &Observations) -> InvariantResult {
    let resales = resales_by_ticket(observed);
    let mut violations: Vec<String> = live_orders_by_ticket(&observed.orders)
        .into_iter()
        .filter_map(|(ticket, live)| {
            let listings = 1 + resales.get(ticket).copied().unwrap_or(0);
            live_orders_problem(ticket, &live, listings)
        })
        .collect();
    violations.sort();
    let tickets: HashSet<&str> = observed.orders.iter().map(|o| &*o.ticket_id).collect();
    InvariantResult::new(ONE_LIVE_ORDER, tickets.len(), violations)
}

fn reserved_tickets_match_live_orders(observed: &Observations) -> InvariantResult {
    let violations = reservation_mismatches(observed)
        .into_iter()
        .map(|(_, why)| why)
        .collect();
    InvariantResult::new(RESERVED_MATCHES_LIVE, observed.tickets.len(), violations)
}

/// The tickets whose reservation or owner, as read, disagrees with the orders as read: the ones
/// worth reading again while events may still be on their way.
pub fn tickets_in_question(observed: &Observations) -> HashSet<String> {
    reservation_mismatches(observed)
        .into_iter()
        .chain(ownership_mismatches(observed))
        .map(|(ticket, _)| ticket.to_owned())
        .collect()
}

/// The order a ticket should show in `orderId`, from its live orders in the order they were
/// placed: its unpaid order if it has one; else, if its last listing is sold, the last paid
/// order; else (never sold, or listed again since) none.
fn expected_reservation<'a>(live: &[&'a OrderSeen], listings: usize) -> Option<&'a OrderSeen> {
    if let Some(unfinished) = live.iter().rev().find(|o| o.is_unfinished()) {
        return Some(unfinished);
    }
    let paid = live.iter().filter(|o| o.is_paid()).count();
    if paid >= listings {
        live.iter().rev().find(|o| o.is_paid()).copied()
    } else {
        None
    }
}

/// Each ticket whose reservation disagrees with the live orders, with the disagreement in words.
/// A ticket whose live orders cannot all stand ([`ONE_LIVE_ORDER`] reports it) need only show
/// one of them.
fn reservation_mismatches(observed: &Observations) -> Vec<(&str, String)> {
    let live = live_orders_by_ticket(&observed.orders);
    let resales = resales_by_ticket(observed);
    let all_orders: HashMap<&str, &OrderSeen> =
        observed.orders.iter().map(|o| (&*o.id, o)).collect();
    let mut mismatches = Vec::new();
    for ticket in &observed.tickets {
        let id = ticket.id.as_str();
        let live = live.get(id).map_or(&[][..], Vec::as_slice);
        let listings = 1 + resales.get(id).copied().unwrap_or(0);
        let double_sold = live_orders_problem(id, live, listings).is_some();
        let expected = expected_reservation(live, listings);
        match &ticket.order_id {
            Some(order_id) => match all_orders.get(order_id.as_str()) {
                None => mismatches.push((
                    id,
                    format!("ticket {id} is reserved by order {order_id}, which no user has"),
                )),
                Some(order) if order.ticket_id != ticket.id => mismatches.push((
                    id,
                    format!(
                        "ticket {id} is reserved by order {order_id}, which is for ticket {}",
                        order.ticket_id
                    ),
                )),
                Some(order) if !order.is_live() => mismatches.push((
                    id,
                    format!(
                        "ticket {id} is reserved by order {order_id}, which is {}",
                        order.status
                    ),
                )),
                Some(_) if double_sold => {}
                Some(order) => match expected {
                    Some(latest) if latest.id == order.id => {}
                    Some(latest) => mismatches.push((
                        id,
                        format!(
                            "ticket {id} is reserved by order {order_id} ({}), but its latest \
                             live order is {} ({})",
                            order.status, latest.id, latest.status
                        ),
                    )),
                    None => mismatches.push((
                        id,
                        format!(
                            "ticket {id} is reserved by order {order_id} ({}), but was listed \
                             again since",
                            order.status
                        ),
                    )),
                },
            },
            None if double_sold => {
                for order in live {
                    mismatches.push((
                        id,
                        format!(
                            "ticket {id} is not reserved, yet order {} for it is {}",
                            order.id, order.status
                        ),
                    ));
                }
            }
            None => {
                if let Some(order) = expected {
                    mismatches.push((
                        id,
                        format!(
                            "ticket {id} is not reserved, yet order {} for it is {}",
                            order.id, order.status
                        ),
                    ));
                }
            }
        }
    }
    mismatches
}

fn one_owner_per_ticket(observed: &Observations) -> InvariantResult {
    let violations = ownership_mismatches(observed)
        .into_iter()
        .map(|(_, why)| why)
        .collect();
    InvariantResult::new(ONE_OWNER, observed.tickets.len(), violations)
}

/// Each ticket whose owner is not the buyer of its last paid order by placing (or, never paid
/// for, its seller), with the disagreement in words. A ticket paid for twice on one listing is
/// [`ONE_LIVE_ORDER`]'s to report.
fn ownership_mismatches(observed: &Observations) -> Vec<(&str, String)> {
    let paid = paid_orders_by_ticket(&observed.orders);
    let mut mismatches = Vec::new();
    for ticket in &observed.tickets {
        let (id, owner) = (ticket.id.as_str(), ticket.user_id.as_str());
        match paid.get(id).and_then(|orders| orders.last()) {
            None if owner != ticket.seller_id => mismatches.push((
                id,
                format!(
                    "ticket {id} is owned by {owner}, but no order of it is paid and its seller \
                     is {}",
                    ticket.seller_id
                ),
            )),
            Some(order) if owner != order.user_id => mismatches.push((
                id,
                format!(
                    "ticket {id} is owned by {owner}, but its last paid order {} was bought by {}",
                    order.id, order.user_id
                ),
            )),
            None | Some(_) => {}
        }
    }
    mismatches
}

/// Each ticket's paid orders, in the order they were placed, each at most the cap times what
/// the one before it was paid.
fn resales_within_cap(observed: &Observations) -> InvariantResult {
    let cap = observed.resale_cap;
    let mut checked = 0;
    let mut violations = Vec::new();
    for (ticket, paid) in paid_orders_by_ticket(&observed.orders) {
        for pair in paid.windows(2) {
            let [before, after] = pair else { continue };
            checked += 1;
            match (before.price_cents, after.price_cents) {
                (Some(paid), Some(price)) if cap.allows(paid, price) => {}
                (Some(paid), Some(price)) => violations.push(format!(
                    "ticket {ticket} sold for {} in order {} after {} in order {}: over {cap} \
                     times",
                    plain(price),
                    after.id,
                    plain(paid),
                    before.id
                )),
                _ => violations.push(format!(
                    "ticket {ticket} was resold in order {} after order {}, but their prices \
                     are not both whole cents",
                    after.id, before.id
                )),
            }
        }
    }
    violations.sort();
    InvariantResult::new(RESALE_CAP, checked, violations)
}

fn paid_orders_are_complete(observed: &Observations) -> InvariantResult {
    let violations = not_in_status(observed, &observed.paid_orders, "complete", "paid order");
    InvariantResult::new(PAID_ARE_COMPLETE, observed.paid_orders.len(), violations)
}

/// Each of `ids` whose order is not in `wanted` status, in words.
fn not_in_status(observed: &Observations, ids: &[String], wanted: &str, what: &str) -> Vec<String> {
    let statuses: HashMap<&str, &str> = observed
        .orders
        .iter()
        .map(|o| (&*o.id, &*o.status))
        .collect();
    ids.iter()
        .filter_map(|id| match statuses.get(id.as_str()) {
            Some(status) if *status == wanted => None,
            Some(status) => Some(format!("{what} {id} is {status}")),
            None => Some(format!("{what} {id} is not among its buyer's orders")),
        })
        .collect()
}

/// Two 201s for one ticket are a double sale unless the first order's window had passed
/// (it lapsed, and the ticket was rightly for sale again) when the second was answered. The
/// flash sale's wins and the resale round's are each of one listing and compared apart: a win
/// of the sale that was paid rightly overlaps the resale's.
fn no_overlapping_sales(observed: &Observations) -> InvariantResult {
    let mut violations = overlapping_wins(&observed.sale_wins);
    violations.extend(overlapping_wins(&observed.resale_wins));
    violations.sort();
    let checked = observed.sale_wins.len() + observed.resale_wins.len();
    InvariantResult::new(NO_OVERLAPPING_SALES, checked, violations)
}

/// Each two of `wins` for one ticket of which the second was answered within the first's window.
fn overlapping_wins(wins: &[SaleWin]) -> Vec<String> {
    let mut by_ticket: HashMap<&str, Vec<&SaleWin>> = HashMap::new();
    for win in wins {
        by_ticket.entry(&win.ticket_id).or_default().push(win);
    }
    let mut violations = Vec::new();
    for (ticket, mut wins) in by_ticket {
        wins.sort_by_key(|w| w.answered_at_ms);
        for pair in wins.windows(2) {
            let (first, second) = (pair[0], pair[1]);
            if second.answered_at_ms < first.expires_at_ms {
                violations.push(format!(
                    "ticket {ticket} was sold as order {} and, while that held it, as order {}",
                    first.order_id, second.order_id
                ));
            }
        }
    }
    violations
}

fn holds_lapsed(observed: &Observations) -> InvariantResult {
    let violations = not_in_status(observed, &observed.holds, "cancelled", "hold");
    InvariantResult::new(HOLDS_LAPSED, observed.holds.len(), violations)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Who listed every ticket of these tests.
    const SELLER: &str = "s1";

    fn ticket(id: &str, order: Option<&str>, owner: &str) -> TicketSeen {
        TicketSeen {
            id: id.into(),
            order_id: order.map(Into::into),
            user_id: owner.into(),
            seller_id: SELLER.into(),
        }
    }

    fn order(id: &str, ticket: &str, status: &str, buyer: &str) -> OrderSeen {
        OrderSeen {
            id: id.into(),
            ticket_id: ticket.into(),
            status: status.into(),
            user_id: buyer.into(),
            price_cents: Some(3_000),
        }
    }

    /// A paid order at `cents`.
    fn paid(id: &str, ticket: &str, buyer: &str, cents: i64) -> OrderSeen {
        OrderSeen {
            price_cents: Some(cents),
            ..order(id, ticket, "complete", buyer)
        }
    }

    fn win(ticket: &str, order: &str, answered: i64, expires: i64) -> SaleWin {
        SaleWin {
            ticket_id: ticket.into(),
            order_id: order.into(),
            answered_at_ms: answered,
            expires_at_ms: expires,
        }
    }

    /// A consistent run: one ticket sold and paid (now its buyer's), one held, one whose hold
    /// lapsed (both still their seller's).
    fn consistent() -> Observations {
        Observations {
            tickets: vec![
                ticket("t1", Some("o1"), "b1"),
                ticket("t2", Some("o2"), SELLER),
                ticket("t3", None, SELLER),
            ],
            orders: vec![
                order("o1", "t1", "complete", "b1"),
                order("o2", "t2", "created", "b2"),
                order("o3", "t3", "cancelled", "b3"),
            ],
            paid_orders: vec!["o1".into()],
            sale_wins: vec![
                win("t1", "o1", 1_000, 21_000),
                win("t2", "o2", 1_100, 21_100),
            ],
            holds: vec!["o3".into()],
            ..Observations::default()
        }
    }

    /// [`consistent`], after t1's buyer b1 listed it again (paid 30.00, cap 1.10) and b6 bought
    /// it, in order o6, for `cents`.
    fn resold_to_b6_at(cents: i64) -> Observations {
        let mut observed = consistent();
        observed.resale_cap = ResaleCap::parse("1.1").unwrap();
        observed.resold.push("t1".into());
        observed.orders.push(paid("o6", "t1", "b6", cents));
        observed.paid_orders.push("o6".into());
        observed.resale_wins.push(win("t1", "o6", 40_000, 60_000));
        observed.tickets[0] = ticket("t1", Some("o6"), "b6");
        observed
    }

    fn verdict<'a>(results: &'a [InvariantResult], name: &str) -> &'a InvariantResult {
        results.iter().find(|r| r.name == name).unwrap()
    }

    fn failed(results: &[InvariantResult]) -> Vec<&'static str> {
        results
            .iter()
            .filter(|r| !r.passed)
            .map(|r| r.name)
            .collect()
    }

    #[test]
    fn a_consistent_marketplace_passes_every_check() {
        let results = check(&consistent());
        assert_eq!(failed(&results), Vec::<&str>::new());
        assert_eq!(verdict(&results, RESERVED_MATCHES_LIVE).checked, 3);
        assert_eq!(verdict(&results, ONE_OWNER).checked, 3);
        assert!(settled(&results));
    }

    #[test]
    fn two_live_orders_on_one_ticket_are_a_double_sale() {
        let mut observed = consistent();
        observed
            .orders
            .push(order("o4", "t1", "awaiting:payment", "b4"));

        let results = check(&observed);

        let double = verdict(&results, ONE_LIVE_ORDER);
        assert!(!double.passed);
        assert_eq!(double.violation_count, 1);
        assert!(
            double.violations[0].contains("t1"),
            "{:?}",
            double.violations
        );
        assert_eq!(failed(&results), [ONE_LIVE_ORDER]);
    }

    #[test]
    fn only_tickets_that_disagree_with_the_orders_are_in_question() {
        let mut observed = consistent();
        assert!(tickets_in_question(&observed).is_empty());
        observed.tickets[2] = ticket("t3", Some("o3"), SELLER);
        observed.tickets[1] = ticket("t2", None, SELLER);

        let in_question = tickets_in_question(&observed);

        assert_eq!(
            in_question,
            HashSet::from(["t2".to_owned(), "t3".to_owned()])
        );
    }

    #[test]
    fn a_ticket_reserved_by_a_cancelled_order_is_caught() {
        let mut observed = consistent();
        observed.tickets[2] = ticket("t3", Some("o3"), SELLER);

        let results = check(&observed);

        assert_eq!(failed(&results), [RESERVED_MATCHES_LIVE]);
        assert!(verdict(&results, RESERVED_MATCHES_LIVE).violations[0].contains("cancelled"));
    }

    #[test]
    fn a_live_order_whose_ticket_is_not_reserved_is_caught() {
        let mut observed = consistent();
        observed.tickets[1] = ticket("t2", None, SELLER);

        let results = check(&observed);

        assert_eq!(failed(&results), [RESERVED_MATCHES_LIVE]);
        assert!(!settled(&results));
    }

    #[test]
    fn a_ticket_reserved_by_an_order_nobody_has_is_caught() {
        let mut observed = consistent();
        observed.tickets[2] = ticket("t3", Some("o-unknown"), SELLER);

        assert_eq!(failed(&check(&observed)), [RESERVED_MATCHES_LIVE]);
    }

    #[test]
    fn a_paid_ticket_still_owned_by_its_seller_is_caught_and_waited_for() {
        let mut observed = consistent();
        observed.tickets[0] = ticket("t1", Some("o1"), SELLER);

        let results = check(&observed);

        assert_eq!(failed(&results), [ONE_OWNER]);
        let violation = &verdict(&results, ONE_OWNER).violations[0];
        assert!(
            violation.contains("owned by s1") && violation.contains("o1 was bought by b1"),
            "{violation}"
        );
        // The hand-over travels by events: the run reads the ticket again until it lands.
        assert!(!settled(&results));
        assert_eq!(
            tickets_in_question(&observed),
            HashSet::from(["t1".to_owned()])
        );
    }

    #[test]
    fn an_unpaid_ticket_owned_by_someone_else_is_caught() {
        let mut observed = consistent();
        observed.tickets[1] = ticket("t2", Some("o2"), "b2");
        observed.tickets[2] = ticket("t3", None, "b3");

        let results = check(&observed);

        assert_eq!(failed(&results), [ONE_OWNER]);
        let owner = verdict(&results, ONE_OWNER);
        assert_eq!(owner.violation_count, 2);
        assert!(owner.violations.iter().all(|v| v.contains("seller is s1")));
    }

    #[test]
    fn without_a_resale_a_ticket_paid_for_twice_is_a_double_sale() {
        let mut observed = consistent();
        observed.orders.push(order("o5", "t1", "complete", "b5"));

        let results = check(&observed);

        assert_eq!(failed(&results), [ONE_LIVE_ORDER, ONE_OWNER]);
        let double = &verdict(&results, ONE_LIVE_ORDER).violations[0];
        assert!(
            double.contains("o1 (complete)") && double.contains("o5 (complete)"),
            "{double}"
        );
        // The ticket stayed with the first buyer; the last paid order is the second's.
        let owner = &verdict(&results, ONE_OWNER).violations[0];
        assert!(owner.contains("o5 was bought by b5"), "{owner}");
    }

    #[test]
    fn a_resold_ticket_owned_by_its_second_buyer_passes_every_check() {
        let observed = resold_to_b6_at(3_300);

        let results = check(&observed);

        assert_eq!(failed(&results), Vec::<&str>::new());
        assert_eq!(verdict(&results, RESALE_CAP).checked, 1);
        assert_eq!(verdict(&results, NO_OVERLAPPING_SALES).checked, 3);
        assert!(tickets_in_question(&observed).is_empty());
    }

    #[test]
    fn a_resold_ticket_still_owned_by_its_first_buyer_is_caught_and_waited_for() {
        let mut observed = resold_to_b6_at(3_000);
        observed.tickets[0] = ticket("t1", Some("o6"), "b1");

        let results = check(&observed);

        assert_eq!(failed(&results), [ONE_OWNER]);
        let violation = &verdict(&results, ONE_OWNER).violations[0];
        assert!(violation.contains("o6 was bought by b6"), "{violation}");
        assert!(!settled(&results));
    }

    #[test]
    fn a_resold_ticket_showing_its_earlier_sale_is_caught() {
        let mut observed = resold_to_b6_at(3_000);
        observed.tickets[0] = ticket("t1", Some("o1"), "b6");

        let results = check(&observed);

        assert_eq!(failed(&results), [RESERVED_MATCHES_LIVE]);
        let violation = &verdict(&results, RESERVED_MATCHES_LIVE).violations[0];
        assert!(violation.contains("latest live order is o6"), "{violation}");
        assert_eq!(
            tickets_in_question(&observed),
            HashSet::from(["t1".to_owned()])
        );
    }

    #[test]
    fn a_ticket_listed_again_and_not_yet_sold_shows_no_order_and_stays_its_owners() {
        let mut observed = consistent();
        observed.resold.push("t1".into());
        observed.tickets[0] = ticket("t1", None, "b1");
        assert_eq!(failed(&check(&observed)), Vec::<&str>::new());

        // Still showing the sale it was listed again after: the listing has not landed yet.
        observed.tickets[0] = ticket("t1", Some("o1"), "b1");
        let results = check(&observed);
        assert_eq!(failed(&results), [RESERVED_MATCHES_LIVE]);
        assert!(
            verdict(&results, RESERVED_MATCHES_LIVE).violations[0].contains("listed again"),
            "{:?}",
            verdict(&results, RESERVED_MATCHES_LIVE).violations
        );
    }

    #[test]
    fn a_resold_ticket_held_by_its_next_buyer_shows_that_order() {
        let mut observed = consistent();
        observed.resold.push("t1".into());
        observed.orders.push(order("o7", "t1", "created", "b7"));
        observed.tickets[0] = ticket("t1", Some("o7"), "b1");

        assert_eq!(failed(&check(&observed)), Vec::<&str>::new());
    }

    #[test]
    fn a_second_paid_order_on_one_resale_listing_is_a_double_sale() {
        let mut observed = resold_to_b6_at(3_000);
        observed.orders.push(paid("o8", "t1", "b8", 3_000));
        observed.tickets[0] = ticket("t1", Some("o8"), "b8");

        let results = check(&observed);

        assert_eq!(failed(&results), [ONE_LIVE_ORDER]);
        let violation = &verdict(&results, ONE_LIVE_ORDER).violations[0];
        assert!(violation.contains("over its 2 listings"), "{violation}");
    }

    #[test]
    fn an_unpaid_order_placed_before_a_paid_one_is_caught() {
        let mut observed = consistent();
        observed.resold.push("t1".into());
        // o0 sorts before o1: placed before the first sale, and still not paid or cancelled.
        observed.orders.push(order("o0", "t1", "created", "b9"));

        let results = check(&observed);

        assert_eq!(failed(&results), [ONE_LIVE_ORDER]);
        let violation = &verdict(&results, ONE_LIVE_ORDER).violations[0];
        assert!(
            violation.contains("unpaid order o0") && violation.contains("paid order o1"),
            "{violation}"
        );
    }

    #[test]
    fn a_resale_chain_at_the_cap_passes() {
        // 30.00 × 1.10 = 33.00, then 33.00 × 1.10 = 36.30.
        let mut observed = resold_to_b6_at(3_300);
        observed.resold.push("t1".into());
        observed.orders.push(paid("o7", "t1", "b7", 3_630));
        observed.tickets[0] = ticket("t1", Some("o7"), "b7");

        let results = check(&observed);

        assert_eq!(failed(&results), Vec::<&str>::new());
        assert_eq!(verdict(&results, RESALE_CAP).checked, 2);
    }

    #[test]
    fn a_resale_a_cent_over_the_cap_is_caught() {
        let results = check(&resold_to_b6_at(3_301));

        assert_eq!(failed(&results), [RESALE_CAP]);
        let violation = &verdict(&results, RESALE_CAP).violations[0];
        assert!(
            violation.contains("33.01 in order o6 after 30.00 in order o1")
                && violation.contains("1.10"),
            "{violation}"
        );
        // At face value, the marketplace's default, even a resale at 30.01 is over.
        let mut face_value = resold_to_b6_at(3_001);
        face_value.resale_cap = ResaleCap::default();
        assert_eq!(failed(&check(&face_value)), [RESALE_CAP]);
    }

    #[test]
    fn a_resale_whose_price_is_no_whole_cents_is_caught() {
        let mut observed = resold_to_b6_at(3_000);
        if let Some(o6) = observed.orders.iter_mut().find(|o| o.id == "o6") {
            o6.price_cents = None;
        }

        assert_eq!(failed(&check(&observed)), [RESALE_CAP]);
    }

    #[test]
    fn a_second_resale_win_while_the_first_holds_the_ticket_is_caught() {
        let mut observed = resold_to_b6_at(3_000);
        // Within o6's window, and well after o1's: only the resale's own wins are compared.
        observed.resale_wins.push(win("t1", "o9", 45_000, 65_000));

        assert!(!verdict(&check(&observed), NO_OVERLAPPING_SALES).passed);
    }

    #[test]
    fn a_resale_cap_is_read_as_a_factor_to_two_decimals() {
        for (text, hundredths) in [("1", 100), ("1.1", 110), ("1.15", 115), ("0.5", 50)] {
            assert_eq!(
                ResaleCap::parse(text),
                Ok(ResaleCap { hundredths }),
                "{text}"
            );
        }
        for text in [
            "", "0", "0.00", "100.01", "1.155", "-1", "1e2", ".5", "5.", "ten",
        ] {
            assert!(ResaleCap::parse(text).is_err(), "{text}");
        }
        assert_eq!(ResaleCap::parse("1.1").unwrap().to_string(), "1.10");
        let cap = ResaleCap::parse("1.15").unwrap();
        // 19.99 × 1.15 = 22.9885: 22.98 is within, 22.99 over.
        assert!(cap.allows(1_999, 2_298));
        assert!(!cap.allows(1_999, 2_299));
    }

    #[test]
    fn amounts_are_read_as_exact_cents() {
        let cents = |text: &str| cents_of(&serde_json::from_str(text).unwrap());
        assert_eq!(cents("30"), Some(3_000));
        assert_eq!(cents("30.0"), Some(3_000));
        assert_eq!(cents("45.5"), Some(4_550));
        assert_eq!(cents("0.29"), Some(29));
        assert_eq!(cents("1000000"), Some(100_000_000));
        assert_eq!(cents("19.999"), None);
        assert_eq!(cents("-5"), None);
        assert_eq!(cents("1e30"), None);
    }

    #[test]
    fn a_paid_order_that_is_not_complete_is_caught() {
        let mut observed = consistent();
        observed.paid_orders.push("o2".into());

        let results = check(&observed);

        assert_eq!(failed(&results), [PAID_ARE_COMPLETE]);
        assert!(verdict(&results, PAID_ARE_COMPLETE).violations[0].contains("created"));
    }

    #[test]
    fn a_paid_order_missing_from_the_buyers_orders_is_caught() {
        let mut observed = consistent();
        observed.paid_orders.push("o-lost".into());

        assert_eq!(failed(&check(&observed)), [PAID_ARE_COMPLETE]);
    }

    #[test]
    fn a_second_sale_while_the_first_order_holds_the_ticket_is_caught() {
        let mut observed = consistent();
        observed.sale_wins.push(win("t1", "o9", 5_000, 25_000));

        let results = check(&observed);

        assert_eq!(failed(&results), [NO_OVERLAPPING_SALES]);
        let violation = &verdict(&results, NO_OVERLAPPING_SALES).violations[0];
        assert!(
            violation.contains("o1") && violation.contains("o9"),
            "{violation}"
        );
    }

    #[test]
    fn a_second_sale_after_the_first_order_lapsed_is_no_double_sale() {
        let mut observed = consistent();
        observed.sale_wins.push(win("t2", "o9", 30_000, 50_000));

        let results = check(&observed);

        assert!(verdict(&results, NO_OVERLAPPING_SALES).passed);
    }

    #[test]
    fn a_hold_that_did_not_lapse_is_caught() {
        let mut observed = consistent();
        observed.holds.push("o2".into());

        let results = check(&observed);

        assert_eq!(failed(&results), [HOLDS_LAPSED]);
    }

    #[test]
    fn unanswered_check_requests_fail_the_run() {
        let mut observed = consistent();
        observed
            .unanswered
            .push("GET /api/tickets/t2: timeout".into());

        assert_eq!(failed(&check(&observed)), [ALL_ANSWERED]);
    }

    #[test]
    fn only_the_first_violations_are_listed_but_all_are_counted() {
        let mut observed = Observations::default();
        for i in 0..30 {
            observed
                .tickets
                .push(ticket(&format!("t{i}"), Some("o-unknown"), SELLER));
        }

        let results = check(&observed);

        let verdict = verdict(&results, RESERVED_MATCHES_LIVE);
        assert_eq!(verdict.violation_count, 30);
        assert_eq!(verdict.violations.len(), LISTED_VIOLATIONS);
    }
}
