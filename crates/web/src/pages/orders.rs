//! My orders, one order with its countdown and payment form, paying and cancelling.

use std::time::Duration;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{
    FieldErrors, KeyedForm, Layout, PageError, PageForm, PageQuery, Visitor, parse_id, render,
    request_key,
};
use crate::{Web, assets, card, format};

/// Where an order stands, as the buyer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Standing {
    /// Waiting for payment, with time left.
    Open,
    Paid,
    /// The time to pay has run out (the order may not have been cancelled yet).
    Expired,
    /// Cancelled by the buyer before it ran out.
    Cancelled,
}

impl Standing {
    /// From the API's status and the time left on the server's clock.
    pub(crate) fn of(status: &str, seconds_left: i64, expires_in_future: bool) -> Self {
        match status {
            "complete" => Self::Paid,
            "cancelled" if expires_in_future => Self::Cancelled,
            "cancelled" => Self::Expired,
            _ if seconds_left == 0 => Self::Expired,
            _ => Self::Open,
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Open => "Awaiting payment",
            Self::Paid => "Paid",
            Self::Expired => "Expired",
            Self::Cancelled => "Cancelled",
        }
    }

    /// The CSS class of the status badge.
    pub(crate) fn class(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Paid => "paid",
            Self::Expired | Self::Cancelled => "closed",
        }
    }
}

/// An order as the pages show it.
pub(crate) struct OrderView {
    pub id: String,
    pub ticket_id: String,
    pub title: String,
    pub price: String,
    pub standing: Standing,
    pub seconds_left: i64,
    pub clock: String,
}

impl OrderView {
    fn from_api(order: &Value, currency: &str, now: OffsetDateTime) -> Option<Self> {
        let expires_at = OffsetDateTime::parse(order["expiresAt"].as_str()?, &Rfc3339).ok()?;
        let seconds_left = format::seconds_left(expires_at, now);
        let status = order["status"].as_str()?;
        let ticket = &order["ticket"];
        Some(Self {
            id: order["id"].as_str()?.to_owned(),
            ticket_id: ticket["id"].as_str().unwrap_or_default().to_owned(),
            title: ticket["title"].as_str()?.to_owned(),
            price: format::money(format::cents(ticket.get("price"))?, currency),
            standing: Standing::of(status, seconds_left, expires_at > now),
            seconds_left,
            clock: format::clock(seconds_left),
        })
    }

    pub(crate) fn is_open(&self) -> bool {
        self.standing == Standing::Open
    }
}

#[derive(Template)]
#[template(path = "orders.html")]
struct OrdersPage {
    layout: Layout,
    orders: Vec<OrderView>,
    /// Whether this is a later page, which links back to the newest orders.
    later: bool,
    /// The cursor of the next page, when there is one.
    next: Option<String>,
}

/// How many orders a page shows.
const PAGE_SIZE: u32 = 20;

/// `GET /orders?cursor=`: my orders, newest first, a page at a time.
pub(crate) async fn get_orders(
    State(web): State<Web>,
    visitor: Visitor,
    Query(query): Query<PageQuery>,
) -> Result<Response, PageError> {
    visitor.signed_in()?;
    let path = query.api_path("/api/orders", PAGE_SIZE);
    let reply = visitor.call(&web, Method::GET, &path, None).await?;
    match reply.status {
        StatusCode::OK => {}
        StatusCode::UNAUTHORIZED => visitor.signed_in().map(|_| ())?,
        status => return Err(PageError::Internal(format!("GET orders answered {status}"))),
    }
    let now = OffsetDateTime::now_utc();
    let orders: Vec<OrderView> = reply
        .body
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|o| OrderView::from_api(o, &web.settings.currency, now))
                .collect()
        })
        .unwrap_or_default();
    Ok(render(
        StatusCode::OK,
        &OrdersPage {
            layout: visitor.layout(),
            orders,
            later: query.cursor().is_some(),
            next: reply.next_cursor,
        },
    ))
}

