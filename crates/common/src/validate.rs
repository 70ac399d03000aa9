//! Request bodies: a JSON extractor that answers malformed input in the one error shape, and a
//! `Validate` step that turns a raw body into a domain value, reporting every failing field at once.
//! Ids: the one in a path ([`PathId`]) and one in a body field ([`id_field`]).

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ErrorCode, FieldError, error_response};
use crate::http::{NOT_JSON, TOO_LARGE, closing_connection};

const MALFORMED: ErrorCode = ErrorCode::MalformedRequest;

/// Turns a raw request body into the value a handler works with.
pub trait Validate {
    type Valid;
    fn validate(self) -> Result<Self::Valid, Vec<FieldError>>;
}

/// Collects field errors so that a client sees all of them in one answer.
#[derive(Debug, Default)]
pub struct FieldErrors(Vec<FieldError>);

impl FieldErrors {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    /// Keeps a parsed value, or records its error and gives `None`.
    pub fn check<T>(&mut self, field: &str, parsed: Result<T, String>) -> Option<T> {
        match parsed {
            Ok(value) => Some(value),
            Err(message) => {
                self.add(field, message);
                None
            }
        }
    }

    pub fn into_result<T>(self, value: Option<T>) -> Result<T, Vec<FieldError>> {
        match value {
            Some(value) if self.0.is_empty() => Ok(value),
            _ => Err(self.0),
        }
    }
}

/// A JSON body that failed before validation: wrong content type, too large, bad syntax, not an
/// object, or an object whose values do not fit.
#[derive(Debug)]
pub enum BodyRejection {
    NotJson,
    Read(BytesRejection),
    NotAnObject,
    Parse(JsonRejection),
}

impl IntoResponse for BodyRejection {
    fn into_response(self) -> Response {
        match self {
            Self::NotJson => error_response(StatusCode::BAD_REQUEST, MALFORMED, NOT_JSON),
            Self::Read(err) if err.status() == StatusCode::PAYLOAD_TOO_LARGE => closing_connection(
                error_response(StatusCode::BAD_REQUEST, MALFORMED, TOO_LARGE),
            ),
            Self::Read(err) => {
                let status = err.status();
                error_response(status, ErrorCode::for_status(status), err.body_text())
            }
            Self::NotAnObject => error_response(
                StatusCode::BAD_REQUEST,
                MALFORMED,
                "Request body must be a JSON object",
            ),
            Self::Parse(JsonRejection::JsonDataError(err)) => error_response(
                StatusCode::BAD_REQUEST,
                MALFORMED,
                wrong_shape(&err.body_text()),
            ),
            Self::Parse(_) => error_response(
                StatusCode::BAD_REQUEST,
                MALFORMED,
                "Request body is not valid JSON",
            ),
        }
    }
}

/// What to tell a client whose JSON object did not fit the body's type, from the parser's
/// account of it, which names the field (`email: invalid type: integer 5, expected a string`).
/// The object itself was checked first, so the account never names one of our types.
fn wrong_shape(parser_says: &str) -> String {
    let detail = parser_says
        .strip_prefix("Failed to deserialize the JSON body into the target type: ")
        .unwrap_or(parser_says);
    format!("Request body has the wrong shape: {detail}")
}

/// Whether a request says its body is JSON (`application/json`, or a `+json` type).
fn says_json(headers: &HeaderMap) -> bool {
    let Some(essence) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
    else {
        return false;
    };
    let essence = essence.trim().to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// A JSON body, parsed into `T` with our error shape for any rejection. Every body of the API is
/// an object, checked as such before it is read into `T`: serde alone would also take a struct
/// written as an array (`["Concert", 20]`), and its complaint about anything else names our
/// type. A key given twice is refused, as the parser refuses it.
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = BodyRejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !says_json(req.headers()) {
            return Err(BodyRejection::NotJson);
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(BodyRejection::Read)?;
        let first = bytes.iter().find(|byte| !byte.is_ascii_whitespace());
        if first.is_some_and(|byte| *byte != b'{') {
            // Anything else that is JSON is not an object; what is not JSON says so below.
            if serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok() {
                return Err(BodyRejection::NotAnObject);
            }
        }
        axum::Json::<T>::from_bytes(&bytes)
            .map(|axum::Json(value)| Json(value))
            .map_err(BodyRejection::Parse)
    }
}

