//! The API's reference: the OpenAPI 3.1 document of every service's operations, merged, at
//! `/api/openapi.json`, and a page to read and try it at `/api/docs`. Each handler carries its
//! own description and the routes are declared through them, so no operation is served
//! undescribed; `scripts/fuzz-api` checks every answer against them. `openapi.json` beside this
//! crate is the copy a change to the API is reviewed against.

use axum::Router;
use axum::routing::get;
use utoipa::openapi::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::services::Service;

/// Where the merged document and its page are served.
const DOCUMENT_PATH: &str = "/api/openapi.json";
const PAGE_PATH: &str = "/api/docs";

/// Every operation of the marketplace's API in one document.
pub fn document() -> OpenApi {
    let mut documents = Service::WITH_DATABASE
        .into_iter()
        .filter_map(Service::openapi);
    let mut merged = documents.next().unwrap_or_default();
    for document in documents {
        merged.merge(document);
    }
    merged.info.title = "Stubs API".into();
    merged
}

/// The document as `stubs openapi` prints it and `openapi.json` beside this crate holds it.
pub fn printed(document: &OpenApi) -> serde_json::Result<String> {
    Ok(document.to_pretty_json()? + "\n")
}

/// `document` and the page that shows it, with the pages' security headers. The page's scripts
/// and styles are compiled into the binary: it loads nothing from elsewhere.
pub fn reference(document: OpenApi) -> Router {
    web::with_page_headers(
        SwaggerUi::new(PAGE_PATH)
            .url(DOCUMENT_PATH, document)
            .into(),
    )
}

/// `GET /openapi.json`: the document of what one process serves, beside its `/healthz`.
pub fn own_document(document: OpenApi) -> Router {
    Router::new().route(
        "/openapi.json",
        get(move || async move { axum::Json(document) }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reviewed copy, as `stubs openapi` prints it.
    const REVIEWED: &str = include_str!("../openapi.json");

    #[test]
    fn the_document_is_the_reviewed_one() {
        let current = printed(&document()).unwrap_or_default();
        assert!(
            current == REVIEWED,
            "the API's OpenAPI document differs from crates/stubs/openapi.json: if the change to \
             the API is meant, record it with `cargo run -- openapi > crates/stubs/openapi.json` \
             and review the diff"
        );
    }
}
