//! The run's report: a table for people, one JSON document for scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Serialize, Serializer};

use crate::invariants::InvariantResult;
use crate::prometheus::ServerLateness;
use crate::settings::Settings;
use crate::stats::{OperationSummary, Quantiles};

/// Everything a run measured and concluded.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub settings: Settings,
    /// When the run started, RFC 3339 UTC.
    pub started_at: String,
    /// Sign-ups and listings before the scenarios (also a sign-up rate).
    pub setup: Option<ScenarioReport>,
    pub scenarios: Vec<ScenarioReport>,
    pub invariants: Vec<InvariantResult>,
    /// Every invariant held.
    pub passed: bool,
}

impl Report {
    pub fn scenario(&self, name: &str) -> Option<&ScenarioReport> {
        self.scenarios.iter().find(|s| s.name == name)
    }
}

/// What one scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub name: &'static str,
    pub title: &'static str,
    pub elapsed_s: f64,
    pub operations: Vec<OperationSummary>,
    /// Sampled times in milliseconds (propagation lag, expiry lateness).
    #[serde(serialize_with = "named")]
    pub distributions: Vec<(&'static str, Quantiles)>,
    /// Single numbers, keyed by a name that carries the unit (`_per_s`, `_ms`, `_s`).
    #[serde(serialize_with = "named")]
    pub figures: Vec<(&'static str, f64)>,
    /// The server's own expiry-lateness histogram over the scenario, when scraped.
    pub server_lateness: Option<ServerLateness>,
    pub notes: Vec<String>,
}

impl ScenarioReport {
    pub fn new(name: &'static str, title: &'static str) -> Self {
        Self {
            name,
            title,
            elapsed_s: 0.0,
            operations: Vec::new(),
            distributions: Vec::new(),
            figures: Vec::new(),
            server_lateness: None,
            notes: Vec::new(),
        }
    }

    pub fn figure(&self, key: &str) -> Option<f64> {
        self.figures
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }

    pub fn operation(&self, name: &str) -> Option<&OperationSummary> {
        self.operations.iter().find(|o| o.operation == name)
    }

    pub fn distribution(&self, name: &str) -> Option<&Quantiles> {
        self.distributions
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, q)| q)
    }
}

fn named<S: Serializer, T: Serialize>(
    entries: &[(&'static str, T)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let map: BTreeMap<&str, &T> = entries.iter().map(|(k, v)| (*k, v)).collect();
    map.serialize(serializer)
}

/// The report as a table.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    for scenario in report.setup.iter().chain(&report.scenarios) {
        render_scenario(&mut out, scenario);
    }
    out.push_str(&render_invariants(report));
    out
}

/// The invariants' verdicts as a table.
pub fn render_invariants(report: &Report) -> String {
    let mut out = String::new();
    if !report.invariants.is_empty() {
        let _ = writeln!(out, "== invariants ==");
        for verdict in &report.invariants {
            let mark = if verdict.passed { "PASS" } else { "FAIL" };
            let _ = writeln!(
                out,
                "{mark}  {} ({} checked{})",
                verdict.name,
                verdict.checked,
                if verdict.passed {
                    String::new()
                } else {
                    format!(", {} violations", verdict.violation_count)
                }
            );
            for violation in &verdict.violations {
                let _ = writeln!(out, "        {violation}");
            }
        }
        let verdict = if report.passed {
            "all invariants hold"
        } else {
            "INVARIANTS VIOLATED"
        };
        let _ = writeln!(out, "{verdict}");
    }
    out
}

/// One scenario as a table.
pub fn render_scenario_text(scenario: &ScenarioReport) -> String {
    let mut out = String::new();
    render_scenario(&mut out, scenario);
    out
}

fn render_scenario(out: &mut String, scenario: &ScenarioReport) {
    let _ = writeln!(
        out,
        "== {} ({:.1} s) ==",
        scenario.title, scenario.elapsed_s
    );
    if !scenario.operations.is_empty() {
        let _ = writeln!(
            out,
            "{:<28} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8}  statuses",
            "operation", "count", "rate/s", "p50 ms", "p90 ms", "p99 ms", "max ms"
        );
        for op in &scenario.operations {
            let statuses: Vec<String> = op
                .statuses
                .iter()
                .map(|(status, count)| format!("{status}:{count}"))
                .collect();
            let _ = writeln!(
                out,
                "{:<28} {:>8} {:>9.1} {:>8.2} {:>8.2} {:>8.2} {:>8.1}  {}",
                op.operation,
                op.count,
                op.rate_per_s,
                op.latency_ms.p50,
                op.latency_ms.p90,
                op.latency_ms.p99,
                op.latency_ms.max,
                statuses.join(" ")
            );
        }
    }
    if !scenario.distributions.is_empty() {
        let _ = writeln!(
            out,
            "{:<28} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8}",
            "sampled (ms)", "count", "mean", "p50", "p90", "p99", "max"
        );
        for (name, q) in &scenario.distributions {
            let _ = writeln!(
                out,
                "{:<28} {:>8} {:>9.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
                name, q.count, q.mean, q.p50, q.p90, q.p99, q.max
            );
        }
    }
    if let Some(server) = &scenario.server_lateness {
        let bound = |q: Option<f64>| q.map_or("-".to_owned(), |s| format!("<= {s} s"));
        let _ = writeln!(
            out,
            "server expiry lateness: {} expiries, mean {:.3} s, p50 {}, p90 {}, p99 {}",
            server.count,
            server.mean_s,
            bound(server.p50_at_most_s),
            bound(server.p90_at_most_s),
            bound(server.p99_at_most_s)
        );
    }
    for (key, value) in &scenario.figures {
        let _ = writeln!(out, "  {key:<40} {}", format_number(*value));
    }
    for note in &scenario.notes {
        let _ = writeln!(out, "  note: {note}");
    }
    let _ = writeln!(out);
}

fn format_number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::invariants::{Observations, TicketSeen, check};

    fn report_with(observed: &Observations) -> Report {
        let mut sale = ScenarioReport::new("flash_sale", "flash sale");
        sale.figures = vec![("reserve_attempts_per_s", 2000.0)];
        let invariants = check(observed);
        Report {
            settings: Settings::parse_from(["loadgen"]),
            started_at: String::new(),
            setup: None,
            scenarios: vec![sale],
            passed: invariants.iter().all(|v| v.passed),
            invariants,
        }
    }

    #[test]
    fn a_broken_invariant_is_shown_with_its_violations() {
        let observed = Observations {
            tickets: vec![TicketSeen {
                id: "t1".into(),
                order_id: Some("o-unknown".into()),
                user_id: "s1".into(),
                seller_id: "s1".into(),
            }],
            ..Observations::default()
        };

        let table = render(&report_with(&observed));

        assert!(table.contains("FAIL  reserved tickets"), "{table}");
        assert!(table.contains("o-unknown"), "{table}");
        assert!(table.contains("INVARIANTS VIOLATED"), "{table}");
    }

    #[test]
    fn figures_are_keyed_by_name_in_the_json_document() {
        let document = serde_json::to_value(report_with(&Observations::default())).unwrap();

        assert_eq!(
            document["scenarios"][0]["figures"]["reserve_attempts_per_s"],
            2000.0
        );
        assert_eq!(document["passed"], true);
        assert_eq!(document["settings"]["concurrency"], 64);
    }
}
