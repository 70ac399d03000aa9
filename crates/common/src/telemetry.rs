//! Logs, traces and metrics for the process.
//!
//! Logs are lines on stderr, filtered by `RUST_LOG`. Traces are the `tracing` spans as
//! OpenTelemetry spans, exported over OTLP/HTTP in batches when an endpoint is configured.
//!
//! A trace crosses the bus in W3C trace-context headers (`traceparent`, `tracestate`): the
//! outbox stores the context an event was written in, the relay publishes it beside the event,
//! and the listener continues it, so a request and everything it causes in other services is one
//! trace.

use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::bus::Headers;
use crate::config::LogFormat;

/// How long one export to the collector may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("not an http:// or https:// URL such as http://otel-collector:4318: {0:?}")]
    Endpoint(String),
    #[error("cannot build the HTTP client for the OTLP exporter: {0}")]
    Client(#[from] reqwest::Error),
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("tracing must be set up inside the async runtime")]
    NoRuntime,
}

/// The process's tracing, kept until exit: [`Tracing::shutdown`] sends the spans still buffered.
#[derive(Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Tracing {
    /// Exports what is buffered (waiting at most a few seconds for the collector) and stops.
    pub async fn shutdown(self) {
        let provider = self.provider;
        // The flush blocks until the exporter has answered: keep it off the async workers.
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "traces not all exported at exit"),
            Err(err) => tracing::warn!(error = %err, "traces not all exported at exit"),
        }
    }
}

/// Sets up logging and tracing once for the process: log lines to stderr (text or JSON, filtered
/// by `RUST_LOG`, default `info`) and OpenTelemetry spans for `service_name`, exported to
/// `otlp_endpoint` (the collector's base URL, or its full `/v1/traces` URL) when there is one.
///
/// Call it inside the async runtime: the exporter sends on it.
pub fn init_tracing(
    format: LogFormat,
    service_name: &str,
    otlp_endpoint: Option<&str>,
) -> Result<Tracing, TelemetryError> {
    let provider = tracer_provider(service_name, otlp_endpoint)?;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,async_nats=warn"));
    let logs = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let traces = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("stubs"))
        .with_filter(trace_filter());
    // Another subscriber may already be installed (tests embed several apps in one process).
    let _ = tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(traces)
        .try_init();
    Ok(Tracing { provider })
}

/// Which spans become OpenTelemetry spans. Separate from `RUST_LOG`, so that quieter logs do not
/// cut a trace in two: a span the filter drops is a span whose context cannot be carried on.
fn trace_filter() -> Targets {
    Targets::new()
        .with_default(LevelFilter::INFO)
        .with_target("sqlx", LevelFilter::WARN)
        .with_target("async_nats", LevelFilter::WARN)
        // The exporter's own diagnostics belong in the logs, not in the traces they are about.
        .with_target("opentelemetry", LevelFilter::OFF)
}

fn tracer_provider(
    service_name: &str,
    otlp_endpoint: Option<&str>,
) -> Result<SdkTracerProvider, TelemetryError> {
    let builder = SdkTracerProvider::builder().with_resource(
        Resource::builder()
            .with_service_name(service_name.to_owned())
            .build(),
    );
    let Some(endpoint) = otlp_endpoint else {
        // Nothing leaves the process, so nothing started here is recorded; the context is still
        // carried, and a sampled trace that came from a process that exports goes on sampled.
        return Ok(builder
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)))
            .build());
    };
    let client = OnRuntime {
        client: reqwest::Client::builder().timeout(EXPORT_TIMEOUT).build()?,
        runtime: tokio::runtime::Handle::try_current().map_err(|_| TelemetryError::NoRuntime)?,
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(traces_url(endpoint)?)
        .with_timeout(EXPORT_TIMEOUT)
        .with_http_client(client)
        .build()?;
    Ok(builder.with_batch_exporter(exporter).build())
}

/// The URL spans are posted to: the collector's base URL with `/v1/traces`, unless given already.
fn traces_url(endpoint: &str) -> Result<String, TelemetryError> {
    let invalid = || TelemetryError::Endpoint(endpoint.to_owned());
    let trimmed = endpoint.trim().trim_end_matches('/');
    let uri: axum::http::Uri = trimmed.parse().map_err(|_| invalid())?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err(invalid());
    }
    if uri.path().ends_with("/v1/traces") {
        Ok(trimmed.to_owned())
    } else {
        Ok(format!("{trimmed}/v1/traces"))
    }
}

/// The workspace's async reqwest client, run on the Tokio runtime. The batch exporter sends from
/// a thread of its own, outside the runtime, where the client alone could not make a request.
#[derive(Debug)]
struct OnRuntime {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        self.runtime
            .spawn(async move { client.send_bytes(request).await })
            .await?
    }
}

/// The trace context of the current span as W3C headers; empty outside any trace.
pub fn current_trace_headers() -> Headers {
    trace_headers(&Span::current())
}

/// The trace context of `span` as W3C headers; empty when the span is not part of a trace.
pub fn trace_headers(span: &Span) -> Headers {
    let context = span.context();
    let mut headers = Headers::new();
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&context, &mut headers);
    }
    headers
}

/// Makes `span` continue the trace whose context `headers` carry, before the span is entered.
/// Without a valid context the span stays where it was made (a root span starts a new trace).
/// Returns whether the span now continues a remote trace.
pub fn continue_trace(span: &Span, headers: &Headers) -> bool {
    continue_from(span, headers)
}

