//! Security headers on every page and asset: a Content-Security-Policy that allows only what our
//! pages load (our own origin; Stripe's script and frames only when a Stripe key is set), no
//! MIME sniffing, no referrer to other sites, no framing.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

/// The policy, built once at start.
#[derive(Clone)]
pub(crate) struct Policy {
    csp: HeaderValue,
}

const BASE: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; \
                    base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// What Stripe Elements needs besides our own origin (from Stripe's CSP guide).
const WITH_STRIPE: &str = "default-src 'self'; script-src 'self' https://js.stripe.com; \
    frame-src https://js.stripe.com https://hooks.stripe.com; \
    connect-src 'self' https://api.stripe.com; img-src 'self' data: https://*.stripe.com; \
    object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

impl Policy {
    pub(crate) fn new(stripe: bool) -> Self {
        Self {
            csp: HeaderValue::from_static(if stripe { WITH_STRIPE } else { BASE }),
        }
    }

    /// The policy of a page served outside the router (the 404 fallback, the API's reference).
    pub(crate) fn without_stripe() -> Self {
        Self::new(false)
    }

    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(header::CONTENT_SECURITY_POLICY, self.csp.clone());
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        // Pages show the visitor's own orders: never kept by a shared cache. Assets set their own.
        if !headers.contains_key(header::CACHE_CONTROL) {
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, no-store"),
            );
        }
    }
}

/// Middleware: adds the headers to every response of the web routes.
pub(crate) async fn secure(State(policy): State<Policy>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    policy.apply(response.headers_mut());
    response
}
