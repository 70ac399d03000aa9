//! The HTTP stack every service runs behind: request ids, tracing spans, metrics, a timeout,
//! header and body limits, a cap on connections, panics caught, and every error (ours, the framework's, a middleware's) rendered
//! in the one JSON shape. Also the platform endpoints `/healthz`, `/readyz` and `/metrics`.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, get};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_io_timeout::TimeoutStream;
use tower::ServiceExt;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::bus::Bus;
use crate::error::{ApiError, ErrorCode, error_response};
use crate::store::Store;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Limits every service applies.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub request_timeout: Duration,
    pub body_limit: usize,
    /// How long a client may take to send a request's headers before its connection is
    /// closed, so that slow clients cannot pin connections (slowloris). Hyper counts the time a
    /// kept-alive connection waits for its next request too, so clients and proxies must drop
    /// idle connections sooner (ours do after 5 s).
    pub header_read_timeout: Duration,
    /// The most bytes a request's line and headers may take; more is a 400.
    pub max_header_bytes: usize,
    /// The most connections served at once. Past it the process stops accepting, and new
    /// connections wait in the kernel's queue until one closes, rather than each taking memory
    /// and a task. Health probes share the cap.
    pub max_connections: usize,
    /// How long an answer may wait for a client that does not read it before the connection is
    /// closed, so that a client cannot hold one of the capped places by never reading.
    pub write_timeout: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            body_limit: 64 * 1024,
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            max_connections: usize::from(DEFAULT_MAX_CONNECTIONS),
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// Connections one process serves at once unless the operator says otherwise.
pub const DEFAULT_MAX_CONNECTIONS: u16 = 1024;

/// Hyper's read buffer: room for headers past [`HttpSettings::max_header_bytes`], so that those
/// reach [`limit_headers`] and get the one error shape; only headers past this (or more than
/// 100 of them) get hyper's own bare 431.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting and waits for
/// the connections' requests in flight to finish. Each request carries the client's address
/// (`ConnectInfo<SocketAddr>`). Unlike `axum::serve`, connections get a timer, so a client that
/// does not finish its headers within [`HttpSettings::header_read_timeout`] is cut off.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: &HttpSettings,
    shutdown: impl Future<Output = ()>,
) {
    let mut connections = http1::Builder::new();
    connections
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(READ_BUFFER_BYTES.max(settings.max_header_bytes * 2));
    let graceful = GracefulShutdown::new();
    let open = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        // A place for the next connection first: at the cap, accepting waits.
        let place = tokio::select! {
            place = Arc::clone(&open).acquire_owned() => match place {
                Ok(place) => place,
                // Only a closed semaphore refuses, and this one is never closed.
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, most likely: give connections time to close.
                    tracing::warn!(error = %err, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(request)
        });
        let mut stream = TimeoutStream::new(stream);
        stream.set_write_timeout(Some(settings.write_timeout));
        let connection =
            graceful.watch(connections.serve_connection(TokioIo::new(Box::pin(stream)), service));
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, %peer, "connection ended with an error");
            }
            drop(place);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Something `/readyz` checks.
#[derive(Clone)]
pub enum Dependency {
    Database(&'static str, Store),
    Bus(Arc<dyn Bus>),
}

impl Dependency {
    async fn check(&self) -> Result<(), String> {
        let probe = async {
            match self {
                Self::Database(name, store) => store
                    .ping()
                    .await
                    .map_err(|err| format!("database {name}: {err}")),
                Self::Bus(bus) => bus.ping().await.map_err(|err| format!("bus: {err}")),
            }
        };
        tokio::time::timeout(Duration::from_secs(3), probe)
            .await
            .unwrap_or_else(|_| Err("no answer within 3s".into()))
    }
}

/// `/healthz`, `/readyz` and `/metrics` for a process.
pub fn platform_routes(dependencies: Vec<Dependency>) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(Arc::new(dependencies))
}

async fn readyz(State(dependencies): State<Arc<Vec<Dependency>>>) -> Response {
    let mut down = Vec::new();
    for dependency in dependencies.iter() {
        if let Err(reason) = dependency.check().await {
            down.push(reason);
        }
    }
    if down.is_empty() {
        axum::Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        tracing::warn!(?down, "not ready");
        error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "Not ready: a dependency is down",
        )
    }
}

async fn render_metrics() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        crate::telemetry::metrics_handle().render(),
    )
        .into_response()
}

