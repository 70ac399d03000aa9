//! What a signed-in person owns and sold: My tickets, with sending one on and selling one again,
//! and My sales, with what they are owed.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::tickets::{PAGE_SIZE, TicketView, price_json};
use super::{
    FieldErrors, Layout, PageError, PageForm, PageQuery, Visitor, parse_id, render, request_key,
};
use crate::{Web, format};

/// A ticket in its owner's wallet, as My tickets shows it.
pub(crate) struct OwnedView {
    pub ticket: TicketView,
    /// `kept`, `listed` or `held`, as the API says.
    pub status: String,
    pub acquired: String,
    /// The most it may be listed for again, as a person reads it and as the field takes it.
    pub max_resale: String,
    pub max_resale_input: String,
}

impl OwnedView {
    fn from_api(owned: &Value, currency: &str) -> Option<Self> {
        let max = format::amount_cents(owned.get("maxResalePrice"))?;
        Some(Self {
            ticket: TicketView::from_api(owned, currency)?,
            status: owned["status"].as_str()?.to_owned(),
            acquired: format::date(owned["acquiredAt"].as_str().unwrap_or_default()),
            max_resale: format::amount(max, currency),
            max_resale_input: common::money::plain(max),
        })
    }

    pub(crate) fn label(&self) -> &'static str {
        match self.status.as_str() {
            "kept" => "Yours",
            "listed" => "For sale",
            _ => "Being bought",
        }
    }
}

/// What went wrong with one ticket's form, and what was typed into it.
#[derive(Default)]
pub(crate) struct Attempt {
    pub ticket_id: String,
    pub email: String,
    pub price: String,
    pub errors: FieldErrors,
}

#[derive(Template)]
#[template(path = "my_tickets.html")]
struct MyTicketsPage {
    layout: Layout,
    tickets: Vec<OwnedView>,
    attempt: Attempt,
    list_path: String,
    later: bool,
    next: Option<String>,
}

async fn my_tickets_page(
    web: &Web,
    visitor: &Visitor,
    place: &PageQuery,
    attempt: Attempt,
) -> Result<MyTicketsPage, PageError> {
    let (tickets, next) = my_list(
        web,
        visitor,
        place,
        ("/api/users/me/tickets", "/my/tickets"),
        OwnedView::from_api,
    )
    .await?;
    Ok(MyTicketsPage {
        layout: visitor.layout(),
        tickets,
        attempt,
        list_path: "/my/tickets".into(),
        later: place.cursor().is_some(),
        next,
    })
}

/// A page of one of the signed-in visitor's lists (`api` path, shown at `page`), each item as
/// `view` reads it, and the next page's cursor.
async fn my_list<T>(
    web: &Web,
    visitor: &Visitor,
    place: &PageQuery,
    (api, page): (&str, &str),
    view: fn(&Value, &str) -> Option<T>,
) -> Result<(Vec<T>, Option<String>), PageError> {
    visitor.signed_in()?;
    let path = place.api_path(api, PAGE_SIZE);
    let reply = visitor.call(web, Method::GET, &path, None).await?;
    match reply.status {
        StatusCode::OK => {}
        StatusCode::UNAUTHORIZED => return Err(PageError::SignIn { next: page.into() }),
        status => return Err(PageError::Internal(format!("{path} answered {status}"))),
    }
    let items = reply
        .body
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|item| view(item, &web.settings.currency))
                .collect()
        })
        .unwrap_or_default();
    Ok((items, reply.next_cursor))
}

/// `GET /my/tickets?cursor=`.
pub(crate) async fn get_my_tickets(
    State(web): State<Web>,
    visitor: Visitor,
    Query(place): Query<PageQuery>,
) -> Result<Response, PageError> {
    let page = my_tickets_page(&web, &visitor, &place, Attempt::default()).await?;
    Ok(render(StatusCode::OK, &page))
}

