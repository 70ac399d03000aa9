//! The orders HTTP API: `/api/orders` and `/api/orders/{id}`. Thin handlers: extract and
//! validate, call the domain and the store inside a transaction, answer the order or an error in
//! the one shape.

use std::time::Duration;

use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::{Extension, Json, Router};
use common::arrivals::Arrivals;
use common::clock::{self, from_millis, millis};
use common::error::retry_after_seconds;
use common::events::OrderStatus;
use common::idempotency::{self, Idempotent, Keys};
use common::money::Cents;
use common::openapi::{self, ErrorBody, IdempotencyKey};
use common::outbox::{self, Outbox};
use common::paging::{Cursor, Page, PageQuery, Paged};
use common::store::Dialect;
use common::validate::{PathId, Valid};
use common::{ApiError, ErrorCode, ServiceContext, Sessions, SignedIn, Store};
use sqlx::{Any, AnyConnection, Transaction};
use time::OffsetDateTime;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;
use uuid::Uuid;

use crate::domain::{
    self, HoldLimits, LimitRefusal, NewOrder, Order, OrderBody, OrderView, PlaceError, Ticket,
    Transition, Trigger,
};
use crate::store::{self, Contention};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    store: Store,
    outbox: Outbox,
    sessions: Sessions,
    arrivals: Arrivals,
    order_expiration: Duration,
    hold_limits: HoldLimits,
    keys: Keys,
}

impl AppState {
    pub fn new(ctx: &ServiceContext, settings: &crate::Settings) -> Self {
        Self {
            store: ctx.store.clone(),
            outbox: ctx.outbox.clone(),
            sessions: ctx.sessions.clone(),
            arrivals: ctx.arrivals.clone(),
            order_expiration: settings.order_expiration,
            hold_limits: settings.hold_limits,
            keys: ctx.idempotency_keys(),
        }
    }

    fn dialect(&self) -> Dialect {
        self.store.dialect()
    }

    /// Whether `buyer` may hold `ticket_id` now, by their orders as `conn` sees them.
    /// From here to the commit this buyer's placements take turns, so that every earlier one,
    /// whichever replica placed it, is counted by the limits. Nothing to wait for when the
    /// limits are off.
    async fn take_buyer_turn(&self, tx: &mut AnyConnection, buyer: Uuid) -> Result<(), ApiError> {
        if !self.hold_limits.is_off() {
            store::lock_buyer(tx, self.dialect(), buyer).await?;
        }
        Ok(())
    }

    async fn check_limits(
        &self,
        conn: &mut AnyConnection,
        buyer: Uuid,
        ticket_id: Uuid,
    ) -> Result<(), ApiError> {
        let now = clock::now();
        let outlook = store::outlook(conn, &self.hold_limits, buyer, ticket_id, now).await?;
        self.hold_limits
            .check(&outlook.activity, now)
            .map_err(limit_error)
    }
}

impl FromRef<AppState> for Sessions {
    fn from_ref(state: &AppState) -> Self {
        state.sessions.clone()
    }
}

/// The service's operations, each documented on its handler.
fn operations() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_orders, create_order).map(idempotency::keyed))
        .routes(routes!(show_order, cancel_order).map(idempotency::keyed))
}

/// The service's routes with their state applied.
pub(crate) fn router(state: AppState) -> Router {
    let (routes, _) = operations().split_for_parts();
    routes
        .layer(Extension(state.keys.clone()))
        .with_state(state)
}

/// The service's OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    openapi::finish(
        operations().into_openapi(),
        "orders",
        "orders",
        "A buyer's orders: hold a ticket until it is paid for, see it, cancel it",
    )
}

