//! The HTTP stack: whatever goes wrong, the client gets the one error shape and the right status,
//! and the operator gets request ids and metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use common::http::{HttpSettings, platform_routes};
use testkit::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn routes() -> Router {
    Router::new()
        .route(
            "/boom",
            get(|| async {
                if std::hint::black_box(true) {
                    panic!("a bug in a handler");
                }
                "unreachable"
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .route("/fine/{id}", get(|| async { "fine" }))
        .route("/large", get(|| async { vec![b'x'; 32 * 1024 * 1024] }))
        .merge(platform_routes(Vec::new()))
}

#[tokio::test]
async fn a_panicking_handler_gives_500_with_a_generic_message() {
    let server = TestServer::start(routes()).await;

    let reply = server.client().get("/boom").await;

    assert_eq!(reply.status, 500);
    reply.assert_error_shape();
    assert_eq!(reply.error_messages(), ["Something went wrong"]);
    // The server lives on.
    assert_eq!(server.client().get("/fine/1").await.status, 200);
}

#[tokio::test]
async fn a_request_that_takes_too_long_gives_503_in_the_error_shape() {
    let settings = HttpSettings {
        request_timeout: Duration::from_millis(200),
        ..HttpSettings::default()
    };
    let server = TestServer::start_with(routes(), &settings).await;

    let reply = server.client().get("/slow").await;

    assert_eq!(reply.status, 503);
    reply.assert_error_shape();
}

#[tokio::test]
async fn unknown_routes_and_methods_get_the_error_shape() {
    let server = TestServer::start(routes()).await;
    let client = server.client();

    let missing = client.get("/nowhere").await;
    let wrong_method = client.delete("/fine/1").await;

    assert_eq!(missing.status, 404);
    missing.assert_error_shape();
    assert_eq!(wrong_method.status, 400, "a status of the contract");
    wrong_method.assert_error_shape();
    assert!(wrong_method.headers.contains_key("allow"));
    assert_eq!(missing.error_codes(), ["not_found"]);
    assert_eq!(wrong_method.error_codes(), ["malformed_request"]);
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_a_given_one_is_kept() {
    let server = TestServer::start(routes()).await;
    let client = server.client();

    let fresh = client.get("/fine/1").await;
    let given = client
        .send(
            client
                .http
                .get(server.url("/fine/1"))
                .header("x-request-id", "abc-123"),
        )
        .await;

    let fresh_id = fresh.headers["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::try_parse(fresh_id).is_ok(), "{fresh_id}");
    assert_eq!(given.headers["x-request-id"], "abc-123");
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let server = TestServer::start(routes()).await;
    let client = server.client();
    client.get("/fine/1").await;
    client.get("/fine/2").await;

    let response = client
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();

    let line = text
        .lines()
        .find(|l| {
            l.starts_with("stubs_http_requests_total")
                && l.contains("route=\"/fine/{id}\"")
                && l.contains("status=\"200\"")
        })
        .unwrap_or_else(|| panic!("no request counter for /fine/{{id}} in:\n{text}"));
    let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 2.0, "{line}");
    assert!(text.contains("stubs_http_request_duration_seconds_bucket"));
}

#[tokio::test]
async fn health_answers_and_readiness_with_nothing_to_check_is_ready() {
    let server = TestServer::start(routes()).await;

    assert_eq!(server.client().get("/healthz").await.status, 200);
    assert_eq!(server.client().get("/readyz").await.status, 200);
}

/// Opens a connection, sends a request's first lines without the blank line that ends its
/// headers, and returns what the server answers once it gives up on them; panics if it has not
/// after `patience`.
async fn answer_to_unfinished_headers(server: &TestServer, patience: Duration) -> Vec<u8> {
    let mut stream = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    stream
        .write_all(b"GET /fine/1 HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(patience, stream.read_to_end(&mut answer))
        .await
        .expect("the server still waits for the headers")
        .unwrap();
    answer
}

#[tokio::test]
async fn a_client_that_does_not_finish_its_headers_is_cut_off() {
    let settings = HttpSettings {
        header_read_timeout: Duration::from_millis(300),
        ..HttpSettings::default()
    };
    let server = TestServer::start_with(routes(), &settings).await;

    let answer = answer_to_unfinished_headers(&server, Duration::from_secs(20)).await;

    // Closed, with a 408 at most: never the page it began to ask for.
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    // Others are still served.
    assert_eq!(server.client().get("/fine/1").await.status, 200);
}

/// Sends one request on a fresh connection and reads the answer until the server closes it.
async fn raw_request(server: &TestServer, request: &str, patience: Duration) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(patience, stream.read_to_end(&mut answer))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test]
async fn headers_past_the_limit_get_400_in_the_error_shape() {
    let settings = HttpSettings {
        max_header_bytes: 2048,
        ..HttpSettings::default()
    };
    let server = TestServer::start_with(routes(), &settings).await;
    let cookie = "c".repeat(4096);

    let large = raw_request(
        &server,
        &format!(
            "GET /fine/1 HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
        ),
        Duration::from_secs(5),
    )
    .await
    .expect("an answer");
    let long_path = raw_request(
        &server,
        &format!("GET /fine/{cookie} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        Duration::from_secs(5),
    )
    .await
    .expect("an answer");

    for answer in [&large, &long_path] {
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("application/json"), "{answer}");
        assert!(
            answer.contains(
                r#"{"errors":[{"message":"Request headers are too large","code":"malformed_request"}]}"#
            ),
            "{answer}"
        );
    }
    assert_eq!(server.client().get("/fine/1").await.status, 200);
}

#[tokio::test]
async fn past_the_connection_cap_a_client_waits_until_a_connection_closes() {
    let settings = HttpSettings {
        max_connections: 2,
        ..HttpSettings::default()
    };
    let server = TestServer::start_with(routes(), &settings).await;
    let first = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    let _second = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    let request = "GET /fine/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

    let while_full = raw_request(&server, request, Duration::from_millis(500)).await;
    assert_eq!(while_full, None, "a third connection was served");

    drop(first);
    let answer = raw_request(&server, request, Duration::from_secs(5))
        .await
        .expect("served once a place is free");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn a_client_that_does_not_read_its_answer_gives_its_place_back() {
    let settings = HttpSettings {
        max_connections: 1,
        write_timeout: Duration::from_millis(300),
        ..HttpSettings::default()
    };
    let server = TestServer::start_with(routes(), &settings).await;
    // Asks for more than the socket buffers hold, and never reads a byte of it.
    let mut stalled = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    stalled
        .write_all(b"GET /large HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();

    let answer = raw_request(
        &server,
        "GET /fine/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    )
    .await
    .expect("served once the stalled connection was closed");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(stalled);
}
