//! A small client of Stripe's API: a PaymentIntent created, then confirmed, to charge; looked up
//! or cancelled to reconcile; a refund of it. Every POST carries an `Idempotency-Key`. Only the
//! fields Stripe's answer is used for are typed.
//!
//! How Stripe's answers map: a 402 or a `card_error` is a decline with Stripe's message (written
//! for the buyer); a token Stripe does not know is refused as an invalid token; no answer, a
//! timeout, a 409 (the same key in flight), a 429 or a 5xx leave the outcome unknown
//! ([`ProcessorError::Unavailable`]), to be learnt from the intent by the reconciler; anything
//! else (a bad key, a request Stripe will not take) is [`ProcessorError::Refused`].
//! The secret key never reaches a log: it is a `SecretString` and goes out as a sensitive header.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::{
    ChargeOutcome, ChargeRequest, IntentStatus, PaymentProcessor, Prepared, ProcessorError,
    RefundReceipt, RefundRequest,
};
use crate::domain::TokenKind;
use crate::{SettingsError, StripeSettings};

/// How long to wait for Stripe to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for a whole answer. A charge still running in Stripe when this passes is
/// learnt from its webhook, or by the reconciler from its intent.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Stripe's API, or a server that speaks it (localstripe in tests).
#[derive(Debug, Clone)]
pub struct StripeClient {
    http: reqwest::Client,
    api_base: String,
    secret_key: SecretString,
}

/// Stripe's error object: `{"error": {"type", "code", "message", "param"}}`.
#[derive(Debug, Default, Deserialize)]
struct StripeError {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    param: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ErrorEnvelope {
    error: StripeError,
}

#[derive(Debug, Deserialize)]
struct PaymentIntent {
    id: String,
    status: String,
    #[serde(default)]
    last_payment_error: Option<StripeError>,
}

#[derive(Debug, Deserialize)]
struct Refund {
    id: String,
    #[serde(default)]
    status: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RefundList {
    data: Vec<Refund>,
}

/// Why a call to Stripe did not give the object asked for.
#[derive(Debug)]
enum CallError {
    /// No answer: connection refused, reset, timed out.
    Transport(reqwest::Error),
    /// Stripe answered with an error.
    Api {
        status: StatusCode,
        error: StripeError,
    },
    /// A success whose body could not be read: Stripe did something, we do not know what.
    Unreadable(anyhow::Error),
}

impl CallError {
    /// For outcomes that are neither a decline nor an unknown token.
    fn into_processor_error(self, what: &str) -> ProcessorError {
        match self {
            Self::Transport(err) => {
                ProcessorError::Unavailable(anyhow::Error::new(err).context(what.to_owned()))
            }
            Self::Unreadable(err) => ProcessorError::Unavailable(err.context(what.to_owned())),
            Self::Api { status, error } => {
                let described = anyhow::anyhow!(
                    "{what}: Stripe answered {status} ({} {}): {}",
                    error.kind.as_deref().unwrap_or("-"),
                    error.code.as_deref().unwrap_or("-"),
                    error.message.as_deref().unwrap_or("-"),
                );
                if status == StatusCode::CONFLICT
                    || status == StatusCode::TOO_MANY_REQUESTS
                    || status.is_server_error()
                {
                    ProcessorError::Unavailable(described)
                } else {
                    ProcessorError::Refused(described)
                }
            }
        }
    }
}

impl StripeClient {
    /// A client for the configured API base, refusing a key or base that cannot work.
    pub fn new(settings: &StripeSettings) -> Result<Self, SettingsError> {
        let key = settings.secret_key.expose_secret();
        if !(key.starts_with("sk_") || key.starts_with("rk_")) || key.trim() != key {
            return Err(SettingsError::StripeSecretKey);
        }
        let api_base = settings.api_base.trim().trim_end_matches('/').to_owned();
        match reqwest::Url::parse(&api_base) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {}
            _ => return Err(SettingsError::StripeApiBase(settings.api_base.clone())),
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(SettingsError::HttpClient)?;
        Ok(Self {
            http,
            api_base,
            secret_key: settings.secret_key.clone(),
        })
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        form: &[(&str, String)],
        idempotency_key: Option<&str>,
    ) -> Result<T, CallError> {
        let mut request = self
            .http
            .post(format!("{}{path}", self.api_base))
            .form(form);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        self.send(request).await
    }

