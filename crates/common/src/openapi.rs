//! What every service's OpenAPI document shares: the error shape, the two ways to send a
//! session, the paging and idempotency parameters, and the answers any operation may give.
//! Each service describes its own operations on its handlers (`#[utoipa::path]`); [`finish`]
//! adds what is common, so that no handler has to repeat it.

use utoipa::openapi::header::{Header, HeaderBuilder};
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{
    ContentBuilder, InfoBuilder, LicenseBuilder, OpenApi, Ref, RefOr, ResponseBuilder,
};
use utoipa::{IntoParams, PartialSchema, ToSchema};

pub use crate::error::{ErrorBody, ErrorCode, FieldError};

/// The security scheme of the session cookie that sign-up and sign-in set. An operation that
/// needs a session says `security(("session_cookie" = []), ("bearer" = []))`: either will do.
pub const SESSION_COOKIE: &str = "session_cookie";
/// The security scheme of the same token sent as `Authorization: Bearer`.
pub const BEARER: &str = "bearer";

/// `Idempotency-Key` on a write: the same key and request within a day replays the first answer.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyKey {
    /// Makes retrying this write safe: within 24 hours the same key and request, from the
    /// same user, replay the first answer (with `Idempotent-Replayed: true`) without acting
    /// again; the same key with another request is a 400 `idempotency_key_reused`, and a retry
    /// while the first is still running a 409 `idempotency_key_in_use`.
    #[param(
        rename = "Idempotency-Key",
        pattern = r"^[!-~]{1,255}$",
        example = "7d6f0c5e-order-1"
    )]
    #[allow(dead_code)]
    key: Option<String>,
}

/// Fills in what every service's document has in common: its title, the security schemes, the
/// error components, and the answers any operation can give (a dependency down, a failure, a
/// request that cannot be read). `tag` groups the service's operations, as `about` describes.
pub fn finish(mut doc: OpenApi, service: &str, tag: &str, about: &str) -> OpenApi {
    doc.tags = Some(vec![
        TagBuilder::new().name(tag).description(Some(about)).build(),
    ]);
    doc.info = InfoBuilder::new()
        .title(format!("Stubs {service} API"))
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "The Stubs ticket marketplace. Every error, from any operation, is \
             `{\"errors\":[{\"message\",\"field\",\"code\"}]}`: `message` for people, `field` on \
             validation errors, `code` stable for programs. Money is a number in the currency's \
             major unit; times are RFC 3339 in UTC; ids are UUIDs.",
        ))
        .license(Some(
            LicenseBuilder::new().name("MIT OR Apache-2.0").build(),
        ))
        .build();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        SESSION_COOKIE,
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
            "session",
            "The session cookie (HttpOnly, SameSite=Lax) set by sign-up and sign-in",
        ))),
    );
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some(
                    "The session cookie's token, as `Authorization: Bearer`",
                ))
                .build(),
        ),
    );
    for (name, schema) in [
        (ErrorBody::name(), ErrorBody::schema()),
        (FieldError::name(), FieldError::schema()),
        (ErrorCode::name(), ErrorCode::schema()),
    ] {
        components.schemas.insert(name.into_owned(), schema);
    }
    for item in doc.paths.paths.values_mut() {
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            answers_any_operation_gives(operation);
        }
    }
    doc
}

/// What the stack every service runs behind adds to an operation, whatever its handler says: a
/// 400 for a query, body or header that cannot be read, a 500 and a 503; for a list, the `Link`
/// to its next page; for a keyed write, its replays and the 409 of a retry too early.
fn answers_any_operation_gives(operation: &mut Operation) {
    let takes = |name: &str| {
        operation
            .parameters
            .iter()
            .flatten()
            .any(|param| matches!(param, RefOr::T(param) if param.name == name))
    };
    let (paged, keyed) = (takes("cursor"), takes("Idempotency-Key"));
    let responses = &mut operation.responses.responses;
    let unreadable = "the request cannot be read: a malformed query, body or header \
                      (`malformed_request`)";
    match responses.get_mut("400") {
        Some(RefOr::T(own)) => own.description = format!("{}; or {unreadable}", own.description),
        _ if paged => {
            let invalid = format!(
                "`limit`, `cursor` or `offset` is invalid (`invalid_field`), or {unreadable}"
            );
            responses.insert("400".to_owned(), error_response(&invalid).into());
        }
        _ => {
            let mut description = unreadable.to_owned();
            description[..1].make_ascii_uppercase();
            responses.insert("400".to_owned(), error_response(&description).into());
        }
    }
    for (status, description) in [
        (
            "500",
            "Something unexpected went wrong (`internal`); the details are in the service's log",
        ),
        (
            "503",
            "A dependency (database, bus) did not answer in time (`unavailable`); retry later",
        ),
    ] {
        responses
            .entry(status.to_owned())
            .or_insert_with(|| error_response(description).into());
    }
    if keyed {
        responses.entry("409".to_owned()).or_insert_with(|| {
            error_response(
                "A request with the same `Idempotency-Key` is still running \
                 (`idempotency_key_in_use`); retry later",
            )
            .into()
        });
    }
    for (status, response) in responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        if paged && status == "200" {
            response.headers.insert(
                "Link".to_owned(),
                header(
                    "The next page, as `<path?limit=N&cursor=…>; rel=\"next\"` (RFC 8288); \
                     absent on the last page",
                ),
            );
        }
        // Successes and refusals are recorded for the key, and replayed; 404, 409, 429 and
        // failures are not.
        if keyed && (status.starts_with('2') || ["400", "401", "402"].contains(&status.as_str())) {
            response.headers.insert(
                "Idempotent-Replayed".to_owned(),
                header("`true` when this is the recorded answer to an earlier request with the same key"),
            );
        }
    }
}

/// A response header holding text.
fn header(description: &str) -> RefOr<Header> {
    HeaderBuilder::new()
        .schema(Some(String::schema()))
        .description(Some(description))
        .build()
        .into()
}

/// An answer in the error shape.
fn error_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                .build(),
        )
        .build()
}