/// `GET /api/orders?limit=&cursor=`: the signed-in user's orders with their tickets as ordered,
/// newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/api/orders",
    operation_id = "listOrders",
    tag = "orders",
    summary = "The signed-in user's orders, newest first",
    description = "Every order of the user, whatever its status, a page at a time, each with the \
        ticket as it was ordered. The next page is in the `Link` header.",
    params(PageQuery),
    security(("session_cookie" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "A page of orders", body = [OrderView]),
        (status = 401, description = "Not signed in (`not_authorized`)", body = ErrorBody),
    )
)]
async fn list_orders(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    page: Page,
) -> Result<Paged<OrderView>, ApiError> {
    let orders = store::list_orders(state.store.pool(), user.id, &page).await?;
    let paged = page.answer(orders, "/api/orders", |order| {
        Cursor::at(millis(order.created_at), order.id)
    });
    Ok(paged.map(|order| OrderView::new(&order)))
}

/// `GET /api/orders/{id}`: one of the signed-in user's orders.
#[utoipa::path(
    get,
    path = "/api/orders/{id}",
    operation_id = "showOrder",
    tag = "orders",
    summary = "One of the signed-in user's orders",
    params(("id" = Uuid, Path, description = "The order's id; a malformed id is a 404")),
    security(("session_cookie" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The order", body = OrderView),
        (status = 401, description = "Not signed in, or not the buyer (`not_authorized`)",
            body = ErrorBody),
        (status = 404, description = "No such order (`not_found`)", body = ErrorBody),
    )
)]
async fn show_order(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    PathId(id): PathId,
) -> Result<Json<OrderView>, ApiError> {
    let order = store::find_order(state.store.pool(), id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if order.user_id != user.id {
        return Err(ApiError::Unauthorized);
    }
    Ok(Json(OrderView::new(&order)))
}

/// `POST /api/orders`: places an order on a ticket for the signed-in user and announces it
/// (order:created) in the same transaction.
#[utoipa::path(
    post,
    path = "/api/orders",
    operation_id = "createOrder",
    tag = "orders",
    summary = "Hold a ticket for the signed-in buyer",
    description = "The ticket is held for the buyer until the order is paid, cancelled, or \
        expires at `expiresAt` (15 minutes by default, and at the latest when its event \
        starts); meanwhile nobody else can order it and \
        its price cannot be changed. Name the ticket (`ticketId`), or an event (`eventId`, \
        with `maxPrice` if you like) to hold the cheapest of its tickets for sale that is not \
        your own. Buyers asking at once for an event's best ticket each get a different one.",
    params(IdempotencyKey),
    request_body = OrderBody,
    security(("session_cookie" = []), ("bearer" = [])),
    responses(
        (status = 201, description = "The order, holding the ticket", body = OrderView,
            links(
                ("showOrder" = (operation_id = "showOrder",
                    parameters(("id" = "$response.body#/id")))),
                ("payOrder" = (operation_id = "createPayment",
                    request_body = json!({"orderId": "$response.body#/id", "token": "tok_visa"}))),
                ("cancelOrder" = (operation_id = "cancelOrder",
                    parameters(("id" = "$response.body#/id")))),
            )),
        (status = 400, description = "A field is invalid (`invalid_field`); the ticket is \
            held (`ticket_reserved`) or the buyer's own (`own_ticket`), or its event has \
            started (`sale_ended`); no ticket of the event is for sale at the buyer's price, it \
            has started, or none was ever listed for it (`sold_out`); the buyer holds as many \
            as one may (`hold_limit_reached`); or the key was used with another request \
            (`idempotency_key_reused`)", body = ErrorBody),
        (status = 401, description = "Not signed in (`not_authorized`)", body = ErrorBody),
        (status = 404, description = "No such ticket (`not_found`)", body = ErrorBody),
        (status = 429, description = "The buyer let this ticket go a moment ago \
            (`ticket_cooling_down`) or placed too many orders this hour (`rate_limited`); \
            `Retry-After` says when to try again", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
async fn create_order(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    idempotent: Idempotent,
    Valid(request): Valid<OrderBody>,
) -> Result<(StatusCode, Json<OrderView>), ApiError> {
    match request {
        NewOrder::Ticket(ticket_id) => order_ticket(&state, user.id, idempotent, ticket_id).await,
        NewOrder::BestAvailable {
            event_id,
            max_price,
        } => order_best_available(&state, user.id, idempotent, event_id, max_price).await,
    }
}

/// Holds the ticket the buyer chose.
async fn order_ticket(
    state: &AppState,
    buyer: Uuid,
    idempotent: Idempotent,
    ticket_id: Uuid,
) -> Result<(StatusCode, Json<OrderView>), ApiError> {
    // In a sale most buyers come for a ticket already held: they are answered from a read,
    // without taking a write transaction (on SQLite, the file's one writer) from those who can
    // still win. So is a buyer past a limit (a bot, mostly), in the same statement; the same
    // check under the buyer's lock below is the one that decides.
    let limited = !state.hold_limits.is_off();
    if limited {
        let mut conn = state.store.pool().acquire().await?;
        let now = clock::now();
        let outlook = store::outlook(&mut conn, &state.hold_limits, buyer, ticket_id, now).await?;
        if outlook.ticket_held {
            return Err(already_reserved());
        }
        state
            .hold_limits
            .check(&outlook.activity, now)
            .map_err(limit_error)?;
    } else if store::is_held(state.store.pool(), ticket_id).await? {
        return Err(already_reserved());
    }
    let mut tx = state.store.begin().await?;
    let ticket = match store::find_ticket(&mut *tx, ticket_id).await? {
        Some(ticket) => ticket,
        None => {
            // Listed a moment ago, perhaps, and its ticket:created still on its way: wait for
            // it with the transaction given up, so that others' orders go on meanwhile.
            drop(tx);
            state
                .arrivals
                .look_for(ticket_id, || {
                    store::find_ticket(state.store.pool(), ticket_id)
                })
                .await?
                .ok_or(ApiError::NotFound)?;
            tx = state.store.begin().await?;
            store::find_ticket(&mut *tx, ticket_id)
                .await?
                .ok_or(ApiError::NotFound)?
        }
    };
    state.take_buyer_turn(&mut tx, buyer).await?;
    match place(state, &mut tx, buyer, &ticket, clock::now()).await? {
        Some(order) => commit_order(state, tx, idempotent, &order).await,
        None => Err(already_reserved()),
    }
}

/// Holds the cheapest ticket of an event that the buyer may have. Buyers arriving together are
/// spread over different tickets (see [`store::pick_best_available`]); one whose ticket was taken
/// under them all the same tries the next, so a buyer is told that none is left only when none
/// is. An event nobody listed a ticket for has none for sale, like one sold out.
async fn order_best_available(
    state: &AppState,
    buyer: Uuid,
    idempotent: Idempotent,
    event_id: Uuid,
    max_price: Option<Cents>,
) -> Result<(StatusCode, Json<OrderView>), ApiError> {
    let sold_out = || {
        ApiError::BadRequest(
            ErrorCode::SoldOut,
            "No ticket of this event is for sale at your price".into(),
        )
    };
    let wanted = |now| store::BestAvailable {
        event_id,
        buyer,
        max_price,
        cooling_since: state.hold_limits.cooling_since(now),
        now,
    };
    // Buyers who come after the sell-out, and buyers past a limit, are answered from a read,
    // without taking a write transaction (or, on PostgreSQL, a ticket) from those who can win.
    let mut conn = state.store.pool().acquire().await?;
    let now = clock::now();
    let Some(looked) =
        store::pick_best_available(&mut conn, state.dialect(), &wanted(now), Contention::Look)
            .await?
    else {
        return Err(sold_out());
    };
    if !state.hold_limits.is_off() {
        state.check_limits(&mut conn, buyer, looked.id).await?;
    }
    drop(conn);
    loop {
        let mut tx = state.store.begin().await?;
        // The buyer's turn before any ticket's lock, in the order a named ticket's order takes
        // them, so that two requests of one buyer never wait for each other.
        state.take_buyer_turn(&mut tx, buyer).await?;
        // One moment for the pick and the order, so that a ticket picked before its event's
        // start is never turned away for it: the buyer is told `sold_out`, not `sale_ended`.
        let now = clock::now();
        let wanted = wanted(now);
        let mut picked =
            store::pick_best_available(&mut tx, state.dialect(), &wanted, Contention::Skip).await?;
        if picked.is_none() && state.dialect() == Dialect::Postgres {
            // Every ticket left was being picked by others: wait for them, since any of them may
            // yet let theirs go.
            picked =
                store::pick_best_available(&mut tx, state.dialect(), &wanted, Contention::Wait)
                    .await?;
        }
        let Some(ticket) = picked else {
            return Err(sold_out());
        };
        // Its order was committed after the pick read the orders (this is a statement of its
        // own, so it sees it): start again, letting go of the ticket's lock at once, so that
        // the buyers waiting on it do not wait for each other in turn.
        if store::is_held(&mut *tx, ticket.id).await? {
            continue;
        }
        match place(state, &mut tx, buyer, &ticket, now).await? {
            Some(order) => return commit_order(state, tx, idempotent, &order).await,
            // Another order took it between the pick and the insert. On PostgreSQL that failed
            // the transaction; dropping it rolls it back, and the next pick, in a new one, sees
            // that order.
            None => continue,
        }
    }
}

/// Places the buyer's order on `ticket` in `tx` at `now` (to the millisecond, as stored, so the
/// answer shows what a later read will), within the hold limits (the caller has taken the
/// buyer's turn); `None` when another order holds the ticket.
async fn place(
    state: &AppState,
    tx: &mut AnyConnection,
    buyer: Uuid,
    ticket: &Ticket,
    now: OffsetDateTime,
) -> Result<Option<Order>, ApiError> {
    let expires_at = from_millis(millis(domain::expires_at(now, state.order_expiration)));
    let order = Order::place(buyer, ticket, now, expires_at).map_err(|err| match err {
        PlaceError::OwnTicket => ApiError::BadRequest(
            ErrorCode::OwnTicket,
            "You cannot buy your own ticket".into(),
        ),
        PlaceError::SaleEnded => ApiError::BadRequest(
            ErrorCode::SaleEnded,
            "The event has started: its tickets are no longer for sale".into(),
        ),
    })?;
    if !state.hold_limits.is_off() {
        state.check_limits(tx, buyer, ticket.id).await?;
    }
    // The reads before only turned away those who came too late; the unique index decides,
    // atomically, even between buyers whose transactions run at the same moment.
    Ok(match store::insert_order(tx, &order).await? {
        store::Placed::Placed => Some(order),
        store::Placed::TicketTaken => None,
    })
}

/// Announces a placed order (order:created) and records the answer under its key, in its
/// transaction, and answers it.
async fn commit_order(
    state: &AppState,
    mut tx: Transaction<'static, Any>,
    idempotent: Idempotent,
    order: &Order,
) -> Result<(StatusCode, Json<OrderView>), ApiError> {
    outbox::enqueue(&mut tx, order.created_event()).await?;
    let view = OrderView::new(order);
    idempotent
        .record_json(&mut tx, StatusCode::CREATED, &view)
        .await?;
    state.outbox.commit(tx).await?;
    tracing::info!(order = %order.id, ticket = %order.ticket_id, "order placed");
    Ok((StatusCode::CREATED, Json(view)))
}

/// The answer to a buyer who comes for a ticket another order holds.
fn already_reserved() -> ApiError {
    ApiError::BadRequest(
        ErrorCode::TicketReserved,
        "Ticket is already reserved".into(),
    )
}

/// A hold limit's refusal in the one error shape: the cap is lifted by the buyer's own doing
/// (paying or cancelling), the others by time, which `Retry-After` tells.
fn limit_error(refusal: LimitRefusal) -> ApiError {
    match refusal {
        LimitRefusal::TooManyHolds { max } => ApiError::BadRequest(
            ErrorCode::HoldLimitReached,
            format!(
                "You already hold as many tickets as you may at once ({max}): pay for or cancel \
             one before holding another"
            ),
        ),
        LimitRefusal::CoolingDown { wait } => ApiError::TooManyRequests {
            code: ErrorCode::TicketCoolingDown,
            message: format!(
                "You let this ticket go recently: you can hold it again in {}",
                in_words(wait)
            ),
            retry_after: Some(wait),
        },
        LimitRefusal::TooManyOrders { max, wait } => ApiError::TooManyRequests {
            code: ErrorCode::RateLimited,
            message: format!(
                "You have placed {max} orders in the last hour: you can place another in {}",
                in_words(wait)
            ),
            retry_after: Some(wait),
        },
    }
}

/// A wait as a person reads it, rounded up as `Retry-After` is: "40 seconds", "5 minutes".
fn in_words(wait: Duration) -> String {
    match retry_after_seconds(wait) {
        1 => "1 second".into(),
        seconds @ 2..=90 => format!("{seconds} seconds"),
        seconds @ 91..=5400 => format!("{} minutes", seconds.div_ceil(60)),
        seconds => format!("{} hours", seconds.div_ceil(3600)),
    }
}

/// `DELETE /api/orders/{id}`: the owner cancels their order, announced (order:cancelled) in the
/// same transaction. Cancelling a cancelled order succeeds and announces nothing again; an order
/// being paid (granted to a payment) or paid cannot be cancelled.
#[utoipa::path(
    delete,
    path = "/api/orders/{id}",
    operation_id = "cancelOrder",
    tag = "orders",
    summary = "Cancel one of the signed-in user's orders",
    description = "Lets the ticket go. Cancelling a cancelled or expired order succeeds again.",
    params(
        ("id" = Uuid, Path, description = "The order's id; a malformed id is a 404"),
        IdempotencyKey,
    ),
    security(("session_cookie" = []), ("bearer" = [])),
    responses(
        (status = 204, description = "The order is cancelled"),
        (status = 400, description = "The order is being paid (`order_being_paid`) or paid \
            (`order_paid`), or the key was used with another request \
            (`idempotency_key_reused`)", body = ErrorBody),
        (status = 401, description = "Not signed in, or not the buyer (`not_authorized`)",
            body = ErrorBody),
        (status = 404, description = "No such order (`not_found`)", body = ErrorBody),
    )
)]
async fn cancel_order(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    idempotent: Idempotent,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    let mut tx = state.store.begin().await?;
    // Locked, so that an expiry or a payment of this order waits for this decision (and then
    // sees it) instead of deciding on the same old status.
    let order = store::lock_order(&mut tx, state.dialect(), id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if order.user_id != user.id {
        return Err(ApiError::Unauthorized);
    }
    match domain::transition(order.status, Trigger::Cancel) {
        Transition::To(status) => {
            let cancelled = store::finish_order(&mut tx, id, status, clock::now())
                .await?
                .ok_or_else(|| {
                    ApiError::internal(anyhow::anyhow!("order {id} changed under its lock"))
                })?;
            outbox::enqueue(&mut tx, cancelled.cancelled_event()).await?;
            idempotent
                .record_status(&mut tx, StatusCode::NO_CONTENT)
                .await?;
            state.outbox.commit(tx).await?;
            tracing::info!(order = %id, version = cancelled.version, "order cancelled by its owner");
            Ok(StatusCode::NO_CONTENT)
        }
        Transition::Unchanged => Ok(StatusCode::NO_CONTENT),
        Transition::Refused if order.status == OrderStatus::AwaitingPayment => {
            Err(ApiError::BadRequest(
                ErrorCode::OrderBeingPaid,
                "Cannot cancel an order while it is being paid".into(),
            ))
        }
        Transition::Refused => Err(ApiError::BadRequest(
            ErrorCode::OrderPaid,
            "Cannot cancel a paid order".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_reads_in_the_unit_a_person_expects_rounded_up() {
        assert_eq!(in_words(Duration::from_millis(300)), "1 second");
        assert_eq!(in_words(Duration::from_millis(40_200)), "41 seconds");
        assert_eq!(in_words(Duration::from_secs(4 * 60 + 1)), "5 minutes");
        assert_eq!(in_words(Duration::from_secs(24 * 60 * 60)), "24 hours");
    }
}