    /// An intent as Stripe holds it now.
    async fn intent(&self, intent_id: &str) -> Result<PaymentIntent, ProcessorError> {
        self.get(&intent_path(intent_id, "")?, &[])
            .await
            .map_err(|err| err.into_processor_error("looking up a payment intent"))
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, CallError> {
        let mut url = reqwest::Url::parse(&format!("{}{path}", self.api_base))
            .map_err(|err| CallError::Unreadable(anyhow::Error::new(err).context("bad URL")))?;
        url.query_pairs_mut().extend_pairs(query);
        self.send(self.http.get(url)).await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, CallError> {
        let response = request
            .bearer_auth(self.secret_key.expose_secret())
            .send()
            .await
            .map_err(CallError::Transport)?;
        let status = response.status();
        let body = response.bytes().await.map_err(CallError::Transport)?;
        if status.is_success() {
            serde_json::from_slice(&body).map_err(|err| {
                CallError::Unreadable(anyhow::Error::new(err).context("unreadable Stripe answer"))
            })
        } else {
            let error = serde_json::from_slice::<ErrorEnvelope>(&body)
                .map(|envelope| envelope.error)
                .unwrap_or_default();
            Err(CallError::Api { status, error })
        }
    }

    /// The refund already made for a payment intent (Stripe answers `charge_already_refunded`
    /// to a second refund made under another key, or after a refund from the dashboard).
    async fn existing_refund(&self, payment_intent: &str) -> Result<RefundReceipt, ProcessorError> {
        let list: RefundList = self
            .get(
                "/v1/refunds",
                &[("payment_intent", payment_intent), ("limit", "1")],
            )
            .await
            .map_err(|err| err.into_processor_error("listing refunds"))?;
        list.data
            .into_iter()
            .next()
            .map(|refund| RefundReceipt { id: refund.id })
            .ok_or_else(|| {
                ProcessorError::Refused(anyhow::anyhow!(
                    "{payment_intent} is refunded, yet Stripe lists no refund"
                ))
            })
    }
}

/// The form of an unconfirmed PaymentIntent for a charge.
fn payment_intent_form(request: &ChargeRequest) -> Vec<(&'static str, String)> {
    let mut form = vec![
        ("amount", request.amount.get().to_string()),
        ("currency", request.currency.as_str().to_owned()),
        ("payment_method_types[]", "card".to_owned()),
        ("metadata[orderId]", request.order_id.to_string()),
        ("metadata[paymentId]", request.payment_id.to_string()),
    ];
    match request.token.kind() {
        // A card token (Stripe.js, or a test token such as tok_visa) becomes a payment method
        // inside the same request.
        TokenKind::CardToken => {
            form.push(("payment_method_data[type]", "card".to_owned()));
            form.push((
                "payment_method_data[card][token]",
                request.token.as_str().to_owned(),
            ));
        }
        TokenKind::PaymentMethod => {
            form.push(("payment_method", request.token.as_str().to_owned()));
        }
    }
    form
}

const DECLINED: &str = "Your card was declined.";

/// `/v1/payment_intents/{id}{action}`, for an id that is one of Stripe's (letters, digits and
/// underscores), so that it cannot reach another path.
fn intent_path(intent_id: &str, action: &str) -> Result<String, ProcessorError> {
    if intent_id.starts_with("pi_")
        && intent_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        Ok(format!("/v1/payment_intents/{intent_id}{action}"))
    } else {
        Err(ProcessorError::Refused(anyhow::anyhow!(
            "{intent_id:?} is not a payment intent id"
        )))
    }
}

/// Where an intent is, in the reconciler's terms.
fn intent_status(intent: &PaymentIntent) -> Result<IntentStatus, ProcessorError> {
    match intent.status.as_str() {
        // An intent waiting for 3-D Secure waits for a browser this API never sends: like one
        // never confirmed, it is cancelled.
        "requires_confirmation" | "requires_action" => Ok(IntentStatus::RequiresConfirmation),
        // Charges are captured at once; a capture still due is money on its way.
        "processing" | "requires_capture" => Ok(IntentStatus::Processing),
        "succeeded" => Ok(IntentStatus::Succeeded),
        "requires_payment_method" => Ok(IntentStatus::Failed),
        "canceled" => Ok(IntentStatus::Canceled),
        other => Err(ProcessorError::Refused(anyhow::anyhow!(
            "payment intent {} is {other}",
            intent.id
        ))),
    }
}

#[async_trait]
impl PaymentProcessor for StripeClient {
    fn name(&self) -> &'static str {
        "stripe"
    }

