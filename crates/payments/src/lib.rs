//! The payments service. It owns payments (one per order, at most), their refunds, a replica of
//! the orders it may be asked to charge, the ids of the Stripe webhook events it has processed,
//! and, in sandbox mode, the sandbox processor's books.
//!
//! A buyer pays for their order with a card token; the service claims the order in its database,
//! so a double click charges once, and charges the card only once the orders service has granted
//! it the order; it announces a successful payment as payment:created through its transactional
//! outbox; it refunds any charge whose order was cancelled all the same; and its reconciler
//! settles or releases every claim a crash left pending. Money moves through Stripe when a secret
//! key is configured, and through a local sandbox that accepts Stripe's test tokens otherwise.
//!
//! [`start`] spawns the outbox relay, the reconciler and refunder and the listeners and returns
//! the HTTP routes;
//! the caller wraps them in the HTTP stack (`common::http::serve_stack`), alone or merged with
//! other services' routes.

mod checkout;
pub mod domain;
mod listeners;
pub mod processor;
mod reconciler;
mod refunds;
mod routes;
pub use routes::openapi;
mod store;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use common::events::{OrderCancelled, OrderCompleted, OrderCreated, OrderUpdated};
use common::listener;
use common::store::{Migration, Migrations};
use common::{ServiceContext, Store};
use secrecy::{ExposeSecret, SecretString};

use crate::domain::Currency;
use crate::processor::PaymentProcessor;

/// The service's name, which also names its consumer groups.
pub const NAME: &str = "payments";
/// Stripe's API.
pub const DEFAULT_STRIPE_API_BASE: &str = "https://api.stripe.com";
/// The currency charged unless configured otherwise.
pub const DEFAULT_CURRENCY: &str = "usd";

/// The service's own tables: the order replica, payments, refunds, webhook events and the
/// sandbox's charges.
pub const PAYMENTS_MIGRATIONS: Migrations = Migrations {
    sqlite: &[
        Migration {
            version: 100,
            name: "payments",
            sql: include_str!("../migrations/sqlite/0100_payments.sql"),
        },
        Migration {
            version: 101,
            name: "grants and intents",
            sql: include_str!("../migrations/sqlite/0101_grants_and_intents.sql"),
        },
    ],
    postgres: &[
        Migration {
            version: 100,
            name: "payments",
            sql: include_str!("../migrations/postgres/0100_payments.sql"),
        },
        Migration {
            version: 101,
            name: "grants and intents",
            sql: include_str!("../migrations/postgres/0101_grants_and_intents.sql"),
        },
    ],
};

/// Every migration a payments database needs: the platform outbox and inbox, then its own.
pub const MIGRATIONS: [&Migrations; 2] = [&common::outbox::MIGRATIONS, &PAYMENTS_MIGRATIONS];

/// How the service takes money.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Stripe, when a secret key is configured; the sandbox otherwise.
    pub stripe: Option<StripeSettings>,
    /// The currency every order is charged in (`usd` by default).
    pub currency: Currency,
    /// The signing secret of Stripe's webhook endpoint. Without it the webhook endpoint
    /// answers 404: an event that cannot be verified is never acted on.
    pub webhook_secret: Option<SecretString>,
    /// How long a claim may stay pending before the reconciler settles or releases it.
    pub claim_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            stripe: None,
            currency: Currency::default(),
            webhook_secret: None,
            claim_timeout: domain::DEFAULT_CLAIM_TIMEOUT,
        }
    }
}

/// Where Stripe is and the key to it.
#[derive(Debug, Clone)]
pub struct StripeSettings {
    /// A secret (`sk_…`) or restricted (`rk_…`) key.
    pub secret_key: SecretString,
    /// `https://api.stripe.com` unless a Stripe-compatible server is used instead.
    pub api_base: String,
}

impl StripeSettings {
    /// Stripe itself, with this key.
    pub fn new(secret_key: SecretString) -> Self {
        Self {
            secret_key,
            api_base: DEFAULT_STRIPE_API_BASE.to_owned(),
        }
    }
}

