//! The orders domain: what an order and a replicated ticket are, what a client sends to place an
//! order, how an order shows on the wire, and the rules: which status an order moves to on a
//! cancellation, an expiry, a payment's request, failure or success.
//! Pure rules, no I/O.

use std::time::Duration;

use common::FieldError;
use common::events::{
    OrderCancelled, OrderCompleted, OrderCreated, OrderStatus, OrderTicket, OrderUpdated,
    TicketCreated, TicketRef,
};
use common::money::{self, Cents};
use common::validate::{FieldErrors, Validate, id_field};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// How long a buyer has to pay unless the operator says otherwise.
pub const DEFAULT_ORDER_EXPIRATION: Duration = Duration::from_secs(15 * 60);

/// The statuses in which an order holds its ticket and may still be paid (and, while no payment
/// is granted it, cancelled). Only orders in these statuses ever change; `cancelled` and
/// `complete` are final.
pub const LIVE: [OrderStatus; 2] = [OrderStatus::Created, OrderStatus::AwaitingPayment];

/// A ticket as the orders service knows it: a replica of the tickets service's ticket, written
/// only from ticket:created and ticket:updated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub id: Uuid,
    pub title: String,
    pub price: Cents,
    /// The seller.
    pub user_id: Uuid,
    /// The version of the last ticket event applied.
    pub version: i64,
    /// When the event the ticket is for starts, and its sale ends; `None` for a ticket of no
    /// event (or one listed before listings told it). Never changes.
    pub sale_ends_at: Option<OffsetDateTime>,
    /// Which listing of the ticket the replica shows: orders are placed on it.
    pub listing: i64,
}

impl Ticket {
    /// The replica's first view of a ticket.
    pub fn from_created(event: &TicketCreated) -> Self {
        Self {
            id: event.id,
            title: event.title.clone(),
            price: event.price,
            user_id: event.user_id,
            version: event.version,
            sale_ends_at: event.event_starts_at,
            listing: 0,
        }
    }

    /// Whether the ticket's sale is over at `now`: its event has started.
    pub fn sale_has_ended(&self, now: OffsetDateTime) -> bool {
        self.sale_ends_at.is_some_and(|end| end <= now)
    }
}

/// An order as the service stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: Uuid,
    /// The buyer.
    pub user_id: Uuid,
    pub ticket_id: Uuid,
    /// The ticket as the buyer saw it when placing the order: its title, price and version.
    /// What the order shows and what it charges, whatever the seller edits afterwards.
    pub title: String,
    pub price: Cents,
    pub ticket_version: i64,
    pub status: OrderStatus,
    /// While the order awaits payment: the one payment granted the right to charge it.
    pub payment_id: Option<Uuid>,
    /// The attempt of the last payment granted, kept after its grant ends.
    pub payment_attempt: Option<i64>,
    pub expires_at: OffsetDateTime,
    /// 0 when placed; bumped on every change announced to other services.
    pub version: i64,
    pub created_at: OffsetDateTime,
    /// The listing of the ticket it was placed on.
    pub listing: i64,
}

/// Why an order cannot be placed, before the database has had its say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaceError {
    /// The buyer is the seller.
    OwnTicket,
    /// The ticket's event has started.
    SaleEnded,
}

