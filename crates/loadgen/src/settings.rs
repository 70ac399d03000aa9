//! What a run does, from the command line.

use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::{Serialize, Serializer};

use crate::invariants::ResaleCap;

/// One load-generator run against a running marketplace.
#[derive(Debug, Clone, Parser, Serialize)]
#[command(
    name = "loadgen",
    version,
    about = "Load generator for a running Stubs marketplace; checks the marketplace's invariants \
             from its API afterwards and exits non-zero if any fails"
)]
pub struct Settings {
    /// Base URL of the marketplace (the process in embedded mode, the ingress in distributed mode).
    #[arg(long, env = "LOADGEN_URL", default_value = "http://127.0.0.1:3000")]
    pub url: String,
    /// Prometheus endpoint(s) of the expiration service, e.g. http://127.0.0.1:3000/metrics;
    /// repeat for several replicas. Adds the server's own expiry lateness to the hold-expiry
    /// figures.
    #[arg(
        long = "metrics-url",
        env = "LOADGEN_METRICS_URL",
        value_delimiter = ','
    )]
    pub metrics_urls: Vec<String>,
    /// Scenarios to run, repeatable; they always run in the order browse, flash-sale, auth,
    /// hold-expiry, search, hoard. `all` is the load: every scenario but search, which lists a
    /// catalogue of its own first, and hoard, which is an attack.
    #[arg(long = "scenario", value_enum, default_value = "all")]
    pub scenarios: Vec<ScenarioChoice>,
    /// Buyers signed up before the scenarios (the flash-sale crowd; they also place the holds).
    #[arg(long, default_value_t = 2000)]
    pub buyers: usize,
    /// Sellers signed up before the scenarios.
    #[arg(long, default_value_t = 10)]
    pub sellers: usize,
    /// Tickets listed for the flash sale (and browsed).
    #[arg(long, default_value_t = 200)]
    pub tickets: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Requests per second of the browse, flash-sale, auth and search scenarios, spaced evenly;
    /// without it they go as fast as the marketplace answers (holds have `--hold-rate`).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Flash sales run one after the other, each over `--tickets` fresh tickets with every
    /// buyer racing again: a longer measurement without signing up more buyers.
    #[arg(long, default_value_t = 1)]
    pub sale_rounds: usize,
    /// Keep starting flash-sale rounds until this long has passed, however many that takes
    /// (`--sale-rounds` is then the least): a soak at the sale's rate.
    #[arg(long, value_parser = parse_duration)]
    #[serde(serialize_with = "optional_seconds")]
    pub sale_for: Option<Duration>,
    /// Flash-sale buyers ask for the best available ticket of the sale's event
    /// (`POST /api/orders {eventId}`) instead of each picking a ticket they have not seen taken.
    #[arg(long)]
    pub best_available: bool,
    /// Share of the flash-sale winners who pay for their ticket.
    #[arg(long, default_value_t = 0.5)]
    pub pay_share: f64,
    /// After the flash sale's payments, a resale round: each winner who paid waits for the
    /// ticket in their wallet and lists it again, one in four first a cent over its
    /// `maxResalePrice` (which must be refused on `price`), then at that most or a little
    /// under; then buyers who paid for nothing order the tickets listed again and pay.
    #[arg(long)]
    pub resell: bool,
    /// The marketplace's `--resale-cap`: the factor of what was last paid for a ticket that its
    /// next sale may cost at most (above 0, at most 100, two decimals; 1 is face value). Checked
    /// against every resale chain the orders show.
    #[arg(long, default_value = "1", value_parser = ResaleCap::parse)]
    pub resale_cap: ResaleCap,
    /// Flash-sale orders whose propagation to the tickets service is timed.
    #[arg(long, default_value_t = 40)]
    pub lag_samples: usize,
    /// How long the browse, the auth and the search scenarios each run.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    #[serde(serialize_with = "seconds")]
    pub duration: Duration,
    /// Tickets listed for the hoarding bot to try to hold.
    #[arg(long, default_value_t = 100)]
    pub hoard_tickets: usize,
    /// Tickets the search scenario lists before it searches, spread over `--search-events`.
    #[arg(long, default_value_t = 10_000)]
    pub search_tickets: usize,
    /// Events the search scenario's tickets are for.
    #[arg(long, default_value_t = 200)]
    pub search_events: usize,
    /// Holds placed by the hold-expiry scenario, each on a fresh ticket.
    #[arg(long, default_value_t = 1000)]
    pub holds: usize,
    /// Holds placed per second; without it, as fast as the marketplace takes them, so that they
    /// fall due within as short a span as it allows.
    #[arg(long)]
    pub hold_rate: Option<f64>,
    /// Holds whose cancellation is watched closely to time its lateness.
    #[arg(long, default_value_t = 200)]
    pub hold_sample: usize,
    /// Send an `Idempotency-Key` on every write, not only on the payments retried under one:
    /// what a client that keys all its writes costs the marketplace.
    #[arg(long)]
    pub key_every_write: bool,
    /// Timeout of every request.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    #[serde(serialize_with = "seconds")]
    pub request_timeout: Duration,
    /// How long the invariant check waits for events to settle before it gives its verdict.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    #[serde(serialize_with = "seconds")]
    pub settle_timeout: Duration,
    /// How long after the last hold falls due every hold must be seen cancelled.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    #[serde(serialize_with = "seconds")]
    pub expiry_timeout: Duration,
    /// Longest a flash sale may run before it is called off.
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    #[serde(serialize_with = "seconds")]
    pub sale_timeout: Duration,
    /// Threads of the load generator's own runtime.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Print the report as one JSON document on stdout (the table then goes to stderr).
    #[arg(long)]
    #[serde(skip)]
    pub json: bool,
}

