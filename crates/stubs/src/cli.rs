//! The command line. Every flag also reads `STUBS_<FLAG>` from the environment.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use common::config::{LogFormat, parse_duration};
use secrecy::SecretString;

#[derive(Debug, Parser)]
#[command(
    name = "stubs",
    version,
    about = "Stubs, an open ticket marketplace",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Without a subcommand, `stubs` runs `stubs up` with these settings.
    #[command(flatten)]
    pub up: UpArgs,
}

impl Cli {
    /// The command to run: `up` when none is named.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::Up(self.up))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole marketplace in one process on SQLite files (the default).
    Up(UpArgs),
    /// Run one service, on PostgreSQL and NATS JetStream.
    Serve(ServeArgs),
    /// Print the API's OpenAPI 3.1 document, as `/api/openapi.json` serves it.
    Openapi,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "STUBS_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
    /// Folder for the databases, the bus log and the generated JWT secret.
    #[arg(long, env = "STUBS_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub shared: SharedArgs,
}

pub use crate::services::Service;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The service to run.
    #[arg(value_enum)]
    pub service: Service,
    #[arg(long, env = "STUBS_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// The service's own database, e.g. postgres://user:pass@host/tickets (not needed by web).
    #[arg(long, env = "STUBS_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Connections this process keeps to its database at most. Every replica has its own pool:
    /// PostgreSQL's max_connections must cover replicas times this.
    #[arg(long, env = "STUBS_DATABASE_MAX_CONNECTIONS", default_value_t = common::store::Store::DEFAULT_POSTGRES_CONNECTIONS)]
    pub database_max_connections: u32,
    /// Where `web` reaches the public API, e.g. http://ingress (web only).
    #[arg(long, env = "STUBS_API_URL")]
    pub api_url: Option<String>,
    /// NATS with JetStream, e.g. nats://nats:4222 (not needed by web).
    #[arg(long, env = "STUBS_NATS_URL")]
    pub nats_url: Option<String>,
    /// Names the stream and prefixes the subjects, so deployments can share one NATS server.
    #[arg(long, env = "STUBS_NATS_PREFIX", default_value = "stubs")]
    pub nats_prefix: String,
    #[command(flatten)]
    pub shared: SharedArgs,
}

