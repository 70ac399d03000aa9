//! An event: where and when, its tickets for sale cheapest first, and buying the best available
//! one in a click.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

use super::tickets::{PAGE_SIZE, TicketView, place_order, price_json};
use super::{FieldErrors, Layout, PageError, PageForm, PageQuery, Visitor, parse_id, render};
use crate::{Web, format};

/// An event as its page shows it.
pub(crate) struct EventView {
    pub id: String,
    pub name: String,
    pub venue: String,
    pub city: String,
    /// When it starts on the venue's clocks: `Fri 12 Jun 2030, 20:00`.
    pub starts: String,
    pub tickets_for_sale: i64,
    pub lowest_price: Option<String>,
}

impl EventView {
    fn from_api(event: &Value, currency: &str) -> Option<Self> {
        let local = OffsetDateTime::parse(event["localStartsAt"].as_str()?, &Rfc3339).ok()?;
        let starts = local
            .format(format_description!(
                "[weekday repr:short] [day padding:none] [month repr:short] [year], [hour]:[minute]"
            ))
            .ok()?;
        Some(Self {
            id: event["id"].as_str()?.to_owned(),
            name: event["name"].as_str()?.to_owned(),
            venue: event["venue"].as_str()?.to_owned(),
            city: event["city"].as_str()?.to_owned(),
            starts,
            tickets_for_sale: event["ticketsForSale"].as_i64().unwrap_or_default(),
            lowest_price: format::cents(event.get("lowestPrice"))
                .map(|cents| format::money(cents, currency)),
        })
    }
}

#[derive(Template)]
#[template(path = "event.html")]
struct EventPage {
    layout: Layout,
    event: EventView,
    tickets: Vec<TicketView>,
    max_price: String,
    errors: FieldErrors,
    signed_in: bool,
    list_path: String,
    later: bool,
    next: Option<String>,
}

/// The event and a page of its tickets for sale, for its page.
async fn event_page(
    web: &Web,
    visitor: &Visitor,
    id: &str,
    place: &PageQuery,
    (max_price, errors): (String, FieldErrors),
) -> Result<EventPage, PageError> {
    let id = parse_id(id)?;
    let reply = visitor
        .call(web, Method::GET, &format!("/api/events/{id}"), None)
        .await?;
    let event = match reply.status {
        StatusCode::OK => EventView::from_api(&reply.body, &web.settings.currency)
            .ok_or_else(|| PageError::Internal("an event without its details".into()))?,
        StatusCode::NOT_FOUND => return Err(PageError::NotFound),
        status => return Err(PageError::Internal(format!("GET event answered {status}"))),
    };
    let path = place.api_path(&format!("/api/events/{id}/tickets"), PAGE_SIZE);
    let tickets = visitor.call(web, Method::GET, &path, None).await?;
    if !tickets.status.is_success() {
        return Err(PageError::Internal(format!(
            "{path} answered {}",
            tickets.status
        )));
    }
    Ok(EventPage {
        layout: visitor.layout(),
        tickets: TicketView::list(&tickets.body, &web.settings.currency),
        list_path: format!("/events/{id}"),
        later: place.cursor().is_some(),
        next: tickets.next_cursor,
        event,
        max_price,
        errors,
        signed_in: visitor.user.is_some(),
    })
}

/// `GET /events/{id}?cursor=`.
pub(crate) async fn get_event(
    State(web): State<Web>,
    visitor: Visitor,
    Path(id): Path<String>,
    Query(place): Query<PageQuery>,
) -> Result<Response, PageError> {
    let page = event_page(&web, &visitor, &id, &place, Default::default()).await?;
    Ok(render(StatusCode::OK, &page))
}

#[derive(Debug, Deserialize)]
pub(crate) struct BestAvailableFields {
    #[serde(default)]
    max_price: String,
    request_key: Option<String>,
}

/// `POST /events/{id}/best`: holds the cheapest ticket of the event for sale (within the price
/// given, if one is) and goes to its order.
pub(crate) async fn post_best_available(
    State(web): State<Web>,
    visitor: Visitor,
    Path(id): Path<String>,
    PageForm(form): PageForm<BestAvailableFields>,
) -> Result<Response, PageError> {
    let event_id = parse_id(&id)?;
    let back = format!("/events/{event_id}");
    if visitor.user.is_none() {
        return Err(PageError::SignIn { next: back });
    }
    let mut body = json!({"eventId": event_id});
    if !form.max_price.trim().is_empty() {
        body["maxPrice"] = price_json(&form.max_price);
    }
    match place_order(&web, &visitor, &body, &form.request_key, back).await? {
        Ok(to_order) => Ok(to_order),
        Err(refused) => {
            let errors = FieldErrors::from_reply(&refused, &["maxPrice"]);
            let first = PageQuery::from_cursor(None);
            let page = event_page(&web, &visitor, &id, &first, (form.max_price, errors)).await?;
            Ok(render(refused.status, &page))
        }
    }
}