#[derive(Debug, Deserialize)]
pub(crate) struct SendFields {
    #[serde(default)]
    email: String,
    request_key: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ResaleFields {
    #[serde(default)]
    price: String,
    request_key: Option<String>,
}

/// `POST /my/tickets/{id}/send`: gives the ticket to the account with that e-mail.
pub(crate) async fn post_send(
    State(web): State<Web>,
    visitor: Visitor,
    Path(id): Path<String>,
    PageForm(form): PageForm<SendFields>,
) -> Result<Response, PageError> {
    let ticket_id = parse_id(&id)?;
    let body = json!({"email": form.email});
    let attempt = Attempt {
        ticket_id: ticket_id.to_string(),
        email: form.email.clone(),
        ..Attempt::default()
    };
    let path = format!("/api/tickets/{ticket_id}/send");
    act_on_ticket(
        &web,
        &visitor,
        &path,
        &body,
        &form.request_key,
        attempt,
        &["email"],
    )
    .await
}

/// `POST /my/tickets/{id}/resale`: lists the ticket for sale again.
pub(crate) async fn post_resale(
    State(web): State<Web>,
    visitor: Visitor,
    Path(id): Path<String>,
    PageForm(form): PageForm<ResaleFields>,
) -> Result<Response, PageError> {
    let ticket_id = parse_id(&id)?;
    let body = json!({"price": price_json(&form.price)});
    let attempt = Attempt {
        ticket_id: ticket_id.to_string(),
        price: form.price.clone(),
        ..Attempt::default()
    };
    let path = format!("/api/tickets/{ticket_id}/resale");
    act_on_ticket(
        &web,
        &visitor,
        &path,
        &body,
        &form.request_key,
        attempt,
        &["price"],
    )
    .await
}

/// Sends a form of My tickets to the API: back to My tickets when done, or My tickets with the
/// refusal under that ticket's form.
async fn act_on_ticket(
    web: &Web,
    visitor: &Visitor,
    path: &str,
    body: &Value,
    key: &Option<String>,
    mut attempt: Attempt,
    fields: &[&str],
) -> Result<Response, PageError> {
    visitor.signed_in()?;
    let reply = visitor
        .call_keyed(web, Method::POST, path, Some(body), request_key(key))
        .await?;
    match reply.status {
        StatusCode::OK => Ok(Redirect::to("/my/tickets").into_response()),
        StatusCode::UNAUTHORIZED => Err(PageError::SignIn {
            next: "/my/tickets".into(),
        }),
        StatusCode::NOT_FOUND => Err(PageError::NotFound),
        status if status.is_client_error() => {
            attempt.errors = FieldErrors::from_reply(&reply, fields);
            let first = PageQuery::from_cursor(None);
            let page = my_tickets_page(web, visitor, &first, attempt).await?;
            Ok(render(status, &page))
        }
        status => Err(PageError::Internal(format!(
            "POST {path} answered {status}"
        ))),
    }
}

/// A sale as My sales shows it.
pub(crate) struct SaleView {
    pub title: String,
    pub ticket_id: String,
    pub sold: String,
    pub price: String,
    /// The marketplace's fee, when there was one.
    pub fee: Option<String>,
    pub owed: String,
    pub payout: String,
}

impl SaleView {
    fn from_api(sale: &Value, currency: &str) -> Option<Self> {
        let cents = |key: &str| format::amount_cents(sale.get(key));
        let money = |key: &str| cents(key).map(|c| format::amount(c, currency));
        Some(Self {
            title: sale["title"].as_str()?.to_owned(),
            ticket_id: sale["ticketId"].as_str()?.to_owned(),
            sold: format::date(sale["soldAt"].as_str().unwrap_or_default()),
            price: money("price")?,
            fee: (cents("fee")? > 0).then(|| money("fee")).flatten(),
            owed: money("owed")?,
            payout: match sale["payout"].as_str() {
                Some("owed") => "To be paid to you".into(),
                Some(other) => other.to_owned(),
                None => String::new(),
            },
        })
    }
}

#[derive(Template)]
#[template(path = "my_sales.html")]
struct MySalesPage {
    layout: Layout,
    sales: Vec<SaleView>,
    list_path: String,
    later: bool,
    next: Option<String>,
}

/// `GET /my/sales?cursor=`.
pub(crate) async fn get_my_sales(
    State(web): State<Web>,
    visitor: Visitor,
    Query(place): Query<PageQuery>,
) -> Result<Response, PageError> {
    let (sales, next) = my_list(
        &web,
        &visitor,
        &place,
        ("/api/users/me/sales", "/my/sales"),
        SaleView::from_api,
    )
    .await?;
    let page = MySalesPage {
        layout: visitor.layout(),
        sales,
        list_path: "/my/sales".into(),
        later: place.cursor().is_some(),
        next,
    };
    Ok(render(StatusCode::OK, &page))
}
