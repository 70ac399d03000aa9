//! The web service is a client of the public API like any browser. [`ApiClient`] calls it either
//! in-process (embedded mode: the merged API routes, called with `oneshot`, no socket) or over
//! HTTP to the ingress (distributed mode). It forwards the visitor's `session` cookie and hands
//! back the API's `Set-Cookie` headers, so the browser holds the API's own session.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt;

const IDEMPOTENCY_KEY: &str = common::idempotency::HEADER;

/// The largest API answer the pages read (a page of tickets is a few KB).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// How the pages reach the API.
#[derive(Clone)]
pub enum ApiClient {
    /// The API routes of this process.
    InProcess(Router),
    /// The API at a base URL such as `http://ingress`.
    Http {
        client: reqwest::Client,
        base: String,
    },
}

/// Who a call is made for: the visitor's session token and address.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub session: Option<String>,
    /// The browser's address; in-process, the auth rate limit counts attempts per address.
    pub peer: Option<SocketAddr>,
}

/// What the API answered.
#[derive(Debug)]
pub struct ApiReply {
    pub status: StatusCode,
    /// The JSON body, `Null` when there was none.
    pub body: Value,
    pub set_cookies: Vec<HeaderValue>,
    /// The cursor of a list's next page, from the `Link` header that names it.
    pub next_cursor: Option<String>,
}

impl ApiReply {
    /// The messages of the error shape, each with the field it concerns (if any).
    pub fn errors(&self) -> Vec<(Option<String>, String)> {
        self.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| {
                        (
                            e["field"].as_str().map(str::to_owned),
                            e["message"]
                                .as_str()
                                .unwrap_or("Something went wrong")
                                .to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The API could not be asked, or its answer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ApiCallError {
    #[error("the API did not answer: {0}")]
    Unreachable(String),
    #[error("the API's answer could not be read: {0}")]
    Unreadable(String),
}

impl ApiClient {
    /// Calls the API routes of this process, answering every error in the one JSON shape as
    /// the HTTP stack does (a rate limiter's 429, say, is plain text without it).
    pub fn in_process(routes: Router) -> Self {
        Self::InProcess(common::http::with_one_error_shape(routes))
    }

    /// Calls the API at `base` (no trailing slash needed).
    pub fn http(base: &str) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            // Under the API's 10 s header timeout, which also closes idle connections: a request
            // never goes out on a connection the API is closing.
            .pool_idle_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self::Http {
            client,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    /// Sends one request, `path` starting with `/api/`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        caller: &Caller,
        body: Option<&Value>,
    ) -> Result<ApiReply, ApiCallError> {
        self.call_keyed(method, path, caller, body, None).await
    }

    /// [`ApiClient::call`] with an `Idempotency-Key`, when there is one.
    pub async fn call_keyed(
        &self,
        method: Method,
        path: &str,
        caller: &Caller,
        body: Option<&Value>,
        key: Option<&str>,
    ) -> Result<ApiReply, ApiCallError> {
        let cookie = caller
            .session
            .as_deref()
            .map(|token| format!("{}={token}", common::session::COOKIE_NAME));
        let (status, headers, bytes) = match self {
            Self::InProcess(routes) => {
                let mut request = Request::builder().method(method).uri(path);
                if let Some(cookie) = &cookie {
                    request = request.header(header::COOKIE, cookie);
                }
                if let Some(key) = key {
                    request = request.header(IDEMPOTENCY_KEY, key);
                }
                let request = match body {
                    Some(body) => request
                        .header(header::CONTENT_TYPE, "application/json")
                        .body(Body::from(body.to_string())),
                    None => request.body(Body::empty()),
                };
                let mut request =
                    request.map_err(|err| ApiCallError::Unreachable(err.to_string()))?;
                let peer = caller
                    .peer
                    .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
                request.extensions_mut().insert(ConnectInfo(peer));
                let response = match routes.clone().oneshot(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                let (parts, body) = response.into_parts();
                let bytes = axum::body::to_bytes(body, MAX_BODY)
                    .await
                    .map_err(|err| ApiCallError::Unreadable(err.to_string()))?;
                (parts.status, parts.headers, bytes)
            }
            Self::Http { client, base } => {
                let mut request = client.request(method, format!("{base}{path}"));
                if let Some(cookie) = &cookie {
                    request = request.header(header::COOKIE, cookie);
                }
                if let Some(key) = key {
                    request = request.header(IDEMPOTENCY_KEY, key);
                }
                if let Some(body) = body {
                    request = request.json(body);
                }
                let response = request
                    .send()
                    .await
                    .map_err(|err| ApiCallError::Unreachable(err.to_string()))?;
                let status = response.status();
                let headers = response.headers().clone();
                let bytes = response
                    .bytes()
                    .await
                    .map_err(|err| ApiCallError::Unreadable(err.to_string()))?;
                (status, headers, bytes)
            }
        };
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|err| {
                ApiCallError::Unreadable(format!("{status} with a body that is not JSON: {err}"))
            })?
        };
        Ok(ApiReply {
            status,
            body,
            set_cookies: headers
                .get_all(header::SET_COOKIE)
                .iter()
                .cloned()
                .collect(),
            next_cursor: headers
                .get(header::LINK)
                .and_then(|link| link.to_str().ok())
                .and_then(common::paging::next_link)
                .and_then(common::paging::cursor_in)
                .map(str::to_owned),
        })
    }
}
