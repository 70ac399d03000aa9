//! A server on a random port per test, and clients that keep their own session cookie.

use std::net::SocketAddr;

use axum::Router;
use common::http::{HttpSettings, serve_stack};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// A running HTTP server for one test, stopped when dropped.
pub struct TestServer {
    pub address: SocketAddr,
    shutdown: CancellationToken,
}

impl TestServer {
    /// Serves routes behind the full HTTP stack on a random loopback port.
    pub async fn start(routes: Router) -> Self {
        Self::start_with(routes, &HttpSettings::default()).await
    }

    /// Like [`TestServer::start`], with limits of the test's choosing.
    pub async fn start_with(routes: Router, settings: &HttpSettings) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let app = serve_stack(routes, settings);
        let stop = shutdown.clone();
        let settings = settings.clone();
        tokio::spawn(async move {
            common::http::serve(listener, app, &settings, stop.cancelled_owned()).await;
        });
        Self { address, shutdown }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    /// A client with its own cookie jar: one per person in a test.
    pub fn client(&self) -> Client {
        Client {
            base: format!("http://{}", self.address),
            // Redirects are answers to check, not to follow.
            http: reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// An HTTP client for one person, keeping their session cookie.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
}

/// A response read whole: status, headers and JSON body (`Value::Null` when not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The messages of an error body, in order.
    pub fn error_messages(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The fields named by an error body, in order.
    pub fn error_fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .filter_map(|e| e["field"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The path and query of the next page, from a `Link: <…>; rel="next"` header.
    pub fn next_page(&self) -> Option<String> {
        let link = self.headers.get(reqwest::header::LINK)?.to_str().ok()?;
        common::paging::next_link(link).map(str::to_owned)
    }

    /// The machine codes of an error body, in order.
    pub fn error_codes(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .filter_map(|e| e["code"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the answer is a replay of an earlier one with the same `Idempotency-Key`.
    pub fn replayed(&self) -> bool {
        self.headers
            .get("idempotent-replayed")
            .is_some_and(|value| value == "true")
    }

    /// Asserts the body is in the one error shape: a non-empty list of entries, each with a
    /// message and a machine code, and a field only beside them.
    pub fn assert_error_shape(&self) {
        let errors = self.body["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("not in the error shape: {:?}", self.body));
        assert!(!errors.is_empty(), "empty error list");
        for error in errors {
            assert!(
                error["message"].is_string(),
                "entry without message: {error}"
            );
            assert!(
                error["code"].as_str().is_some_and(|code| !code.is_empty()
                    && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')),
                "entry without a snake_case code: {error}"
            );
            let keys: Vec<_> = error.as_object().unwrap().keys().collect();
            assert!(
                keys.iter()
                    .all(|k| *k == "message" || *k == "field" || *k == "code"),
                "unexpected keys in {error}"
            );
        }
    }
}

impl Client {
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(self.http.delete(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(self.http.post(format!("{}{path}", self.base)).json(&body))
            .await
    }

    /// Walks a paged list from `first` by its `Link: rel="next"` headers and returns each page's
    /// items, asserting every page is a 200 and the list ends within 100 pages. `between` runs
    /// after each page, with how many were read.
    pub async fn pages<F, Fut>(&self, first: &str, mut between: F) -> Vec<Vec<Value>>
    where
        F: FnMut(usize) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let mut pages = Vec::new();
        let mut next = Some(first.to_owned());
        while let Some(path) = next {
            assert!(pages.len() < 100, "paging does not end");
            let reply = self.get(&path).await;
            assert_eq!(reply.status, 200, "{path}: {:?}", reply.body);
            pages.push(reply.body.as_array().cloned().unwrap_or_default());
            next = reply.next_page();
            between(pages.len()).await;
        }
        pages
    }

    /// Posts a body with an `Idempotency-Key`.
    pub async fn post_with_key(&self, path: &str, key: &str, body: Value) -> Reply {
        let request = self.http.post(format!("{}{path}", self.base));
        self.send(request.header("idempotency-key", key).json(&body))
            .await
    }

    /// Deletes with an `Idempotency-Key`.
    pub async fn delete_with_key(&self, path: &str, key: &str) -> Reply {
        let request = self.http.delete(format!("{}{path}", self.base));
        self.send(request.header("idempotency-key", key)).await
    }

    /// Posts a body as it is, labelled JSON, for bodies that are not valid JSON.
    pub async fn post_raw_json(&self, path: &str, body: &'static str) -> Reply {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.send(self.http.put(format!("{}{path}", self.base)).json(&body))
            .await
    }
}

/// The session token a `Set-Cookie` value sets, if it sets the session cookie.
pub fn session_token(set_cookie: &str) -> Option<String> {
    let token = set_cookie
        .strip_prefix(&format!("{}=", common::session::COOKIE_NAME))?
        .split(';')
        .next()?;
    (!token.is_empty()).then(|| token.to_owned())
}
