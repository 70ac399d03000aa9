//! The tickets for sale, one ticket, selling and editing a ticket, and starting a purchase.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    FieldErrors, KeyedForm, Layout, PageError, PageForm, PageQuery, Visitor, parse_id, render,
    request_key,
};
use crate::api::ApiReply;
use crate::{Web, format};

/// Tickets on one page of `/`.
pub(crate) const PAGE_SIZE: u32 = 24;

/// A ticket as the pages show it.
pub(crate) struct TicketView {
    pub id: String,
    pub title: String,
    pub price: String,
    /// The price as the edit form's field shows it (`19.99`).
    pub price_input: String,
    pub listed: String,
    pub owner_id: String,
    pub reserved: bool,
    /// The event the ticket is for, if any.
    pub event_id: Option<String>,
    /// Where the seat is (`Section A · Row 3 · Seat 12`), when the seller said.
    pub seat: String,
}

impl TicketView {
    pub(crate) fn from_api(ticket: &Value, currency: &str) -> Option<Self> {
        let cents = format::cents(ticket.get("price"))?;
        Some(Self {
            id: ticket["id"].as_str()?.to_owned(),
            title: ticket["title"].as_str()?.to_owned(),
            price: format::money(cents, currency),
            price_input: format::price_input(cents),
            listed: format::date(ticket["createdAt"].as_str().unwrap_or_default()),
            owner_id: ticket["userId"].as_str().unwrap_or_default().to_owned(),
            reserved: !ticket["orderId"].is_null(),
            event_id: ticket["eventId"].as_str().map(str::to_owned),
            seat: [("Section", "section"), ("Row", "row"), ("Seat", "seat")]
                .iter()
                .filter_map(|(label, key)| {
                    ticket[*key]
                        .as_str()
                        .map(|value| format!("{label} {value}"))
                })
                .collect::<Vec<_>>()
                .join(" · "),
        })
    }

