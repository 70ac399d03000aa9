//! The stylesheet and scripts, embedded in the binary and served under `/static/…` with a year's
//! cache: their URLs carry a hash of their content, so a changed file gets a new URL.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

use crate::pages::PageError;

#[derive(RustEmbed)]
#[folder = "static/"]
struct Assets;

/// The URL of an embedded file, with a content hash so caches never serve a stale copy.
pub(crate) fn url(name: &str) -> String {
    match Assets::get(name) {
        Some(file) => {
            let hash = file.metadata.sha256_hash();
            let short: String = hash[..6].iter().map(|b| format!("{b:02x}")).collect();
            format!("/static/{name}?v={short}")
        }
        None => format!("/static/{name}"),
    }
}

/// The stylesheet every page links.
pub(crate) static STYLESHEET: LazyLock<String> = LazyLock::new(|| url("style.css"));
/// The order page's countdown.
pub(crate) static COUNTDOWN: LazyLock<String> = LazyLock::new(|| url("countdown.js"));
/// The payment form with Stripe Elements.
pub(crate) static STRIPE_PAY: LazyLock<String> = LazyLock::new(|| url("stripe-pay.js"));

/// `GET /static/{path}`.
pub(crate) async fn get_static(Path(path): Path<String>) -> Response {
    let Some(file) = Assets::get(&path) else {
        return PageError::NotFound.into_response();
    };
    let content_type = match path.rsplit('.').next() {
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
        ],
        file.data.into_owned(),
    )
        .into_response()
}