impl Order {
    /// A new order by `buyer` on `ticket`, version 0, status created, expiring at `expires_at`
    /// or when the ticket's sale ends, whichever comes first: so the expiry that lets an unpaid
    /// hold go also ends it when the event starts. A seller cannot buy their own ticket: it would
    /// lock it away from real buyers and pay the seller their own money.
    pub fn place(
        buyer: Uuid,
        ticket: &Ticket,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<Self, PlaceError> {
        if ticket.user_id == buyer {
            return Err(PlaceError::OwnTicket);
        }
        if ticket.sale_has_ended(now) {
            return Err(PlaceError::SaleEnded);
        }
        let expires_at = ticket
            .sale_ends_at
            .map_or(expires_at, |end| end.min(expires_at));
        Ok(Self {
            id: Uuid::now_v7(),
            user_id: buyer,
            ticket_id: ticket.id,
            title: ticket.title.clone(),
            price: ticket.price,
            ticket_version: ticket.version,
            status: OrderStatus::Created,
            payment_id: None,
            payment_attempt: None,
            expires_at,
            version: 0,
            created_at: now,
            listing: ticket.listing,
        })
    }

    /// The event announcing a newly placed order, with the title and price the buyer saw.
    pub fn created_event(&self) -> OrderCreated {
        OrderCreated {
            id: self.id,
            version: self.version,
            status: self.status,
            user_id: self.user_id,
            expires_at: self.expires_at,
            ticket: OrderTicket {
                id: self.ticket_id,
                price: self.price,
                title: Some(self.title.clone()),
            },
            listing: self.listing,
        }
    }

    /// The event announcing a cancellation, at the order's (bumped) version.
    pub fn cancelled_event(&self) -> OrderCancelled {
        OrderCancelled {
            id: self.id,
            version: self.version,
            ticket: TicketRef { id: self.ticket_id },
        }
    }

    /// The event announcing a grant to a payment, or its end, at the order's (bumped) version.
    pub fn updated_event(&self) -> OrderUpdated {
        OrderUpdated {
            id: self.id,
            version: self.version,
            status: self.status,
            payment_id: self.payment_id,
            ticket: TicketRef { id: self.ticket_id },
        }
    }

    /// Whether the payment window has passed at `now`, whether or not its expiry has arrived.
    pub fn has_expired(&self, now: OffsetDateTime) -> bool {
        self.expires_at <= now
    }

    /// The event announcing a payment, at the order's (bumped) version.
    pub fn completed_event(&self) -> OrderCompleted {
        OrderCompleted {
            id: self.id,
            version: self.version,
            ticket: TicketRef { id: self.ticket_id },
            user_id: Some(self.user_id),
        }
    }
}

/// Limits on one buyer's holds, so that a bot cannot take a sale off the market 15 minutes at a
/// time (OWASP OAT-021, denial of inventory). Checked when an order is placed, against the
/// buyer's orders in the database, so they hold however many replicas take the requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldLimits {
    /// Live holds (orders not yet paid, cancelled or lapsed) a buyer may have at once; 0: no
    /// cap.
    pub max_live: u32,
    /// How long a buyer who cancelled an order, or let it lapse, waits before holding that
    /// ticket again, so that cancelling and ordering again cannot renew a hold; zero: no wait.
    pub cooldown: Duration,
    /// Orders a buyer may place in an hour, so that holds cannot be churned; 0: no limit.
    pub max_per_hour: u32,
}

/// The span over which [`HoldLimits::max_per_hour`] counts orders.
pub const ORDER_RATE_WINDOW: Duration = Duration::from_secs(60 * 60);

impl Default for HoldLimits {
    /// Well above what a person buying for a group does, well below a sale's worth of tickets.
    fn default() -> Self {
        Self {
            max_live: 10,
            cooldown: Duration::from_secs(5 * 60),
            max_per_hour: 60,
        }
    }
}

/// What the limits need to know of a buyer about to hold a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BuyerActivity {
    /// The buyer's live holds.
    pub live_holds: i64,
    /// When the buyer's last order on this ticket was cancelled or lapsed, if ever.
    pub released_ticket_at: Option<OffsetDateTime>,
    /// When the buyer placed the `max_per_hour`-th newest of their orders of the last hour;
    /// `None` if they placed fewer.
    pub oldest_counted_order_at: Option<OffsetDateTime>,
}

/// Why a buyer may not hold another ticket now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitRefusal {
    /// The buyer holds as many tickets as they may.
    TooManyHolds { max: u32 },
    /// The buyer released this ticket too recently; they may hold it again after `wait`.
    CoolingDown { wait: Duration },
    /// The buyer placed as many orders as they may in an hour; the next is allowed after `wait`.
    TooManyOrders { max: u32, wait: Duration },
}

impl HoldLimits {
    /// Whether every limit is off, so that nothing need be read or locked.
    pub fn is_off(&self) -> bool {
        self.max_live == 0 && self.cooldown.is_zero() && self.max_per_hour == 0
    }

    /// Orders placed after this time count towards [`HoldLimits::max_per_hour`].
    pub fn counted_since(now: OffsetDateTime) -> OffsetDateTime {
        now.saturating_sub(
            time::Duration::try_from(ORDER_RATE_WINDOW).unwrap_or(time::Duration::MAX),
        )
    }