    /// The tickets of an API list answer, leaving out any it cannot show.
    pub(crate) fn list(body: &Value, currency: &str) -> Vec<Self> {
        body.as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|t| Self::from_api(t, currency))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// What the home page's search box asks for, as its form sends it (blank fields are not
/// asked for), and the page of results.
#[derive(Debug, Default, Deserialize, Serialize)]
pub(crate) struct Search {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    q: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    city: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    from: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    to: String,
    #[serde(default, rename = "maxPrice", skip_serializing_if = "String::is_empty")]
    max_price: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    sort: String,
    #[serde(default, skip_serializing)]
    cursor: Option<String>,
}

impl Search {
    /// The search as a query string (`q=radio&sort=price`), blank fields left out.
    fn query(&self) -> String {
        let typed = Self {
            q: self.q.trim().to_owned(),
            city: self.city.trim().to_owned(),
            from: self.from.trim().to_owned(),
            to: self.to.trim().to_owned(),
            max_price: self
                .max_price
                .trim()
                .trim_start_matches('$')
                .replace(',', ""),
            sort: self.sort.trim().to_owned(),
            cursor: None,
        };
        serde_urlencoded::to_string(&typed).unwrap_or_default()
    }
}

/// `path` with a search's query string added, if there is one.
fn with_query(path: &str, query: &str) -> String {
    match (query.is_empty(), path.contains('?')) {
        (true, _) => path.to_owned(),
        (false, true) => format!("{path}&{query}"),
        (false, false) => format!("{path}?{query}"),
    }
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    layout: Layout,
    tickets: Vec<TicketView>,
    search: Search,
    /// Whether anything was searched for (or sorted by).
    searched: bool,
    errors: FieldErrors,
    /// Where the first page of this list is, with its search.
    list_path: String,
    /// Whether this is a later page, which links back to the first.
    later: bool,
    /// The cursor of the next page, when there is one.
    next: Option<String>,
}

/// The search fields the API may name in its errors.
const SEARCH_FIELDS: [&str; 6] = ["q", "city", "from", "to", "maxPrice", "sort"];

/// `GET /?q=&city=&from=&to=&maxPrice=&sort=&cursor=`: tickets for sale, newest first unless
/// searched for or sorted otherwise, a page at a time.
pub(crate) async fn get_home(
    State(web): State<Web>,
    visitor: Visitor,
    Query(search): Query<Search>,
) -> Result<Response, PageError> {
    let query = search.query();
    let searched = !query.is_empty();
    let place = PageQuery::from_cursor(search.cursor.clone());
    let path = with_query(&place.api_path("/api/tickets", PAGE_SIZE), &query);
    let list_path = with_query("/", &query);
    let reply = visitor.call(&web, Method::GET, &path, None).await?;
    if reply.status == StatusCode::BAD_REQUEST && searched {
        let errors = FieldErrors::from_reply(&reply, &SEARCH_FIELDS);
        let page = HomePage {
            layout: visitor.layout(),
            tickets: Vec::new(),
            search,
            searched,
            errors,
            list_path,
            later: false,
            next: None,
        };
        return Ok(render(StatusCode::BAD_REQUEST, &page));
    }
    if !reply.status.is_success() {
        return Err(PageError::Internal(format!(
            "{path} answered {}",
            reply.status
        )));
    }
    Ok(render(
        StatusCode::OK,
        &HomePage {
            layout: visitor.layout(),
            tickets: TicketView::list(&reply.body, &web.settings.currency),
            search,
            searched,
            errors: FieldErrors::default(),
            list_path,
            later: place.cursor().is_some(),
            next: reply.next_cursor,
        },
    ))
}

#[derive(Template)]
#[template(path = "ticket.html")]
struct TicketPage {
    layout: Layout,
    ticket: TicketView,
    is_owner: bool,
    signed_in: bool,
    errors: FieldErrors,
}

async fn fetch_ticket(web: &Web, visitor: &Visitor, id: &str) -> Result<TicketView, PageError> {
    let id = parse_id(id)?;
    let reply = visitor
        .call(web, Method::GET, &format!("/api/tickets/{id}"), None)
        .await?;
    match reply.status {
        StatusCode::OK => TicketView::from_api(&reply.body, &web.settings.currency)
            .ok_or_else(|| PageError::Internal("a ticket without title or price".into())),
        StatusCode::NOT_FOUND => Err(PageError::NotFound),
        status => Err(PageError::Internal(format!("GET ticket answered {status}"))),
    }
}

fn ticket_page(visitor: &Visitor, ticket: TicketView, errors: FieldErrors) -> TicketPage {
    TicketPage {
        layout: visitor.layout(),
        is_owner: visitor
            .user
            .as_ref()
            .is_some_and(|u| u.id == ticket.owner_id),
        signed_in: visitor.user.is_some(),
        ticket,
        errors,
    }
}

/// `GET /tickets/{id}`.
pub(crate) async fn get_ticket(
    State(web): State<Web>,
    visitor: Visitor,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let ticket = fetch_ticket(&web, &visitor, &id).await?;
    Ok(render(
        StatusCode::OK,
        &ticket_page(&visitor, ticket, FieldErrors::default()),
    ))
}

/// `POST /tickets/{id}/purchase`: places an order and goes to it.
pub(crate) async fn post_purchase(
    State(web): State<Web>,
    visitor: Visitor,
    Path(id): Path<String>,
    PageForm(form): PageForm<KeyedForm>,
) -> Result<Response, PageError> {
    let ticket_id = parse_id(&id)?;
    let back = format!("/tickets/{ticket_id}");
    if visitor.user.is_none() {
        return Err(PageError::SignIn { next: back });
    }
    let body = json!({"ticketId": ticket_id});
    match place_order(&web, &visitor, &body, &form.request_key, back).await? {
        Ok(to_order) => Ok(to_order),
        Err(refused) => {
            let ticket = fetch_ticket(&web, &visitor, &id).await?;
            let errors = FieldErrors::from_reply(&refused, &[]);
            Ok(render(
                refused.status,
                &ticket_page(&visitor, ticket, errors),
            ))
        }
    }
}

/// Places an order (`body` as `POST /api/orders` takes it) and answers the way to it; or the
/// API's refusal (a 4xx the page shows), for the page to show it. `back` is where to come back
/// to after signing in.
pub(crate) async fn place_order(
    web: &Web,
    visitor: &Visitor,
    body: &Value,
    key: &Option<String>,
    back: String,
) -> Result<Result<Response, ApiReply>, PageError> {
    let reply = visitor
        .call_keyed(
            web,
            Method::POST,
            "/api/orders",
            Some(body),
            request_key(key),
        )
        .await?;
    match reply.status {
        StatusCode::CREATED => match reply.body["id"].as_str() {
            Some(order) => Ok(Ok(Redirect::to(&format!("/orders/{order}")).into_response())),
            None => Err(PageError::Internal("an order without id".into())),
        },
        StatusCode::UNAUTHORIZED => Err(PageError::SignIn { next: back }),
        StatusCode::NOT_FOUND => Err(PageError::NotFound),
        status if status.is_client_error() => Ok(Err(reply)),
        status => Err(PageError::Internal(format!("POST order answered {status}"))),
    }
}

#[derive(Template)]
#[template(path = "ticket_form.html")]
struct TicketForm {
    layout: Layout,
    /// `None` for a new ticket; the ticket's id when editing.
    editing: Option<String>,
    title: String,
    price: String,
    reserved: bool,
    errors: FieldErrors,
}

#[derive(Debug, Deserialize)]
pub(crate) struct TicketFields {
    #[serde(default)]
    title: String,
    #[serde(default)]
    price: String,
    request_key: Option<String>,
}

/// `GET /tickets/new`.
pub(crate) async fn get_new_ticket(visitor: Visitor) -> Result<Response, PageError> {
    visitor.signed_in()?;
    Ok(render(
        StatusCode::OK,
        &TicketForm {
            layout: visitor.layout(),
            editing: None,
            title: String::new(),
            price: String::new(),
            reserved: false,
            errors: FieldErrors::default(),
        },
    ))
}

/// The price field as the API takes it: a JSON number (`$` and thousands commas allowed). What
/// is not a number goes as typed (or null when empty), so the API's validation speaks for every
/// field at once.
pub(crate) fn price_json(text: &str) -> Value {
    let cleaned: String = text
        .trim()
        .trim_start_matches('$')
        .chars()
        .filter(|c| *c != ',')
        .collect();
    if cleaned.is_empty() {
        return Value::Null;
    }
    serde_json::from_str::<serde_json::Number>(&cleaned)
        .map(Value::Number)
        .unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// `POST /tickets/new`: lists the ticket and shows it.
pub(crate) async fn post_new_ticket(
    State(web): State<Web>,
    visitor: Visitor,
    PageForm(form): PageForm<TicketFields>,
) -> Result<Response, PageError> {
    save_ticket(&web, &visitor, None, form).await
}

/// `GET /tickets/{id}/edit`: the seller's form, while no order holds the ticket.
pub(crate) async fn get_edit_ticket(
    State(web): State<Web>,
    visitor: Visitor,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let user = visitor.signed_in()?;
    let ticket = fetch_ticket(&web, &visitor, &id).await?;
    if ticket.owner_id != user.id {
        // Someone else's ticket has no edit page.
        return Err(PageError::NotFound);
    }
    let errors = if ticket.reserved {
        FieldErrors::general("This ticket is reserved by a buyer, so it cannot be edited now.")
    } else {
        FieldErrors::default()
    };
    Ok(render(
        StatusCode::OK,
        &TicketForm {
            layout: visitor.layout(),
            editing: Some(ticket.id),
            title: ticket.title,
            price: ticket.price_input,
            reserved: ticket.reserved,
            errors,
        },
    ))
}

/// `POST /tickets/{id}/edit`.
pub(crate) async fn post_edit_ticket(
    State(web): State<Web>,
    visitor: Visitor,
    Path(id): Path<String>,
    PageForm(form): PageForm<TicketFields>,
) -> Result<Response, PageError> {
    let id = parse_id(&id)?;
    save_ticket(&web, &visitor, Some(id.to_string()), form).await
}

async fn save_ticket(
    web: &Web,
    visitor: &Visitor,
    editing: Option<String>,
    form: TicketFields,
) -> Result<Response, PageError> {
    let back = match &editing {
        Some(id) => format!("/tickets/{id}/edit"),
        None => "/tickets/new".into(),
    };
    if visitor.user.is_none() {
        return Err(PageError::SignIn { next: back });
    }
    let rerender = |status: StatusCode, errors: FieldErrors, form: TicketFields| {
        render(
            status,
            &TicketForm {
                layout: visitor.layout(),
                editing: editing.clone(),
                title: form.title,
                price: form.price,
                reserved: false,
                errors,
            },
        )
    };
    let body = json!({"title": form.title, "price": price_json(&form.price)});
    let reply = match &editing {
        Some(id) => {
            visitor
                .call(web, Method::PUT, &format!("/api/tickets/{id}"), Some(&body))
                .await?
        }
        None => {
            let key = request_key(&form.request_key);
            visitor
                .call_keyed(web, Method::POST, "/api/tickets", Some(&body), key)
                .await?
        }
    };
    match reply.status {
        status if status.is_success() => match reply.body["id"].as_str() {
            Some(id) => Ok(Redirect::to(&format!("/tickets/{id}")).into_response()),
            None => Err(PageError::Internal("a ticket without id".into())),
        },
        StatusCode::UNAUTHORIZED if editing.is_some() => Err(PageError::NotFound),
        StatusCode::UNAUTHORIZED => Err(PageError::SignIn { next: back }),
        StatusCode::NOT_FOUND => Err(PageError::NotFound),
        status if status.is_client_error() => Ok(rerender(
            status,
            FieldErrors::from_reply(&reply, &["title", "price"]),
            form,
        )),
        status => Err(PageError::Internal(format!(
            "saving a ticket answered {status}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typed_price_becomes_a_json_number_with_its_digits_kept() {
        assert_eq!(price_json("19.99"), json!(19.99));
        assert_eq!(price_json(" $1,250 "), json!(1250));
        assert_eq!(price_json(""), Value::Null);
        assert_eq!(price_json("twenty"), json!("twenty"));
    }
}
