//! The payments domain: what a client may send to pay, when an order may be paid, what a payment
//! and its replica of the order are, and the idempotency keys sent to the processor. Pure rules,
//! no I/O.

use common::FieldError;
use common::clock::{from_millis, millis};
use common::events::{OrderCreated, OrderStatus, PaymentCreated, PaymentFailed, PaymentRequested};
use common::money::Cents;
use common::validate::{FieldErrors, Validate, id_field};

use crate::processor::IntentStatus;
use serde::Deserialize;
use time::OffsetDateTime;
use uuid::Uuid;

/// The longest card token accepted, in characters. Stripe's ids are far shorter.
pub const MAX_TOKEN_CHARS: usize = 255;
/// How long a claim may stay pending before the reconciler takes it up, unless configured
/// otherwise: longer than a charge takes (the Stripe client gives up on a call after 20 seconds),
/// so that the reconciler seldom asks about a charge whose request is still waiting for it. Only
/// promptness depends on it, not correctness: see [`reconcile_step`].
pub const DEFAULT_CLAIM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// How long a refund may stay in flight before the refunder tries it again (with the same
/// idempotency key, so the processor answers with the refund it already made, if it made one).
pub const REFUND_TIMEOUT_MS: i64 = 60_000;

/// A card token as Stripe's clients make them: `tok_…` (a token from Stripe.js or a test token)
/// or the id of a payment method (`pm_…`, also `card_…` and `src_…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentToken(String);

/// How a token is handed to Stripe's PaymentIntents API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// `tok_…`: wrapped as `payment_method_data[card][token]`.
    CardToken,
    /// Anything else: passed as `payment_method`.
    PaymentMethod,
}

impl PaymentToken {
    /// Parses a token as a client sends it (any JSON value, or nothing).
    pub fn from_json(value: Option<&serde_json::Value>) -> Result<Self, String> {
        match value {
            None | Some(serde_json::Value::Null) => Err("Token is required".into()),
            Some(serde_json::Value::String(text)) => Self::parse(text),
            Some(_) => Err("Token must be text".into()),
        }
    }

    /// Parses a token: letters, digits and underscores, as every Stripe id is.
    pub fn parse(text: &str) -> Result<Self, String> {
        let token = text.trim();
        if token.is_empty() {
            Err("Token is required".into())
        } else if token.chars().count() > MAX_TOKEN_CHARS
            || !token.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            Err("Token must be a card token such as tok_visa or pm_card_visa".into())
        } else {
            Ok(Self(token.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn kind(&self) -> TokenKind {
        if self.0.starts_with("tok_") {
            TokenKind::CardToken
        } else {
            TokenKind::PaymentMethod
        }
    }
}

/// A valid request to pay: which order, with which card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPayment {
    pub token: PaymentToken,
    pub order_id: Uuid,
}

/// The body of `POST /api/payments` as received, each field kept as raw JSON so that a wrong
/// type is reported as a field error with the others.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"token": "tok_visa", "orderId": "0193f1c4-2b3c-7d4e-8f5a-6b7c8d9e0f12"}))]
pub struct PaymentBody {
    /// A Stripe card token (`tok_…`) or payment method (`pm_…`); in sandbox mode, Stripe's
    /// public test tokens such as `tok_visa` or `tok_chargeDeclined`.
    #[serde(default)]
    #[schema(value_type = String, required, pattern = "^\\s*[A-Za-z0-9_]{1,255}\\s*$")]
    pub token: Option<serde_json::Value>,
    /// The order to pay: the buyer's, not cancelled, expired or paid.
    #[serde(default, rename = "orderId")]
    #[schema(value_type = Uuid, required)]
    pub order_id: Option<serde_json::Value>,
}

impl Validate for PaymentBody {
    type Valid = NewPayment;

    fn validate(self) -> Result<NewPayment, Vec<FieldError>> {
        let mut errors = FieldErrors::new();
        let token = errors.check("token", PaymentToken::from_json(self.token.as_ref()));
        let order_id = errors.check("orderId", id_field(self.order_id.as_ref(), "Order id"));
        let valid = token
            .zip(order_id)
            .map(|(token, order_id)| NewPayment { token, order_id });
        errors.into_result(valid)
    }
}

/// The payments service's copy of an order, as the orders service announced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: Uuid,
    pub user_id: Uuid,
    pub status: OrderStatus,
    pub price: Cents,
    pub expires_at: OffsetDateTime,
    pub version: i64,
    /// Charges of this order the processor declined: the next attempt is this plus one.
    pub declined_attempts: i64,
}

impl Order {
    /// The order as order:created announces it.
    pub fn from_created(event: &OrderCreated) -> Self {
        Self {
            id: event.id,
            user_id: event.user_id,
            status: event.status,
            price: event.ticket.price,
            // Kept in milliseconds, like every stored time.
            expires_at: from_millis(millis(event.expires_at)),
            version: event.version,
            declined_attempts: 0,
        }
    }