    /// A ticket the buyer let go after this time is still cooling down for them at `now`.
    pub fn cooling_since(&self, now: OffsetDateTime) -> OffsetDateTime {
        now.saturating_sub(time::Duration::try_from(self.cooldown).unwrap_or(time::Duration::MAX))
    }

    /// Whether a buyer with this activity may hold another ticket at `now`.
    pub fn check(&self, activity: &BuyerActivity, now: OffsetDateTime) -> Result<(), LimitRefusal> {
        if self.max_live > 0 && activity.live_holds >= i64::from(self.max_live) {
            return Err(LimitRefusal::TooManyHolds { max: self.max_live });
        }
        if let Some(released) = activity.released_ticket_at
            && let Some(wait) = time_left(released, self.cooldown, now)
        {
            return Err(LimitRefusal::CoolingDown { wait });
        }
        if self.max_per_hour > 0
            && let Some(oldest) = activity.oldest_counted_order_at
            && let Some(wait) = time_left(oldest, ORDER_RATE_WINDOW, now)
        {
            return Err(LimitRefusal::TooManyOrders {
                max: self.max_per_hour,
                wait,
            });
        }
        Ok(())
    }
}

/// How long after `now` a span of `span` from `since` ends; `None` if it has ended.
fn time_left(since: OffsetDateTime, span: Duration, now: OffsetDateTime) -> Option<Duration> {
    let left = plus(since, span) - now;
    Duration::try_from(left).ok().filter(|left| !left.is_zero())
}

/// When an order placed at `now` expires.
pub fn expires_at(now: OffsetDateTime, window: Duration) -> OffsetDateTime {
    plus(now, window)
}

/// A time plus a span, saturating rather than overflowing on an absurd span.
fn plus(at: OffsetDateTime, span: Duration) -> OffsetDateTime {
    at.saturating_add(time::Duration::try_from(span).unwrap_or(time::Duration::MAX))
}

/// What happens to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Its owner cancels it (`DELETE /api/orders/{id}`).
    Cancel,
    /// Its payment window passed (expiration:complete).
    Expire,
    /// It was paid (payment:created).
    Pay,
}

/// What a trigger does to an order in a given status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Move to this status, bump the version and announce it.
    To(OrderStatus),
    /// Nothing to do (already there, or nothing left to expire): no change and no event.
    Unchanged,
    /// The trigger contradicts the order's final status: no change and no event, and whoever
    /// asked is told so (a paid order is not cancelled; a cancelled order is not completed).
    Refused,
}

/// The order status rules for cancellations, expiries and payments, in one place.
pub fn transition(status: OrderStatus, trigger: Trigger) -> Transition {
    use OrderStatus::{AwaitingPayment, Cancelled, Complete, Created};
    match (status, trigger) {
        (Created, Trigger::Cancel | Trigger::Expire) => Transition::To(Cancelled),
        (Created | AwaitingPayment, Trigger::Pay) => Transition::To(Complete),
        // Granted to a payment that may be charging the card right now: its owner may not
        // cancel it, and its expiry waits for the payment's end (see [`reopen`]).
        (AwaitingPayment, Trigger::Cancel) => Transition::Refused,
        (AwaitingPayment, Trigger::Expire) => Transition::Unchanged,
        // Cancelling twice, or expiring an order its owner cancelled: done already. Emitting a
        // second order:cancelled could release a ticket that a newer order holds.
        (Cancelled, Trigger::Cancel | Trigger::Expire) => Transition::Unchanged,
        // Payments refunds a charge for a cancelled order when it hears order:cancelled.
        (Cancelled, Trigger::Pay) => Transition::Refused,
        // The expiry job still fires for a paid order; a paid order keeps its ticket.
        (Complete, Trigger::Expire | Trigger::Pay) => Transition::Unchanged,
        (Complete, Trigger::Cancel) => Transition::Refused,
    }
}

/// What orders does when payments asks to charge an order for a payment (payment:requested).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Move the order to `awaiting:payment`, granted to this payment, and announce it.
    Grant,
    /// Granted to this payment already (the request arrived twice): nothing to do.
    Granted,
    /// The payment window has passed: cancel the order instead, as its expiry would.
    Expire,
    /// The order is paid or cancelled: nothing to grant. Payments hears why from the
    /// order:completed or order:cancelled already on its way, and refuses the payment.
    Refuse,
}

