//! `stubs serve` as production runs it: auth and tickets each in a process of their own, each on
//! a PostgreSQL database of its own, tickets talking through NATS JetStream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::bus::nats::NatsBus;
use common::bus::{Bus, ConsumerConfig, Message};
use common::events::{Envelope, EventType, OrderCreated, OrderTicket, TicketCreated};
use common::money::Cents;
use serde_json::{Value, json};
use testkit::{Backend, TestDatabase, distributed_test, eventually};

const SECRET: &str = "distributed-test-secret-of-enough-length";

struct Service {
    child: Child,
    base: String,
}

impl Service {
    fn start(name: &str, database_url: &str, prefix: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_stubs"))
            .args([
                "serve",
                name,
                "--listen",
                "127.0.0.1:0",
                "--database-url",
                database_url,
            ])
            .args(["--nats-prefix", prefix, "--cookie-secure", "false"])
            .env(
                "STUBS_NATS_URL",
                std::env::var("STUBS_TEST_NATS_URL").unwrap(),
            )
            .env("STUBS_JWT_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("{name} did not start: {line:?}"))
            .to_owned();
        Self { child, base }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

distributed_test! {
    async fn auth_and_tickets_run_as_separate_processes_on_postgres_and_jetstream() {
        let auth_db = TestDatabase::create(Backend::Postgres).await;
        let tickets_db = TestDatabase::create(Backend::Postgres).await;
        let prefix = format!("stubs_test_{}", uuid::Uuid::new_v4().simple());
        let nats_url = std::env::var("STUBS_TEST_NATS_URL").unwrap();
        let bus = Arc::new(NatsBus::connect(&nats_url, &prefix).await.unwrap());
        let auth = Service::start("auth", &auth_db.url, &prefix);
        let tickets = Service::start("tickets", &tickets_db.url, &prefix);
        let http = reqwest::Client::new();

        // A session from auth is honoured by tickets: they share only the key.
        let signup = http
            .post(format!("{}/api/users/signup", auth.base))
            .json(&json!({"email": "seller@example.com", "password": "correct horse"}))
            .send()
            .await
            .unwrap();
        assert_eq!(signup.status(), 201);
        let cookie = signup.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
        let (status, ticket) = send(
            http.post(format!("{}/api/tickets", tickets.base))
                .header("cookie", &cookie)
                .json(&json!({"title": "Concert", "price": 25})),
        )
        .await;
        assert_eq!(status, 201);
        let ticket_id = uuid::Uuid::try_parse(ticket["id"].as_str().unwrap()).unwrap();

        // ticket:created reaches JetStream through the outbox.
        let mut created = bus
            .subscribe(&ConsumerConfig::new("observer", EventType::TicketCreated))
            .await
            .unwrap();
        let delivery = tokio::time::timeout(Duration::from_secs(10), created.next())
            .await
            .expect("no ticket:created on JetStream")
            .unwrap();
        let event = Envelope::<TicketCreated>::decode(&delivery.payload).unwrap();
        assert_eq!(event.data.id, ticket_id);
        assert_eq!(event.data.price, Cents::new(2500).unwrap());

        // An order:created on JetStream reserves the ticket in the tickets process.
        let order_id = uuid::Uuid::now_v7();
        let order = Envelope::new(OrderCreated {
            id: order_id,
            version: 0,
            status: common::events::OrderStatus::Created,
            user_id: uuid::Uuid::now_v7(),
            expires_at: time::OffsetDateTime::now_utc() + Duration::from_secs(900),
            ticket: OrderTicket { id: ticket_id, price: Cents::new(2500).unwrap() },
        });
        bus.publish(&Message {
            id: order.id.to_string(),
            event_type: EventType::OrderCreated,
            payload: order.encode().unwrap().into(),
        })
        .await
        .unwrap();
        let url = format!("{}/api/tickets/{ticket_id}", tickets.base);
        let reserved = eventually("the ticket to be reserved", || {
            let http = http.clone();
            let url = url.clone();
            async move {
                let (_, ticket) = send(http.get(url)).await;
                (ticket["orderId"] == json!(order_id.to_string())).then_some(ticket)
            }
        })
        .await;
        assert_eq!(reserved["version"], 1);

        for service in [&auth, &tickets] {
            let (status, _) = send(http.get(format!("{}/readyz", service.base))).await;
            assert_eq!(status, 200);
        }
        drop((auth, tickets));
        bus.delete_stream().await.unwrap();
    }
}
