//! The tickets HTTP API: `/api/tickets` and `/api/events`, each list with its `/{id}`, and an
//! event's tickets. Thin handlers: extract and validate, call the store inside a transaction,
//! answer the ticket or event or an error in the one shape.

use axum::extract::{FromRef, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use common::clock;
use common::idempotency::{self, Idempotent, Keys};
use common::money::{self, Cents};
use common::openapi::{self, ErrorBody, IdempotencyKey};
use common::outbox::{self, Outbox};
use common::paging::{Cursor, Page, PageQuery, Paged};
use common::validate::{PathId, Valid};
use common::{ApiError, ErrorCode, ServiceContext, Sessions, SignedIn, Store};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;
use uuid::Uuid;

use crate::domain::{ListingBody, Ticket, TicketBody};
use crate::event::{Event, EventBody};
use crate::sales::{ResaleCap, Sale};
use crate::search::{Search, SearchQuery};
use crate::store;
use crate::wallet::{HistoryEntry, HistoryView, LastSale, OwnedTicket, ResaleBody, SendBody};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    store: Store,
    outbox: Outbox,
    sessions: Sessions,
    keys: Keys,
    resale_cap: ResaleCap,
}

impl AppState {
    pub fn new(ctx: &ServiceContext, settings: &crate::Settings) -> Self {
        Self {
            store: ctx.store.clone(),
            outbox: ctx.outbox.clone(),
            sessions: ctx.sessions.clone(),
            keys: ctx.idempotency_keys(),
            resale_cap: settings.resale_cap,
        }
    }

    /// The resale cap's refusal of `price` for a ticket that last sold at `paid`, if it is over.
    fn over_cap(&self, price: Cents, paid: Cents) -> Option<ApiError> {
        let highest = self.resale_cap.highest(paid);
        (price.get() > highest).then(|| {
            ApiError::field(
                "price",
                &format!(
                    "Price must be at most {}, the resale cap on what was paid for it",
                    money::plain(highest)
                ),
            )
        })
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
        .routes(routes!(list_tickets, create_ticket).map(idempotency::keyed))
        .routes(routes!(show_ticket, update_ticket))
        .routes(routes!(list_events, create_event))
        .routes(routes!(show_event))
        .routes(routes!(list_event_tickets))
        .routes(routes!(list_owned_tickets))
        .routes(routes!(list_sales))
        .routes(routes!(send_ticket).map(idempotency::keyed))
        .routes(routes!(list_again).map(idempotency::keyed))
        .routes(routes!(ticket_history))
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
    let mut doc = openapi::finish(
        operations().into_openapi(),
        "tickets",
        "tickets",
        "Tickets for sale: list one, change it while no order holds it, browse them",
    );
    doc.tags.get_or_insert_default().push(
        utoipa::openapi::tag::TagBuilder::new()
            .name("events")
            .description(Some(
                "Events tickets are for: create one, find the upcoming ones, compare an \
                 event's tickets cheapest first",
            ))
            .build(),
    );
    doc.tags.get_or_insert_default().push(
        utoipa::openapi::tag::TagBuilder::new()
            .name("wallet")
            .description(Some(
                "Tickets a user bought or was sent: list them, send one to another account; and \
                 what a seller sold and is owed",
            ))
            .build(),
    );
    doc
}

/// `GET /api/tickets?limit=&cursor=&q=&…`: tickets for sale, newest first unless sorted
/// otherwise, found by a search if one is given, a page at a time.
#[utoipa::path(
    get,
    path = "/api/tickets",
    operation_id = "listTickets",
    tag = "tickets",
    summary = "Tickets for sale, newest first, or as searched for",
    description = "Tickets no order holds, but for those of events that have started, a page at \
        a time. `q` finds words of the title or of the event's name, venue or city; `city`, \
        `from` and `to` keep tickets of events in that city and those days; `sort` orders them \
        by `price`, event `date` (tickets of no event last) or `newest`. The next page, with \
        the same search, is in the `Link` header.",
    params(PageQuery, SearchQuery),
    responses(
        (status = 200, description = "A page of tickets for sale", body = [Ticket],
            links(("orderFirstTicket" = (operation_id = "createOrder",
                request_body = json!({"ticketId": "$response.body#/0/id"}))))),
        (status = 400, description = "A search parameter (`q`, `city`, `from`, `to`, `maxPrice`, \
            `sort`), `limit`, `cursor` or `offset` is invalid (`invalid_field`)",
            body = ErrorBody),
    )
)]
async fn list_tickets(
    State(state): State<AppState>,
    page: Page,
    search: Search,
) -> Result<Paged<Ticket>, ApiError> {
    let pool = state.store.pool();
    let dialect = state.store.dialect();
    let found = store::search_tickets(pool, dialect, &search, &page, clock::now_millis()).await?;
    let path = search.path_with_query("/api/tickets");
    Ok(page
        .answer(found, &path, |(_, at)| *at)
        .map(|(ticket, _)| ticket))
}

