//! Reading one histogram out of a Prometheus text page, and what changed in it between two
//! scrapes.

use serde::Serialize;

/// A Prometheus histogram: cumulative bucket counts by upper bound, with its sum and count.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Histogram {
    /// `(le, cumulative count)`, in increasing `le`, `+Inf` last.
    pub buckets: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: f64,
}

impl Histogram {
    /// The histogram named `name` in a text page, summed over its label sets (and so over the
    /// replicas whose pages were concatenated); `None` if the page does not have it.
    pub(crate) fn parse(page: &str, name: &str) -> Option<Self> {
        let bucket_prefix = format!("{name}_bucket{{");
        let sum_name = format!("{name}_sum");
        let count_name = format!("{name}_count");
        let mut histogram = Self::default();
        let mut seen = false;
        for line in page.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            if let Some(labels) = series.strip_prefix(&bucket_prefix) {
                let Some(le) = label_value(labels, "le").and_then(parse_bound) else {
                    continue;
                };
                seen = true;
                match histogram.buckets.iter_mut().find(|(bound, _)| *bound == le) {
                    Some((_, count)) => *count += value,
                    None => histogram.buckets.push((le, value)),
                }
            } else if series == sum_name || series.starts_with(&format!("{sum_name}{{")) {
                histogram.sum += value;
            } else if series == count_name || series.starts_with(&format!("{count_name}{{")) {
                histogram.count += value;
            }
        }
        histogram.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        seen.then_some(histogram)
    }

    /// What was recorded after `earlier` was scraped.
    pub(crate) fn since(&self, earlier: &Histogram) -> Histogram {
        let before = |le: f64| {
            earlier
                .buckets
                .iter()
                .find(|(bound, _)| *bound == le)
                .map_or(0.0, |(_, count)| *count)
        };
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|&(le, count)| (le, (count - before(le)).max(0.0)))
                .collect(),
            sum: (self.sum - earlier.sum).max(0.0),
            count: (self.count - earlier.count).max(0.0),
        }
    }

    /// The smallest bucket bound under which at least `quantile` of the values fall: a value
    /// the true quantile does not exceed (`+Inf` if it is beyond the last finite bound).
    pub(crate) fn quantile_bound(&self, quantile: f64) -> Option<f64> {
        if self.count <= 0.0 {
            return None;
        }
        let wanted = quantile * self.count;
        self.buckets
            .iter()
            .find(|(_, count)| *count >= wanted)
            .map(|(le, _)| *le)
    }

    pub(crate) fn summary(&self) -> ServerLateness {
        ServerLateness {
            count: self.count,
            mean_s: if self.count > 0.0 {
                self.sum / self.count
            } else {
                0.0
            },
            p50_at_most_s: self.quantile_bound(0.50),
            p90_at_most_s: self.quantile_bound(0.90),
            p99_at_most_s: self.quantile_bound(0.99),
            buckets: self.buckets.clone(),
        }
    }
}

/// The server's own expiry lateness over a scenario, as far as its buckets tell.
#[derive(Debug, Clone, Serialize)]
pub struct ServerLateness {
    pub count: f64,
    pub mean_s: f64,
    /// Upper bounds of the buckets holding each quantile.
    pub p50_at_most_s: Option<f64>,
    pub p90_at_most_s: Option<f64>,
    pub p99_at_most_s: Option<f64>,
    /// `(le, cumulative count)`.
    pub buckets: Vec<(f64, f64)>,
}

fn label_value<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
    let rest = &labels[start..];
    rest.find('"').map(|end| &rest[..end])
}

fn parse_bound(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        other => other.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "\
# TYPE stubs_expiration_lateness_seconds histogram
stubs_expiration_lateness_seconds_bucket{le=\"0.01\"} 90
stubs_expiration_lateness_seconds_bucket{le=\"0.05\"} 98
stubs_expiration_lateness_seconds_bucket{le=\"1\"} 100
stubs_expiration_lateness_seconds_bucket{le=\"+Inf\"} 100
stubs_expiration_lateness_seconds_sum 0.9
stubs_expiration_lateness_seconds_count 100
stubs_http_request_duration_seconds_bucket{route=\"/x\",le=\"0.01\"} 5
";

    #[test]
    fn a_histogram_is_read_from_its_buckets_sum_and_count() {
        let histogram = Histogram::parse(PAGE, "stubs_expiration_lateness_seconds").unwrap();
        assert_eq!(histogram.count, 100.0);
        assert_eq!(histogram.buckets.len(), 4);
        assert_eq!(histogram.quantile_bound(0.5), Some(0.01));
        assert_eq!(histogram.quantile_bound(0.99), Some(1.0));
        assert!(Histogram::parse(PAGE, "stubs_missing_seconds").is_none());
    }

    #[test]
    fn the_difference_between_two_scrapes_is_what_happened_in_between() {
        let after = Histogram::parse(PAGE, "stubs_expiration_lateness_seconds").unwrap();
        let before_page = PAGE
            .replace("} 90", "} 80")
            .replace("_count 100", "_count 90");
        let before = Histogram::parse(&before_page, "stubs_expiration_lateness_seconds").unwrap();
        let delta = after.since(&before);
        assert_eq!(delta.count, 10.0);
        assert_eq!(delta.buckets[0], (0.01, 10.0));
    }
}
