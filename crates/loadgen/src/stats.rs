//! Counting what happened: per-operation latency histograms and answers by status, sampled
//! distributions (propagation lag, expiry lateness), and the pacer behind `--rate`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::client::Call;

/// Highest latency the histograms hold exactly, in microseconds; longer ones count as this.
const HIGHEST_MICROS: u64 = 3_600_000_000;

#[allow(
    clippy::expect_used,
    reason = "the bounds are constants, checked by every run of the tests"
)]
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_MICROS, 3)
        .expect("constant bounds within hdrhistogram's limits")
}

/// One kind of request in a scenario (say `POST /api/orders`): how long each took and what
/// each answered.
#[derive(Debug)]
pub(crate) struct Operation {
    name: String,
    expected: Vec<u16>,
    inner: Mutex<Recorded>,
}

#[derive(Debug)]
struct Recorded {
    latency: Histogram<u64>,
    statuses: BTreeMap<String, u64>,
    first_start: Option<Instant>,
    last_end: Option<Instant>,
}

impl Operation {
    /// An operation whose answers with these statuses are not errors.
    pub(crate) fn new(name: impl Into<String>, expected: &[u16]) -> Self {
        Self {
            name: name.into(),
            expected: expected.to_vec(),
            inner: Mutex::new(Recorded {
                latency: new_histogram(),
                statuses: BTreeMap::new(),
                first_start: None,
                last_end: None,
            }),
        }
    }

    /// Records a call, timed from when it was sent.
    pub(crate) fn record(&self, call: &Call) {
        self.record_since(call.started, call);
    }

    /// Records a call timed from `scheduled`: under a rate limit, the moment it was due to be
    /// sent, so that a request held back by earlier slow ones counts its wait as latency
    /// instead of hiding it (coordinated omission).
    pub(crate) fn record_since(&self, scheduled: Instant, call: &Call) {
        let start = scheduled.min(call.started);
        let micros = micros(call.finished.saturating_duration_since(start));
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        inner.latency.saturating_record(micros.max(1));
        *inner.statuses.entry(call.label()).or_default() += 1;
        inner.first_start = Some(inner.first_start.map_or(start, |first| first.min(start)));
        inner.last_end = Some(
            inner
                .last_end
                .map_or(call.finished, |last| last.max(call.finished)),
        );
    }

    /// Calls recorded so far.
    pub(crate) fn count(&self) -> u64 {
        self.inner.lock().map_or(0, |inner| inner.latency.len())
    }

    /// Calls so far that did not answer one of the expected statuses.
    pub(crate) fn errors(&self) -> u64 {
        self.inner
            .lock()
            .map_or(0, |inner| errors(&inner.statuses, &self.expected))
    }

    pub(crate) fn summary(&self) -> OperationSummary {
        let Ok(inner) = self.inner.lock() else {
            return OperationSummary::empty(&self.name);
        };
        let elapsed = match (inner.first_start, inner.last_end) {
            (Some(first), Some(last)) => last.saturating_duration_since(first),
            _ => Duration::ZERO,
        };
        let count = inner.latency.len();
        OperationSummary {
            operation: self.name.clone(),
            count,
            errors: errors(&inner.statuses, &self.expected),
            elapsed_s: elapsed.as_secs_f64(),
            rate_per_s: per_second(count, elapsed),
            latency_ms: Quantiles::of(&inner.latency, 1000.0),
            statuses: inner.statuses.clone(),
        }
    }
}

fn errors(statuses: &BTreeMap<String, u64>, expected: &[u16]) -> u64 {
    statuses
        .iter()
        .filter(|(label, _)| {
            !label
                .parse::<u16>()
                .is_ok_and(|status| expected.contains(&status))
        })
        .map(|(_, count)| count)
        .sum()
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// `count` events over `elapsed`, per second (0 over no time).
pub(crate) fn per_second(count: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// What an operation did, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct OperationSummary {
    pub operation: String,
    pub count: u64,
    /// Calls that answered none of the statuses the operation expects, or no status at all.
    pub errors: u64,
    /// From the first call's start to the last call's end.
    pub elapsed_s: f64,
    pub rate_per_s: f64,
    pub latency_ms: Quantiles,
    /// Calls by status code, or by `timeout`, `connect`, `io` when no answer came.
    pub statuses: BTreeMap<String, u64>,
}

impl OperationSummary {
    fn empty(name: &str) -> Self {
        Self {
            operation: name.to_owned(),
            count: 0,
            errors: 0,
            elapsed_s: 0.0,
            rate_per_s: 0.0,
            latency_ms: Quantiles::default(),
            statuses: BTreeMap::new(),
        }
    }
}

/// The usual quantiles of a histogram, in the report's unit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Quantiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Quantiles {
    /// Quantiles of a histogram of microseconds, divided by `divisor` (1000 for milliseconds).
    fn of(histogram: &Histogram<u64>, divisor: f64) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        Self {
            count: histogram.len(),
            p50: histogram.value_at_quantile(0.50) as f64 / divisor,
            p90: histogram.value_at_quantile(0.90) as f64 / divisor,
            p99: histogram.value_at_quantile(0.99) as f64 / divisor,
            max: histogram.max() as f64 / divisor,
            mean: histogram.mean() / divisor,
        }
    }
}

