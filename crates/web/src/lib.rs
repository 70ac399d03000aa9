//! The Stubs web front end: server-rendered pages (askama templates, checked at compile time and
//! escaped), a small stylesheet and the little JavaScript a page needs, all embedded in the
//! binary. The pages are a client of the public API, like any browser ([`ApiClient`]): in `stubs
//! up` they call the API routes in-process, in `stubs serve web` they call the ingress over HTTP.
//!
//! Every form is a plain POST that works without JavaScript and redirects after success. Every
//! POST must come from a page of this site (an `Origin` check on top of the SameSite cookie), and
//! every page carries a Content-Security-Policy that allows only what the page loads.

mod api;
mod assets;
mod card;
mod csrf;
mod format;
mod headers;
mod pages;

use std::sync::Arc;

use axum::Router;
use axum::middleware;
use axum::routing::{MethodRouter, any, get, post};

pub use api::{ApiCallError, ApiClient, ApiReply, Caller};

/// Service name, as in the other service crates.
pub const NAME: &str = "web";

/// What the pages are configured with.
#[derive(Debug, Clone)]
pub struct WebSettings {
    /// Stripe publishable key. With one, the payment form uses Stripe Elements; without one
    /// (sandbox mode) it takes Stripe's public test card numbers.
    pub stripe_publishable_key: Option<String>,
    /// The currency prices are shown in (ISO code, as the payments service charges).
    pub currency: String,
}

/// What the handlers share. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Web(Arc<Inner>);

pub(crate) struct Inner {
    pub api: ApiClient,
    pub settings: WebSettings,
}

impl std::ops::Deref for Web {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// The pages and `/static/…`, with the CSRF check and the security headers.
pub fn router(api: ApiClient, settings: WebSettings) -> Router {
    use pages::{auth, events, orders, tickets, wallet};
    let policy = headers::Policy::new(settings.stripe_publishable_key.is_some());
    let web = Web(Arc::new(Inner { api, settings }));
    Router::new()
        .route("/", get(tickets::get_home))
        .route(
            "/auth/signup",
            get(auth::get_signup).post(auth::post_signup),
        )
        .route(
            "/auth/signin",
            get(auth::get_signin).post(auth::post_signin),
        )
        .route("/auth/signout", post(auth::post_signout))
        .route(
            "/auth/signout/everywhere",
            post(auth::post_signout_everywhere),
        )
        .route(
            "/tickets/new",
            get(tickets::get_new_ticket).post(tickets::post_new_ticket),
        )
        .route("/tickets/{id}", get(tickets::get_ticket))
        .route("/tickets/{id}/purchase", post(tickets::post_purchase))
        .route(
            "/tickets/{id}/edit",
            get(tickets::get_edit_ticket).post(tickets::post_edit_ticket),
        )
        .route("/events/{id}", get(events::get_event))
        .route("/events/{id}/best", post(events::post_best_available))
        .route("/my/tickets", get(wallet::get_my_tickets))
        .route("/my/tickets/{id}/send", post(wallet::post_send))
        .route("/my/tickets/{id}/resale", post(wallet::post_resale))
        .route("/my/sales", get(wallet::get_my_sales))
        .route("/orders", get(orders::get_orders))
        .route("/orders/{id}", get(orders::get_order))
        .route("/orders/{id}/pay", post(orders::post_payment))
        .route("/orders/{id}/cancel", post(orders::post_cancel_order))
        .route("/static/{*path}", get(assets::get_static))
        .layer(middleware::from_fn(csrf::check_origin))
        .layer(middleware::from_fn_with_state(policy, headers::secure))
        .with_state(web)
}

/// `routes` with the security headers of every page, for pages served beside [`router`]'s.
pub fn with_page_headers(routes: Router) -> Router {
    routes.layer(middleware::from_fn_with_state(
        headers::Policy::without_stripe(),
        headers::secure,
    ))
}

/// The answer to a path nobody serves: the JSON 404 of the API under `/api`, the HTML 404 page
/// everywhere else.
pub fn fallback() -> MethodRouter {
    any(pages::not_found)
}
