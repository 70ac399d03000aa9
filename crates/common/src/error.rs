//! The one error type of the HTTP API and its single JSON shape:
//! `{"errors":[{"message":"...","field":"..."}]}`.
//!
//! Client mistakes carry their own message; anything unexpected becomes a generic 500 (or 503 when
//! a dependency is down) and its details go to the log, never to the client.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// One entry of the error list. `field` is present only for validation errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FieldError {
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub field: Option<String>,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            field: Some(field.into()),
        }
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct ErrorBody {
    pub errors: Vec<FieldError>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 with one entry per failing field.
    #[error("validation failed: {0:?}")]
    Validation(Vec<FieldError>),
    /// 400 with a message for the client.
    #[error("{0}")]
    BadRequest(String),
    /// 401: not signed in, or signed in as someone who may not do this.
    #[error("Not authorized")]
    Unauthorized,
    #[error("Not found")]
    NotFound,
    /// 402: the card was declined; the message says why.
    #[error("{0}")]
    PaymentDeclined(String),
    /// 429: a limit was reached; the message says which, and `Retry-After` when it lifts.
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after: Option<Duration>,
    },
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

    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        Self::Internal(err.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Validation(_) | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::PaymentDeclined(_) => StatusCode::PAYMENT_REQUIRED,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
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
pub fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    let body = ErrorBody {
        errors: vec![FieldError {
            message: message.into(),
            field: None,
        }],
    };
    (status, Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match self {
            Self::Validation(errors) => (status, Json(ErrorBody { errors })).into_response(),
            Self::Unavailable(err) => {
                tracing::error!(error = format!("{err:#}"), "dependency unavailable");
                error_response(status, "Service temporarily unavailable, please retry")
            }
            Self::Internal(err) => {
                tracing::error!(error = format!("{err:#}"), "internal error");
                error_response(status, "Something went wrong")
            }
            Self::TooManyRequests {
                message,
                retry_after,
            } => {
                let mut response = error_response(status, message);
                if let Some(wait) = retry_after {
                    response.headers_mut().insert(
                        header::RETRY_AFTER,
                        HeaderValue::from(retry_after_seconds(wait)),
                    );
                }
                response
            }
            other => error_response(status, other.to_string()),
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
    }

    #[tokio::test]
    async fn a_limit_says_when_it_lifts_in_whole_seconds_rounded_up() {
        let response = ApiError::TooManyRequests {
            message: "Slow down".into(),
            retry_after: Some(Duration::from_millis(2_001)),
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        let (_, body) = body_of(ApiError::TooManyRequests {
            message: "Slow down".into(),
            retry_after: None,
        })
        .await;
        assert_eq!(body["errors"][0]["message"], "Slow down");
    }

    #[tokio::test]
    async fn internal_errors_hide_their_details() {
        let (status, body) =
            body_of(ApiError::internal(anyhow::anyhow!("secret table name"))).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["errors"][0]["message"], "Something went wrong");
        assert!(body["errors"][0].get("field").is_none());
    }
}
