//! The one error type of the HTTP API and its single JSON shape:
//! `{"errors":[{"message":"...","field":"...","code":"..."}]}`.
//!
//! Client mistakes carry their own message; anything unexpected becomes a generic 500 (or 503 when
//! a dependency is down) and its details go to the log, never to the client.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// One entry of the error list. `field` is present only for validation errors; every entry our
/// services give carries a `code`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct FieldError {
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub code: Option<ErrorCode>,
}

impl FieldError {
    /// A field that failed validation.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            field: Some(field.into()),
            code: Some(ErrorCode::InvalidField),
        }
    }

    /// The same entry with a more precise code.
    pub fn with_code(self, code: ErrorCode) -> Self {
        Self {
            code: Some(code),
            ..self
        }
    }
}

/// The stable machine code of an error entry, for clients to act on; messages are for people
/// and may be reworded. A code, once given, keeps its meaning.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A field of the request failed validation; `field` names it.
    InvalidField,
    /// The e-mail of a sign-up already has an account.
    EmailInUse,
    /// The request could not be read: a body that is not JSON or too large, a malformed query,
    /// a method the path does not take, headers too large.
    MalformedRequest,
    /// The e-mail and password of a sign-in do not match an account.
    InvalidCredentials,
    /// Not signed in, or signed in as someone who may not do this.
    NotAuthorized,
    NotFound,
    /// The ticket is held by an order: it cannot be ordered or edited.
    TicketReserved,
    /// A buyer tried to order a ticket they listed.
    OwnTicket,
    /// The ticket is for sale: while buyers may order it, it cannot be sent or listed again.
    TicketListed,
    /// Asked for the best ticket of an event, the buyer found none for sale within their price
    /// (none that is not their own).
    SoldOut,
    /// The ticket's event has started, and with it the ticket's sale ended.
    SaleEnded,
    /// The buyer holds as many unpaid orders as one buyer may.
    HoldLimitReached,
    /// The buyer let this ticket go a moment ago and must wait (`Retry-After`).
    TicketCoolingDown,
    /// Too many requests or orders in a span of time (`Retry-After` when known).
    RateLimited,
    /// The order is being paid, so it cannot be cancelled.
    OrderBeingPaid,
    /// The order is paid: it cannot be cancelled or paid again.
    OrderPaid,
    /// The order was cancelled, so it cannot be paid.
    OrderCancelled,
    /// The order's time to pay ran out.
    OrderExpired,
    /// A payment of this order is already under way.
    PaymentInProgress,
    /// The card was declined; the message says why.
    CardDeclined,
    /// A webhook whose signature does not verify, or whose event cannot be read.
    InvalidWebhook,
    /// A request with the same `Idempotency-Key` is still being processed; retry later.
    IdempotencyKeyInUse,
    /// An `Idempotency-Key` used before with another request (method, path or body).
    IdempotencyKeyReused,
    /// A dependency (database, bus) did not answer; retry later.
    Unavailable,
    /// Anything unexpected; the details are in the service's log.
    Internal,
}