    async fn prepare(&self, request: &ChargeRequest) -> Result<Prepared, ProcessorError> {
        let answer = self
            .post::<PaymentIntent>(
                "/v1/payment_intents",
                &payment_intent_form(request),
                Some(&request.idempotency_key),
            )
            .await;
        match answer {
            Ok(intent) => Ok(Prepared::Intent { id: intent.id }),
            // An unknown payment method: Stripe says resource_missing on a payment_method
            // parameter; localstripe answers 404.
            Err(CallError::Api { status, error })
                if status == StatusCode::NOT_FOUND
                    || error.code.as_deref() == Some("resource_missing")
                    || error
                        .param
                        .as_deref()
                        .is_some_and(|param| param.starts_with("payment_method")) =>
            {
                tracing::info!(
                    code = error.code.as_deref().unwrap_or("-"),
                    message = error.message.as_deref().unwrap_or("-"),
                    "Stripe does not know the card token"
                );
                Ok(Prepared::InvalidToken {
                    message: "Token is not a card the payment processor knows".to_owned(),
                })
            }
            Err(err) => Err(err.into_processor_error("creating a payment intent")),
        }
    }

    async fn confirm(&self, intent_id: &str) -> Result<ChargeOutcome, ProcessorError> {
        let answer = self
            .post::<PaymentIntent>(
                &intent_path(intent_id, "/confirm")?,
                &[],
                Some(&format!("confirm-{intent_id}")),
            )
            .await;
        match answer {
            Ok(intent) => match intent.status.as_str() {
                "succeeded" => Ok(ChargeOutcome::Succeeded),
                "processing" => Ok(ChargeOutcome::Processing),
                "requires_payment_method" => Ok(ChargeOutcome::Declined {
                    message: intent
                        .last_payment_error
                        .and_then(|error| error.message)
                        .unwrap_or_else(|| DECLINED.to_owned()),
                }),
                // 3-D Secure needs the buyer's browser; this API takes a token and charges it.
                // Nothing is charged until it is authenticated, and it never will be.
                "requires_action" => Ok(ChargeOutcome::Declined {
                    message: "This card requires authentication, which is not supported here. \
                              Please use another card."
                        .to_owned(),
                }),
                other => Err(ProcessorError::Refused(anyhow::anyhow!(
                    "payment intent {} is {other} after confirmation",
                    intent.id
                ))),
            },
            Err(CallError::Api { status, error })
                if status == StatusCode::PAYMENT_REQUIRED
                    || error.kind.as_deref() == Some("card_error") =>
            {
                Ok(ChargeOutcome::Declined {
                    message: error.message.unwrap_or_else(|| DECLINED.to_owned()),
                })
            }
            // Stripe will not confirm an intent in the state it is in: cancelled by the
            // reconciler, most likely, or confirmed already. Its state tells which.
            Err(CallError::Api { status, .. }) if status == StatusCode::BAD_REQUEST => {
                match intent_status(&self.intent(intent_id).await?)? {
                    IntentStatus::Canceled => Ok(ChargeOutcome::Canceled),
                    IntentStatus::Succeeded => Ok(ChargeOutcome::Succeeded),
                    IntentStatus::Processing => Ok(ChargeOutcome::Processing),
                    IntentStatus::Failed => Ok(ChargeOutcome::Declined {
                        message: DECLINED.to_owned(),
                    }),
                    IntentStatus::RequiresConfirmation => Err(ProcessorError::Refused(
                        anyhow::anyhow!("Stripe refused to confirm payment intent {intent_id}"),
                    )),
                }
            }
            Err(err) => Err(err.into_processor_error("confirming a payment intent")),
        }
    }

    async fn look_up(&self, intent_id: &str) -> Result<IntentStatus, ProcessorError> {
        intent_status(&self.intent(intent_id).await?)
    }

    async fn cancel(&self, intent_id: &str) -> Result<IntentStatus, ProcessorError> {
        let answer = self
            // No key: cancelling twice is harmless, and Stripe would answer a repeated key with
            // the first answer for a day, even a failure.
            .post::<PaymentIntent>(&intent_path(intent_id, "/cancel")?, &[], None)
            .await;
        match answer {
            Ok(intent) => intent_status(&intent),
            // Past cancelling: confirmed meanwhile. Its state says how that ended.
            Err(CallError::Api { status, .. }) if status == StatusCode::BAD_REQUEST => {
                self.look_up(intent_id).await
            }
            Err(err) => Err(err.into_processor_error("cancelling a payment intent")),
        }
    }

