//! Tracing across the bus: an event written through the outbox inside a request's span is
//! handled in a span of the same trace, and so is every event that handling writes in turn; a
//! delivery that carries no trace context is handled in a trace of its own.
//!
//! This binary installs one process-wide subscriber that keeps every finished span in memory
//! (listeners run on the runtime's worker threads, which a thread-local subscriber would not
//! reach). Each test finds its own spans by trace id or event id, so tests running side by side
//! do not see each other's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;

use async_trait::async_trait;
use bytes::Bytes;
use common::ServiceContext;
use common::bus::{Headers, Message, SharedBus};
use common::events::{Envelope, EventData, TicketCreated, TicketUpdated};
use common::listener::{self, HandleError, Handler};
use common::money::Cents;
use common::outbox;
use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use sqlx::AnyConnection;
use testkit::{Backend, BusKind, TestBus, TestDatabase, eventually};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use uuid::Uuid;

/// Every span finished in this process since the first test started.
fn finished_spans() -> Vec<SpanData> {
    recorder().get_finished_spans().unwrap()
}

fn recorder() -> &'static InMemorySpanExporter {
    static SPANS: OnceLock<InMemorySpanExporter> = OnceLock::new();
    SPANS.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other subscriber in this test binary");
        exporter
    })
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|KeyValue { key: k, .. }| k.as_str() == key)
        .map(|kv| kv.value.to_string())
}

/// The listener's span for one event, once it has finished.
async fn handling_span_of(event_id: Uuid) -> SpanData {
    let id = event_id.to_string();
    eventually(&format!("the span handling event {id}"), || {
        let found = finished_spans()
            .into_iter()
            .find(|span| span.name == "event" && attribute(span, "id").as_deref() == Some(&id));
        async move { found }
    })
    .await
}

fn span_with_id(spans: &[SpanData], id: SpanId) -> &SpanData {
    spans
        .iter()
        .find(|span| span.span_context.span_id() == id)
        .unwrap_or_else(|| panic!("no finished span {id}"))
}

fn ticket(title: &str) -> TicketCreated {
    TicketCreated {
        id: Uuid::now_v7(),
        version: 0,
        title: title.to_owned(),
        price: Cents::new(1999).unwrap(),
        user_id: Uuid::now_v7(),
        event_id: None,
        event_starts_at: None,
    }
}

async fn service(database: &TestDatabase, bus: SharedBus) -> ServiceContext {
    testkit::context("tickets", database, bus, &[&outbox::MIGRATIONS]).await
}

async fn stop(ctx: ServiceContext) {
    ctx.shutdown.cancel();
    ctx.tasks.close();
    tokio::time::timeout(std::time::Duration::from_secs(10), ctx.tasks.wait())
        .await
        .expect("the listeners and the relay stop on shutdown");
}

/// Reacts to a listed ticket by reserving it: writes a ticket:updated through the outbox, as a
/// service reacting to an event does. Remembers the id of what it wrote.
struct Reserve {
    written: tokio::sync::mpsc::UnboundedSender<Uuid>,
}

#[async_trait]
impl Handler<TicketCreated> for Reserve {
    async fn handle(
        &self,
        tx: &mut AnyConnection,
        event: Envelope<TicketCreated>,
    ) -> Result<(), HandleError> {
        let reserved = outbox::enqueue(
            tx,
            TicketUpdated {
                id: event.data.id,
                version: 1,
                title: event.data.title,
                price: event.data.price,
                user_id: event.data.user_id,
                order_id: Some(Uuid::now_v7()),
                listing: 0,
            },
        )
        .await?;
        let _ = self.written.send(reserved.id);
        Ok(())
    }
}

/// Accepts any event of its type and does nothing more.
struct Accept;

#[async_trait]
impl<E: EventData> Handler<E> for Accept {
    async fn handle(&self, _: &mut AnyConnection, _: Envelope<E>) -> Result<(), HandleError> {
        Ok(())
    }
}

mod on_database {
    use super::*;

    testkit::each_database!(one_request_is_one_trace_through_every_listener);

    async fn one_request_is_one_trace_through_every_listener(backend: Backend) {
        super::one_request_is_one_trace_through_every_listener(backend, BusKind::Embedded).await
    }
}

mod on_bus {
    use super::*;

    testkit::each_bus!(
        one_request_is_one_trace_through_every_listener,
        a_delivery_without_trace_context_starts_a_trace_of_its_own,
    );

