//! The payments service under test: started on a fresh database and a fresh embedded bus, served
//! on a random port, with people who sign in, ways to play the orders service on the bus, a
//! signer of Stripe webhooks, and read-only looks at what the service and its sandbox recorded.

use std::ops::Deref;
use std::time::Duration;

use common::arrivals::{ArrivalSettings, Arrivals};
use common::clock::now_millis;
use common::events::{
    Envelope, OrderCancelled, OrderCompleted, OrderCreated, OrderStatus, OrderTicket, OrderUpdated,
    PaymentRequested, TicketRef,
};
use common::listener::ListenerSettings;
use common::money::Cents;
use hmac::{Hmac, KeyInit, Mac};
use payments::domain::{PaymentToken, charge_key};
use payments::processor::{ChargeRequest, PaymentProcessor, Prepared};
use payments::{Settings, StripeSettings};
use secrecy::SecretString;
use sha2::Sha256;
use sqlx::Row;
use testkit::{Backend, Client, Reply, TestService, json};
use time::OffsetDateTime;
use uuid::Uuid;

/// The webhook signing secret the test services are configured with.
pub(crate) const WEBHOOK_SECRET: &str = "whsec_stubs_test_secret";
/// A key localstripe accepts (any `sk_…`).
pub(crate) const STRIPE_TEST_KEY: &str = "sk_test_stubs";

/// One running payments service and everything it stands on.
pub(crate) struct TestApp(TestService);

/// The sandbox processor, with a webhook secret.
pub(crate) fn sandbox_settings() -> Settings {
    Settings {
        webhook_secret: Some(SecretString::from(WEBHOOK_SECRET)),
        ..Settings::default()
    }
}

/// Stripe at `STUBS_TEST_STRIPE_API_BASE` (localstripe), with a webhook secret.
pub(crate) fn stripe_settings() -> Settings {
    Settings {
        stripe: Some(StripeSettings {
            secret_key: SecretString::from(STRIPE_TEST_KEY),
            api_base: stripe_api_base(),
        }),
        ..sandbox_settings()
    }
}

/// The Stripe-compatible server the Stripe tests run against, read at run time.
pub(crate) fn stripe_api_base() -> String {
    std::env::var("STUBS_TEST_STRIPE_API_BASE")
        .expect("STUBS_TEST_STRIPE_API_BASE must be set for the Stripe tests")
}

pub(crate) async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, sandbox_settings()).await
}

pub(crate) async fn spawn_app_with(backend: Backend, settings: Settings) -> TestApp {
    let app = spawn(backend, settings, testkit::quick_listeners().max_deliver).await;
    app.grant_payments().await;
    app
}

/// A service on a bus where nobody plays orders: a payment waits for a grant until the test
/// gives it (or a cancellation makes it impossible), however long that takes.
pub(crate) async fn spawn_app_ungranted(backend: Backend) -> TestApp {
    let settings = sandbox_settings();
    TestApp(
        TestService::start_awaiting_arrivals(
            payments::NAME,
            backend,
            &payments::MIGRATIONS,
            |ctx| payments::start(ctx, &settings),
        )
        .await,
    )
}

/// A service on a bus where nobody plays orders, whose requests wait `wait` for a grant.
pub(crate) async fn spawn_app_waiting(backend: Backend, wait: Duration) -> TestApp {
    let settings = sandbox_settings();
    TestApp(
        TestService::start_shaped(
            payments::NAME,
            backend,
            &payments::MIGRATIONS,
            |ctx| {
                ctx.arrivals = Arrivals::new(
                    payments::NAME,
                    ArrivalSettings {
                        wait,
                        ..ArrivalSettings::default()
                    },
                )
            },
            |ctx| payments::start(ctx, &settings),
        )
        .await,
    )
}

/// A service whose listeners retry an event for a few seconds before dead-lettering it, for
/// tests that watch an event wait for the one it depends on.
pub(crate) async fn spawn_app_patient(backend: Backend) -> TestApp {
    let app = spawn(backend, sandbox_settings(), 50).await;
    app.grant_payments().await;
    app
}

/// A service whose requests for an order it has not heard of wait until a listener announces
/// it, however long that takes.
pub(crate) async fn spawn_app_awaiting(backend: Backend) -> TestApp {
    let app = spawn_app_ungranted(backend).await;
    app.grant_payments().await;
    app
}

async fn spawn(backend: Backend, settings: Settings, max_deliver: u32) -> TestApp {
    settings.validate().unwrap();
    let listeners = ListenerSettings {
        max_deliver,
        ..testkit::quick_listeners()
    };
    TestApp(
        TestService::start_with(
            payments::NAME,
            backend,
            &payments::MIGRATIONS,
            listeners,
            |ctx| payments::start(ctx, &settings),
        )
        .await,
    )
}