/// Decides on a request to charge `order` for `payment`, its buyer's attempt number `attempt`,
/// at `now`.
pub fn grant(order: &Order, payment: Uuid, attempt: i64, now: OffsetDateTime) -> Grant {
    let last = order.payment_attempt.unwrap_or(0);
    if order.status == OrderStatus::AwaitingPayment && order.payment_id == Some(payment) {
        return Grant::Granted;
    }
    if order.status.is_final() || attempt <= last {
        // Paid or cancelled; or a request older than one granted already, arriving late.
        return Grant::Refuse;
    }
    match order.status {
        // An order awaiting another payment is not cancelled here: that payment's end decides
        // (see [`reopen`]).
        OrderStatus::AwaitingPayment if order.has_expired(now) => Grant::Refuse,
        OrderStatus::Created if order.has_expired(now) => Grant::Expire,
        // Payments asks for a later attempt only once the one before has ended without a
        // charge; its payment:failed may simply not have arrived yet. So the later attempt takes
        // the grant over, and the late failure finds it no longer matches.
        _ => Grant::Grant,
    }
}

/// What orders does when a payment ends without a charge (payment:failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reopen {
    /// Back to `created`, no payment granted: the buyer may pay again, or cancel. Announced.
    Reopen,
    /// The payment window passed while the payment ran: cancel the order now, as its expiry
    /// (which found it awaiting payment and left it) would have.
    Expire,
    /// Not this payment's order any more (a late or repeated failure): nothing to do.
    Ignore,
}

/// Decides on the failure of `payment` for `order` at `now`.
pub fn reopen(order: &Order, payment: Uuid, now: OffsetDateTime) -> Reopen {
    if order.status != OrderStatus::AwaitingPayment || order.payment_id != Some(payment) {
        Reopen::Ignore
    } else if order.has_expired(now) {
        Reopen::Expire
    } else {
        Reopen::Reopen
    }
}

/// The ticket as an order shows it: `{id, title, price, version}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = OrderedTicket)]
pub struct TicketView {
    pub id: Uuid,
    /// The title when the order was placed; a later edit does not change it.
    pub title: String,
    /// The price when the order was placed, and what its payment charges: in the currency's
    /// major unit, at most two decimals; cents inside.
    #[serde(serialize_with = "money::major")]
    #[schema(value_type = f64, minimum = 0.01, maximum = 1000000)]
    pub price: Cents,
    pub version: i64,
}

/// An order as the HTTP API shows it: `{id, userId, status, expiresAt, version, ticket}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Order, example = json!({
    "id": "0193f1c4-2b3c-7d4e-8f5a-6b7c8d9e0f12", "userId": "0193f1c3-0a1b-7c2d-9e3f-4a5b6c7d8e9f",
    "status": "created", "expiresAt": "2026-06-01T18:45:00.456Z", "version": 0,
    "ticket": {"id": "0193f1c2-7a4e-7c1d-9a53-2f1e4d6b8c01", "title": "Radiohead, floor standing",
        "price": 79.5, "version": 0}
}))]
pub struct OrderView {
    pub id: Uuid,
    /// The buyer.
    pub user_id: Uuid,
    pub status: OrderStatus,
    /// When an unpaid order lets its ticket go.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: OffsetDateTime,
    pub version: i64,
    pub ticket: TicketView,
}

impl OrderView {
    /// The order with its ticket as the buyer saw it when placing it.
    pub fn new(order: &Order) -> Self {
        Self {
            id: order.id,
            user_id: order.user_id,
            status: order.status,
            expires_at: order.expires_at,
            version: order.version,
            ticket: TicketView {
                id: order.ticket_id,
                title: order.title.clone(),
                price: order.price,
                version: order.ticket_version,
            },
        }
    }
}

/// A valid request to place an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewOrder {
    /// This very ticket.
    Ticket(Uuid),
    /// The cheapest ticket of the event for sale, at most `max_price` if given.
    BestAvailable {
        event_id: Uuid,
        max_price: Option<Cents>,
    },
}

