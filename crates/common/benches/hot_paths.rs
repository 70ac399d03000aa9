//! Micro-benchmarks of the pure work every request or event pays for: verifying a session token,
//! parsing and validating a request body (prices included), and encoding and decoding event
//! envelopes. Run with `cargo bench -p common`; pass a name to filter, e.g.
//! `cargo bench -p common -- session`.
#![allow(clippy::expect_used)]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::body::Body;
use axum::extract::FromRequest;
use axum::http::header::{CONTENT_TYPE, COOKIE};
use axum::http::{Request, request::Parts};
use common::FieldError;
use common::events::{Envelope, OrderCreated, OrderStatus, OrderTicket, TicketUpdated};
use common::money::Cents;
use common::revocation::Revocation;
use common::session::Sessions;
use common::validate::{FieldErrors, Valid, Validate, id_field};
use divan::counter::BytesCount;
use divan::{Bencher, black_box};
use secrecy::SecretString;
use serde::Deserialize;
use time::OffsetDateTime;
use uuid::Uuid;

fn main() {
    // Divan sizes samples from the slowest early run, so on a busy machine a one-microsecond
    // function can end up timed over a mere hundred calls. A time floor keeps every figure
    // built from enough of them; `--min-time` on the command line still wins.
    divan::Divan::default()
        .min_time(Duration::from_millis(500))
        .config_with_args()
        .main();
}

const SECRET: &str = "a shared signing key of a realistic length, 48 b";

fn sessions() -> Sessions {
    Sessions::new(
        &SecretString::from(SECRET),
        Duration::from_secs(24 * 3600),
        true,
    )
}

fn token(sessions: &Sessions) -> String {
    sessions
        .issue(Uuid::now_v7(), "buyer@example.com", 0)
        .expect("a token can be signed")
        .0
}

/// Runs a future that never waits. Request bodies here live in memory, so extraction completes
/// on its first poll; polling in a loop keeps the measurement free of any runtime.
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
    }
}

mod session {
    use super::*;

    /// A genuine token: the signature check and the claims parse both run in full.
    #[divan::bench]
    fn verify_valid(bencher: Bencher<'_, '_>) {
        let sessions = sessions();
        let token = token(&sessions);
        assert!(sessions.verify(&token).is_some());
        bencher.bench_local(|| black_box(&sessions).verify(black_box(&token)));
    }

    /// A genuine token checked against a service that has heard of 100,000 sign-outs and
    /// 10,000 sign-outs everywhere, none of them this session's: the revocation check's cost.
    #[divan::bench]
    fn verify_valid_among_revocations(bencher: Bencher<'_, '_>) {
        let sessions = sessions();
        let far = i64::MAX;
        for _ in 0..100_000 {
            sessions.revocations().add(Revocation::Session {
                session_id: Uuid::new_v4(),
                user_id: Uuid::new_v4(),
                expires_at: far,
            });
        }
        for _ in 0..10_000 {
            sessions.revocations().add(Revocation::Generation {
                user_id: Uuid::new_v4(),
                below: 1,
                expires_at: far,
            });
        }
        let token = token(&sessions);
        assert!(sessions.verify(&token).is_some());
        bencher.bench_local(|| black_box(&sessions).verify(black_box(&token)));
    }

    /// A token signed out: verified in full, then refused by the revocation check.
    #[divan::bench]
    fn verify_revoked(bencher: Bencher<'_, '_>) {
        let sessions = sessions();
        let (token, claims) = sessions
            .issue(Uuid::now_v7(), "buyer@example.com", 0)
            .expect("a token can be signed");
        sessions.revocations().add(Revocation::Session {
            session_id: claims.sid,
            user_id: claims.id,
            expires_at: i64::MAX,
        });
        assert!(sessions.verify(&token).is_none());
        bencher.bench_local(|| black_box(&sessions).verify(black_box(&token)));
    }

    /// A token whose claims were edited (another user id) without the key: refused at the
    /// signature, which is what a forgery attempt costs us.
    #[divan::bench]
    fn verify_tampered(bencher: Bencher<'_, '_>) {
        let sessions = sessions();
        let genuine = token(&sessions);
        let other = token(&sessions);
        let mut parts: Vec<&str> = genuine.split('.').collect();
        parts[1] = other.split('.').nth(1).expect("a JWT has three parts");
        let forged = parts.join(".");
        assert!(sessions.verify(&forged).is_none());
        bencher.bench_local(|| black_box(&sessions).verify(black_box(&forged)));
    }