impl ErrorCode {
    /// The code of an error known only by its status (a framework's or a limit's answer).
    pub fn for_status(status: StatusCode) -> Self {
        match status {
            StatusCode::UNAUTHORIZED => Self::NotAuthorized,
            StatusCode::NOT_FOUND => Self::NotFound,
            StatusCode::CONFLICT => Self::IdempotencyKeyInUse,
            StatusCode::TOO_MANY_REQUESTS => Self::RateLimited,
            StatusCode::SERVICE_UNAVAILABLE => Self::Unavailable,
            s if s.is_server_error() => Self::Internal,
            _ => Self::MalformedRequest,
        }
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"errors": [
    {"message": "Title is required", "field": "title", "code": "invalid_field"}
]}))]
pub struct ErrorBody {
    pub errors: Vec<FieldError>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 with one entry per failing field.
    #[error("validation failed: {0:?}")]
    Validation(Vec<FieldError>),
    /// 400 with a code and a message for the client.
    #[error("{1}")]
    BadRequest(ErrorCode, String),
    /// 401: not signed in, or signed in as someone who may not do this.
    #[error("Not authorized")]
    Unauthorized,
    #[error("Not found")]
    NotFound,
    /// 402: the card was declined; the message says why.
    #[error("{0}")]
    PaymentDeclined(String),
    /// 429: a limit was reached; the code and message say which, and `Retry-After` when it
    /// lifts.
    #[error("{message}")]
    TooManyRequests {
        code: ErrorCode,
        message: String,
        retry_after: Option<Duration>,
    },
    /// 409: a request with the same `Idempotency-Key` is still being processed.
    #[error("{0}")]
    Conflict(String),
    /// 503: the database or the bus did not answer.
    #[error("a dependency is unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// 500: anything unexpected.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn field(field: &str, message: &str) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    /// A 400 for a request that could not be read.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::BadRequest(ErrorCode::MalformedRequest, message.into())
    }

    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        Self::Internal(err.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Validation(_) | Self::BadRequest(..) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::PaymentDeclined(_) => StatusCode::PAYMENT_REQUIRED,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A wait in the whole seconds `Retry-After` carries: rounded up, so that a client that waits as
/// told is not refused again, and at least one.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// Builds an error response in the one shape, for errors produced outside `ApiError`
/// (rejections, middleware, fallbacks).
pub fn error_response(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Response {
    let body = ErrorBody {
        errors: vec![FieldError {
            message: message.into(),
            field: None,
            code: Some(code),
        }],
    };
    (status, Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match self {
            Self::Validation(errors) => (status, Json(ErrorBody { errors })).into_response(),
            Self::BadRequest(code, message) => error_response(status, code, message),
            Self::Unauthorized => {
                error_response(status, ErrorCode::NotAuthorized, "Not authorized")
            }
            Self::NotFound => error_response(status, ErrorCode::NotFound, "Not found"),
            Self::PaymentDeclined(message) => {
                error_response(status, ErrorCode::CardDeclined, message)
            }
            Self::Conflict(message) => {
                error_response(status, ErrorCode::IdempotencyKeyInUse, message)
            }
            Self::Unavailable(err) => {
                tracing::error!(error = format!("{err:#}"), "dependency unavailable");
                error_response(
                    status,
                    ErrorCode::Unavailable,
                    "Service temporarily unavailable, please retry",
                )
            }
            Self::Internal(err) => {
                tracing::error!(error = format!("{err:#}"), "internal error");
                error_response(status, ErrorCode::Internal, "Something went wrong")
            }
            Self::TooManyRequests {
                code,
                message,
                retry_after,
            } => {
                let mut response = error_response(status, code, message);
                if let Some(wait) = retry_after {
                    response.headers_mut().insert(
                        header::RETRY_AFTER,
                        HeaderValue::from(retry_after_seconds(wait)),
                    );
                }
                response
            }
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        if crate::store::is_unavailable(&err) {
            Self::Unavailable(err.into())
        } else {
            Self::Internal(err.into())
        }
    }
}

impl From<crate::bus::BusError> for ApiError {
    fn from(err: crate::bus::BusError) -> Self {
        Self::Unavailable(err.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::to_bytes;

    async fn body_of(err: ApiError) -> (StatusCode, serde_json::Value) {
        let response = err.into_response();
        let status = response.status();
        let bytes = to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap_or_default();
        (status, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    #[tokio::test]
    async fn validation_errors_list_every_field() {
        let (status, body) = body_of(ApiError::Validation(vec![
            FieldError::new("email", "Email must be valid"),
            FieldError::new("password", "Password must be between 8 and 128 characters"),
        ]))
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["errors"][0]["field"], "email");
        assert_eq!(body["errors"][1]["field"], "password");
        assert_eq!(body["errors"][1]["code"], "invalid_field");
    }

    #[tokio::test]
    async fn a_limit_says_when_it_lifts_in_whole_seconds_rounded_up() {
        let response = ApiError::TooManyRequests {
            code: ErrorCode::RateLimited,
            message: "Slow down".into(),
            retry_after: Some(Duration::from_millis(2_001)),
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        let (_, body) = body_of(ApiError::TooManyRequests {
            code: ErrorCode::TicketCoolingDown,
            message: "Slow down".into(),
            retry_after: None,
        })
        .await;
        assert_eq!(body["errors"][0]["message"], "Slow down");
        assert_eq!(body["errors"][0]["code"], "ticket_cooling_down");
    }

    #[tokio::test]
    async fn internal_errors_hide_their_details() {
        let (status, body) =
            body_of(ApiError::internal(anyhow::anyhow!("secret table name"))).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["errors"][0]["message"], "Something went wrong");
        assert_eq!(body["errors"][0]["code"], "internal");
        assert!(body["errors"][0].get("field").is_none());
    }
}