    /// Whether the payment window has passed at `now`, whether or not the cancellation that
    /// follows has arrived yet.
    pub fn has_expired(&self, now: OffsetDateTime) -> bool {
        self.expires_at <= now
    }
}

/// Why an order cannot be paid now. The order of the checks is the API's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NotOwner,
    Cancelled,
    AlreadyPaid,
    /// A charge of the order is under way (a double click, or a charge whose outcome the
    /// reconciler has yet to learn).
    InProgress,
    Expired,
}

/// Decides whether `buyer` may pay for `order` now, given the payment already recorded for it.
pub fn check_payable(
    order: &Order,
    buyer: Uuid,
    existing: Option<&Payment>,
    now: OffsetDateTime,
) -> Result<(), Refusal> {
    if order.user_id != buyer {
        return Err(Refusal::NotOwner);
    }
    match order.status {
        OrderStatus::Cancelled => return Err(Refusal::Cancelled),
        OrderStatus::Complete => return Err(Refusal::AlreadyPaid),
        OrderStatus::Created | OrderStatus::AwaitingPayment => {}
    }
    match existing.map(|payment| payment.status) {
        None => {}
        // Under way: it ends paid, or released so the buyer may try again.
        Some(PaymentStatus::Pending) => return Err(Refusal::InProgress),
        // Paid, or refunded.
        Some(_) => return Err(Refusal::AlreadyPaid),
    }
    if order.has_expired(now) {
        return Err(Refusal::Expired);
    }
    Ok(())
}

/// The `granted_at` of claims left pending by the one-step flow, before intents were recorded
/// (set by the migration that brought them in; the code never writes it). Such a claim without
/// an intent may have charged all the same, so the reconciler asks the processor for the charge
/// made under its idempotency key before it decides.
pub const LEGACY_CLAIM: i64 = 0;

/// What the reconciler does with a claim left pending past its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconcileStep {
    /// Nothing was charged, and nothing can be any more: delete the claim (counting the
    /// attempt), so the buyer may pay again.
    Release,
    /// The intent exists and is not confirmed: cancel it, then decide again on what the
    /// cancellation answers (it may have been confirmed a moment before).
    Cancel,
    /// Charged: settle it as the request would have (paid, or a refund owed if the order was
    /// cancelled meanwhile).
    Settle,
    /// The outcome is not final yet: look again after another timeout.
    Wait,
}

/// Decides on a stale claim from its intent's status. (A claim without an intent is released:
/// a charge is confirmed only after its intent's id is recorded on the claim, and recording it
/// fails once the claim is released, so no request, however slow, charges a released claim.)
pub fn reconcile_step(intent: IntentStatus) -> ReconcileStep {
    match intent {
        IntentStatus::Failed | IntentStatus::Canceled => ReconcileStep::Release,
        IntentStatus::RequiresConfirmation => ReconcileStep::Cancel,
        IntentStatus::Succeeded => ReconcileStep::Settle,
        IntentStatus::Processing => ReconcileStep::Wait,
    }
}

/// Where a payment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentStatus {
    /// Claimed: the card is being charged (or, for an asynchronous method, the charge is
    /// processing and a webhook will settle it).
    Pending,
    /// Charged, and the order was not cancelled when it settled.
    Succeeded,
    /// Charged, but the order is cancelled: the charge must be refunded.
    RefundDue,
    /// A refund call is in flight.
    Refunding,
    /// Refunded.
    Refunded,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::RefundDue => "refund_due",
            Self::Refunding => "refunding",
            Self::Refunded => "refunded",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Succeeded,
            Self::RefundDue,
            Self::Refunding,
            Self::Refunded,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }
}

/// A payment for one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub id: Uuid,
    pub order_id: Uuid,
    pub status: PaymentStatus,
    /// The processor's id of the charge's intent (`pi_…` at Stripe, `ch_sandbox_…` in the
    /// sandbox), recorded before the intent is confirmed.
    pub stripe_id: Option<String>,
    pub amount: Cents,
    pub currency: Currency,
    /// Which attempt at paying the order this is: 1, then one more after each decline.
    pub attempt: i64,
    /// When the orders service granted the order to this payment (unix milliseconds); until
    /// then nothing is charged.
    pub granted_at: Option<i64>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds; a claim or a refund in flight is renewed here.
    pub updated_at: i64,
}

impl Payment {
    /// A new claim on `order`: pending, for the order's price, as its next attempt.
    pub fn claim(order: &Order, currency: &Currency, now_ms: i64) -> Self {
        Self {
            id: Uuid::now_v7(),
            order_id: order.id,
            status: PaymentStatus::Pending,
            stripe_id: None,
            amount: order.price,
            currency: currency.clone(),
            attempt: order.declined_attempts + 1,
            granted_at: None,
            created_at: now_ms,
            updated_at: now_ms,
        }
    }