    // Stripe finds no object by the key it was made under; a claim from before intents were
    // recorded is left for an operator, who finds its charge by `metadata[paymentId]`.
    async fn find_by_key(&self, idempotency_key: &str) -> Result<Option<String>, ProcessorError> {
        Err(ProcessorError::Refused(anyhow::anyhow!(
            "Stripe cannot be asked for the intent made under {idempotency_key}; \
             settle that payment by hand"
        )))
    }

    async fn refund(&self, request: &RefundRequest) -> Result<RefundReceipt, ProcessorError> {
        let form = [
            ("payment_intent", request.stripe_id.clone()),
            ("amount", request.amount.get().to_string()),
            ("metadata[paymentId]", request.payment_id.to_string()),
        ];
        match self
            .post::<Refund>("/v1/refunds", &form, Some(&request.idempotency_key))
            .await
        {
            Ok(refund) if matches!(refund.status.as_deref(), Some("failed" | "canceled")) => {
                Err(ProcessorError::Refused(anyhow::anyhow!(
                    "refund {} of {} is {}",
                    refund.id,
                    request.stripe_id,
                    refund.status.as_deref().unwrap_or("-")
                )))
            }
            Ok(refund) => Ok(RefundReceipt { id: refund.id }),
            Err(CallError::Api { error, .. })
                if error.code.as_deref() == Some("charge_already_refunded") =>
            {
                self.existing_refund(&request.stripe_id).await
            }
            Err(err) => Err(err.into_processor_error("refunding a payment intent")),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::domain::PaymentToken;
    use common::money::Cents;
    use uuid::Uuid;

    fn request(token: &str) -> ChargeRequest {
        ChargeRequest {
            amount: Cents::new(1999).unwrap(),
            currency: crate::domain::Currency::default(),
            token: PaymentToken::parse(token).unwrap(),
            idempotency_key: "order-x-attempt-1".into(),
            order_id: Uuid::nil(),
            payment_id: Uuid::nil(),
        }
    }

    fn value<'a>(form: &'a [(&str, String)], key: &str) -> Option<&'a str> {
        form.iter()
            .find(|(name, _)| *name == key)
            .map(|(_, value)| value.as_str())
    }

    #[test]
    fn a_payment_method_is_sent_as_payment_method() {
        let form = payment_intent_form(&request("pm_card_visa"));
        assert_eq!(value(&form, "payment_method"), Some("pm_card_visa"));
        assert_eq!(value(&form, "payment_method_data[card][token]"), None);
        assert_eq!(value(&form, "amount"), Some("1999"));
        assert_eq!(value(&form, "currency"), Some("usd"));
        assert_eq!(value(&form, "confirm"), None, "confirmed in a second call");
        assert_eq!(value(&form, "payment_method_types[]"), Some("card"));
        assert_eq!(
            value(&form, "metadata[orderId]"),
            Some(Uuid::nil().to_string().as_str())
        );
    }

    #[test]
    fn a_card_token_is_wrapped_in_payment_method_data() {
        let form = payment_intent_form(&request("tok_visa"));
        assert_eq!(value(&form, "payment_method"), None);
        assert_eq!(value(&form, "payment_method_data[type]"), Some("card"));
        assert_eq!(
            value(&form, "payment_method_data[card][token]"),
            Some("tok_visa")
        );
    }

    fn settings(key: &str, base: &str) -> StripeSettings {
        StripeSettings {
            secret_key: SecretString::from(key),
            api_base: base.into(),
        }
    }

    #[test]
    fn a_key_or_base_that_cannot_work_is_refused_at_start() {
        assert!(StripeClient::new(&settings("sk_test_1", "https://api.stripe.com")).is_ok());
        assert!(StripeClient::new(&settings("rk_live_1", "http://127.0.0.1:8420/")).is_ok());
        assert!(matches!(
            StripeClient::new(&settings("pk_test_1", "https://api.stripe.com")),
            Err(SettingsError::StripeSecretKey)
        ));
        assert!(matches!(
            StripeClient::new(&settings("", "https://api.stripe.com")),
            Err(SettingsError::StripeSecretKey)
        ));
        for base in ["", "api.stripe.com", "ftp://api.stripe.com", "http://"] {
            assert!(
                matches!(
                    StripeClient::new(&settings("sk_test_1", base)),
                    Err(SettingsError::StripeApiBase(_))
                ),
                "{base:?}"
            );
        }
    }
}
