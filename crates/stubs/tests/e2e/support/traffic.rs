//! A stream of purchases through the ingress while faults happen: buyers place orders, pay for
//! some, cancel some and leave the rest to expire; a seller keeps listing. Failures (5xx, refused
//! connections) are counted and retried, as a real client would.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use rand::seq::IndexedRandom;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

#[derive(Default)]
struct Shared {
    tickets: Mutex<Vec<String>>,
    paid: Mutex<Vec<String>>,
    stop: AtomicBool,
    orders_placed: AtomicU64,
    orders_refused: AtomicU64,
    payments: AtomicU64,
    cancels: AtomicU64,
    server_errors: AtomicU64,
    unreachable: AtomicU64,
    unavailable_bodies_in_shape: AtomicU64,
}

/// What the traffic did, and the orders the API said were paid.
pub(crate) struct Tally {
    pub orders_placed: u64,
    pub orders_refused: u64,
    pub payments: u64,
    pub cancels: u64,
    pub server_errors: u64,
    pub unreachable: u64,
    /// 503 answers that came in the one error shape.
    pub unavailable_in_shape: u64,
    pub paid_orders: Vec<String>,
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} orders placed, {} refused, {} paid, {} cancelled; {} server errors ({} 503 in \
             the error shape), {} unreachable",
            self.orders_placed,
            self.orders_refused,
            self.payments,
            self.cancels,
            self.server_errors,
            self.unavailable_in_shape,
            self.unreachable
        )
    }
}

pub(crate) struct Traffic {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Traffic {
    pub(crate) fn start(base: &str, buyers: usize) -> Self {
        Self::mixed(base, buyers, 0)
    }

    /// Purchases, plus visitors browsing the list, ticket pages and the web pages.
    pub(crate) fn mixed(base: &str, buyers: usize, browsers: usize) -> Self {
        let shared = Arc::new(Shared::default());
        let mut tasks = vec![tokio::spawn(seller(base.to_owned(), shared.clone()))];
        for _ in 0..buyers {
            tasks.push(tokio::spawn(buyer(base.to_owned(), shared.clone())));
        }
        for _ in 0..browsers {
            tasks.push(tokio::spawn(browser(base.to_owned(), shared.clone())));
        }
        Self { shared, tasks }
    }

    /// Orders placed so far, to wait until the traffic is flowing.
    pub(crate) fn orders_placed(&self) -> u64 {
        self.shared.orders_placed.load(Ordering::Relaxed)
    }

    pub(crate) async fn stop(self) -> Tally {
        self.shared.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        let shared = &self.shared;
        Tally {
            orders_placed: shared.orders_placed.load(Ordering::Relaxed),
            orders_refused: shared.orders_refused.load(Ordering::Relaxed),
            payments: shared.payments.load(Ordering::Relaxed),
            cancels: shared.cancels.load(Ordering::Relaxed),
            server_errors: shared.server_errors.load(Ordering::Relaxed),
            unreachable: shared.unreachable.load(Ordering::Relaxed),
            unavailable_in_shape: shared.unavailable_bodies_in_shape.load(Ordering::Relaxed),
            paid_orders: shared.paid.lock().unwrap().clone(),
        }
    }
}

/// One client with its own session.
struct Client {
    http: reqwest::Client,
    base: String,
    shared: Arc<Shared>,
}

impl Client {
    fn new(base: String, shared: Arc<Shared>) -> Self {
        let http = reqwest::Client::builder()
            .cookie_store(true)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Self { http, base, shared }
    }

    /// Sends a request; `None` when the server could not be reached or failed (counted).
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Option<(u16, Value)> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let Ok(response) = request.send().await else {
            self.shared.unreachable.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status >= 500 {
            self.shared.server_errors.fetch_add(1, Ordering::Relaxed);
            if status == 503 && body["errors"][0]["message"].is_string() {
                self.shared
                    .unavailable_bodies_in_shape
                    .fetch_add(1, Ordering::Relaxed);
            }
            return None;
        }
        Some((status, body))
    }