#[derive(Template)]
#[template(path = "order.html")]
struct OrderPage {
    layout: Layout,
    order: OrderView,
    /// Set when a payment went through but the order has not been marked paid yet.
    confirming: bool,
    /// Stripe Elements' key; `None` in sandbox mode.
    stripe_key: Option<String>,
    countdown_js: String,
    stripe_js: String,
    card_number: String,
    errors: FieldErrors,
}

async fn fetch_order(web: &Web, visitor: &Visitor, id: &str) -> Result<OrderView, PageError> {
    let id = parse_id(id)?;
    visitor.signed_in()?;
    let reply = visitor
        .call(web, Method::GET, &format!("/api/orders/{id}"), None)
        .await?;
    match reply.status {
        StatusCode::OK => OrderView::from_api(
            &reply.body,
            &web.settings.currency,
            OffsetDateTime::now_utc(),
        )
        .ok_or_else(|| PageError::Internal("an order the page cannot read".into())),
        // Signed in, yet not allowed: someone else's order, which this visitor must not learn of.
        StatusCode::NOT_FOUND | StatusCode::UNAUTHORIZED => Err(PageError::NotFound),
        status => Err(PageError::Internal(format!("GET order answered {status}"))),
    }
}

fn order_page(
    web: &Web,
    visitor: &Visitor,
    order: OrderView,
    card_number: String,
    errors: FieldErrors,
) -> OrderPage {
    OrderPage {
        layout: visitor.layout(),
        order,
        confirming: false,
        stripe_key: web.settings.stripe_publishable_key.clone(),
        countdown_js: assets::COUNTDOWN.clone(),
        stripe_js: assets::STRIPE_PAY.clone(),
        card_number,
        errors,
    }
}

/// `GET /orders/{id}`.
pub(crate) async fn get_order(
    State(web): State<Web>,
    visitor: Visitor,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let order = fetch_order(&web, &visitor, &id).await?;
    Ok(render(
        StatusCode::OK,
        &order_page(&web, &visitor, order, String::new(), FieldErrors::default()),
    ))
}

#[derive(Debug, Deserialize)]
pub(crate) struct PaymentFields {
    /// Sandbox mode: one of Stripe's test card numbers.
    card_number: Option<String>,
    /// With a Stripe key: the token Stripe.js made from the card.
    token: Option<String>,
    request_key: Option<String>,
}