/// A JSON body that has been parsed and validated into `T::Valid`.
pub struct Valid<T: Validate>(pub T::Valid);

impl<T, S> FromRequest<S> for Valid<T>
where
    T: Validate + DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(raw) = Json::<T>::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        raw.validate()
            .map(Valid)
            .map_err(|errors| ApiError::Validation(errors).into_response())
    }
}

/// Characters that steer the terminal or the text's direction rather than show: the C0 and C1
/// controls (NUL, BEL, ESC, DEL…) and the bidirectional embeddings, overrides and isolates, with
/// which a listing can be made to read backwards (U+202E).
pub fn is_control_or_bidi(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Characters that show nothing: Unicode's Default_Ignorable_Code_Point set (DerivedCoreProperties),
/// which renderers draw as nothing. Besides zero-width spaces and joiners, direction marks, the
/// byte-order mark and the soft hyphen, it holds the Hangul fillers and tag characters that make
/// "blank" names, and the variation selectors. Text made only of these shows nothing; within
/// text, some (a joiner or a selector inside an emoji) are part of what shows.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// An e-mail address typed any way, as accounts are kept and found: trimmed, lower-cased and
/// composed (NFC). Composed last, since lower-casing can leave a letter and its accent apart
/// ("J" and a caron become "j" and a caron), so that an address normalised once is normalised for
/// good.
pub fn normalise_email(raw: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    raw.trim().to_lowercase().nfc().collect()
}

/// Parses a path segment as an id. A malformed id names no resource, so it is a 404.
pub fn parse_id(raw: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::try_parse(raw).map_err(|_| ApiError::NotFound)
}

/// The id in a path such as `/api/tickets/{id}`. A malformed id names nothing, so it is a 404
/// like an unknown one.
pub struct PathId(pub uuid::Uuid);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::NotFound)?;
        parse_id(&raw).map(Self)
    }
}

/// The id a body names in a field (`ticketId`, `orderId`), as a client sends it (any JSON value,
/// or nothing); `what` names it in the messages ("Ticket id").
pub fn id_field(value: Option<&serde_json::Value>, what: &str) -> Result<uuid::Uuid, String> {
    match value {
        Some(serde_json::Value::String(text)) if !text.trim().is_empty() => {
            uuid::Uuid::try_parse(text.trim()).map_err(|_| format!("{what} must be a valid id"))
        }
        None | Some(serde_json::Value::Null | serde_json::Value::String(_)) => {
            Err(format!("{what} is required"))
        }
        Some(_) => Err(format!("{what} must be a valid id")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_field_is_required_and_must_be_a_uuid() {
        let id = uuid::Uuid::now_v7();
        let field = |value: serde_json::Value| id_field(Some(&value), "Order id");
        assert_eq!(field(serde_json::json!(format!(" {id} "))), Ok(id));
        assert_eq!(
            id_field(None, "Order id"),
            Err("Order id is required".into())
        );
        for missing in [
            serde_json::json!(null),
            serde_json::json!(""),
            serde_json::json!("  "),
        ] {
            assert_eq!(field(missing), Err("Order id is required".into()));
        }
        for wrong in [
            serde_json::json!("not-an-id"),
            serde_json::json!(5),
            serde_json::json!({}),
        ] {
            assert_eq!(field(wrong), Err("Order id must be a valid id".into()));
        }
    }

    #[test]
    fn what_renders_as_nothing_is_invisible_and_what_shows_is_not() {
        for blank in [
            '\u{200B}',
            '\u{FEFF}',
            '\u{00AD}',
            '\u{3164}',
            '\u{115F}',
            '\u{FFA0}',
            '\u{061C}',
            '\u{FE0F}',
            '\u{E0041}',
            '\u{2066}',
        ] {
            assert!(is_invisible(blank), "{:X}", u32::from(blank));
        }
        for shows in ['a', ' ', 'é', '\u{2764}', '\u{AC00}', '\u{1F600}'] {
            assert!(!is_invisible(shows), "{:X}", u32::from(shows));
        }
    }
}