/// A scenario named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScenarioChoice {
    All,
    Browse,
    FlashSale,
    Auth,
    HoldExpiry,
    Search,
    Hoard,
}

/// The scenarios a run executes, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Browse,
    FlashSale,
    Auth,
    HoldExpiry,
    Search,
    Hoard,
}

impl Settings {
    /// The selected scenarios in running order: browse first, while the sale's tickets are
    /// still for sale; hold expiry after the sale's unpaid orders had time to lapse; the hoarding
    /// bot last, so that its holds weigh on none of the measurements.
    pub fn planned(&self) -> Vec<Scenario> {
        let all = self.scenarios.contains(&ScenarioChoice::All);
        [
            (ScenarioChoice::Browse, Scenario::Browse),
            (ScenarioChoice::FlashSale, Scenario::FlashSale),
            (ScenarioChoice::Auth, Scenario::Auth),
            (ScenarioChoice::HoldExpiry, Scenario::HoldExpiry),
            (ScenarioChoice::Search, Scenario::Search),
            (ScenarioChoice::Hoard, Scenario::Hoard),
        ]
        .into_iter()
        .filter(|(choice, scenario)| {
            let in_all = !matches!(scenario, Scenario::Search | Scenario::Hoard);
            (all && in_all) || self.scenarios.contains(choice)
        })
        .map(|(_, scenario)| scenario)
        .collect()
    }

    /// Settings that cannot work together, said in one line.
    pub fn validate(&self) -> Result<(), String> {
        let planned = self.planned();
        if self.concurrency == 0 {
            return Err("--concurrency must be at least 1".into());
        }
        if self
            .rate
            .is_some_and(|rate| !(rate > 0.0 && rate.is_finite()))
        {
            return Err("--rate must be a positive number".into());
        }
        if !(0.0..=1.0).contains(&self.pay_share) {
            return Err("--pay-share must be between 0 and 1".into());
        }
        let needs_cast = planned.iter().any(|s| *s != Scenario::Auth);
        if needs_cast && (self.buyers == 0 || self.sellers == 0) {
            return Err("--buyers and --sellers must be at least 1".into());
        }
        if planned.contains(&Scenario::FlashSale) && self.buyers <= self.tickets {
            return Err("the flash sale needs more --buyers than --tickets".into());
        }
        if self.resell && !planned.contains(&Scenario::FlashSale) {
            return Err(
                "--resell resells the flash sale's tickets: run the flash-sale scenario".into(),
            );
        }
        if planned.contains(&Scenario::Hoard) && self.hoard_tickets == 0 {
            return Err("hoarding needs at least one ticket (--hoard-tickets)".into());
        }
        if planned.contains(&Scenario::Search)
            && (self.search_tickets == 0 || self.search_events == 0)
        {
            return Err("searching needs --search-tickets and --search-events".into());
        }
        if planned.contains(&Scenario::Browse) && self.tickets == 0 {
            return Err("browsing needs at least one ticket (--tickets)".into());
        }
        Ok(())
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|err| format!("{err} (try 10s or 2m)"))
}

fn seconds<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

fn optional_seconds<S: Serializer>(
    duration: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match duration {
        Some(duration) => seconds(duration, serializer),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_run_in_a_fixed_order_whatever_order_they_are_named_in() {
        let settings = Settings::parse_from([
            "loadgen",
            "--scenario",
            "hold-expiry",
            "--scenario",
            "flash-sale",
        ]);
        assert_eq!(
            settings.planned(),
            [Scenario::FlashSale, Scenario::HoldExpiry]
        );
        let all = Settings::parse_from(["loadgen"]);
        assert_eq!(all.planned().len(), 4);
        assert!(!all.planned().contains(&Scenario::Hoard));
        assert!(!all.planned().contains(&Scenario::Search));
        let attack = Settings::parse_from(["loadgen", "--scenario", "all", "--scenario", "hoard"]);
        assert_eq!(attack.planned().last(), Some(&Scenario::Hoard));
    }

    #[test]
    fn a_flash_sale_with_fewer_buyers_than_tickets_is_refused() {
        let settings = Settings::parse_from([
            "loadgen",
            "--scenario",
            "flash-sale",
            "--buyers",
            "10",
            "--tickets",
            "10",
        ]);
        assert!(settings.validate().is_err());
    }

    #[test]
    fn resale_is_off_at_face_value_unless_asked_for() {
        let plain = Settings::parse_from(["loadgen"]);
        assert!(!plain.resell);
        assert_eq!(plain.resale_cap, ResaleCap::default());

        let resell = Settings::parse_from(["loadgen", "--resell", "--resale-cap", "1.25"]);
        assert!(resell.resell);
        assert_eq!(resell.resale_cap, ResaleCap::parse("1.25").unwrap());
        assert!(resell.validate().is_ok());

        assert!(Settings::try_parse_from(["loadgen", "--resale-cap", "1.255"]).is_err());
        let without_sale =
            Settings::parse_from(["loadgen", "--resell", "--scenario", "hold-expiry"]);
        assert!(without_sale.validate().is_err());
    }
}