/// `GET /api/tickets/{id}`.
#[utoipa::path(
    get,
    path = "/api/tickets/{id}",
    operation_id = "showTicket",
    tag = "tickets",
    summary = "One ticket, for sale or not",
    params(("id" = Uuid, Path, description = "The ticket's id; a malformed id is a 404")),
    responses(
        (status = 200, description = "The ticket", body = Ticket),
        (status = 404, description = "No such ticket (`not_found`)", body = ErrorBody),
    )
)]
async fn show_ticket(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<Json<Ticket>, ApiError> {
    store::find(state.store.pool(), id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// `POST /api/tickets`: lists a ticket for the signed-in user and announces it (ticket:created)
/// in the same transaction.
#[utoipa::path(
    post,
    path = "/api/tickets",
    operation_id = "createTicket",
    tag = "tickets",
    summary = "List a ticket for sale",
    params(IdempotencyKey),
    request_body = ListingBody,
    security(("session_cookie" = []), ("bearer" = [])),
    responses(
        (status = 201, description = "The ticket, listed", body = Ticket,
            links(
                ("showTicket" = (operation_id = "showTicket",
                    parameters(("id" = "$response.body#/id")))),
                ("updateTicket" = (operation_id = "updateTicket",
                    parameters(("id" = "$response.body#/id")))),
                ("orderTicket" = (operation_id = "createOrder",
                    request_body = json!({"ticketId": "$response.body#/id"}))),
            )),
        (status = 400, description = "A field is invalid (`invalid_field`), among them an \
            `eventId` of no event or of one that has started; or the key was used with another \
            request (`idempotency_key_reused`)", body = ErrorBody),
        (status = 401, description = "Not signed in (`not_authorized`)", body = ErrorBody),
    )
)]
async fn create_ticket(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    idempotent: Idempotent,
    Valid(listing): Valid<ListingBody>,
) -> Result<(StatusCode, Json<Ticket>), ApiError> {
    // Stored times have millisecond precision; the answer shows what a later read will.
    let ticket = Ticket::listed(listing, user.id, clock::now());
    let mut tx = state.store.begin().await?;
    let event = match ticket.event_id {
        // Events are never changed or removed, so what is read here still holds at the insert.
        Some(event_id) => match store::event_for_listing(&mut *tx, event_id).await? {
            None => return Err(ApiError::field("eventId", "No such event")),
            Some(event) if event.starts_at <= clock::millis(ticket.created_at) => {
                return Err(ApiError::field("eventId", "The event has started"));
            }
            Some(event) => Some(event),
        },
        None => None,
    };
    store::insert(&mut tx, &ticket, event.as_ref()).await?;
    // Orders learns the start with the ticket, to end its sale then.
    let event_starts_at = event.map(|event| clock::from_millis(event.starts_at));
    outbox::enqueue(&mut tx, ticket.created_event(event_starts_at)).await?;
    idempotent
        .record_json(&mut tx, StatusCode::CREATED, &ticket)
        .await?;
    state.outbox.commit(tx).await?;
    tracing::info!(ticket = %ticket.id, "ticket listed");
    Ok((StatusCode::CREATED, Json(ticket)))
}

/// `PUT /api/tickets/{id}`: the owner edits title and price of a ticket no order holds, announced
/// (ticket:updated) in the same transaction.
#[utoipa::path(
    put,
    path = "/api/tickets/{id}",
    operation_id = "updateTicket",
    tag = "tickets",
    summary = "Change a ticket's title and price",
    description = "Only its owner may, and only while it is for sale and no order holds it. A \
        ticket sold before and listed again keeps its title, and its price stays within the \
        resale cap.",
    params(("id" = Uuid, Path, description = "The ticket's id; a malformed id is a 404")),
    request_body = TicketBody,
    security(("session_cookie" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The ticket as changed", body = Ticket),
        (status = 400, description = "A field is invalid (`invalid_field`): among them a \
            resale's new title, or its price over the cap; or the ticket is not for sale: an \
            order holds it, or its owner keeps it (`ticket_reserved`)", body = ErrorBody),
        (status = 401, description = "Not signed in, or not the owner (`not_authorized`)",
            body = ErrorBody),
        (status = 404, description = "No such ticket (`not_found`)", body = ErrorBody),
    )
)]
async fn update_ticket(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    PathId(id): PathId,
    Valid(changes): Valid<TicketBody>,
) -> Result<Json<Ticket>, ApiError> {
    let mut tx = state.store.begin().await?;
    // A ticket sold once and listed again is a resale: its title stays as it was sold, and its
    // price within the cap. What was paid does not change while its owner has it.
    let last_sale = store::last_sale(&mut tx, id).await?;
    let title_before = match last_sale {
        Some(_) => store::find(&mut *tx, id).await?.map(|ticket| ticket.title),
        None => None,
    };
    // One conditional statement, not a read then a write: a reservation committed between the
    // two would otherwise be overwritten by the edit.
    if let Some(ticket) = store::edit_unreserved(&mut tx, id, user.id, &changes).await? {
        // A refusal drops the transaction, and with it the edit.
        if let Some(sale) = last_sale {
            if title_before.is_some_and(|title| title != ticket.title) {
                return Err(ApiError::field(
                    "title",
                    "The title of a ticket sold before stays as it was sold",
                ));
            }
            if let Some(refusal) = state.over_cap(ticket.price, sale.price) {
                return Err(refusal);
            }
        }
        outbox::enqueue(&mut tx, ticket.updated_event()).await?;
        state.outbox.commit(tx).await?;
        return Ok(Json(ticket));
    }
    Err(match store::find(&mut *tx, id).await? {
        None => ApiError::NotFound,
        Some(ticket) if ticket.user_id != user.id => ApiError::Unauthorized,
        // Its owner keeps it off the market: only a listing has a price to change.
        Some(ticket) if last_sale.is_some_and(|sale| ticket.order_id == Some(sale.order_id)) => {
            ApiError::BadRequest(
                ErrorCode::TicketReserved,
                "Cannot edit a ticket that is not for sale: list it again to sell it".into(),
            )
        }
        // Also the answer when a release landed between the edit and this read: at the moment of
        // the edit the ticket was reserved.
        Some(_) => ApiError::BadRequest(
            ErrorCode::TicketReserved,
            "Cannot edit a reserved ticket".into(),
        ),
    })
}

