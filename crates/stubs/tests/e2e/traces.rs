//! Traces as an operator sees them: `stubs up --otlp-endpoint` sends its spans to the collector
//! over OTLP/HTTP, the request's and those of the listeners it caused, and flushes them on exit.

use std::sync::{Arc, Mutex};

use crate::support::Process;
use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use serde_json::json;

/// What a collector received: the body of every export, with its content type.
type Exports = Arc<Mutex<Vec<(String, Bytes)>>>;

/// A collector that keeps every OTLP/HTTP trace export it is sent.
async fn start_collector() -> (String, Exports) {
    let exports = Exports::default();
    let kept = exports.clone();
    let app = Router::new().route(
        "/v1/traces",
        post(move |headers: HeaderMap, body: Bytes| async move {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            kept.lock().unwrap().push((content_type, body));
            // An empty protobuf message is the collector's "all accepted".
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/x-protobuf")],
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}"), exports)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_of_a_request_and_its_listeners_reach_the_collector() {
    let (collector, exports) = start_collector().await;
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().display().to_string();
    let marketplace = tokio::task::spawn_blocking(move || {
        Process::start(
            &[
                "up",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                &data_dir,
                "--otlp-endpoint",
                &collector,
            ],
            &[],
        )
    })
    .await
    .unwrap();

    // Listing a ticket: a request, and an event the other services listen to.
    let http = reqwest::Client::new();
    let base = marketplace.base.clone();
    let signup = http
        .post(format!("{base}/api/users/signup"))
        .json(&json!({"email": "traced@example.com", "password": "correct horse"}))
        .send()
        .await
        .unwrap();
    assert_eq!(signup.status(), 201);
    let cookie = signup.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let listed = http
        .post(format!("{base}/api/tickets"))
        .header("cookie", &cookie)
        .json(&json!({"title": "Traced concert", "price": 20}))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 201);
    // Time for the event to reach its listeners before the process is told to stop.
    testkit::eventually("orders to learn of the ticket", || {
        let http = http.clone();
        let url = format!("{base}/metrics");
        async move {
            let metrics = http.get(url).send().await.ok()?.text().await.ok()?;
            metrics
                .lines()
                .any(|line| {
                    line.starts_with("stubs_events_consumed_total")
                        && line.contains("service=\"orders\"")
                        && line.contains("type=\"ticket:created\"")
                })
                .then_some(())
        }
    })
    .await;

    // Stopping flushes what the batch exporter still holds.
    assert!(
        tokio::task::spawn_blocking(move || marketplace.stop())
            .await
            .unwrap()
    );
    let exports = exports.lock().unwrap().clone();
    assert!(!exports.is_empty(), "nothing was exported");
    for (content_type, _) in &exports {
        assert_eq!(content_type, "application/x-protobuf");
    }
    // Protobuf keeps strings as they are: the service, the request's span and the span of the
    // orders listener that handled the event are all there.
    let sent = |text: &str| exports.iter().any(|(_, body)| contains(body, text));
    assert!(sent("stubs"), "the service name");
    assert!(sent("request"), "the request's span");
    assert!(sent("/api/tickets"), "the request's path");
    assert!(sent("publish"), "the relay's span");
    assert!(sent("orders_ticket_created"), "the orders listener's span");
}