impl Deref for TestApp {
    type Target = TestService;
    fn deref(&self) -> &TestService {
        &self.0
    }
}

/// How far a request got before it died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// It claimed the order.
    Claimed,
    /// It also created the charge's intent and recorded it on the claim.
    Prepared,
    /// It also confirmed the intent: the money moved.
    Confirmed,
}

/// A payment row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PaymentRow {
    pub id: String,
    pub status: String,
    pub stripe_id: Option<String>,
    pub amount_cents: i64,
    pub attempt: i64,
}

/// A charge in the sandbox's books.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SandboxChargeRow {
    pub id: String,
    pub idempotency_key: String,
    pub amount_cents: i64,
    pub currency: String,
    pub refund_id: Option<String>,
}

/// A recorded refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RefundRow {
    pub stripe_refund_id: String,
    pub amount_cents: i64,
    pub reason: String,
}

impl TestApp {
    /// Plays the orders service's side of paying, until the service shuts down: every
    /// payment:requested for an order the replica holds as live is granted (order:updated,
    /// awaiting:payment, at the replica's next version), as orders grants a live order.
    pub(crate) async fn grant_payments(&self) {
        let mut requests = self.watch::<PaymentRequested>().await;
        let bus = self.bus.bus.clone();
        let store = self.ctx.store.clone();
        let shutdown = self.ctx.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let request = tokio::select! {
                    request = requests.next_within(Duration::from_secs(3600)) => request,
                    () = shutdown.cancelled() => return,
                };
                let Some(request) = request else { continue };
                let order_id = request.data.order_id;
                let Ok(Some(row)) = sqlx::query("SELECT status, version FROM orders WHERE id = $1")
                    .bind(order_id.to_string())
                    .fetch_optional(store.pool())
                    .await
                else {
                    continue;
                };
                let status: String = row.get("status");
                if status == "created" || status == "awaiting:payment" {
                    let version: i64 = row.get("version");
                    let grant = Envelope::new(OrderUpdated {
                        id: order_id,
                        version: version + 1,
                        status: OrderStatus::AwaitingPayment,
                        payment_id: Some(request.data.id),
                        ticket: TicketRef { id: Uuid::nil() },
                    });
                    if testkit::publish_on(bus.as_ref(), &grant).await.is_err() {
                        return;
                    }
                }
            }
        });
    }

    /// `POST /api/payments` as `payer`.
    pub(crate) async fn pay(&self, payer: &Client, order_id: Uuid, token: &str) -> Reply {
        payer
            .post(
                "/api/payments",
                json!({"token": token, "orderId": order_id.to_string()}),
            )
            .await
    }

    /// Places an order for `buyer` at `cents`, payable for 15 minutes, as the orders service
    /// would, and waits until the service knows it.
    pub(crate) async fn place_order(&self, buyer: Uuid, cents: i64) -> Uuid {
        self.place_order_expiring(
            buyer,
            cents,
            OffsetDateTime::now_utc() + time::Duration::minutes(15),
        )
        .await
    }

    /// Places an order with the given expiry and waits until the service knows it.
    pub(crate) async fn place_order_expiring(
        &self,
        buyer: Uuid,
        cents: i64,
        expires_at: OffsetDateTime,
    ) -> Uuid {
        let order_id = Uuid::now_v7();
        let event = self
            .publish(&order_created(order_id, buyer, cents, expires_at))
            .await;
        self.handled(event).await;
        order_id
    }

    /// Cancels an order as the orders service would (at `version`), without waiting.
    pub(crate) async fn cancel_order(&self, order_id: Uuid, version: i64) -> Uuid {
        self.publish(&Envelope::new(OrderCancelled {
            id: order_id,
            version,
            ticket: TicketRef { id: Uuid::nil() },
        }))
        .await
    }

    /// Grants an order to a payment as the orders service would (at `version`), without
    /// waiting.
    pub(crate) async fn grant(&self, order_id: Uuid, payment_id: Uuid, version: i64) -> Uuid {
        self.publish(&Envelope::new(OrderUpdated {
            id: order_id,
            version,
            status: OrderStatus::AwaitingPayment,
            payment_id: Some(payment_id),
            ticket: TicketRef { id: Uuid::nil() },
        }))
        .await
    }

    /// Completes an order as the orders service would (at `version`), without waiting.
    pub(crate) async fn complete_order(&self, order_id: Uuid, version: i64) -> Uuid {
        self.publish(&Envelope::new(OrderCompleted {
            id: order_id,
            version,
            ticket: TicketRef { id: Uuid::nil() },
            user_id: Some(Uuid::now_v7()),
        }))
        .await
    }

    /// The status and version the replica holds for an order.
    pub(crate) async fn replica(&self, order_id: Uuid) -> Option<(String, i64)> {
        sqlx::query("SELECT status, version FROM orders WHERE id = $1")
            .bind(order_id.to_string())
            .fetch_optional(self.ctx.store.pool())
            .await
            .unwrap()
            .map(|row| (row.get("status"), row.get("version")))
    }

    /// The payments recorded for an order.
    pub(crate) async fn payments_of(&self, order_id: Uuid) -> Vec<PaymentRow> {
        sqlx::query(
            "SELECT id, status, stripe_id, amount_cents, attempt FROM payments \
             WHERE order_id = $1",
        )
        .bind(order_id.to_string())
        .fetch_all(self.ctx.store.pool())
        .await
        .unwrap()
        .iter()
        .map(|row| PaymentRow {
            id: row.get("id"),
            status: row.get("status"),
            stripe_id: row.get("stripe_id"),
            amount_cents: row.get("amount_cents"),
            attempt: row.get("attempt"),
        })
        .collect()
    }

    /// The one payment of an order (asserting there is exactly one).
    pub(crate) async fn payment_of(&self, order_id: Uuid) -> PaymentRow {
        let mut payments = self.payments_of(order_id).await;
        assert_eq!(payments.len(), 1, "{payments:?}");
        payments.remove(0)
    }

    /// The charges the sandbox made for an order: its intents that went through.
    pub(crate) async fn sandbox_charges_of(&self, order_id: Uuid) -> Vec<SandboxChargeRow> {
        sqlx::query(
            "SELECT id, idempotency_key, amount_cents, currency, refund_id FROM sandbox_charges \
             WHERE order_id = $1 AND status = 'succeeded' ORDER BY created_at",
        )
        .bind(order_id.to_string())
        .fetch_all(self.ctx.store.pool())
        .await
        .unwrap()
        .iter()
        .map(|row| SandboxChargeRow {
            id: row.get("id"),
            idempotency_key: row.get("idempotency_key"),
            amount_cents: row.get("amount_cents"),
            currency: row.get("currency"),
            refund_id: row.get("refund_id"),
        })
        .collect()
    }

    /// The refunds recorded for a payment.
    pub(crate) async fn refunds_of(&self, payment_id: &str) -> Vec<RefundRow> {
        sqlx::query(
            "SELECT stripe_refund_id, amount_cents, reason FROM refunds WHERE payment_id = $1",
        )
        .bind(payment_id)
        .fetch_all(self.ctx.store.pool())
        .await
        .unwrap()
        .iter()
        .map(|row| RefundRow {
            stripe_refund_id: row.get("stripe_refund_id"),
            amount_cents: row.get("amount_cents"),
            reason: row.get("reason"),
        })
        .collect()
    }

    /// Waits until the payment of an order has the given status, and returns it.
    pub(crate) async fn payment_with_status(&self, order_id: Uuid, status: &str) -> PaymentRow {
        testkit::eventually(
            &format!("the payment of {order_id} to be {status}"),
            || async {
                self.payments_of(order_id)
                    .await
                    .into_iter()
                    .find(|payment| payment.status == status)
            },
        )
        .await
    }

    /// Leaves a pending claim (attempt 1), granted by orders, as a request that died after the
    /// grant would have, last renewed `age_ms` ago. Returns its id.
    pub(crate) async fn insert_claim(&self, order_id: Uuid, cents: i64, age_ms: i64) -> Uuid {
        let id = Uuid::now_v7();
        let at = now_millis() - age_ms;
        sqlx::query(
            "INSERT INTO payments (id, order_id, status, stripe_id, amount_cents, currency, \
             attempt, granted_at, created_at, updated_at) \
             VALUES ($1, $2, 'pending', NULL, $3, 'usd', 1, $4, $4, $4)",
        )
        .bind(id.to_string())
        .bind(order_id.to_string())
        .bind(cents)
        .bind(at)
        .execute(self.ctx.store.writer())
        .await
        .unwrap();
        id
    }

    /// Leaves a pending claim as the one-step flow left one whose request died after charging
    /// (or before): no intent recorded, marked by the upgrade. Returns its id.
    pub(crate) async fn insert_legacy_claim(&self, order_id: Uuid, cents: i64) -> Uuid {
        let id = self.insert_claim(order_id, cents, 120_000).await;
        sqlx::query("UPDATE payments SET granted_at = $2 WHERE id = $1")
            .bind(id.to_string())
            .bind(payments::domain::LEGACY_CLAIM)
            .execute(self.ctx.store.writer())
            .await
            .unwrap();
        id
    }

    /// Notes the processor's id of its intent on a pending claim, as a request does before it
    /// confirms the intent.
    pub(crate) async fn mark_processing(&self, payment_id: Uuid, stripe_id: &str) {
        sqlx::query("UPDATE payments SET stripe_id = $2 WHERE id = $1 AND status = 'pending'")
            .bind(payment_id.to_string())
            .bind(stripe_id)
            .execute(self.ctx.store.writer())
            .await
            .unwrap();
    }

    /// Leaves what a request that died at `stage` leaves behind: a pending claim (attempt 1) for
    /// `cents`, then the intent `processor` made for it under the request's idempotency key,
    /// then that intent confirmed with `token`. Returns the claim's id and the intent's.
    pub(crate) async fn crash_while_paying(
        &self,
        processor: &dyn PaymentProcessor,
        order_id: Uuid,
        cents: i64,
        token: &str,
        stage: Stage,
    ) -> (Uuid, Option<String>) {
        let payment_id = self.insert_claim(order_id, cents, 0).await;
        if stage == Stage::Claimed {
            return (payment_id, None);
        }
        let request = ChargeRequest {
            amount: Cents::new(cents).unwrap(),
            currency: payments::domain::Currency::default(),
            token: PaymentToken::parse(token).unwrap(),
            idempotency_key: charge_key(order_id, 1),
            order_id,
            payment_id,
        };
        let Prepared::Intent { id: intent } = processor.prepare(&request).await.unwrap() else {
            panic!("{token} is not a card the processor knows");
        };
        self.mark_processing(payment_id, &intent).await;
        if stage == Stage::Confirmed {
            processor.confirm(&intent).await.unwrap();
        }
        (payment_id, Some(intent))
    }

    /// Leaves a charge in the sandbox's books as if it had been made under `key`. Returns its id.
    pub(crate) async fn insert_sandbox_charge(
        &self,
        order_id: Uuid,
        key: &str,
        cents: i64,
    ) -> String {
        let id = format!("ch_sandbox_{}", Uuid::now_v7().simple());
        sqlx::query(
            "INSERT INTO sandbox_charges (id, idempotency_key, amount_cents, currency, token, \
             order_id, created_at) VALUES ($1, $2, $3, 'usd', 'tok_visa', $4, $5)",
        )
        .bind(&id)
        .bind(key)
        .bind(cents)
        .bind(order_id.to_string())
        .bind(now_millis())
        .execute(self.ctx.store.writer())
        .await
        .unwrap();
        id
    }

    /// How many webhook events the service has recorded as processed.
    pub(crate) async fn webhook_events(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM webhook_events")
            .fetch_one(self.ctx.store.pool())
            .await
            .unwrap()
    }

    /// Posts a webhook body with the given `Stripe-Signature` header (none when `None`).
    pub(crate) async fn send_webhook(&self, body: &str, signature: Option<&str>) -> Reply {
        let client = self.anonymous();
        let mut request = client
            .http
            .post(format!("{}/api/payments/webhook", client.base))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(signature) = signature {
            request = request.header("stripe-signature", signature);
        }
        client.send(request).await
    }
}

/// An order:created as the orders service announces it.
pub(crate) fn order_created(
    order_id: Uuid,
    buyer: Uuid,
    cents: i64,
    expires_at: OffsetDateTime,
) -> Envelope<OrderCreated> {
    Envelope::new(OrderCreated {
        id: order_id,
        version: 0,
        status: OrderStatus::Created,
        user_id: buyer,
        expires_at,
        ticket: OrderTicket {
            id: Uuid::now_v7(),
            price: Cents::new(cents).unwrap(),
            title: Some("Concert".into()),
        },
        listing: 0,
    })
}

/// A `Stripe-Signature` header for `body` signed at `timestamp` with `secret`, computed here
/// the way Stripe documents it, independently of the service's own check.
pub(crate) fn stripe_signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{body}").as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("t={timestamp},v1={hex}")
}

/// A signature for `body` made now with the test secret.
pub(crate) fn signed_now(body: &str) -> String {
    stripe_signature(
        WEBHOOK_SECRET,
        OffsetDateTime::now_utc().unix_timestamp(),
        body,
    )
}

/// The id a `201` answered.
pub(crate) fn id_of(reply: &Reply) -> String {
    reply.body["id"].as_str().unwrap().to_owned()
}