/// Whether `ticket` is one `user` keeps (bought or was sent, neither for sale nor held by an
/// order), with its last sale; if not, why, in the words of what they tried to do (`action`).
fn kept(
    ticket: Option<&Ticket>,
    user: Uuid,
    last_sale: Option<LastSale>,
    action: &str,
) -> Result<LastSale, ApiError> {
    let ticket = ticket.ok_or(ApiError::NotFound)?;
    if ticket.user_id != user {
        return Err(ApiError::Unauthorized);
    }
    match last_sale {
        _ if ticket.order_id.is_none() => Err(ApiError::BadRequest(
            ErrorCode::TicketListed,
            format!("Cannot {action} a ticket listed for sale"),
        )),
        Some(sale) if ticket.order_id == Some(sale.order_id) => Ok(sale),
        // Held by an order, or (sold before tickets changed hands) never handed over.
        _ => Err(ApiError::BadRequest(
            ErrorCode::TicketReserved,
            format!("Cannot {action} a ticket an order holds"),
        )),
    }
}

/// `GET /api/events?limit=&cursor=&q=&…`: events yet to start, soonest first unless sorted
/// otherwise, found by a search if one is given, a page at a time.
#[utoipa::path(
    get,
    path = "/api/events",
    operation_id = "listEvents",
    tag = "events",
    summary = "Events yet to start, soonest first, or as searched for",
    description = "Each with how many of its tickets are for sale and the cheapest price. `q` \
        finds words of the name, venue or city; `city`, `from` and `to` keep events in that \
        city and those days; `maxPrice` keeps events with a ticket for sale at that price or \
        less; `sort` orders them by `date`, cheapest ticket (`price`, events with none last) \
        or `newest`. The next page, with the same search, is in the `Link` header.",
    params(PageQuery, SearchQuery),
    responses(
        (status = 200, description = "A page of upcoming events", body = [Event],
            links(("showFirstEvent" = (operation_id = "showEvent",
                parameters(("id" = "$response.body#/0/id")))))),
        (status = 400, description = "A search parameter (`q`, `city`, `from`, `to`, `maxPrice`, \
            `sort`), `limit`, `cursor` or `offset` is invalid (`invalid_field`)",
            body = ErrorBody),
    )
)]
async fn list_events(
    State(state): State<AppState>,
    page: Page,
    search: Search,
) -> Result<Paged<Event>, ApiError> {
    let pool = state.store.pool();
    let dialect = state.store.dialect();
    let found = store::search_events(pool, dialect, &search, &page, clock::now_millis()).await?;
    let path = search.path_with_query("/api/events");
    Ok(page
        .answer(found, &path, |(_, at)| *at)
        .map(|(event, _)| event))
}