    /// The Idempotency-Key of the charge. Derived from the order, so that a repeated request
    /// for the same attempt can never charge twice; numbered by attempt, so that a new card
    /// after a decline is not answered with the decline cached under the previous key.
    pub fn charge_key(&self) -> String {
        charge_key(self.order_id, self.attempt)
    }

    /// The Idempotency-Key of this payment's refund: one refund per payment.
    pub fn refund_key(&self) -> String {
        format!("refund-{}", self.id)
    }

    /// Whether this claim comes from the one-step flow and has no intent recorded.
    pub fn is_legacy_claim(&self) -> bool {
        self.granted_at == Some(LEGACY_CLAIM) && self.stripe_id.is_none()
    }

    /// The event asking orders to grant the order to this payment.
    pub fn requested_event(&self) -> PaymentRequested {
        PaymentRequested {
            id: self.id,
            order_id: self.order_id,
            attempt: self.attempt,
        }
    }

    /// The event telling orders this payment ended without a charge.
    pub fn failed_event(&self) -> PaymentFailed {
        PaymentFailed {
            id: self.id,
            order_id: self.order_id,
        }
    }

    /// The event announcing the payment succeeded.
    pub fn created_event(&self, stripe_id: &str) -> PaymentCreated {
        PaymentCreated {
            id: self.id,
            order_id: self.order_id,
            stripe_id: stripe_id.to_owned(),
        }
    }
}

/// The Idempotency-Key of attempt `attempt` at paying `order_id`: `order-<id>-attempt-<n>`.
pub fn charge_key(order_id: Uuid, attempt: i64) -> String {
    format!("order-{order_id}-attempt-{attempt}")
}

/// A three-letter ISO currency code in Stripe's lower case, for currencies with two decimals:
/// amounts are cents, and Stripe counts zero- and three-decimal currencies differently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Currency(String);

/// Currencies Stripe does not count in hundredths (zero- and three-decimal currencies).
const NOT_IN_CENTS: [&str; 21] = [
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
    "xaf", "xof", "xpf", "bhd", "jod", "kwd", "omr", "tnd",
];

