//! The marketplace's invariants, checked from what its API showed after a run. The checker is a
//! pure function over [`Observations`], so each rule is tested here against a constructed
//! violation.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

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
}

impl OrderSeen {
    /// Created, awaiting payment or complete: the order holds its ticket.
    pub fn is_live(&self) -> bool {
        matches!(
            self.status.as_str(),
            "created" | "awaiting:payment" | "complete"
        )
    }
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

pub const ONE_LIVE_ORDER: &str = "every ticket has at most one live order";
pub const RESERVED_MATCHES_LIVE: &str = "reserved tickets are exactly the tickets of live orders";
pub const PAID_ARE_COMPLETE: &str = "every paid order is complete";
pub const NO_OVERLAPPING_SALES: &str = "no ticket was sold to two buyers at once in the flash sale";
pub const HOLDS_LAPSED: &str = "every hold was cancelled when its window passed";
pub const ONE_OWNER: &str =
    "every ticket has exactly one owner: its last paid order's buyer, or its seller";
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

fn live_orders_by_ticket(orders: &[OrderSeen]) -> HashMap<&str, Vec<&OrderSeen>> {
    let mut by_ticket: HashMap<&str, Vec<&OrderSeen>> = HashMap::new();
    for order in orders.iter().filter(|o| o.is_live()) {
        by_ticket.entry(&order.ticket_id).or_default().push(order);
    }
    by_ticket
}

fn one_live_order_per_ticket(observed: &Observations) -> InvariantResult {
    let mut violations: Vec<String> = live_orders_by_ticket(&observed.orders)
        .into_iter()
        .filter(|(_, orders)| orders.len() > 1)
        .map(|(ticket, orders)| {
            let ids: Vec<String> = orders
                .iter()
                .map(|o| format!("{} ({})", o.id, o.status))
                .collect();
            format!("ticket {ticket} has live orders {}", ids.join(", "))
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

/// Each ticket whose reservation disagrees with the live orders, with the disagreement in words.
fn reservation_mismatches(observed: &Observations) -> Vec<(&str, String)> {
    let live = live_orders_by_ticket(&observed.orders);
    let all_orders: HashMap<&str, &OrderSeen> =
        observed.orders.iter().map(|o| (&*o.id, o)).collect();
    let mut mismatches = Vec::new();
    for ticket in &observed.tickets {
        let id = ticket.id.as_str();
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
                Some(_) => {}
            },
            None => {
                for order in live.get(id).map_or(&[][..], Vec::as_slice) {
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

/// Each ticket whose owner is not the buyer of its paid order (or, unpaid, its seller), with the
/// disagreement in words.
fn ownership_mismatches(observed: &Observations) -> Vec<(&str, String)> {
    let mut paid: HashMap<&str, Vec<&OrderSeen>> = HashMap::new();
    for order in observed.orders.iter().filter(|o| o.status == "complete") {
        paid.entry(&order.ticket_id).or_default().push(order);
    }
    let mut mismatches = Vec::new();
    for ticket in &observed.tickets {
        let (id, owner) = (ticket.id.as_str(), ticket.user_id.as_str());
        match paid.get(id).map_or(&[][..], Vec::as_slice) {
            [] if owner != ticket.seller_id => mismatches.push((
                id,
                format!(
                    "ticket {id} is owned by {owner}, but no order of it is paid and its seller \
                     is {}",
                    ticket.seller_id
                ),
            )),
            [order] if owner != order.user_id => mismatches.push((
                id,
                format!(
                    "ticket {id} is owned by {owner}, but its paid order {} was bought by {}",
                    order.id, order.user_id
                ),
            )),
            [] | [_] => {}
            // Which payment came last the orders do not show; two buyers paid for one ticket
            // and at most one of them can own it, so the ticket is reported whoever holds it.
            orders => {
                let mut buyers: Vec<String> = orders
                    .iter()
                    .map(|o| format!("{} (bought by {})", o.id, o.user_id))
                    .collect();
                buyers.sort();
                mismatches.push((
                    id,
                    format!(
                        "ticket {id} is owned by {owner}, but has paid orders {}",
                        buyers.join(", ")
                    ),
                ));
            }
        }
    }
    mismatches
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
/// (it lapsed, and the ticket was rightly for sale again) when the second was answered.
fn no_overlapping_sales(observed: &Observations) -> InvariantResult {
    let mut by_ticket: HashMap<&str, Vec<&SaleWin>> = HashMap::new();
    for win in &observed.sale_wins {
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
    violations.sort();
    InvariantResult::new(NO_OVERLAPPING_SALES, observed.sale_wins.len(), violations)
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
            unanswered: Vec::new(),
        }
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
    fn a_ticket_paid_for_twice_has_no_one_owner() {
        let mut observed = consistent();
        observed.orders.push(order("o5", "t1", "complete", "b5"));

        let results = check(&observed);

        assert_eq!(failed(&results), [ONE_LIVE_ORDER, ONE_OWNER]);
        let violation = &verdict(&results, ONE_OWNER).violations[0];
        assert!(
            violation.contains("o1 (bought by b1)") && violation.contains("o5 (bought by b5)"),
            "{violation}"
        );
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