/// `POST /api/events`: creates an event, or offers the one that already exists.
#[utoipa::path(
    post,
    path = "/api/events",
    operation_id = "createEvent",
    tag = "events",
    summary = "Create an event, or be sent to the same one",
    description = "An event with the same name and venue (up to case, accents, punctuation and \
        spacing) starting in the same minute is the same event: it is not created twice, and the \
        answer is a 303 to the one that exists. So sending the same event again is safe.",
    request_body = EventBody,
    security(("session_cookie" = []), ("bearer" = [])),
    responses(
        (status = 201, description = "The event, created", body = Event,
            headers(("Location" = String, description = "The event's address")),
            links(
                ("showEvent" = (operation_id = "showEvent",
                    parameters(("id" = "$response.body#/id")))),
                ("listEventTickets" = (operation_id = "listEventTickets",
                    parameters(("id" = "$response.body#/id")))),
            )),
        (status = 303, description = "The event existed already: here it is, and where it lives",
            body = Event,
            headers(("Location" = String, description = "The existing event's address"))),
        (status = 400, description = "A field is invalid (`invalid_field`)", body = ErrorBody),
        (status = 401, description = "Not signed in (`not_authorized`)", body = ErrorBody),
    )
)]
async fn create_event(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Valid(details): Valid<EventBody>,
) -> Result<Response, ApiError> {
    let event = Event::created(details, user.id, clock::now());
    let duplicate_key = event.duplicate_key();
    let mut tx = state.store.begin().await?;
    if store::insert_event(&mut tx, &event, &duplicate_key).await? {
        tx.commit().await?;
        tracing::info!(event = %event.id, "event created");
        return Ok(event_answer(StatusCode::CREATED, event));
    }
    // Inserted by someone else, perhaps at this very moment: by now it is committed and seen.
    let existing = store::find_event_by_duplicate_key(&mut *tx, &duplicate_key)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("a duplicate event vanished")))?;
    Ok(event_answer(StatusCode::SEE_OTHER, existing))
}