    /// Signs up, retrying through outages.
    async fn sign_up(&self) -> bool {
        let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
        while !self.stopped() {
            let body = json!({"email": email, "password": "correct horse"});
            match self
                .send(
                    reqwest::Method::POST,
                    "/api/users/signup",
                    Some(body.clone()),
                )
                .await
            {
                Some((201, _)) => return true,
                // A sign-up whose answer was lost may have happened: sign in instead.
                Some((400, _)) => {
                    if let Some((200, _)) = self
                        .send(reqwest::Method::POST, "/api/users/signin", Some(body))
                        .await
                    {
                        return true;
                    }
                }
                _ => {}
            }
            pause(100).await;
        }
        false
    }

    fn stopped(&self) -> bool {
        self.shared.stop.load(Ordering::Relaxed)
    }
}

async fn pause(millis: u64) {
    tokio::time::sleep(Duration::from_millis(millis)).await;
}

async fn seller(base: String, shared: Arc<Shared>) {
    let client = Client::new(base, shared.clone());
    if !client.sign_up().await {
        return;
    }
    let mut listed = 0u32;
    while !client.stopped() {
        let price = 10 + listed % 90;
        let body = json!({"title": format!("Show {listed}"), "price": price});
        if let Some((201, ticket)) = client
            .send(reqwest::Method::POST, "/api/tickets", Some(body))
            .await
            && let Some(id) = ticket["id"].as_str()
        {
            shared.tickets.lock().unwrap().push(id.to_owned());
            listed += 1;
        }
        pause(120).await;
    }
}

async fn buyer(base: String, shared: Arc<Shared>) {
    let client = Client::new(base, shared.clone());
    if !client.sign_up().await {
        return;
    }
    while !client.stopped() {
        let think = rand::rng().random_range(20..80);
        pause(think).await;
        let ticket = {
            let tickets = shared.tickets.lock().unwrap();
            // Recent tickets are the likeliest to be for sale.
            let recent = &tickets[tickets.len().saturating_sub(30)..];
            recent.choose(&mut rand::rng()).cloned()
        };
        let Some(ticket) = ticket else { continue };
        let body = json!({"ticketId": ticket});
        let order = match client
            .send(reqwest::Method::POST, "/api/orders", Some(body))
            .await
        {
            Some((201, order)) => order,
            Some(_) => {
                shared.orders_refused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            None => continue,
        };
        shared.orders_placed.fetch_add(1, Ordering::Relaxed);
        let Some(order_id) = order["id"].as_str().map(str::to_owned) else {
            continue;
        };
        let choice: f64 = rand::rng().random();
        if choice < 0.5 {
            pay(&client, &order_id).await;
        } else if choice < 0.7 {
            let path = format!("/api/orders/{order_id}");
            if let Some((204, _)) = client.send(reqwest::Method::DELETE, &path, None).await {
                shared.cancels.fetch_add(1, Ordering::Relaxed);
            }
        }
        // The rest are left to expire.
    }
}

/// A visitor who looks around without buying, and now and then signs up.
async fn browser(base: String, shared: Arc<Shared>) {
    let client = Client::new(base, shared.clone());
    while !client.stopped() {
        let ticket = {
            let tickets = shared.tickets.lock().unwrap();
            tickets.choose(&mut rand::rng()).cloned()
        };
        let path = match (rand::rng().random_range(0..4), ticket) {
            (0, _) | (_, None) => "/api/tickets".to_owned(),
            (1, Some(ticket)) => format!("/api/tickets/{ticket}"),
            (2, Some(ticket)) => format!("/tickets/{ticket}"),
            _ => "/".to_owned(),
        };
        let _ = client.send(reqwest::Method::GET, &path, None).await;
        if rand::rng().random_ratio(1, 50) {
            Client::new(client.base.clone(), shared.clone())
                .sign_up()
                .await;
        }
        pause(50).await;
    }
}

/// Pays, retrying while the payments service has not yet heard of the order or is down.
async fn pay(client: &Client, order_id: &str) {
    for _ in 0..20 {
        let body = json!({"orderId": order_id, "token": "tok_visa"});
        match client
            .send(reqwest::Method::POST, "/api/payments", Some(body))
            .await
        {
            Some((201, _)) => {
                client.shared.payments.fetch_add(1, Ordering::Relaxed);
                client.shared.paid.lock().unwrap().push(order_id.to_owned());
                return;
            }
            // Not known yet, or down: try again. Anything else (expired, cancelled) is final.
            Some((404, _)) | None => pause(100).await,
            Some(_) => return,
        }
    }
}