/// The body of `POST /api/orders` as received, kept as raw JSON so that a wrong type is a field
/// error like a missing value.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"ticketId": "0193f1c2-7a4e-7c1d-9a53-2f1e4d6b8c01"}))]
pub struct OrderBody {
    /// The ticket to hold for the buyer until the order is paid or expires. Give either this or
    /// `eventId`.
    #[serde(default)]
    #[schema(value_type = Option<Uuid>)]
    pub ticket_id: Option<serde_json::Value>,
    /// Instead of a ticket, an event: the cheapest of its tickets for sale that is not the
    /// buyer's own is held.
    #[serde(default)]
    #[schema(value_type = Option<Uuid>)]
    pub event_id: Option<serde_json::Value>,
    /// With `eventId`: the most the buyer will pay, in the currency's major unit.
    #[serde(default)]
    #[schema(value_type = Option<f64>, minimum = 0.01, maximum = 1000000)]
    pub max_price: Option<serde_json::Value>,
}

impl Validate for OrderBody {
    type Valid = NewOrder;

    fn validate(self) -> Result<NewOrder, Vec<FieldError>> {
        let given = |value: &Option<serde_json::Value>| {
            value.as_ref().filter(|value| !value.is_null()).is_some()
        };
        let mut errors = FieldErrors::new();
        let order = match (given(&self.ticket_id), given(&self.event_id)) {
            (true, true) => {
                errors.add("eventId", "Give a ticket id or an event id, not both");
                None
            }
            (false, true) => {
                let event_id =
                    errors.check("eventId", id_field(self.event_id.as_ref(), "Event id"));
                let max_price = if given(&self.max_price) {
                    errors
                        .check(
                            "maxPrice",
                            Cents::from_json(self.max_price.as_ref())
                                .map_err(|message| message.replacen("Price", "Max price", 1)),
                        )
                        .map(Some)
                } else {
                    Some(None)
                };
                event_id
                    .zip(max_price)
                    .map(|(event_id, max_price)| NewOrder::BestAvailable {
                        event_id,
                        max_price,
                    })
            }
            (_, false) => {
                let ticket_id =
                    errors.check("ticketId", id_field(self.ticket_id.as_ref(), "Ticket id"));
                if given(&self.max_price) {
                    errors.add("maxPrice", "Max price goes with an event id");
                }
                ticket_id.map(NewOrder::Ticket)
            }
        };
        errors.into_result(order)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    const ALL: [OrderStatus; 4] = [
        OrderStatus::Created,
        OrderStatus::Cancelled,
        OrderStatus::AwaitingPayment,
        OrderStatus::Complete,
    ];
    const TRIGGERS: [Trigger; 3] = [Trigger::Cancel, Trigger::Expire, Trigger::Pay];

    fn ticket(seller: Uuid) -> Ticket {
        Ticket {
            id: Uuid::now_v7(),
            title: "Concert".into(),
            price: Cents::new(1999).unwrap(),
            user_id: seller,
            version: 3,
            sale_ends_at: None,
            listing: 0,
        }
    }

    fn body(value: serde_json::Value) -> Result<NewOrder, Vec<FieldError>> {
        serde_json::from_value::<OrderBody>(value)
            .unwrap()
            .validate()
    }

    #[test]
    fn a_created_order_is_cancelled_by_its_owner_or_its_expiry_and_completed_by_payment() {
        let created = OrderStatus::Created;
        assert_eq!(
            transition(created, Trigger::Cancel),
            Transition::To(OrderStatus::Cancelled)
        );
        assert_eq!(
            transition(created, Trigger::Expire),
            Transition::To(OrderStatus::Cancelled)
        );
        assert_eq!(
            transition(created, Trigger::Pay),
            Transition::To(OrderStatus::Complete)
        );
    }

    #[test]
    fn an_order_awaiting_payment_is_neither_cancelled_nor_expired_only_paid() {
        let awaiting = OrderStatus::AwaitingPayment;
        assert_eq!(transition(awaiting, Trigger::Cancel), Transition::Refused);
        assert_eq!(transition(awaiting, Trigger::Expire), Transition::Unchanged);
        assert_eq!(
            transition(awaiting, Trigger::Pay),
            Transition::To(OrderStatus::Complete)
        );
    }

    fn order_in(
        status: OrderStatus,
        payment_id: Option<Uuid>,
        expires_at: OffsetDateTime,
    ) -> Order {
        let now = datetime!(2026-11-25 12:00 UTC);
        Order {
            status,
            payment_id,
            payment_attempt: payment_id.map(|_| 1),
            ..Order::place(Uuid::now_v7(), &ticket(Uuid::now_v7()), now, expires_at).unwrap()
        }
    }

    #[test]
    fn a_live_order_is_granted_to_the_payment_that_asks_unless_its_window_passed() {
        let now = datetime!(2026-11-25 12:05 UTC);
        let later = datetime!(2026-11-25 12:15 UTC);
        let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(
            grant(&order_in(OrderStatus::Created, None, later), first, 1, now),
            Grant::Grant
        );
        let granted = order_in(OrderStatus::AwaitingPayment, Some(first), later);
        assert_eq!(grant(&granted, first, 1, now), Grant::Granted);
        assert_eq!(
            grant(&granted, second, 2, now),
            Grant::Grant,
            "taken over by a later attempt"
        );
        assert_eq!(
            grant(&granted, second, 1, now),
            Grant::Refuse,
            "never by an earlier one"
        );
        let reopened = Order {
            payment_id: None,
            status: OrderStatus::Created,
            ..granted.clone()
        };
        assert_eq!(
            grant(&reopened, first, 1, now),
            Grant::Refuse,
            "a late repeat of the spent one"
        );
        assert_eq!(grant(&reopened, second, 2, now), Grant::Grant);
        assert_eq!(
            grant(&order_in(OrderStatus::Created, None, now), first, 1, now),
            Grant::Expire
        );
        assert_eq!(
            grant(
                &order_in(OrderStatus::AwaitingPayment, Some(first), now),
                second,
                2,
                now
            ),
            Grant::Refuse,
            "the payment under way decides an expired order's end"
        );
        for done in [OrderStatus::Cancelled, OrderStatus::Complete] {
            assert_eq!(
                grant(&order_in(done, None, later), first, 1, now),
                Grant::Refuse
            );
        }
    }

    #[test]
    fn only_the_granted_payments_failure_reopens_an_order_or_lets_it_expire() {
        let now = datetime!(2026-11-25 12:05 UTC);
        let later = datetime!(2026-11-25 12:15 UTC);
        let (granted, other) = (Uuid::now_v7(), Uuid::now_v7());
        let awaiting = order_in(OrderStatus::AwaitingPayment, Some(granted), later);
        assert_eq!(reopen(&awaiting, granted, now), Reopen::Reopen);
        assert_eq!(reopen(&awaiting, other, now), Reopen::Ignore);
        let lapsed = order_in(OrderStatus::AwaitingPayment, Some(granted), now);
        assert_eq!(reopen(&lapsed, granted, now), Reopen::Expire);
        for status in [
            OrderStatus::Created,
            OrderStatus::Cancelled,
            OrderStatus::Complete,
        ] {
            assert_eq!(
                reopen(&order_in(status, None, later), granted, now),
                Reopen::Ignore
            );
        }
    }

    #[test]
    fn a_cancelled_order_stays_cancelled_and_is_never_completed() {
        let cancelled = OrderStatus::Cancelled;
        assert_eq!(
            transition(cancelled, Trigger::Cancel),
            Transition::Unchanged
        );
        assert_eq!(
            transition(cancelled, Trigger::Expire),
            Transition::Unchanged
        );
        assert_eq!(transition(cancelled, Trigger::Pay), Transition::Refused);
    }

    #[test]
    fn a_paid_order_cannot_be_cancelled_and_does_not_expire() {
        let complete = OrderStatus::Complete;
        assert_eq!(transition(complete, Trigger::Cancel), Transition::Refused);
        assert_eq!(transition(complete, Trigger::Expire), Transition::Unchanged);
        assert_eq!(transition(complete, Trigger::Pay), Transition::Unchanged);
    }

    #[test]
    fn only_live_orders_change_and_they_only_reach_final_statuses() {
        // The store's conditional update moves orders out of LIVE only; this is what makes
        // that sufficient.
        for status in ALL {
            for trigger in TRIGGERS {
                if let Transition::To(next) = transition(status, trigger) {
                    assert!(LIVE.contains(&status), "{status:?} moved on {trigger:?}");
                    assert!(next.is_final(), "{status:?} -> {next:?} is not final");
                }
            }
        }
        for status in ALL {
            assert_eq!(LIVE.contains(&status), !status.is_final(), "{status:?}");
        }
    }

    #[test]
    fn an_order_is_placed_created_at_version_0_on_someone_elses_ticket() {
        let (seller, buyer) = (Uuid::now_v7(), Uuid::now_v7());
        let ticket = ticket(seller);
        let now = datetime!(2026-11-25 12:00 UTC);
        let expires = expires_at(now, DEFAULT_ORDER_EXPIRATION);

        let order = Order::place(buyer, &ticket, now, expires).unwrap();

        assert_eq!(order.status, OrderStatus::Created);
        assert_eq!(order.version, 0);
        assert_eq!(order.user_id, buyer);
        assert_eq!(order.ticket_id, ticket.id);
        assert_eq!(order.expires_at, datetime!(2026-11-25 12:15 UTC));
        assert_eq!(order.id.get_version_num(), 7);
        let event = order.created_event();
        assert_eq!(event.ticket.price, ticket.price);
        assert_eq!(event.expires_at, order.expires_at);
        assert_eq!(
            Order::place(seller, &ticket, now, expires),
            Err(PlaceError::OwnTicket)
        );
    }

    #[test]
    fn a_hold_on_a_ticket_of_an_event_ends_when_the_event_starts_if_not_before() {
        let now = datetime!(2026-11-25 12:00 UTC);
        let expires = expires_at(now, DEFAULT_ORDER_EXPIRATION);
        let starting_at = |start| Ticket {
            sale_ends_at: Some(start),
            ..ticket(Uuid::now_v7())
        };
        let place = |ticket: &Ticket| Order::place(Uuid::now_v7(), ticket, now, expires);

        let soon = datetime!(2026-11-25 12:05 UTC);
        assert_eq!(place(&starting_at(soon)).unwrap().expires_at, soon);
        let later = datetime!(2026-11-25 20:00 UTC);
        assert_eq!(place(&starting_at(later)).unwrap().expires_at, expires);
        assert_eq!(place(&starting_at(now)), Err(PlaceError::SaleEnded));
        let just_now = datetime!(2026-11-25 11:59:59.999 UTC);
        assert_eq!(place(&starting_at(just_now)), Err(PlaceError::SaleEnded));
        assert!(!starting_at(soon).sale_has_ended(now));
        assert!(starting_at(soon).sale_has_ended(soon));
    }

    #[test]
    fn an_order_keeps_the_ticket_as_the_buyer_saw_it_and_announces_that() {
        let seen = ticket(Uuid::now_v7());
        let now = datetime!(2026-11-25 12:00 UTC);
        let order = Order::place(Uuid::now_v7(), &seen, now, now).unwrap();

        assert_eq!(
            (order.title.as_str(), order.price, order.ticket_version),
            ("Concert", seen.price, 3)
        );
        let event = order.created_event();
        assert_eq!(event.ticket.price, seen.price);
        assert_eq!(event.ticket.title.as_deref(), Some("Concert"));
    }

    #[test]
    fn an_absurd_window_saturates_instead_of_overflowing() {
        let now = datetime!(2026-11-25 12:00 UTC);
        assert!(expires_at(now, Duration::MAX) > now);
        assert_eq!(expires_at(now, Duration::ZERO), now);
    }

    #[test]
    fn the_ticket_id_must_be_a_uuid() {
        let id = Uuid::now_v7();
        assert_eq!(
            body(json!({"ticketId": id.to_string(), "eventId": null})),
            Ok(NewOrder::Ticket(id))
        );
        for bad in [
            json!({}),
            json!({"ticketId": null}),
            json!({"ticketId": ""}),
            json!({"ticketId": "  "}),
            json!({"ticketId": "not-a-uuid"}),
            json!({"ticketId": 5}),
            json!({"ticketId": {"id": id.to_string()}}),
        ] {
            let errors = body(bad.clone()).unwrap_err();
            assert_eq!(errors.len(), 1, "{bad}");
            assert_eq!(errors[0].field.as_deref(), Some("ticketId"), "{bad}");
        }
    }

    #[test]
    fn an_event_asks_for_its_best_ticket_within_an_optional_price() {
        let event = Uuid::now_v7();
        assert_eq!(
            body(json!({"eventId": event.to_string()})),
            Ok(NewOrder::BestAvailable {
                event_id: event,
                max_price: None
            })
        );
        assert_eq!(
            body(json!({"eventId": event.to_string(), "maxPrice": 49.99, "ticketId": null})),
            Ok(NewOrder::BestAvailable {
                event_id: event,
                max_price: Some(Cents::new(4999).unwrap())
            })
        );
        for (bad, field) in [
            (
                json!({"eventId": event.to_string(), "ticketId": event.to_string()}),
                "eventId",
            ),
            (json!({"eventId": "soon"}), "eventId"),
            (
                json!({"eventId": event.to_string(), "maxPrice": 0}),
                "maxPrice",
            ),
            (
                json!({"eventId": event.to_string(), "maxPrice": "50"}),
                "maxPrice",
            ),
            (
                json!({"ticketId": event.to_string(), "maxPrice": 50}),
                "maxPrice",
            ),
        ] {
            let errors = body(bad.clone()).unwrap_err();
            assert_eq!(errors.len(), 1, "{bad}");
            assert_eq!(errors[0].field.as_deref(), Some(field), "{bad}");
        }
    }

    #[test]
    fn an_order_on_the_wire_has_the_documented_shape() {
        let ticket = Ticket {
            price: Cents::new(1550).unwrap(),
            ..ticket(Uuid::nil())
        };
        let now = datetime!(2026-11-25 12:00:00.5 UTC);
        let order = Order::place(
            Uuid::now_v7(),
            &ticket,
            now,
            expires_at(now, DEFAULT_ORDER_EXPIRATION),
        )
        .unwrap();

        let json = serde_json::to_value(OrderView::new(&order)).unwrap();

        assert_eq!(json["status"], "created");
        assert_eq!(json["expiresAt"], "2026-11-25T12:15:00.5Z");
        assert_eq!(json["userId"], order.user_id.to_string());
        assert_eq!(json["version"], 0);
        assert_eq!(
            json["ticket"],
            json!({"id": ticket.id.to_string(), "title": "Concert", "price": 15.5, "version": 3})
        );
        assert_eq!(json.as_object().unwrap().len(), 6);
    }

    #[test]
    fn a_buyer_at_the_cap_may_not_hold_another_ticket_until_one_ends() {
        let limits = HoldLimits::default();
        let now = datetime!(2026-11-25 12:00 UTC);
        let at_cap = BuyerActivity {
            live_holds: 10,
            ..BuyerActivity::default()
        };
        assert_eq!(
            limits.check(&at_cap, now),
            Err(LimitRefusal::TooManyHolds { max: 10 })
        );
        let below = BuyerActivity {
            live_holds: 9,
            ..at_cap
        };
        assert_eq!(limits.check(&below, now), Ok(()));
        let off = HoldLimits {
            max_live: 0,
            ..limits
        };
        assert_eq!(off.check(&at_cap, now), Ok(()));
    }

    #[test]
    fn a_released_ticket_cools_down_for_its_buyer_for_the_whole_wait() {
        let limits = HoldLimits::default();
        let released = datetime!(2026-11-25 12:00 UTC);
        let activity = BuyerActivity {
            released_ticket_at: Some(released),
            ..BuyerActivity::default()
        };
        assert_eq!(
            limits.check(&activity, released + time::Duration::seconds(60)),
            Err(LimitRefusal::CoolingDown {
                wait: Duration::from_secs(4 * 60)
            })
        );
        assert_eq!(
            limits.check(&activity, released + time::Duration::minutes(5)),
            Ok(())
        );
        let off = HoldLimits {
            cooldown: Duration::ZERO,
            ..limits
        };
        assert_eq!(off.check(&activity, released), Ok(()));
    }

    #[test]
    fn a_buyer_who_placed_the_hourly_number_waits_until_the_oldest_counted_leaves_the_hour() {
        let limits = HoldLimits::default();
        let oldest = datetime!(2026-11-25 12:00 UTC);
        let activity = BuyerActivity {
            oldest_counted_order_at: Some(oldest),
            ..BuyerActivity::default()
        };
        assert_eq!(
            limits.check(&activity, oldest + time::Duration::minutes(45)),
            Err(LimitRefusal::TooManyOrders {
                max: 60,
                wait: Duration::from_secs(15 * 60)
            })
        );
        assert_eq!(
            limits.check(&activity, oldest + time::Duration::hours(1)),
            Ok(())
        );
        let off = HoldLimits {
            max_per_hour: 0,
            ..limits
        };
        assert_eq!(off.check(&activity, oldest), Ok(()));
    }
}
