//! The tickets HTTP API: `/api/tickets` and `/api/tickets/{id}`. Thin handlers: extract and
//! validate, call the store inside a transaction, answer the ticket or an error in the one shape.

use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::{Extension, Json, Router};
use common::clock;
use common::idempotency::{self, Idempotent, Keys};
use common::openapi::{self, ErrorBody, IdempotencyKey};
use common::outbox::{self, Outbox};
use common::paging::{Cursor, Page, PageQuery, Paged};
use common::validate::{PathId, Valid};
use common::{ApiError, ErrorCode, ServiceContext, Sessions, SignedIn, Store};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;
use uuid::Uuid;

use crate::domain::{Ticket, TicketBody};
use crate::store;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    store: Store,
    outbox: Outbox,
    sessions: Sessions,
    keys: Keys,
}

impl AppState {
    pub fn new(ctx: &ServiceContext) -> Self {
        Self {
            store: ctx.store.clone(),
            outbox: ctx.outbox.clone(),
            sessions: ctx.sessions.clone(),
            keys: ctx.idempotency_keys(),
        }
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
        "tickets",
        "tickets",
        "Tickets for sale: list one, change it while no order holds it, browse them",
    )
}

/// `GET /api/tickets?limit=&cursor=`: tickets for sale, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/api/tickets",
    operation_id = "listTickets",
    tag = "tickets",
    summary = "Tickets for sale, newest first",
    description = "Tickets no order holds, a page at a time. The next page is in the `Link` header.",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of tickets for sale", body = [Ticket],
            links(("orderFirstTicket" = (operation_id = "createOrder",
                request_body = json!({"ticketId": "$response.body#/0/id"}))))),
    )
)]
async fn list_tickets(
    State(state): State<AppState>,
    page: Page,
) -> Result<Paged<Ticket>, ApiError> {
    let tickets = store::list_for_sale(state.store.pool(), &page).await?;
    Ok(page.answer(tickets, "/api/tickets", |ticket| {
        Cursor::at(clock::millis(ticket.created_at), ticket.id)
    }))
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
    request_body = TicketBody,
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
        (status = 400, description = "A field is invalid (`invalid_field`), or the key was used \
            with another request (`idempotency_key_reused`)", body = ErrorBody),
        (status = 401, description = "Not signed in (`not_authorized`)", body = ErrorBody),
    )
)]
async fn create_ticket(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    idempotent: Idempotent,
    Valid(details): Valid<TicketBody>,
) -> Result<(StatusCode, Json<Ticket>), ApiError> {
    // Stored times have millisecond precision; the answer shows what a later read will.
    let ticket = Ticket::listed(details, user.id, clock::now());
    let mut tx = state.store.begin().await?;
    store::insert(&mut tx, &ticket).await?;
    outbox::enqueue(&mut tx, ticket.created_event()).await?;
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
    description = "Only the seller may, and only while no order holds the ticket.",
    params(("id" = Uuid, Path, description = "The ticket's id; a malformed id is a 404")),
    request_body = TicketBody,
    security(("session_cookie" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The ticket as changed", body = Ticket),
        (status = 400, description = "A field is invalid (`invalid_field`), or an order holds \
            the ticket (`ticket_reserved`)", body = ErrorBody),
        (status = 401, description = "Not signed in, or not the seller (`not_authorized`)",
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
    // One conditional statement, not a read then a write: a reservation committed between the
    // two would otherwise be overwritten by the edit.
    if let Some(ticket) = store::edit_unreserved(&mut tx, id, user.id, &changes).await? {
        outbox::enqueue(&mut tx, ticket.updated_event()).await?;
        state.outbox.commit(tx).await?;
        return Ok(Json(ticket));
    }
    Err(why_not_edited(store::find(&mut *tx, id).await?, user.id))
}

/// Why an edit matched no row: no such ticket, someone else's, or reserved.
fn why_not_edited(ticket: Option<Ticket>, editor: Uuid) -> ApiError {
    match ticket {
        None => ApiError::NotFound,
        Some(ticket) if ticket.user_id != editor => ApiError::Unauthorized,
        // Also the answer when a release landed between the edit and this read: at the moment of
        // the edit the ticket was reserved.
        Some(_) => ApiError::BadRequest(
            ErrorCode::TicketReserved,
            "Cannot edit a reserved ticket".into(),
        ),
    }
}