/// An event with its address in `Location`.
fn event_answer(status: StatusCode, event: Event) -> Response {
    let location = format!("/api/events/{}", event.id);
    (status, [(header::LOCATION, location)], Json(event)).into_response()
}

/// `GET /api/events/{id}`.
#[utoipa::path(
    get,
    path = "/api/events/{id}",
    operation_id = "showEvent",
    tag = "events",
    summary = "One event, started or not",
    params(("id" = Uuid, Path, description = "The event's id; a malformed id is a 404")),
    responses(
        (status = 200, description = "The event", body = Event,
            links(("listEventTickets" = (operation_id = "listEventTickets",
                parameters(("id" = "$response.body#/id")))))),
        (status = 404, description = "No such event (`not_found`)", body = ErrorBody),
    )
)]
async fn show_event(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<Json<Event>, ApiError> {
    store::find_event(state.store.pool(), id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// `GET /api/events/{id}/tickets?limit=&cursor=`: the event's tickets for sale, cheapest first.
#[utoipa::path(
    get,
    path = "/api/events/{id}/tickets",
    operation_id = "listEventTickets",
    tag = "events",
    summary = "An event's tickets for sale, cheapest first",
    description = "Tickets of the event no order holds, cheapest first, a page at a time; none \
        once the event has started. The next page is in the `Link` header.",
    params(
        ("id" = Uuid, Path, description = "The event's id; a malformed id is a 404"),
        PageQuery,
    ),
    responses(
        (status = 200, description = "A page of the event's tickets for sale", body = [Ticket],
            links(("orderCheapestTicket" = (operation_id = "createOrder",
                request_body = json!({"ticketId": "$response.body#/0/id"}))))),
        (status = 404, description = "No such event (`not_found`)", body = ErrorBody),
    )
)]
async fn list_event_tickets(
    State(state): State<AppState>,
    PathId(id): PathId,
    page: Page,
) -> Result<Paged<Ticket>, ApiError> {
    let starts_at = store::event_start(state.store.pool(), id)
        .await?
        .ok_or(ApiError::NotFound)?;
    // Its sale ended when it started.
    let tickets = if starts_at > clock::now_millis() {
        store::list_event_tickets_for_sale(state.store.pool(), id, &page).await?
    } else {
        Vec::new()
    };
    Ok(
        page.answer(tickets, &format!("/api/events/{id}/tickets"), |ticket| {
            Cursor::at(ticket.price.get(), ticket.id)
        }),
    )
}

/// `GET /api/users/me/tickets?limit=&cursor=`: the signed-in user's wallet.
#[utoipa::path(
    get,
    path = "/api/users/me/tickets",
    operation_id = "listOwnedTickets",
    tag = "wallet",
    summary = "The tickets you bought or were sent, last first",
    description = "A ticket is its buyer's once the order is paid, and leaves the wallet when \
        it is sent on. Tickets you listed and nobody bought are not here. The next page is in \
        the `Link` header.",
    params(PageQuery),
    security(("session_cookie" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "A page of your tickets", body = [OwnedTicket],
            links(("sendFirstTicket" = (operation_id = "sendTicket",
                parameters(("id" = "$response.body#/0/id")))))),
        (status = 400, description = "`limit`, `cursor` or `offset` is invalid \
            (`invalid_field`)", body = ErrorBody),
        (status = 401, description = "Not signed in (`not_authorized`)", body = ErrorBody),
    )
)]
async fn list_owned_tickets(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    page: Page,
) -> Result<Paged<OwnedTicket>, ApiError> {
    let owned = store::owned_tickets(state.store.pool(), user.id, &page, state.resale_cap).await?;
    Ok(page.answer(owned, "/api/users/me/tickets", |owned| {
        Cursor::at(clock::millis(owned.acquired_at), owned.ticket.id)
    }))
}