/// Settings every mode shares.
#[derive(Debug, Args)]
pub struct SharedArgs {
    /// Key that signs session tokens (at least 32 characters). Required by `serve`; `up`
    /// generates one and keeps it in the data folder.
    #[arg(long, env = "STUBS_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<SecretString>,
    /// How long a session lasts.
    #[arg(long, env = "STUBS_SESSION_LIFETIME", default_value = "8h", value_parser = parse_duration)]
    pub session_lifetime: Duration,
    /// Mark the session cookie Secure (HTTPS only). Defaults to false for `up`, which serves
    /// plain HTTP on this machine, and true for `serve`, which runs behind a TLS ingress.
    #[arg(long, env = "STUBS_COOKIE_SECURE")]
    pub cookie_secure: Option<bool>,
    /// Sign-in and sign-up attempts allowed per client address per minute; 0 turns it off.
    #[arg(long, env = "STUBS_AUTH_ATTEMPTS_PER_MINUTE", default_value_t = 30)]
    pub auth_attempts_per_minute: u32,
    /// Count sign-in attempts by the client address the ingress appends to X-Forwarded-For
    /// rather than by the peer. Turn on only behind an ingress that sets the header.
    #[arg(long, env = "STUBS_TRUST_FORWARDED_FOR")]
    pub trust_forwarded_for: bool,
    /// Connections the process serves at once (health probes included); past it new ones wait in
    /// the kernel's queue. A client that does not read its answer for 30s loses its connection.
    #[arg(long, env = "STUBS_MAX_CONNECTIONS", default_value_t = common::http::DEFAULT_MAX_CONNECTIONS, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_connections: u16,
    /// How long an event may stay unacknowledged (its consumer crashed, say) before the bus
    /// delivers it again. Longer than any handler takes.
    #[arg(long, env = "STUBS_EVENT_ACK_WAIT", default_value = "30s", value_parser = parse_duration)]
    pub event_ack_wait: Duration,
    /// How long each service remembers the events it applied (and expiration the orders it saw
    /// end), to recognise an event that comes again. At least the redelivery span: 10
    /// deliveries of up to the ack wait plus a 10s retry delay each.
    #[arg(long, env = "STUBS_INBOX_RETENTION", default_value = "15m", value_parser = parse_duration)]
    pub inbox_retention: Duration,
    /// A fault to rehearse recovery with, in a test or staging deployment: abort the process
    /// after this consumer's batch (by durable name, e.g. tickets_order_created) committed its
    /// effects and before its ack, so that the bus delivers it again.
    #[arg(long, env = "STUBS_CRASH_BEFORE_ACK")]
    pub crash_before_ack: Option<String>,
    /// How long a buyer has to pay before the ticket is released again.
    #[arg(long, env = "STUBS_ORDER_EXPIRATION", default_value = "15m", value_parser = parse_duration)]
    pub order_expiration: Duration,
    /// Live holds one buyer may have at once (orders not yet paid, cancelled or lapsed); 0 turns the cap off.
    #[arg(long, env = "STUBS_MAX_HOLDS_PER_BUYER", default_value_t = orders::domain::HoldLimits::default().max_live)]
    pub max_holds_per_buyer: u32,
    /// How long a buyer who cancelled an order, or let it lapse, waits before holding that ticket
    /// again; 0s turns it off.
    #[arg(long, env = "STUBS_HOLD_COOLDOWN", default_value = "5m", value_parser = parse_duration)]
    pub hold_cooldown: Duration,
    /// Orders one buyer may place in an hour; 0 turns the limit off.
    #[arg(long, env = "STUBS_MAX_ORDERS_PER_BUYER_PER_HOUR", default_value_t = orders::domain::HoldLimits::default().max_per_hour)]
    pub max_orders_per_buyer_per_hour: u32,
    /// The marketplace's fee on each sale, in percent of its price (at most two decimals),
    /// kept from what the seller is owed.
    #[arg(long, env = "STUBS_SELLER_FEE_PERCENT", default_value = "0", value_parser = tickets::sales::SellerFee::parse_percent)]
    pub seller_fee_percent: tickets::sales::SellerFee,
    /// How far above what was last paid for a ticket its owner may list it again: a factor of
    /// that price (1: face value), at most two decimals.
    #[arg(long, env = "STUBS_RESALE_CAP", default_value = "1", value_parser = tickets::sales::ResaleCap::parse_factor)]
    pub resale_cap: tickets::sales::ResaleCap,
    /// Stripe secret key. Without one, payments run in sandbox mode: Stripe's public test tokens
    /// (tok_visa succeeds, tok_chargeDeclined is declined) and nothing leaves the machine.
    #[arg(long, env = "STUBS_STRIPE_SECRET_KEY", hide_env_values = true)]
    pub stripe_secret_key: Option<SecretString>,
    /// Where Stripe's API is (a Stripe-compatible server for testing).
    #[arg(long, env = "STUBS_STRIPE_API_BASE", default_value = payments::DEFAULT_STRIPE_API_BASE)]
    pub stripe_api_base: String,
    /// Signing secret of the Stripe webhook endpoint; without it the endpoint answers 404.
    #[arg(long, env = "STUBS_STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
    pub stripe_webhook_secret: Option<SecretString>,
    /// Stripe publishable key for the payment form (Stripe Elements). Without one the form is in
    /// test mode and takes Stripe's public test card numbers.
    #[arg(long, env = "STUBS_STRIPE_PUBLISHABLE_KEY")]
    pub stripe_publishable_key: Option<String>,
    /// How long a payment may stay unsettled (its request crashed, or lost the processor or the
    /// database) before it is settled or released by asking the processor what became of it.
    #[arg(long, env = "STUBS_PAYMENT_CLAIM_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub payment_claim_timeout: Duration,
    /// Currency every order is charged in (ISO code, two decimals).
    #[arg(long, env = "STUBS_CURRENCY", default_value = payments::DEFAULT_CURRENCY, value_parser = payments::domain::Currency::parse)]
    pub currency: payments::domain::Currency,
    /// Log lines as text or JSON.
    #[arg(long, env = "STUBS_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// OpenTelemetry collector to send traces to over OTLP/HTTP, e.g. http://otel-collector:4318.
    /// Without one, no span leaves the process.
    #[arg(long, env = "STUBS_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

impl SharedArgs {
    pub fn auth_settings(&self) -> auth::Settings {
        auth::Settings {
            attempts_per_minute: NonZeroU32::new(self.auth_attempts_per_minute),
            trust_forwarded_for: self.trust_forwarded_for,
        }
    }

    pub fn http_settings(&self) -> common::http::HttpSettings {
        common::http::HttpSettings {
            max_connections: usize::from(self.max_connections),
            ..Default::default()
        }
    }

    pub fn listener_settings(&self) -> common::listener::ListenerSettings {
        common::listener::ListenerSettings {
            ack_wait: self.event_ack_wait,
            retention: self.inbox_retention,
            crash_before_ack: self.crash_before_ack.clone(),
            ..Default::default()
        }
    }

    pub fn orders_settings(&self) -> orders::Settings {
        orders::Settings {
            order_expiration: self.order_expiration,
            hold_limits: orders::domain::HoldLimits {
                max_live: self.max_holds_per_buyer,
                cooldown: self.hold_cooldown,
                max_per_hour: self.max_orders_per_buyer_per_hour,
            },
        }
    }

    pub fn tickets_settings(&self) -> tickets::Settings {
        tickets::Settings {
            seller_fee: self.seller_fee_percent,
            resale_cap: self.resale_cap,
        }
    }

    pub fn web_settings(&self) -> web::WebSettings {
        web::WebSettings {
            stripe_publishable_key: self.stripe_publishable_key.clone(),
            currency: self.currency.as_str().to_owned(),
        }
    }

    pub fn payments_settings(&self) -> payments::Settings {
        payments::Settings {
            stripe: self
                .stripe_secret_key
                .clone()
                .map(|secret_key| payments::StripeSettings {
                    secret_key,
                    api_base: self.stripe_api_base.clone(),
                }),
            currency: self.currency.clone(),
            webhook_secret: self.stripe_webhook_secret.clone(),
            claim_timeout: self.payment_claim_timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
