//! The tickets HTTP API: `/api/tickets` and `/api/tickets/{id}`. Thin handlers: extract and
//! validate, call the store inside a transaction, answer the ticket or an error in the one shape.

use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use axum::{Json, Router};
use common::clock;
use common::idempotency::{self, Idempotent, Keys};
use common::outbox::{self, Outbox};
use common::paging::{Cursor, Page, Paged};
use common::validate::{PathId, Valid};
use common::{ApiError, ErrorCode, ServiceContext, Sessions, SignedIn, Store};
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

/// The service's routes with their state applied.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/api/tickets",
            get(list_tickets)
                .post(create_ticket)
                .route_layer(from_fn_with_state(state.keys.clone(), idempotency::guard)),
        )
        .route("/api/tickets/{id}", get(show_ticket).put(update_ticket))
        .with_state(state)
}

/// `GET /api/tickets?limit=&cursor=`: tickets for sale, newest first, a page at a time.
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