/// `POST /api/tickets/{id}/send`: the owner gives a ticket they keep to another account, found
/// by e-mail, announced (ticket:updated, the new owner) in the same transaction.
#[utoipa::path(
    post,
    path = "/api/tickets/{id}/send",
    operation_id = "sendTicket",
    tag = "wallet",
    summary = "Send a ticket you own to another account",
    description = "Only a ticket you bought or were sent, and keep: not one listed for sale, \
        nor one an order holds. It leaves your wallet for the recipient's.",
    params(
        ("id" = Uuid, Path, description = "The ticket's id; a malformed id is a 404"),
        IdempotencyKey,
    ),
    request_body = SendBody,
    security(("session_cookie" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The ticket, now the recipient's", body = Ticket),
        (status = 400, description = "The e-mail is missing or no account has it, or it is \
            yours (`invalid_field`); the ticket is listed for sale (`ticket_listed`) or an order \
            holds it (`ticket_reserved`); or the key was used with another request \
            (`idempotency_key_reused`)", body = ErrorBody),
        (status = 401, description = "Not signed in, or not the owner (`not_authorized`)",
            body = ErrorBody),
        (status = 404, description = "No such ticket (`not_found`)", body = ErrorBody),
    )
)]
async fn send_ticket(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    PathId(id): PathId,
    idempotent: Idempotent,
    Valid(to): Valid<SendBody>,
) -> Result<Json<Ticket>, ApiError> {
    let mut tx = state.store.begin().await?;
    let recipient = store::user_by_email(&mut tx, &to.email).await?;
    let at = clock::now();
    if let Some(recipient) = recipient.filter(|recipient| *recipient != user.id) {
        // One conditional statement: an order or a listing that crosses it wins or loses whole.
        if let Some(ticket) =
            store::send(&mut tx, id, user.id, recipient, clock::millis(at)).await?
        {
            store::record_handover(&mut tx, &HistoryEntry::sent(id, user.id, recipient, at))
                .await?;
            outbox::enqueue(&mut tx, ticket.updated_event()).await?;
            idempotent
                .record_json(&mut tx, StatusCode::OK, &ticket)
                .await?;
            state.outbox.commit(tx).await?;
            tracing::info!(ticket = %id, "ticket sent");
            return Ok(Json(ticket));
        }
    }
    let ticket = store::find(&mut *tx, id).await?;
    let last_sale = store::last_sale(&mut tx, id).await?;
    kept(ticket.as_ref(), user.id, last_sale, "send")?;
    Err(match recipient {
        None => ApiError::field("email", "No account has this e-mail"),
        Some(recipient) if recipient == user.id => {
            ApiError::field("email", "The ticket is yours already")
        }
        // Kept now, but not when the send looked: an order released it in between.
        Some(_) => ApiError::BadRequest(
            ErrorCode::TicketReserved,
            "Cannot send a ticket an order holds".into(),
        ),
    })
}

/// `GET /api/users/me/sales?limit=&cursor=`: what the signed-in user sold, and is owed.
#[utoipa::path(
    get,
    path = "/api/users/me/sales",
    operation_id = "listSales",
    tag = "wallet",
    summary = "The tickets you sold, last first, with what you are owed for each",
    description = "A sale is recorded when its order is paid: the price the buyer paid, the \
        marketplace's fee at the time, and what is owed to you, the price less the fee, \
        `payout: owed` until it is paid out. The next page is in the `Link` header.",
    params(PageQuery),
    security(("session_cookie" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "A page of your sales", body = [Sale]),
        (status = 400, description = "`limit`, `cursor` or `offset` is invalid \
            (`invalid_field`)", body = ErrorBody),
        (status = 401, description = "Not signed in (`not_authorized`)", body = ErrorBody),
    )
)]
async fn list_sales(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    page: Page,
) -> Result<Paged<Sale>, ApiError> {
    let sales = store::sales(state.store.pool(), user.id, &page).await?;
    Ok(page.answer(sales, "/api/users/me/sales", |sale| {
        Cursor::at(clock::millis(sale.sold_at), sale.order_id)
    }))
}