/// [`continue_trace`] from the headers of an HTTP request.
pub fn continue_http_trace(span: &Span, headers: &axum::http::HeaderMap) -> bool {
    continue_from(span, &opentelemetry_http::HeaderExtractor(headers))
}

fn continue_from(span: &Span, carrier: &dyn Extractor) -> bool {
    let parent: Context = TraceContextPropagator::new().extract(carrier);
    if !parent.span().span_context().is_valid() {
        return false;
    }
    // Fails only when nothing records traces (no OpenTelemetry layer, or the span is filtered
    // out): then there is no trace to continue either.
    span.set_parent(parent).is_ok()
}

impl Injector for Headers {
    fn set(&mut self, key: &str, value: String) {
        // An empty `tracestate` says nothing; keep the stored form short.
        if !value.is_empty() {
            self.insert(key, value);
        }
    }
}

impl Extractor for Headers {
    fn get(&self, key: &str) -> Option<&str> {
        Headers::get(self, key)
    }

    fn keys(&self) -> Vec<&str> {
        self.iter().map(|(name, _)| name).collect()
    }
}

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's metrics registry, installed on first use.
pub fn metrics_handle() -> &'static PrometheusHandle {
    METRICS.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Suffix("duration_seconds".into()),
                &[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ],
            )
            .and_then(|builder| {
                // How late a scheduled job fired: milliseconds when healthy, minutes when not.
                builder.set_buckets_for_metric(
                    Matcher::Suffix("lateness_seconds".into()),
                    &[
                        0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0,
                    ],
                )
            })
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (tests embed several apps in one process);
        // then ours still renders, just without what the other one records.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanId, TraceId};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};

    use super::*;

    #[test]
    fn the_endpoint_is_the_collector_base_url() {
        assert_eq!(
            traces_url("http://otel-collector:4318").unwrap(),
            "http://otel-collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://collector.example/").unwrap(),
            "https://collector.example/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/v1/traces").unwrap(),
            "http://collector:4318/v1/traces",
            "a full traces URL is kept"
        );
    }

    #[test]
    fn an_endpoint_that_is_not_an_http_url_is_refused() {
        for endpoint in [
            "otel-collector:4318",
            "grpc://collector:4317",
            "",
            "http://",
        ] {
            assert!(
                matches!(traces_url(endpoint), Err(TelemetryError::Endpoint(_))),
                "{endpoint:?}"
            );
        }
    }

    /// Runs `f` under a subscriber that records every span in memory, and returns those spans.
    fn recording(f: impl FnOnce()) -> Vec<SpanData> {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, f);
        exporter.get_finished_spans().unwrap()
    }

    fn span_named<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
        spans
            .iter()
            .find(|span| span.name == name)
            .unwrap_or_else(|| panic!("no span {name:?} in {spans:?}"))
    }

    #[test]
    fn a_span_continues_the_trace_its_headers_carry() {
        let spans = recording(|| {
            let headers = tracing::info_span!("origin").in_scope(current_trace_headers);
            assert!(
                headers
                    .get("traceparent")
                    .is_some_and(|v| v.starts_with("00-")),
                "{headers:?}"
            );
            let follower = tracing::info_span!(parent: None, "follower");
            assert!(continue_trace(&follower, &headers));
            follower.in_scope(|| {});
        });
        let origin = span_named(&spans, "origin");
        let follower = span_named(&spans, "follower");
        assert_eq!(
            follower.span_context.trace_id(),
            origin.span_context.trace_id()
        );
        assert_eq!(follower.parent_span_id, origin.span_context.span_id());
        assert!(follower.parent_span_is_remote);
    }

    #[test]
    fn without_headers_a_span_starts_a_new_trace() {
        let spans = recording(|| {
            tracing::info_span!("unrelated").in_scope(|| {});
            let garbled: Headers = [("traceparent", "00-not-a-trace-01")].into_iter().collect();
            for headers in [Headers::new(), garbled] {
                let span = tracing::info_span!(parent: None, "fresh");
                assert!(!continue_trace(&span, &headers), "{headers:?}");
                span.in_scope(|| {});
            }
        });
        let unrelated = span_named(&spans, "unrelated").span_context.trace_id();
        let fresh: Vec<&SpanData> = spans.iter().filter(|span| span.name == "fresh").collect();
        assert_eq!(fresh.len(), 2);
        for span in fresh {
            assert_ne!(span.span_context.trace_id(), TraceId::INVALID);
            assert_ne!(span.span_context.trace_id(), unrelated);
            assert_eq!(span.parent_span_id, SpanId::INVALID, "a root span");
        }
    }

    #[test]
    fn a_request_continues_the_trace_it_arrives_in() {
        let trace_id = "0af7651916cd43dd8448eb211c80319c";
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            "traceparent",
            axum::http::HeaderValue::from_str(&format!("00-{trace_id}-b7ad6b7169203331-01"))
                .unwrap(),
        );
        let spans = recording(|| {
            let request = tracing::info_span!("request");
            assert!(continue_http_trace(&request, &headers));
            request.in_scope(|| {});
        });
        let request = span_named(&spans, "request");
        assert_eq!(request.span_context.trace_id().to_string(), trace_id);
        assert_eq!(request.parent_span_id.to_string(), "b7ad6b7169203331");
    }

    #[test]
    fn outside_any_trace_there_are_no_headers() {
        assert!(current_trace_headers().is_empty());
        let mut headers = Headers::new();
        headers.insert(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        );
        // Nothing records traces here, so there is no span to continue, and nothing fails.
        assert!(!continue_trace(&tracing::info_span!("untraced"), &headers));
    }
}