/// Wraps the routes of one or more services with the stack and a JSON 404 fallback.
pub fn serve_stack(routes: Router, settings: &HttpSettings) -> Router {
    serve_stack_with_fallback(routes, settings, any(|| async { ApiError::NotFound }))
}

/// [`serve_stack`] with the caller's answer to unknown paths: the process that also serves web
/// pages answers HTML there, and JSON under `/api`.
pub fn serve_stack_with_fallback(
    routes: Router,
    settings: &HttpSettings,
    fallback: MethodRouter,
) -> Router {
    // Install the recorder before the first request, or what it records would go nowhere.
    crate::telemetry::metrics_handle();
    routes
        .route_layer(middleware::from_fn(record_metrics))
        .fallback_service(fallback)
        .layer(DefaultBodyLimit::max(settings.body_limit))
        .layer(middleware::from_fn_with_state(
            settings.max_header_bytes,
            limit_headers,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            settings.request_timeout,
        ))
        .layer(CatchPanicLayer::custom(|_panic| {
            tracing::error!("a request handler panicked");
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                "Something went wrong",
            )
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request<Body>| {
                let id = request
                    .headers()
                    .get(&REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                let span = tracing::info_span!(
                    "request",
                    method = %request.method(),
                    path = %request.uri().path(),
                    request_id = %id,
                );
                // A request that arrives inside a trace (the ingress started it) continues it.
                crate::telemetry::continue_http_trace(&span, request.headers());
                span
            }),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(middleware::from_fn(one_error_shape))
}

/// Refuses a request whose target and headers take more than `max` bytes, before a handler
/// reads them. Hyper has read them by then, into a buffer bounded by `READ_BUFFER_BYTES`; this
/// keeps what a handler or a log line is given small, and says so in the error shape.
async fn limit_headers(State(max): State<usize>, request: Request, next: Next) -> Response {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    let size = target
        + request
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>();
    if size > max {
        return error_response(
            StatusCode::BAD_REQUEST,
            ErrorCode::MalformedRequest,
            "Request headers are too large",
        );
    }
    next.run(request).await
}

async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = request.method().to_string();
    let response = next.run(request).await;
    let labels = [
        ("method", method),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("stubs_http_requests_total", &labels).increment(1);
    metrics::histogram!("stubs_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// What a client is told when its body is larger than the limit.
pub const TOO_LARGE: &str = "Request body is too large";
/// What a client is told when its body is not JSON.
pub const NOT_JSON: &str = "Expected a JSON body with Content-Type: application/json";

/// Says the connection closes after this answer: for a body refused unread, whose rest the
/// connection cannot carry past, so that a pooled client does not send its next request on it.
pub fn closing_connection(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The routes with every error response they give in the one JSON shape, as the full stack
/// gives them: for callers inside the process (the web pages in embedded mode) that go round
/// the HTTP stack.
pub fn with_one_error_shape(routes: Router) -> Router {
    routes.layer(middleware::from_fn(one_error_shape))
}

/// Any error response that is not already JSON (a framework 405, a timeout, a limit) is given
/// the one error shape, keeping its headers. The statuses the contract does not use become 400
/// (a wrong method, a body too large or not JSON, with a message that says which) or 500. An HTML
/// error page (the web service's 404, 403 and 500 pages) was made for a person and is kept as it
/// is.
async fn one_error_shape(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let status = response.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        response = closing_connection(response);
    }
    let has_own_shape = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if !(status.is_client_error() || status.is_server_error()) || has_own_shape {
        return response;
    }
    let (status, message) = match status {
        StatusCode::NOT_FOUND => (status, "Not found"),
        StatusCode::METHOD_NOT_ALLOWED => (
            StatusCode::BAD_REQUEST,
            "Method not allowed on this path; the Allow header lists those that are",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (StatusCode::BAD_REQUEST, TOO_LARGE),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (StatusCode::BAD_REQUEST, NOT_JSON),
        StatusCode::TOO_MANY_REQUESTS => (status, "Too many requests, please slow down"),
        StatusCode::SERVICE_UNAVAILABLE => {
            (status, "Service temporarily unavailable, please retry")
        }
        s if s.is_server_error() => (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong"),
        StatusCode::UNAUTHORIZED | StatusCode::PAYMENT_REQUIRED | StatusCode::CONFLICT => {
            (status, "Bad request")
        }
        _ => (StatusCode::BAD_REQUEST, "Bad request"),
    };
    let (mut parts, _) = response.into_parts();
    parts.status = status;
    let replacement = error_response(status, ErrorCode::for_status(status), message);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let (_, body) = replacement.into_parts();
    Response::from_parts(parts, body)
}