/// `POST /api/tickets/{id}/resale`: the owner lists a ticket they keep for sale again, at no more
/// than the resale cap, announced (ticket:updated, the next listing) in the same transaction.
#[utoipa::path(
    post,
    path = "/api/tickets/{id}/resale",
    operation_id = "listTicketAgain",
    tag = "wallet",
    summary = "Sell a ticket you bought",
    description = "Only a ticket you bought or were sent, and keep. Its price may be at most \
        the resale cap on what was last paid for it (`maxResalePrice` in your wallet). It is \
        for sale again at once, as any listing; while it is, its price can be changed within \
        the cap, and it stays in your wallet until it sells.",
    params(
        ("id" = Uuid, Path, description = "The ticket's id; a malformed id is a 404"),
        IdempotencyKey,
    ),
    request_body = ResaleBody,
    security(("session_cookie" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The ticket, for sale", body = Ticket),
        (status = 400, description = "The price is invalid or over the cap, which the message \
            names (`invalid_field`); the ticket is for sale already (`ticket_listed`) or an \
            order holds it (`ticket_reserved`); its event has started (`sale_ended`); or the key \
            was used with another request (`idempotency_key_reused`)", body = ErrorBody),
        (status = 401, description = "Not signed in, or not the owner (`not_authorized`)",
            body = ErrorBody),
        (status = 404, description = "No such ticket (`not_found`)", body = ErrorBody),
    )
)]
async fn list_again(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    PathId(id): PathId,
    idempotent: Idempotent,
    Valid(price): Valid<ResaleBody>,
) -> Result<Json<Ticket>, ApiError> {
    let mut tx = state.store.begin().await?;
    let ticket = store::find(&mut *tx, id).await?;
    // What was paid does not change while its owner keeps the ticket.
    let last_sale = store::last_sale(&mut tx, id).await?;
    let sale = kept(ticket.as_ref(), user.id, last_sale, "list again")?;
    // Events never change, so what is read here still holds at the update.
    if let Some(event_id) = ticket.and_then(|ticket| ticket.event_id)
        && store::event_start(&mut *tx, event_id)
            .await?
            .is_some_and(|starts_at| starts_at <= clock::now_millis())
    {
        return Err(ApiError::BadRequest(
            ErrorCode::SaleEnded,
            "The event has started: its tickets are no longer for sale".into(),
        ));
    }
    if let Some(refusal) = state.over_cap(price, sale.price) {
        return Err(refusal);
    }
    // One conditional statement: a send that crossed the reads above wins or loses whole.
    let Some(ticket) = store::list_again(&mut tx, id, user.id, price).await? else {
        let ticket = store::find(&mut *tx, id).await?;
        kept(ticket.as_ref(), user.id, Some(sale), "list again")?;
        return Err(ApiError::internal(anyhow::anyhow!(
            "ticket {id} is kept, yet was not listed again"
        )));
    };
    outbox::enqueue(&mut tx, ticket.updated_event()).await?;
    idempotent
        .record_json(&mut tx, StatusCode::OK, &ticket)
        .await?;
    state.outbox.commit(tx).await?;
    tracing::info!(ticket = %id, listing = ticket.listing, "ticket listed again");
    Ok(Json(ticket))
}

/// `GET /api/tickets/{id}/history`: the ticket's changes of hands, for its owner.
#[utoipa::path(
    get,
    path = "/api/tickets/{id}/history",
    operation_id = "showTicketHistory",
    tag = "wallet",
    summary = "How a ticket you own changed hands",
    description = "Each sale, at what price and when, and each time it was sent, oldest \
        first. Only its owner may read it.",
    params(("id" = Uuid, Path, description = "The ticket's id; a malformed id is a 404")),
    security(("session_cookie" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The ticket's changes of hands", body = [HistoryView]),
        (status = 401, description = "Not signed in, or not the owner (`not_authorized`)",
            body = ErrorBody),
        (status = 404, description = "No such ticket (`not_found`)", body = ErrorBody),
    )
)]
async fn ticket_history(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    PathId(id): PathId,
) -> Result<Json<Vec<HistoryView>>, ApiError> {
    let ticket = store::find(state.store.pool(), id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if ticket.user_id != user.id {
        return Err(ApiError::Unauthorized);
    }
    Ok(Json(store::history(state.store.pool(), id).await?))
}
