//! The marketplace's HTTP API as the load generator uses it. One connection pool for the whole
//! run, a timeout on every request, and every answer (or failure to get one) turned into a
//! [`Call`] that is counted, never a panic.

use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, LINK, SET_COOKIE};
use reqwest::{Client, RequestBuilder};
use serde::Deserialize;
use serde_json::json;

const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// A fresh `Idempotency-Key`: 128 random bits.
pub(crate) fn new_key() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Password of every account the load generator creates (within argon2's 8 to 128 characters).
pub(crate) const PASSWORD: &str = "load-generator-password";

/// A signed-in user: the session JWT is sent as a bearer token, not as a cookie, because the
/// distributed services mark the cookie Secure and the load generator speaks plain HTTP.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub email: String,
    pub token: String,
}

/// Why no HTTP answer came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    Timeout,
    Connect,
    Other,
}

impl Failure {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Connect => "connect",
            Failure::Other => "io",
        }
    }
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub status: u16,
    pub body: Bytes,
    /// The JWT from a `session` cookie the answer set, if any.
    pub session: Option<String>,
    /// The path and query of a list's next page, from `Link: <…>; rel="next"`.
    pub next_page: Option<String>,
}

impl Answer {
    /// The body as `T`, or `None` if it is not that JSON.
    pub(crate) fn json<T: for<'de> Deserialize<'de>>(&self) -> Option<T> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The machine code of an error answer's first entry (`{"errors":[{"code":…}]}`).
    pub(crate) fn error_code(&self) -> Option<String> {
        self.first_error().and_then(|entry| entry.code)
    }

    /// The field an error answer's first entry is about (`{"errors":[{"field":…}]}`).
    pub(crate) fn error_field(&self) -> Option<String> {
        self.first_error().and_then(|entry| entry.field)
    }

    fn first_error(&self) -> Option<ErrorEntry> {
        #[derive(Deserialize)]
        struct Errors {
            errors: Vec<ErrorEntry>,
        }
        let errors: Errors = self.json()?;
        errors.errors.into_iter().next()
    }
}

#[derive(Deserialize)]
struct ErrorEntry {
    code: Option<String>,
    field: Option<String>,
}

/// One request: when it went, when it ended, and what came of it.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub started: Instant,
    pub finished: Instant,
    pub outcome: Result<Answer, Failure>,
}

impl Call {
    pub(crate) fn status(&self) -> Option<u16> {
        self.outcome.as_ref().ok().map(|answer| answer.status)
    }

    /// The answer if it has this status.
    pub(crate) fn answer_with(&self, status: u16) -> Option<&Answer> {
        self.outcome.as_ref().ok().filter(|a| a.status == status)
    }

    /// The label its status is counted under: the code, or the kind of failure.
    pub(crate) fn label(&self) -> String {
        match &self.outcome {
            Ok(answer) => answer.status.to_string(),
            Err(failure) => failure.label().to_owned(),
        }
    }
}

/// A ticket as the API shows it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TicketView {
    pub id: String,
    /// The owner: the seller until an order for it is paid, then the buyer.
    pub user_id: String,
    pub order_id: Option<String>,
}

/// An order as the API shows it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OrderView {
    pub id: String,
    /// The buyer.
    pub user_id: String,
    pub status: String,
    pub expires_at: String,
    pub ticket: OrderTicket,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct OrderTicket {
    pub id: String,
    /// The price the order was placed at, in major units; read into cents by
    /// [`crate::invariants::cents_of`].
    #[serde(default)]
    pub price: Option<serde_json::Number>,
}

/// A ticket in its owner's wallet (`GET /api/users/me/tickets`), of what the load generator
/// reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WalletEntry {
    pub id: String,
    /// `kept`, `listed` or `held`.
    pub status: String,
    /// The most it may be listed for again, in major units.
    pub max_resale_price: serde_json::Number,
}

/// The marketplace's API at one base URL.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    http: Client,
    base: String,
    /// Whether writes that are never retried carry a key too.
    key_every_write: bool,
}