    async fn one_request_is_one_trace_through_every_listener(kind: BusKind) {
        super::one_request_is_one_trace_through_every_listener(Backend::Sqlite, kind).await
    }
    async fn a_delivery_without_trace_context_starts_a_trace_of_its_own(kind: BusKind) {
        super::a_delivery_without_trace_context_starts_a_trace_of_its_own(kind).await
    }
}

async fn one_request_is_one_trace_through_every_listener(backend: Backend, kind: BusKind) {
    recorder();
    let database = TestDatabase::create(backend).await;
    let test_bus = TestBus::create(kind).await;
    let ctx = service(&database, test_bus.bus.clone()).await;
    let (written, mut reservations) = tokio::sync::mpsc::unbounded_channel();
    listener::spawn::<TicketCreated, _>(&ctx, Reserve { written });
    listener::spawn::<TicketUpdated, _>(&ctx, Accept);
    ctx.spawn_relay();

    // A request lists a ticket: the change and its event are written inside the request's span.
    let request = tracing::info_span!("request");
    let origin: SpanContext = request.context().span().span_context().clone();
    let store = ctx.store.clone();
    let outbox = ctx.outbox.clone();
    let listed = async move {
        let mut tx = store.begin().await.unwrap();
        let event = outbox::enqueue(&mut tx, ticket("traced")).await.unwrap();
        outbox.commit(tx).await.unwrap();
        event
    }
    .instrument(request)
    .await;

    // The listener of ticket:created handles it inside the request's trace...
    let handled = handling_span_of(listed.id).await;
    assert_eq!(
        handled.span_context.trace_id(),
        origin.trace_id(),
        "the listener's span is in the request's trace"
    );
    // ...under the relay's publish, itself under the request.
    let spans = finished_spans();
    let publish = span_with_id(&spans, handled.parent_span_id);
    assert_eq!(publish.name, "publish");
    assert!(
        handled.parent_span_is_remote,
        "the context came over the bus"
    );
    assert_eq!(publish.parent_span_id, origin.span_id());
    assert_eq!(
        attribute(publish, "id").as_deref(),
        Some(listed.id.to_string().as_str())
    );

    // What that listener wrote goes on in the same trace, to the next listener.
    let reserved = tokio::time::timeout(std::time::Duration::from_secs(10), reservations.recv())
        .await
        .expect("the listener reserved the ticket")
        .unwrap();
    let next = handling_span_of(reserved).await;
    assert_eq!(
        next.span_context.trace_id(),
        origin.trace_id(),
        "the event written while handling stays in the request's trace"
    );
    let spans = finished_spans();
    let next_publish = span_with_id(&spans, next.parent_span_id);
    assert_eq!(next_publish.name, "publish");
    assert_eq!(
        next_publish.parent_span_id,
        handled.span_context.span_id(),
        "published from the handling of the first event"
    );
    stop(ctx).await;
}

async fn a_delivery_without_trace_context_starts_a_trace_of_its_own(kind: BusKind) {
    recorder();
    let database = TestDatabase::create(Backend::Sqlite).await;
    let test_bus = TestBus::create(kind).await;
    let ctx = service(&database, test_bus.bus.clone()).await;
    listener::spawn::<TicketCreated, _>(&ctx, Accept);

    // Published bare, as a relay that knows nothing of traces would, from inside some span: the
    // span's context does not leak into the message.
    let event = Envelope::new(ticket("untraced"));
    let publisher = tracing::info_span!("publisher");
    let unrelated = publisher.context().span().span_context().trace_id();
    ctx.bus
        .publish(&Message {
            id: event.id.to_string(),
            event_type: TicketCreated::TYPE,
            payload: Bytes::from(event.encode().unwrap()),
            headers: Headers::new(),
        })
        .instrument(publisher)
        .await
        .unwrap();

    let handled = handling_span_of(event.id).await;
    assert!(handled.span_context.is_valid());
    assert_eq!(handled.parent_span_id, SpanId::INVALID, "a root span");
    assert_ne!(handled.span_context.trace_id(), unrelated);
    // Handled and acknowledged like any other event: recorded in the inbox, nothing dead.
    let inbox: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM inbox WHERE event_id = $1")
        .bind(event.id.to_string())
        .fetch_one(ctx.store.pool())
        .await
        .unwrap();
    assert_eq!(inbox, 1);
    let dead = ctx
        .bus
        .dead_letters(&common::bus::ConsumerConfig::new(
            "tickets",
            TicketCreated::TYPE,
        ))
        .await
        .unwrap();
    assert!(dead.is_empty(), "{dead:?}");
    stop(ctx).await;
}
