//! Cross-site request forgery: the session cookie is SameSite=Lax, and on top of that every POST
//! to a page must come from a page of this site, which the browser tells us in `Origin` (or, from
//! older browsers, `Referer`). A form on another site cannot set either to ours.

use axum::extract::Request;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::pages::PageError;

/// Refuses a POST whose origin is not this site with the 403 page.
pub(crate) async fn check_origin(request: Request, next: Next) -> Response {
    if request.method() == Method::POST && !same_origin(request.headers()) {
        tracing::warn!(
            origin = ?request.headers().get(header::ORIGIN),
            "refused a cross-site form post"
        );
        return PageError::Forbidden.into_response();
    }
    next.run(request).await
}

fn same_origin(headers: &HeaderMap) -> bool {
    let get = |name| headers.get(name).and_then(|v| v.to_str().ok());
    origin_allowed(get(header::ORIGIN), get(header::REFERER), get(header::HOST))
}

/// Whether a request that says it comes from `origin` (else `referer`) was sent by a page of
/// the site at `host`. Neither header, or `Origin: null` (a sandboxed or privacy-stripped
/// context), is refused: a browser posting one of our forms always sends one.
pub(crate) fn origin_allowed(
    origin: Option<&str>,
    referer: Option<&str>,
    host: Option<&str>,
) -> bool {
    let Some(host) = host else {
        return false;
    };
    let source = match (origin, referer) {
        (Some(origin), _) => origin,
        (None, Some(referer)) => referer,
        (None, None) => return false,
    };
    let Some(rest) = source
        .strip_prefix("https://")
        .or_else(|| source.strip_prefix("http://"))
    else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    !authority.is_empty() && authority.eq_ignore_ascii_case(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: Option<&str> = Some("127.0.0.1:3000");

    #[test]
    fn a_post_from_our_own_pages_is_allowed() {
        assert!(origin_allowed(Some("http://127.0.0.1:3000"), None, HOST));
        assert!(origin_allowed(
            None,
            Some("http://127.0.0.1:3000/tickets/new"),
            HOST
        ));
        assert!(origin_allowed(
            Some("https://Stubs.example"),
            None,
            Some("stubs.example")
        ));
    }

    #[test]
    fn a_post_from_another_site_is_refused() {
        assert!(!origin_allowed(Some("https://evil.example"), None, HOST));
        // Origin wins over a Referer that looks right.
        assert!(!origin_allowed(
            Some("https://evil.example"),
            Some("http://127.0.0.1:3000/"),
            HOST
        ));
        assert!(!origin_allowed(
            Some("http://127.0.0.1:3000.evil.example"),
            None,
            HOST
        ));
        assert!(!origin_allowed(Some("http://127.0.0.1:30001"), None, HOST));
        assert!(!origin_allowed(Some("null"), None, HOST));
        assert!(!origin_allowed(
            None,
            Some("https://evil.example/127.0.0.1:3000"),
            HOST
        ));
    }

    #[test]
    fn a_post_that_says_nothing_of_where_it_comes_from_is_refused() {
        assert!(!origin_allowed(None, None, HOST));
        assert!(!origin_allowed(Some("http://127.0.0.1:3000"), None, None));
    }
}