/// A sampled quantity of time (propagation lag, expiry lateness), recorded in microseconds
/// and reported in milliseconds.
#[derive(Debug)]
pub(crate) struct Distribution {
    histogram: Mutex<Histogram<u64>>,
}

impl Default for Distribution {
    fn default() -> Self {
        Self {
            histogram: Mutex::new(new_histogram()),
        }
    }
}

impl Distribution {
    pub(crate) fn record(&self, value: Duration) {
        if let Ok(mut histogram) = self.histogram.lock() {
            histogram.saturating_record(micros(value).max(1));
        }
    }

    pub(crate) fn count(&self) -> u64 {
        self.histogram.lock().map_or(0, |h| h.len())
    }

    /// Quantiles in milliseconds.
    pub(crate) fn quantiles_ms(&self) -> Quantiles {
        self.histogram
            .lock()
            .map_or_else(|_| Quantiles::default(), |h| Quantiles::of(&h, 1000.0))
    }
}

/// Spaces requests evenly at `--rate` per second, shared by all of a scenario's workers; without
/// a rate every request may go at once.
#[derive(Debug)]
pub(crate) struct Pacer {
    start: Instant,
    interval: Option<Duration>,
    issued: AtomicU64,
}

impl Pacer {
    pub(crate) fn new(rate: Option<f64>) -> Self {
        Self {
            start: Instant::now(),
            interval: rate
                .filter(|r| *r > 0.0 && r.is_finite())
                .map(|r| Duration::from_secs_f64(1.0 / r)),
            issued: AtomicU64::new(0),
        }
    }

    /// Waits for the next slot and returns when it was due: the schedule is fixed from the
    /// start, so a late request does not push the later ones back (an open-loop load).
    pub(crate) async fn next_slot(&self) -> Instant {
        let Some(interval) = self.interval else {
            return Instant::now();
        };
        let slot = self.issued.fetch_add(1, Ordering::Relaxed);
        let offset = interval.saturating_mul(u32::try_from(slot).unwrap_or(u32::MAX));
        let due = self.start + offset;
        tokio::time::sleep_until(due.into()).await;
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Answer, Failure};

    fn call(status: Result<u16, Failure>, millis: u64) -> Call {
        let started = Instant::now();
        Call {
            started,
            finished: started + Duration::from_millis(millis),
            outcome: status.map(|status| Answer {
                status,
                body: bytes::Bytes::new(),
                session: None,
                next_page: None,
            }),
        }
    }

    #[test]
    fn answers_outside_the_expected_statuses_and_failures_count_as_errors() {
        let reserve = Operation::new("POST /api/orders", &[201, 400]);
        reserve.record(&call(Ok(201), 2));
        reserve.record(&call(Ok(400), 3));
        reserve.record(&call(Ok(500), 4));
        reserve.record(&call(Err(Failure::Timeout), 10));

        let summary = reserve.summary();
        assert_eq!(summary.count, 4);
        assert_eq!(summary.errors, 2);
        assert_eq!(summary.statuses.get("timeout"), Some(&1));
        assert_eq!(summary.statuses.get("201"), Some(&1));
        assert!((summary.latency_ms.max - 10.0).abs() < 0.1);
    }

    #[test]
    fn latency_under_a_rate_limit_counts_from_the_slot_the_request_was_due() {
        let reserve = Operation::new("POST /api/orders", &[201]);
        let late = call(Ok(201), 5);
        reserve.record_since(late.started - Duration::from_millis(20), &late);
        assert!(reserve.summary().latency_ms.max >= 24.9);
    }

    #[tokio::test]
    async fn the_pacer_spaces_requests_at_the_rate() {
        let pacer = Pacer::new(Some(100.0));
        let first = pacer.next_slot().await;
        let mut last = first;
        for _ in 0..5 {
            last = pacer.next_slot().await;
        }
        assert_eq!(last - first, Duration::from_millis(50));
        assert!(Instant::now() >= last);
    }
}