impl Currency {
    pub fn parse(text: &str) -> Result<Self, String> {
        let code = text.trim().to_ascii_lowercase();
        if code.len() != 3 || !code.chars().all(|c| c.is_ascii_lowercase()) {
            Err(format!(
                "expected a three-letter ISO code such as usd, not {text:?}"
            ))
        } else if NOT_IN_CENTS.contains(&code.as_str()) {
            Err(format!(
                "{code} is not counted in cents; use a currency with two decimals"
            ))
        } else {
            Ok(Self(code))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Currency {
    fn default() -> Self {
        Self(crate::DEFAULT_CURRENCY.into())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use common::events::OrderTicket;
    use serde_json::json;

    fn body(value: serde_json::Value) -> Result<NewPayment, Vec<FieldError>> {
        serde_json::from_value::<PaymentBody>(value)
            .unwrap()
            .validate()
    }

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().filter_map(|e| e.field.as_deref()).collect()
    }

    fn order(buyer: Uuid, status: OrderStatus, expires_in: time::Duration) -> Order {
        Order::from_created(&OrderCreated {
            id: Uuid::now_v7(),
            version: 0,
            status,
            user_id: buyer,
            expires_at: OffsetDateTime::now_utc() + expires_in,
            ticket: OrderTicket {
                id: Uuid::now_v7(),
                price: Cents::new(1999).unwrap(),
                title: Some("Concert".into()),
            },
            listing: 0,
        })
    }

    #[test]
    fn a_valid_body_becomes_a_token_and_an_order_id() {
        let id = Uuid::now_v7();
        let payment = body(json!({"token": " tok_visa ", "orderId": id.to_string()})).unwrap();
        assert_eq!(payment.token.as_str(), "tok_visa");
        assert_eq!(payment.order_id, id);
    }

    #[test]
    fn every_missing_or_malformed_field_is_reported_at_once() {
        let cases = [
            (json!({}), vec!["token", "orderId"]),
            (
                json!({"token": "", "orderId": ""}),
                vec!["token", "orderId"],
            ),
            (json!({"token": 5, "orderId": 5}), vec!["token", "orderId"]),
            (
                json!({"token": "tok_visa", "orderId": "not-an-id"}),
                vec!["orderId"],
            ),
            (
                json!({"token": "tok visa", "orderId": Uuid::nil().to_string()}),
                vec!["token"],
            ),
            (
                json!({"token": "x".repeat(256), "orderId": Uuid::nil().to_string()}),
                vec!["token"],
            ),
        ];
        for (value, expected) in cases {
            let errors = body(value.clone()).unwrap_err();
            assert_eq!(fields(&errors), expected, "{value}");
        }
    }

    #[test]
    fn tokens_are_sent_to_stripe_by_their_kind() {
        assert_eq!(
            PaymentToken::parse("tok_visa").unwrap().kind(),
            TokenKind::CardToken
        );
        assert_eq!(
            PaymentToken::parse("pm_card_visa").unwrap().kind(),
            TokenKind::PaymentMethod
        );
    }

    #[test]
    fn the_checks_come_in_the_documented_order() {
        let buyer = Uuid::now_v7();
        let now = OffsetDateTime::now_utc();
        let live = order(buyer, OrderStatus::Created, time::Duration::minutes(15));
        assert_eq!(check_payable(&live, buyer, None, now), Ok(()));
        assert_eq!(
            check_payable(&live, Uuid::now_v7(), None, now),
            Err(Refusal::NotOwner)
        );

        // Someone else's cancelled order: not theirs comes first.
        let mut cancelled = order(buyer, OrderStatus::Cancelled, -time::Duration::minutes(1));
        assert_eq!(
            check_payable(&cancelled, Uuid::now_v7(), None, now),
            Err(Refusal::NotOwner)
        );
        assert_eq!(
            check_payable(&cancelled, buyer, None, now),
            Err(Refusal::Cancelled)
        );
        cancelled.status = OrderStatus::Complete;
        assert_eq!(
            check_payable(&cancelled, buyer, None, now),
            Err(Refusal::AlreadyPaid),
            "paid comes before expired"
        );

        let mut paid = Payment::claim(&live, &Currency::default(), millis(now));
        paid.status = PaymentStatus::Succeeded;
        assert_eq!(
            check_payable(&live, buyer, Some(&paid), now),
            Err(Refusal::AlreadyPaid)
        );

        // Expired but not yet cancelled: the cancellation may still be on its way.
        let expired = order(buyer, OrderStatus::Created, -time::Duration::seconds(1));
        assert_eq!(
            check_payable(&expired, buyer, None, now),
            Err(Refusal::Expired)
        );
    }

    #[test]
    fn a_claim_under_way_is_in_progress_and_a_settled_one_is_paid() {
        let buyer = Uuid::now_v7();
        let live = order(buyer, OrderStatus::Created, time::Duration::minutes(15));
        let now = OffsetDateTime::now_utc();
        let mut payment = Payment::claim(&live, &Currency::default(), millis(now));
        assert_eq!(
            check_payable(&live, buyer, Some(&payment), now),
            Err(Refusal::InProgress)
        );
        for settled in [
            PaymentStatus::Succeeded,
            PaymentStatus::RefundDue,
            PaymentStatus::Refunding,
            PaymentStatus::Refunded,
        ] {
            payment.status = settled;
            assert_eq!(
                check_payable(&live, buyer, Some(&payment), now),
                Err(Refusal::AlreadyPaid),
                "{settled:?}"
            );
        }
    }

    #[test]
    fn a_stale_claim_is_settled_only_when_charged_and_released_only_when_it_cannot_be() {
        assert_eq!(reconcile_step(IntentStatus::Failed), ReconcileStep::Release);
        assert_eq!(
            reconcile_step(IntentStatus::Canceled),
            ReconcileStep::Release
        );
        assert_eq!(
            reconcile_step(IntentStatus::RequiresConfirmation),
            ReconcileStep::Cancel,
            "an intent that may still be confirmed is cancelled before anything is released"
        );
        assert_eq!(
            reconcile_step(IntentStatus::Succeeded),
            ReconcileStep::Settle
        );
        assert_eq!(
            reconcile_step(IntentStatus::Processing),
            ReconcileStep::Wait
        );
    }

    #[test]
    fn idempotency_keys_name_the_order_and_the_attempt() {
        let mut live = order(
            Uuid::now_v7(),
            OrderStatus::Created,
            time::Duration::minutes(1),
        );
        let first = Payment::claim(&live, &Currency::default(), 0);
        assert_eq!(first.charge_key(), format!("order-{}-attempt-1", live.id));
        live.declined_attempts = 2;
        let third = Payment::claim(&live, &Currency::default(), 0);
        assert_eq!(third.attempt, 3);
        assert_eq!(third.amount.get(), 1999);
        assert_ne!(first.refund_key(), third.refund_key());
    }

    #[test]
    fn currencies_are_lower_case_codes_counted_in_cents() {
        assert_eq!(Currency::parse("USD").unwrap().as_str(), "usd");
        assert_eq!(Currency::parse(" eur ").unwrap().as_str(), "eur");
        for bad in ["", "us", "dollars", "u$d", "jpy", "KWD"] {
            assert!(Currency::parse(bad).is_err(), "{bad}");
        }
    }
}