    /// What each signed-in request does: find the `session` cookie among others, then verify.
    #[divan::bench]
    fn from_cookie_header(bencher: Bencher<'_, '_>) {
        let sessions = sessions();
        let cookie = format!("theme=dark; session={}; lang=en", token(&sessions));
        let (parts, ()) = Request::builder()
            .header(COOKIE, cookie)
            .body(())
            .expect("a valid request")
            .into_parts();
        assert!(ready(sessions.from_parts(&parts)).is_some());
        bencher.bench_local(|| ready(black_box(&sessions).from_parts(black_box::<&Parts>(&parts))));
    }
}

/// A listing body (`{title, price}`), held as raw JSON values so that a wrong type is a field
/// error like a missing one, validated with the shared pieces every service uses. The services'
/// own bodies live in crates that depend on this one, so the benchmark keeps a body of the same
/// shape and rules.
#[derive(Debug, Default, Deserialize)]
struct TicketBody {
    #[serde(default)]
    title: Option<serde_json::Value>,
    #[serde(default)]
    price: Option<serde_json::Value>,
}

#[derive(Debug)]
#[allow(dead_code)] // read only through black_box
struct NewTicket {
    title: String,
    price: Cents,
}

fn parse_title(value: Option<&serde_json::Value>) -> Result<String, String> {
    let text = match value {
        Some(serde_json::Value::String(text)) => text.trim(),
        None | Some(serde_json::Value::Null) => return Err("Title is required".into()),
        Some(_) => return Err("Title must be text".into()),
    };
    if text.is_empty() {
        Err("Title is required".into())
    } else if text.chars().count() > 200 {
        Err("Title must be at most 200 characters".into())
    } else {
        Ok(text.to_owned())
    }
}

impl Validate for TicketBody {
    type Valid = NewTicket;

    fn validate(self) -> Result<NewTicket, Vec<FieldError>> {
        let mut errors = FieldErrors::new();
        let title = errors.check("title", parse_title(self.title.as_ref()));
        let price = errors.check("price", Cents::from_json(self.price.as_ref()));
        errors.into_result(
            title
                .zip(price)
                .map(|(title, price)| NewTicket { title, price }),
        )
    }
}

/// A purchase body (`{ticketId}`), checked as orders checks it.
#[derive(Debug, Default, Deserialize)]
struct OrderBody {
    #[serde(rename = "ticketId", default)]
    ticket_id: Option<serde_json::Value>,
}

impl Validate for OrderBody {
    type Valid = Uuid;

    fn validate(self) -> Result<Uuid, Vec<FieldError>> {
        let mut errors = FieldErrors::new();
        let id = errors.check("ticketId", id_field(self.ticket_id.as_ref(), "Ticket id"));
        errors.into_result(id)
    }
}

const TICKET_BODY: &str = r#"{"title":"Arctic Monkeys, Royal Albert Hall, row F","price":49.99}"#;