/// `POST /orders/{id}/pay`: charges the card, then shows the order (paid, or why not).
pub(crate) async fn post_payment(
    State(web): State<Web>,
    visitor: Visitor,
    Path(id): Path<String>,
    PageForm(form): PageForm<PaymentFields>,
) -> Result<Response, PageError> {
    let order_id = parse_id(&id)?;
    let here = format!("/orders/{order_id}");
    if visitor.user.is_none() {
        return Err(PageError::SignIn { next: here });
    }
    let card_number = form.card_number.unwrap_or_default();
    let token = match (&web.settings.stripe_publishable_key, form.token) {
        (Some(_), Some(token)) if !token.trim().is_empty() => token.trim().to_owned(),
        (Some(_), _) => {
            let order = fetch_order(&web, &visitor, &id).await?;
            let errors = FieldErrors::on("card_number", "Enter your card details");
            let page = order_page(&web, &visitor, order, String::new(), errors);
            return Ok(render(StatusCode::BAD_REQUEST, &page));
        }
        (None, _) => match card::test_token(&card_number) {
            Some(token) => token.to_owned(),
            None => {
                let order = fetch_order(&web, &visitor, &id).await?;
                let errors = FieldErrors::on(
                    "card_number",
                    "Test mode: use 4242 4242 4242 4242 (succeeds) or 4000 0000 0000 0002 (declined)",
                );
                let page = order_page(&web, &visitor, order, card_number, errors);
                return Ok(render(StatusCode::BAD_REQUEST, &page));
            }
        },
    };
    let body = json!({"token": token, "orderId": order_id});
    // An order placed a moment ago is waited for by payments itself, not retried here.
    let key = request_key(&form.request_key);
    let reply = visitor
        .call_keyed(&web, Method::POST, "/api/payments", Some(&body), key)
        .await?;
    match reply.status {
        StatusCode::CREATED => {
            // The order is marked paid when the payment's event reaches the orders service,
            // a moment later: wait briefly so the buyer lands on a page that says "Paid".
            let mut order = fetch_order(&web, &visitor, &id).await?;
            for _ in 0..30 {
                if order.standing == Standing::Paid {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                order = fetch_order(&web, &visitor, &id).await?;
            }
            if order.standing == Standing::Paid {
                return Ok(Redirect::to(&here).into_response());
            }
            let mut page = order_page(&web, &visitor, order, String::new(), FieldErrors::default());
            page.confirming = true;
            Ok(render(StatusCode::OK, &page))
        }
        StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND => Err(PageError::NotFound),
        status if status.is_client_error() => {
            let order = fetch_order(&web, &visitor, &id).await?;
            // Every payment message concerns the card (declined, or the order cannot be paid).
            let message = reply
                .errors()
                .into_iter()
                .map(|(_, message)| message)
                .collect::<Vec<_>>()
                .join(" ");
            let errors = FieldErrors::on("card_number", message);
            let page = order_page(&web, &visitor, order, card_number, errors);
            Ok(render(status, &page))
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            // The order could not be readied for payment in time, or the processor did not
            // answer: either way paying again is safe, since an order is never charged twice.
            let order = fetch_order(&web, &visitor, &id).await?;
            let errors = FieldErrors::on(
                "card_number",
                "Payments are busy or unreachable just now. Please try again in a moment: \
                 an order is never charged twice.",
            );
            let page = order_page(&web, &visitor, order, card_number, errors);
            Ok(render(StatusCode::SERVICE_UNAVAILABLE, &page))
        }
        status => Err(PageError::Internal(format!(
            "POST payment answered {status}"
        ))),
    }
}

/// `POST /orders/{id}/cancel`: gives the ticket back before the time runs out.
pub(crate) async fn post_cancel_order(
    State(web): State<Web>,
    visitor: Visitor,
    Path(id): Path<String>,
    PageForm(form): PageForm<KeyedForm>,
) -> Result<Response, PageError> {
    let order_id = parse_id(&id)?;
    let here = format!("/orders/{order_id}");
    if visitor.user.is_none() {
        return Err(PageError::SignIn { next: here });
    }
    let reply = visitor
        .call_keyed(
            &web,
            Method::DELETE,
            &format!("/api/orders/{order_id}"),
            None,
            request_key(&form.request_key),
        )
        .await?;
    match reply.status {
        status if status.is_success() => Ok(Redirect::to(&here).into_response()),
        StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND => Err(PageError::NotFound),
        status if status.is_client_error() => {
            let order = fetch_order(&web, &visitor, &id).await?;
            let errors = FieldErrors::from_reply(&reply, &[]);
            Ok(render(
                status,
                &order_page(&web, &visitor, order, String::new(), errors),
            ))
        }
        status => Err(PageError::Internal(format!(
            "DELETE order answered {status}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_reads_as_open_paid_expired_or_cancelled() {
        assert_eq!(Standing::of("created", 30, true), Standing::Open);
        assert_eq!(Standing::of("awaiting:payment", 30, true), Standing::Open);
        // The server's clock says time is up, though the expiry has not been processed yet.
        assert_eq!(Standing::of("created", 0, false), Standing::Expired);
        assert_eq!(Standing::of("cancelled", 0, false), Standing::Expired);
        assert_eq!(Standing::of("cancelled", 300, true), Standing::Cancelled);
        assert_eq!(Standing::of("complete", 0, false), Standing::Paid);
    }
}