impl Api {
    pub(crate) fn new(
        base: &str,
        request_timeout: Duration,
        concurrency: usize,
        key_every_write: bool,
    ) -> anyhow::Result<Self> {
        let http = Client::builder()
            .timeout(request_timeout)
            .connect_timeout(request_timeout)
            .pool_max_idle_per_host(concurrency.max(1) * 2)
            // Under Stubs' 10 s header timeout, which also closes idle connections.
            .pool_idle_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            key_every_write,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn signed_in(&self, request: RequestBuilder, session: &Session) -> RequestBuilder {
        request.header(AUTHORIZATION, format!("Bearer {}", session.token))
    }

    /// A write signed in as `session` under `key`, which makes a retry of it act once.
    fn keyed(&self, request: RequestBuilder, session: &Session, key: &str) -> RequestBuilder {
        self.signed_in(request, session)
            .header(IDEMPOTENCY_KEY, key)
    }

    /// A write that is never retried: keyed only with `--key-every-write`, since a key costs
    /// the marketplace a write of its own (a claim) even when the answer is a refusal.
    fn once(&self, request: RequestBuilder, session: &Session) -> RequestBuilder {
        if self.key_every_write {
            self.keyed(request, session, &new_key())
        } else {
            self.signed_in(request, session)
        }
    }

    /// Sends a request and reads the whole answer.
    pub(crate) async fn send(&self, request: RequestBuilder) -> Call {
        let started = Instant::now();
        let outcome = read_answer(request).await;
        Call {
            started,
            finished: Instant::now(),
            outcome,
        }
    }

    pub(crate) async fn sign_up(&self, email: &str) -> Call {
        let body = json!({"email": email, "password": PASSWORD});
        self.send(self.http.post(self.url("/api/users/signup")).json(&body))
            .await
    }

    pub(crate) async fn sign_in(&self, email: &str) -> Call {
        let body = json!({"email": email, "password": PASSWORD});
        self.send(self.http.post(self.url("/api/users/signin")).json(&body))
            .await
    }

    /// `GET /api/users/currentuser`, which answers 200 to anyone: is the marketplace there?
    pub(crate) async fn current_user(&self) -> Call {
        self.send(self.http.get(self.url("/api/users/currentuser")))
            .await
    }

    /// Lists a ticket, for `event` when given.
    pub(crate) async fn create_ticket(
        &self,
        seller: &Session,
        title: &str,
        price: f64,
        event: Option<&str>,
    ) -> Call {
        let mut body = json!({"title": title, "price": price});
        if let Some(event) = event {
            body["eventId"] = json!(event);
        }
        let request = self.http.post(self.url("/api/tickets")).json(&body);
        self.send(self.once(request, seller)).await
    }

    pub(crate) async fn list_tickets(&self) -> Call {
        self.get("/api/tickets").await
    }

    /// `GET` of a path and query, as anyone.
    pub(crate) async fn get(&self, path_and_query: &str) -> Call {
        self.send(self.http.get(self.url(path_and_query))).await
    }

    pub(crate) async fn show_ticket(&self, id: &str) -> Call {
        self.send(self.http.get(self.url(&format!("/api/tickets/{id}"))))
            .await
    }

    /// Creates an event at the venue "Loadgen Arena", starting `days_ahead` days from now.
    pub(crate) async fn create_event(&self, user: &Session, name: &str, days_ahead: i64) -> Call {
        let arena = ("Loadgen Arena", "London", "Europe/London");
        self.create_event_at(user, name, arena, days_ahead).await
    }

    /// Creates an event at `venue`, a venue with its city and time zone, `days_ahead` days from
    /// now.
    pub(crate) async fn create_event_at(
        &self,
        user: &Session,
        name: &str,
        (venue, city, time_zone): (&str, &str, &str),
        days_ahead: i64,
    ) -> Call {
        let starts_at = time::OffsetDateTime::now_utc() + time::Duration::days(days_ahead);
        let body = json!({
            "name": name, "venue": venue, "city": city,
            "startsAt": starts_at.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            "timeZone": time_zone,
        });
        let request = self.http.post(self.url("/api/events")).json(&body);
        self.send(self.signed_in(request, user)).await
    }

    /// Asks to hold the best available ticket of `event_id`.
    pub(crate) async fn order_best_available(&self, buyer: &Session, event_id: &str) -> Call {
        let body = json!({"eventId": event_id});
        let request = self.http.post(self.url("/api/orders")).json(&body);
        self.send(self.once(request, buyer)).await
    }

    pub(crate) async fn create_order(&self, buyer: &Session, ticket_id: &str) -> Call {
        let body = json!({"ticketId": ticket_id});
        let request = self.http.post(self.url("/api/orders")).json(&body);
        self.send(self.once(request, buyer)).await
    }

    pub(crate) async fn cancel_order(&self, buyer: &Session, id: &str) -> Call {
        let request = self.http.delete(self.url(&format!("/api/orders/{id}")));
        self.send(self.once(request, buyer)).await
    }

    pub(crate) async fn show_order(&self, buyer: &Session, id: &str) -> Call {
        let request = self.http.get(self.url(&format!("/api/orders/{id}")));
        self.send(self.signed_in(request, buyer)).await
    }

    /// One page of the buyer's orders: `path` is `/api/orders` with its query, or a next page.
    pub(crate) async fn list_orders(&self, buyer: &Session, path: &str) -> Call {
        let request = self.http.get(self.url(path));
        self.send(self.signed_in(request, buyer)).await
    }

    /// One page of the owner's wallet: `path` is `/api/users/me/tickets` with its query, or a
    /// next page.
    pub(crate) async fn wallet(&self, owner: &Session, path: &str) -> Call {
        let request = self.http.get(self.url(path));
        self.send(self.signed_in(request, owner)).await
    }

    /// Lists a ticket the owner keeps for sale again at `price_cents`; retries of one listing
    /// pass the same key.
    pub(crate) async fn resell(
        &self,
        owner: &Session,
        ticket_id: &str,
        price_cents: i64,
        key: &str,
    ) -> Call {
        let body = json!({"price": major_units(price_cents)});
        let url = self.url(&format!("/api/tickets/{ticket_id}/resale"));
        let request = self.http.post(url).json(&body);
        self.send(self.keyed(request, owner, key)).await
    }

    /// Pays with Stripe's test token, which the sandbox (no Stripe key) accepts; retries of one
    /// payment pass the same key.
    pub(crate) async fn pay(&self, buyer: &Session, order_id: &str, key: &str) -> Call {
        let body = json!({"token": "tok_visa", "orderId": order_id});
        let request = self.http.post(self.url("/api/payments")).json(&body);
        self.send(self.keyed(request, buyer, key)).await
    }

    /// A Prometheus text page at a full URL.
    pub(crate) async fn scrape(&self, url: &str) -> Call {
        self.send(self.http.get(url)).await
    }
}

async fn read_answer(request: RequestBuilder) -> Result<Answer, Failure> {
    let response = request.send().await.map_err(classify)?;
    let status = response.status().as_u16();
    let session = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(session_from_cookie);
    let next_page = response
        .headers()
        .get(LINK)
        .and_then(|value| value.to_str().ok())
        .and_then(next_page_of);
    let body = response.bytes().await.map_err(classify)?;
    Ok(Answer {
        status,
        body,
        session,
        next_page,
    })
}

/// Cents as the API takes money: a whole number when whole, else a number with two decimals at
/// most (an `f64` whose shortest form is exactly those decimals).
pub(crate) fn major_units(cents: i64) -> serde_json::Value {
    if cents % 100 == 0 {
        json!(cents / 100)
    } else {
        json!(cents as f64 / 100.0)
    }
}

fn classify(err: reqwest::Error) -> Failure {
    if err.is_timeout() {
        Failure::Timeout
    } else if err.is_connect() {
        Failure::Connect
    } else {
        Failure::Other
    }
}

/// The JWT of a `Set-Cookie: session=…; …` header; `None` for other cookies or a cleared one.
fn session_from_cookie(header: &str) -> Option<String> {
    let pair = header.split(';').next()?.trim();
    let token = pair.strip_prefix("session=")?;
    (!token.is_empty()).then(|| token.to_owned())
}

/// The target of the one link the API's lists send: `<path?query>; rel="next"`.
fn next_page_of(link: &str) -> Option<String> {
    let (target, rel) = link.trim().strip_prefix('<')?.split_once('>')?;
    (rel.trim() == r#"; rel="next""#).then(|| target.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_token_is_read_from_its_cookie_and_no_other() {
        assert_eq!(
            session_from_cookie("session=abc.def.ghi; Path=/; HttpOnly; Secure; SameSite=Lax"),
            Some("abc.def.ghi".to_owned())
        );
        assert_eq!(session_from_cookie("session=; Max-Age=0"), None);
        assert_eq!(session_from_cookie("other=1; Path=/"), None);
    }

    #[test]
    fn the_next_page_is_read_from_its_link() {
        let link = r#"</api/orders?limit=100&cursor=00ab>; rel="next""#;
        assert_eq!(
            next_page_of(link).as_deref(),
            Some("/api/orders?limit=100&cursor=00ab")
        );
        assert_eq!(next_page_of(r#"</api/orders>; rel="prev""#), None);
        assert_eq!(next_page_of("garbage"), None);
    }

    #[test]
    fn an_error_answer_gives_its_first_code() {
        let answer = Answer {
            status: 400,
            body: Bytes::from_static(
                br#"{"errors":[{"message":"Ticket is already reserved","code":"ticket_reserved"}]}"#,
            ),
            session: None,
            next_page: None,
        };
        assert_eq!(answer.error_code().as_deref(), Some("ticket_reserved"));
        assert_eq!(answer.error_field(), None);
    }

    #[test]
    fn an_error_answer_gives_its_first_field() {
        let answer = Answer {
            status: 400,
            body: Bytes::from_static(
                br#"{"errors":[{"field":"price","message":"Price must be at most 45.50","code":"invalid_field"}]}"#,
            ),
            session: None,
            next_page: None,
        };
        assert_eq!(answer.error_field().as_deref(), Some("price"));
        assert_eq!(answer.error_code().as_deref(), Some("invalid_field"));
    }

    #[test]
    fn money_is_sent_in_major_units_with_its_cents_exact() {
        for (cents, text) in [(3000, "30"), (4551, "45.51"), (4550, "45.5"), (1, "0.01")] {
            assert_eq!(major_units(cents).to_string(), text);
            let number = serde_json::from_str::<serde_json::Number>(text).unwrap();
            assert_eq!(crate::invariants::cents_of(&number), Some(cents));
        }
    }
}