/// A setting the service cannot work with. Each message names the setting by its `stubs` flag.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("--stripe-secret-key: expected a Stripe secret key (sk_… or rk_…)")]
    StripeSecretKey,
    #[error("--stripe-api-base: expected an http(s) URL, not {0:?}")]
    StripeApiBase(String),
    #[error("--stripe-api-base: cannot build an HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    #[error("--stripe-webhook-secret: must not be empty")]
    WebhookSecret,
    #[error("--payment-claim-timeout: must be longer than zero")]
    ClaimTimeout,
}

impl Settings {
    /// Checks every setting, so that a program can refuse to start with one clear line instead
    /// of failing at the first payment. [`start`] assumes this passed.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if let Some(stripe) = &self.stripe {
            processor::stripe::StripeClient::new(stripe)?;
        }
        if self
            .webhook_secret
            .as_ref()
            .is_some_and(|secret| secret.expose_secret().trim().is_empty())
        {
            return Err(SettingsError::WebhookSecret);
        }
        if self.claim_timeout.is_zero() {
            return Err(SettingsError::ClaimTimeout);
        }
        Ok(())
    }

    fn processor(
        &self,
        store: &Store,
    ) -> Result<(Arc<dyn PaymentProcessor>, Currency), SettingsError> {
        self.validate()?;
        Ok((
            processor::from_settings(self, store)?,
            self.currency.clone(),
        ))
    }
}

/// Starts the service's background work (the outbox relay, the relay of other replicas'
/// arrivals, the reconciler and refunder, and the listeners of order:created, order:updated,
/// order:cancelled and order:completed, and the record of revoked sessions, all stopping on
/// `ctx.shutdown`) and returns its routes with their state applied, without the HTTP stack.
pub fn start(ctx: &ServiceContext, settings: &Settings) -> Router {
    ctx.spawn_relay();
    ctx.spawn_revocation_listeners();
    ctx.spawn_arrival_relay();
    ctx.spawn_retention(&[]);
    let (processor, currency) = settings.processor(&ctx.store).unwrap_or_else(|err| {
        // `Settings::validate` exists to stop this at start; should it be skipped, payments are
        // refused (500) rather than the process panicking.
        tracing::error!(error = %err, "payments are misconfigured; every payment will fail");
        let unconfigured: Arc<dyn PaymentProcessor> = Arc::new(processor::Unconfigured {
            reason: err.to_string(),
        });
        (unconfigured, Currency::default())
    });
    tracing::info!(
        processor = processor.name(),
        currency = currency.as_str(),
        webhook = settings.webhook_secret.is_some(),
        "payments ready"
    );

    let refunds = refunds::Refunds::new(ctx.store.clone(), processor.clone());
    let reconciler = reconciler::Reconciler::new(
        ctx,
        processor.clone(),
        refunds.clone(),
        settings.claim_timeout,
    );
    ctx.tasks.spawn(reconciler.run(ctx.shutdown.clone()));

    let dialect = ctx.store.dialect();
    listener::spawn::<OrderCreated, _>(ctx, listeners::RecordOrder);
    listener::spawn::<OrderUpdated, _>(ctx, listeners::UpdateOrder { dialect });
    listener::spawn::<OrderCancelled, _>(ctx, listeners::CancelOrder { dialect });
    listener::spawn::<OrderCompleted, _>(ctx, listeners::CompleteOrder { dialect });

    let checkout = checkout::Checkout::new(ctx, processor, refunds.clone(), currency);
    let webhooks = webhook::Webhooks::new(ctx, refunds, settings.webhook_secret.clone());
    routes::router(routes::AppState::new(ctx, checkout, webhooks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_timeout_of_zero_is_refused_at_start() {
        assert!(Settings::default().validate().is_ok());
        let zero = Settings {
            claim_timeout: Duration::ZERO,
            ..Settings::default()
        };
        assert!(matches!(zero.validate(), Err(SettingsError::ClaimTimeout)));
    }
}