fn order_body() -> String {
    format!(r#"{{"ticketId":"{}"}}"#, Uuid::now_v7())
}

fn json_request(body: &str) -> Request<Body> {
    Request::builder()
        .method("POST")
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .expect("a valid request")
}

mod money {
    use super::*;

    /// A price as a client sends it, already a JSON number, to integer cents.
    #[divan::bench(args = ["20", "15.5", "19.99", "1000000"])]
    fn parse_price(bencher: Bencher<'_, '_>, text: &str) {
        let value: serde_json::Value = serde_json::from_str(text).expect("a JSON number");
        assert!(Cents::from_json(Some(&value)).is_ok());
        bencher.bench_local(|| Cents::from_json(black_box(Some(&value))));
    }

    /// A price leaving in a response body.
    #[divan::bench]
    fn price_to_json(bencher: Bencher<'_, '_>) {
        let cents = Cents::new(1999).expect("a valid price");
        bencher.bench_local(|| black_box(cents).to_json());
    }
}

mod validate {
    use super::*;

    /// Body bytes to a validated listing: JSON parse, title check, price to cents.
    #[divan::bench]
    fn create_ticket_body(bencher: Bencher<'_, '_>) {
        let bytes = TICKET_BODY.as_bytes();
        bencher
            .counter(BytesCount::of_slice(bytes))
            .bench_local(|| {
                serde_json::from_slice::<TicketBody>(black_box(bytes))
                    .map(Validate::validate)
                    .expect("well-formed")
                    .expect("valid")
            });
    }

    /// Body bytes to a validated purchase: JSON parse and id parse.
    #[divan::bench]
    fn create_order_body(bencher: Bencher<'_, '_>) {
        let body = order_body();
        let bytes = body.as_bytes();
        bencher
            .counter(BytesCount::of_slice(bytes))
            .bench_local(|| {
                serde_json::from_slice::<OrderBody>(black_box(bytes))
                    .map(Validate::validate)
                    .expect("well-formed")
                    .expect("valid")
            });
    }

    /// A body with both fields wrong: every error collected and reported together.
    #[divan::bench]
    fn create_ticket_body_invalid(bencher: Bencher<'_, '_>) {
        let bytes = br#"{"title":"   ","price":19.999}"#.as_slice();
        bencher.bench_local(|| {
            serde_json::from_slice::<TicketBody>(black_box(bytes))
                .map(Validate::validate)
                .expect("well-formed")
                .expect_err("invalid")
        });
    }

    /// The extractor a handler uses: content type, body collection, JSON parse and validation.
    /// Building the request (its body copy included) is left out of the timing.
    #[divan::bench]
    fn create_ticket_extractor(bencher: Bencher<'_, '_>) {
        bencher
            .with_inputs(|| json_request(TICKET_BODY))
            .bench_local_values(|request| {
                let Ok(Valid(ticket)) = ready(Valid::<TicketBody>::from_request(request, &()))
                else {
                    panic!("a valid listing is accepted");
                };
                ticket
            });
    }

    /// The extractor for a purchase body.
    #[divan::bench]
    fn create_order_extractor(bencher: Bencher<'_, '_>) {
        let body = order_body();
        bencher
            .with_inputs(|| json_request(&body))
            .bench_local_values(|request| {
                let Ok(Valid(id)) = ready(Valid::<OrderBody>::from_request(request, &())) else {
                    panic!("a valid purchase is accepted");
                };
                id
            });
    }
}

fn order_created() -> Envelope<OrderCreated> {
    Envelope::new(OrderCreated {
        id: Uuid::now_v7(),
        version: 0,
        status: OrderStatus::Created,
        user_id: Uuid::now_v7(),
        expires_at: OffsetDateTime::now_utc() + Duration::from_secs(15 * 60),
        ticket: OrderTicket {
            id: Uuid::now_v7(),
            price: Cents::new(4999).expect("a valid price"),
            title: Some("Concert".into()),
        },
        listing: 0,
    })
}

fn ticket_updated() -> Envelope<TicketUpdated> {
    Envelope::new(TicketUpdated {
        id: Uuid::now_v7(),
        version: 1,
        title: "Arctic Monkeys, Royal Albert Hall, row F".into(),
        price: Cents::new(4999).expect("a valid price"),
        user_id: Uuid::now_v7(),
        order_id: Some(Uuid::now_v7()),
        listing: 0,
    })
}

mod events {
    use super::*;

    #[divan::bench]
    fn encode_order_created(bencher: Bencher<'_, '_>) {
        let envelope = order_created();
        bencher.bench_local(|| black_box(&envelope).encode().expect("encodes"));
    }

    #[divan::bench]
    fn decode_order_created(bencher: Bencher<'_, '_>) {
        let bytes = order_created().encode().expect("encodes");
        bencher
            .counter(BytesCount::of_slice(&bytes))
            .bench_local(|| Envelope::<OrderCreated>::decode(black_box(&bytes)).expect("decodes"));
    }

    #[divan::bench]
    fn encode_ticket_updated(bencher: Bencher<'_, '_>) {
        let envelope = ticket_updated();
        bencher.bench_local(|| black_box(&envelope).encode().expect("encodes"));
    }

    #[divan::bench]
    fn decode_ticket_updated(bencher: Bencher<'_, '_>) {
        let bytes = ticket_updated().encode().expect("encodes");
        bencher
            .counter(BytesCount::of_slice(&bytes))
            .bench_local(|| Envelope::<TicketUpdated>::decode(black_box(&bytes)).expect("decodes"));
    }
}
