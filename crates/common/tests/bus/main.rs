//! The bus conformance suite: every test is written once against the `Bus` trait and runs on the
//! embedded bus and on NATS JetStream (when `STUBS_TEST_NATS_URL` is set at build time).
//! The last tests are the embedded bus's own: its log survives a restart of the process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::bus::embedded::EmbeddedBus;
use common::bus::{
    Batch, Bus, ConsumerConfig, DEDUPLICATION_WINDOW, Delivery, Headers, Message, Subscription,
};
use common::clock::now_millis;
use common::events::EventType;
use testkit::{BusKind, TestBus, eventually};
use tokio::time::Instant;

/// An ack wait no test reaches: only what a test does brings a message back.
const LONG: Duration = Duration::from_secs(30);
/// An ack wait short enough to watch a redelivery.
const SHORT: Duration = Duration::from_secs(1);
/// How long a test waits for a delivery it expects: generous, so a slow machine does not fail it.
const WAIT: Duration = Duration::from_secs(10);

fn config(group: &str, ack_wait: Duration, max_deliver: u32) -> ConsumerConfig {
    ConsumerConfig {
        group: group.to_owned(),
        event_type: EventType::TicketCreated,
        ack_wait,
        max_deliver,
    }
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn payload_of(id: &str) -> Bytes {
    Bytes::from(format!("payload of {id}"))
}

async fn publish(bus: &dyn Bus, id: &str) {
    bus.publish(&Message {
        id: id.to_owned(),
        event_type: EventType::TicketCreated,
        payload: payload_of(id),
        headers: Default::default(),
    })
    .await
    .unwrap();
}

/// The next delivery, or `None` if nothing arrives within `wait`.
async fn next_within(sub: &mut dyn Subscription, wait: Duration) -> Option<Delivery> {
    tokio::time::timeout(wait, sub.next())
        .await
        .ok()
        .map(|next| next.expect("the subscription failed"))
}

/// The next delivery, which must arrive within [`WAIT`]; its payload must be its message's.
async fn expect_next(sub: &mut dyn Subscription, what: &str) -> Delivery {
    let delivery = next_within(sub, WAIT)
        .await
        .unwrap_or_else(|| panic!("no delivery within {WAIT:?}: expected {what}"));
    assert_eq!(
        delivery.payload,
        payload_of(&delivery.message_id),
        "payload of {}",
        delivery.message_id
    );
    delivery
}

/// Asserts nothing arrives within `wait` (for a message that must not come back).
async fn expect_silence(sub: &mut dyn Subscription, wait: Duration, why: &str) {
    if let Some(delivery) = next_within(sub, wait).await {
        panic!("unexpected delivery ({why}): {delivery:?}");
    }
}

/// Receives `n` deliveries, acking each, and returns their message ids in arrival order.
async fn receive_and_ack(sub: &mut dyn Subscription, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let delivery = expect_next(sub, &format!("message {} of {n}", i + 1)).await;
        delivery.ack().await.unwrap();
        ids.push(delivery.message_id);
    }
    ids
}

/// Publishes the messages, then waits until a consumer that pulls ahead (NATS) has had time to
/// receive them all, so the next batch can hold several.
async fn publish_all(bus: &dyn Bus, ids: &[String]) {
    for id in ids {
        publish(bus, id).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// The next batch of at most `max`, which must arrive within [`WAIT`]; every payload must be its
/// message's.
async fn expect_batch(sub: &mut dyn Subscription, max: usize, what: &str) -> Batch {
    let batch = tokio::time::timeout(WAIT, sub.next_batch(max))
        .await
        .unwrap_or_else(|_| panic!("no batch within {WAIT:?}: expected {what}"))
        .expect("the subscription failed");
    assert!(
        (1..=max).contains(&batch.len()),
        "a batch of {} when at most {max} were asked for",
        batch.len()
    );
    for delivery in &batch.deliveries {
        assert_eq!(delivery.payload, payload_of(&delivery.message_id));
    }
    batch
}

fn ids_of(batch: &Batch) -> Vec<String> {
    batch
        .deliveries
        .iter()
        .map(|d| d.message_id.clone())
        .collect()
}

fn as_set(ids: &[String]) -> HashSet<String> {
    ids.iter().cloned().collect()
}

testkit::each_bus!(
    every_group_gets_every_message,
    members_of_a_group_share_the_work,
    an_unacked_message_is_delivered_again,
    a_negative_ack_brings_the_message_back_after_its_delay,
    a_duplicate_publish_is_dropped,
    a_message_is_dead_lettered_after_max_deliveries,
    a_rejected_message_goes_to_the_dead_letters_at_once,
    a_reason_that_spans_lines_is_kept_on_one,
    nothing_is_lost_when_a_consumer_dies_mid_message,
    a_group_created_late_gets_earlier_messages,
    headers_travel_with_the_message,
    a_batch_is_acknowledged_whole,
    a_batch_whose_consumer_dies_before_its_ack_comes_back_whole,
    a_poison_message_in_a_batch_is_dead_lettered_without_holding_up_the_rest,
    copies_are_dropped_across_batches,
    members_of_a_group_share_batches,
    every_message_of_a_published_batch_is_delivered_once,
);

async fn headers_travel_with_the_message(kind: BusKind) {
    let test = TestBus::create(kind).await;
    let bus = test.bus.as_ref();
    let mut sub = bus.subscribe(&config("orders", LONG, 5)).await.unwrap();
    let headers: Headers = [
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
        ("tracestate", "vendor=value"),
    ]
    .into_iter()
    .collect();
    let with_headers = new_id();
    bus.publish(&Message {
        id: with_headers.clone(),
        event_type: EventType::TicketCreated,
        payload: payload_of(&with_headers),
        headers: headers.clone(),
    })
    .await
    .unwrap();
    let without_headers = new_id();
    publish(bus, &without_headers).await;

    let first = expect_next(sub.as_mut(), "the message with headers").await;
    assert_eq!(first.message_id, with_headers);
    assert_eq!(
        first.headers, headers,
        "the bus's own headers are not among them"
    );
    // A redelivery carries them too; it may come before or after the other message.
    first.nak(Duration::ZERO).await.unwrap();
    let mut redelivered = false;
    for _ in 0..2 {
        let delivery = expect_next(sub.as_mut(), "the redelivery and the other message").await;
        if delivery.message_id == with_headers {
            assert_eq!(delivery.attempt, 2);
            assert_eq!(delivery.headers, headers);
            redelivered = true;
        } else {
            assert_eq!(delivery.message_id, without_headers);
            assert!(delivery.headers.is_empty(), "{:?}", delivery.headers);
        }
        delivery.ack().await.unwrap();
    }
    assert!(redelivered);
}

async fn every_group_gets_every_message(kind: BusKind) {
    let test = TestBus::create(kind).await;
    let bus = test.bus.as_ref();
    let mut tickets = bus.subscribe(&config("tickets", LONG, 5)).await.unwrap();
    let mut orders = bus.subscribe(&config("orders", LONG, 5)).await.unwrap();

    let ids: Vec<String> = (0..5).map(|_| new_id()).collect();
    for id in &ids {
        publish(bus, id).await;
    }

    for (group, sub) in [("tickets", &mut tickets), ("orders", &mut orders)] {
        let got = receive_and_ack(sub.as_mut(), ids.len()).await;
        assert_eq!(as_set(&got), as_set(&ids), "group {group}");
        expect_silence(sub.as_mut(), Duration::from_millis(500), "all were acked").await;
    }
}

/// Publishes `count` messages to a group of two members that record each delivery they ack in
/// `seen` as (member, message id), then stops the members and asserts that each message was
/// delivered once and that both members had some.
async fn assert_two_members_share_once(
    bus: &dyn Bus,
    seen: &Mutex<Vec<(usize, String)>>,
    members: Vec<tokio::task::JoinHandle<()>>,
    count: usize,
) {
    let ids: Vec<String> = (0..count).map(|_| new_id()).collect();
    for id in &ids {
        publish(bus, id).await;
    }
    eventually("every message to reach a member", || {
        let done = seen.lock().unwrap().len() >= ids.len();
        async move { done.then_some(()) }
    })
    .await;
    // Time for a second copy of any message to show up, if the bus sent one.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for member in members {
        member.abort();
    }

    let seen = seen.lock().unwrap().clone();
    let delivered: Vec<String> = seen.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(
        delivered.len(),
        ids.len(),
        "each message exactly once: {seen:?}"
    );
    assert_eq!(as_set(&delivered), as_set(&ids));
    for member in 0..2 {
        assert!(
            seen.iter().any(|(m, _)| *m == member),
            "member {member} got no work: {seen:?}"
        );
    }
}

async fn members_of_a_group_share_the_work(kind: BusKind) {
    let test = TestBus::create(kind).await;
    let bus = test.bus.clone();
    let group = config("orders", LONG, 5);
    // (member, message id) for every delivery, in the order they were acked.
    let seen: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();

    let mut members = Vec::new();
    for member in 0..2 {
        let mut sub = bus.subscribe(&group).await.unwrap();
        let seen = seen.clone();
        members.push(tokio::spawn(async move {
            loop {
                let delivery = sub.next().await.unwrap();
                // A little work, so that the other member gets its turn.
                tokio::time::sleep(Duration::from_millis(10)).await;
                delivery.ack().await.unwrap();
                seen.lock().unwrap().push((member, delivery.message_id));
            }
        }));
    }

    assert_two_members_share_once(bus.as_ref(), &seen, members, 20).await;
}

async fn an_unacked_message_is_delivered_again(kind: BusKind) {
    let test = TestBus::create(kind).await;
    let bus = test.bus.as_ref();
    let mut sub = bus.subscribe(&config("orders", SHORT, 5)).await.unwrap();
    let id = new_id();
    publish(bus, &id).await;

    let first = expect_next(sub.as_mut(), "the first delivery").await;
    let first_at = Instant::now();
    assert_eq!((first.message_id.as_str(), first.attempt), (id.as_str(), 1));
    drop(first); // never acked

    let second = expect_next(sub.as_mut(), "the redelivery").await;
    assert_eq!(
        (second.message_id.as_str(), second.attempt),
        (id.as_str(), 2)
    );
    assert!(
        first_at.elapsed() >= SHORT / 2,
        "redelivered after {:?}, before the ack wait of {SHORT:?}",
        first_at.elapsed()
    );
    second.ack().await.unwrap();
    expect_silence(sub.as_mut(), SHORT * 3, "the redelivery was acked").await;
}

async fn a_negative_ack_brings_the_message_back_after_its_delay(kind: BusKind) {
    let test = TestBus::create(kind).await;
    let bus = test.bus.as_ref();
    // The ack wait is far longer than the test waits: only the nak can bring it back in time.
    let mut sub = bus.subscribe(&config("orders", LONG, 5)).await.unwrap();
    let id = new_id();
    publish(bus, &id).await;

    let delay = Duration::from_millis(500);
    let first = expect_next(sub.as_mut(), "the first delivery").await;
    assert_eq!(first.attempt, 1);
    let nak_at = Instant::now();
    first.nak(delay).await.unwrap();

    let again = expect_next(sub.as_mut(), "the message after its nak delay").await;
    let after = nak_at.elapsed();
    assert_eq!((again.message_id.as_str(), again.attempt), (id.as_str(), 2));
    assert!(
        after >= delay / 2,
        "came back {after:?} after a nak with a delay of {delay:?}"
    );
    again.ack().await.unwrap();
    expect_silence(sub.as_mut(), Duration::from_secs(1), "it was acked").await;
}

async fn a_duplicate_publish_is_dropped(kind: BusKind) {
    let test = TestBus::create(kind).await;
    let bus = test.bus.as_ref();
    let mut sub = bus.subscribe(&config("orders", LONG, 5)).await.unwrap();
    let (id, other) = (new_id(), new_id());
    publish(bus, &id).await;
    publish(bus, &id).await;
    publish(bus, &other).await;

    let got = receive_and_ack(sub.as_mut(), 2).await;
    assert_eq!(as_set(&got), as_set(&[id, other]));
    expect_silence(sub.as_mut(), Duration::from_secs(1), "the copy was dropped").await;
}

async fn a_message_is_dead_lettered_after_max_deliveries(kind: BusKind) {
    let test = TestBus::create(kind).await;
    let bus = test.bus.as_ref();
    let group = config("orders", SHORT, 3);
    let mut sub = bus.subscribe(&group).await.unwrap();
    let id = new_id();
    publish(bus, &id).await;

    for attempt in 1..=3 {
        let delivery = expect_next(sub.as_mut(), &format!("delivery {attempt}")).await;
        assert_eq!(
            (delivery.message_id.as_str(), delivery.attempt),
            (id.as_str(), attempt)
        );
        // Never acked.
    }
    expect_silence(sub.as_mut(), SHORT * 3, "three deliveries is the maximum").await;

    let dead = bus.dead_letters(&group).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].message_id, id);
    assert_eq!(dead[0].event_type, EventType::TicketCreated);
    assert_eq!(dead[0].payload, payload_of(&id));
    assert_eq!(dead[0].deliveries, 3);
    assert!(!dead[0].reason.is_empty());
    // Another group's dead letters are its own.
    let other = bus
        .dead_letters(&config("tickets", SHORT, 3))
        .await
        .unwrap();
    assert!(other.is_empty(), "{other:?}");
}

async fn a_rejected_message_goes_to_the_dead_letters_at_once(kind: BusKind) {
    let test = TestBus::create(kind).await;
    let bus = test.bus.as_ref();
    let group = config("orders", SHORT, 5);
    let mut sub = bus.subscribe(&group).await.unwrap();
    let (id, next) = (new_id(), new_id());
    publish(bus, &id).await;

    let delivery = expect_next(sub.as_mut(), "the message to reject").await;
    delivery.reject("malformed event").await.unwrap();

    let dead = bus.dead_letters(&group).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].message_id, id);
    assert_eq!(dead[0].payload, payload_of(&id));
    assert_eq!(dead[0].reason, "malformed event");
    assert_eq!(dead[0].deliveries, 1);

    // It is not delivered again, and the consumer goes on with the next message.
    publish(bus, &next).await;
    let after = expect_next(sub.as_mut(), "the next message").await;
    assert_eq!(after.message_id, next);
    after.ack().await.unwrap();
    expect_silence(sub.as_mut(), SHORT * 3, "the rejected one is dead").await;
}

async fn a_reason_that_spans_lines_is_kept_on_one(kind: BusKind) {
    let test = TestBus::create(kind).await;
    let bus = test.bus.as_ref();
    let group = config("orders", SHORT, 5);
    let mut sub = bus.subscribe(&group).await.unwrap();
    let id = new_id();
    publish(bus, &id).await;

    let delivery = expect_next(sub.as_mut(), "the message to reject").await;
    // As a decoding error quotes an event type it does not know.
    delivery
        .reject("unknown variant `ticket\r\ncreated`")
        .await
        .unwrap();

    let dead = bus.dead_letters(&group).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].message_id, id);
    assert_eq!(dead[0].reason, "unknown variant `ticket  created`");
}

async fn nothing_is_lost_when_a_consumer_dies_mid_message(kind: BusKind) {
    let test = TestBus::create(kind).await;
    let bus = test.bus.as_ref();
    let group = config("orders", SHORT, 5);
    let mut dying = bus.subscribe(&group).await.unwrap();
    let id = new_id();
    publish(bus, &id).await;

    let in_hand = expect_next(dying.as_mut(), "the message").await;
    assert_eq!(in_hand.message_id, id);
    // The consumer goes away with the message in hand, unacked.
    drop(in_hand);
    drop(dying);

    let mut successor = bus.subscribe(&group).await.unwrap();
    let delivery = expect_next(successor.as_mut(), "the message again").await;
    assert_eq!(delivery.message_id, id);
    assert!(delivery.attempt >= 2, "attempt {}", delivery.attempt);
    delivery.ack().await.unwrap();
    expect_silence(successor.as_mut(), SHORT * 3, "it was acked").await;
}

async fn a_group_created_late_gets_earlier_messages(kind: BusKind) {
    let test = TestBus::create(kind).await;
    let bus = test.bus.as_ref();
    let ids: Vec<String> = (0..3).map(|_| new_id()).collect();
    for id in &ids {
        publish(bus, id).await;
    }

    let mut late = bus.subscribe(&config("latecomer", LONG, 5)).await.unwrap();
    let got = receive_and_ack(late.as_mut(), ids.len()).await;
    assert_eq!(as_set(&got), as_set(&ids));
    expect_silence(late.as_mut(), Duration::from_millis(500), "all were acked").await;
}

async fn a_batch_is_acknowledged_whole(kind: BusKind) {
    let test = TestBus::create(kind).await;
    let bus = test.bus.as_ref();
    // A short ack wait: a delivery the batch ack missed would be back within the silence below.
    let mut sub = bus.subscribe(&config("orders", SHORT, 5)).await.unwrap();
    let ids: Vec<String> = (0..10).map(|_| new_id()).collect();
    publish_all(bus, &ids).await;

    let mut got = Vec::new();
    let mut sizes = Vec::new();
    while got.len() < ids.len() {
        let batch = expect_batch(sub.as_mut(), 4, "the rest of the ten").await;
        assert!(batch.deliveries.iter().all(|d| d.attempt == 1));
        sizes.push(batch.len());
        got.extend(ids_of(&batch));
        batch.ack_all().await.unwrap();
    }
    assert_eq!(got.len(), ids.len(), "each once: {got:?}");
    assert_eq!(as_set(&got), as_set(&ids));
    assert!(
        sizes.iter().any(|&size| size > 1),
        "ten waiting messages came one at a time: {sizes:?}"
    );
    expect_silence(sub.as_mut(), SHORT * 3, "every batch was acked").await;
}

async fn a_batch_whose_consumer_dies_before_its_ack_comes_back_whole(kind: BusKind) {
    let test = TestBus::create(kind).await;
    let bus = test.bus.as_ref();
    let group = config("orders", SHORT, 5);
    let mut dying = bus.subscribe(&group).await.unwrap();
    let ids: Vec<String> = (0..5).map(|_| new_id()).collect();
    publish_all(bus, &ids).await;

    let mut in_hand = Vec::new();
    while in_hand.len() < ids.len() {
        let batch = expect_batch(dying.as_mut(), 10, "the five messages").await;
        in_hand.extend(ids_of(&batch));
        // Never acked: the consumer goes away with the batch in hand.
        drop(batch);
    }
    drop(dying);

    let mut successor = bus.subscribe(&group).await.unwrap();
    let mut again = Vec::new();
    while again.len() < ids.len() {
        let batch = expect_batch(successor.as_mut(), 10, "the five messages again").await;
        for delivery in &batch.deliveries {
            assert!(delivery.attempt >= 2, "{delivery:?}");
        }
        again.extend(ids_of(&batch));
        batch.ack_all().await.unwrap();
    }
    assert_eq!(again.len(), ids.len(), "each once: {again:?}");
    assert_eq!(as_set(&again), as_set(&ids), "none lost");
    expect_silence(successor.as_mut(), SHORT * 3, "all were acked").await;
}

async fn a_poison_message_in_a_batch_is_dead_lettered_without_holding_up_the_rest(kind: BusKind) {
    let test = TestBus::create(kind).await;
    let bus = test.bus.as_ref();
    let group = config("orders", SHORT, 3);
    let mut sub = bus.subscribe(&group).await.unwrap();
    let poison = new_id();
    let good: Vec<String> = (0..4).map(|_| new_id()).collect();
    let published = [&good[..2], std::slice::from_ref(&poison), &good[2..]].concat();
    publish_all(bus, &published).await;

    // The consumer acknowledges everything but the poison, which it never can.
    let mut good_deliveries = Vec::new();
    let mut poison_attempts = Vec::new();
    let deadline = Instant::now() + WAIT;
    while poison_attempts.len() < 3 && Instant::now() < deadline {
        let batch = expect_batch(sub.as_mut(), 10, "the batch, then the poison again").await;
        let mut done = Vec::new();
        for (position, delivery) in batch.deliveries.iter().enumerate() {
            if delivery.message_id == poison {
                poison_attempts.push(delivery.attempt);
            } else {
                good_deliveries.push(delivery.message_id.clone());
                done.push(position);
            }
        }
        batch.ack(&done).await.unwrap();
    }
    assert_eq!(poison_attempts, [1, 2, 3]);
    assert_eq!(
        good_deliveries.len(),
        good.len(),
        "the others once each, never again with the poison: {good_deliveries:?}"
    );
    assert_eq!(as_set(&good_deliveries), as_set(&good));

    // What comes next is not held up behind it.
    let next = new_id();
    publish(bus, &next).await;
    let batch = expect_batch(sub.as_mut(), 10, "the next message").await;
    assert_eq!(ids_of(&batch), [next]);
    batch.ack_all().await.unwrap();
    // Its fourth turn moves it to the dead letters rather than to the consumer.
    expect_silence(
        sub.as_mut(),
        SHORT * 3,
        "the poison is dead, the rest acked",
    )
    .await;
    let dead = bus.dead_letters(&group).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].message_id, poison);
    assert_eq!(dead[0].deliveries, 3);
}

async fn copies_are_dropped_across_batches(kind: BusKind) {
    let test = TestBus::create(kind).await;
    let bus = test.bus.as_ref();
    let mut sub = bus.subscribe(&config("orders", LONG, 5)).await.unwrap();
    let (first, second, third) = (new_id(), new_id(), new_id());
    publish_all(bus, &[first.clone(), second.clone()]).await;
    let mut got = Vec::new();
    while got.len() < 2 {
        let batch = expect_batch(sub.as_mut(), 10, "the first two").await;
        got.extend(ids_of(&batch));
        batch.ack_all().await.unwrap();
    }

    // A copy of an acknowledged message, published again beside a new one.
    publish_all(bus, &[first.clone(), third.clone()]).await;
    let batch = expect_batch(sub.as_mut(), 10, "the new message").await;
    assert_eq!(ids_of(&batch), [third]);
    batch.ack_all().await.unwrap();
    expect_silence(sub.as_mut(), Duration::from_secs(1), "the copy was dropped").await;
    assert_eq!(as_set(&got), as_set(&[first, second]));
}

async fn members_of_a_group_share_batches(kind: BusKind) {
    let test = TestBus::create(kind).await;
    let bus = test.bus.clone();
    let group = config("orders", LONG, 5);
    // (member, message id) for every delivery, in the order they were acked.
    let seen: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();

    let mut members = Vec::new();
    for member in 0..2 {
        let mut sub = bus.subscribe(&group).await.unwrap();
        let seen = seen.clone();
        members.push(tokio::spawn(async move {
            loop {
                let batch = sub.next_batch(4).await.unwrap();
                assert!(batch.len() <= 4);
                // A little work, so that the other member gets its turn.
                tokio::time::sleep(Duration::from_millis(20)).await;
                batch.ack_all().await.unwrap();
                let mut seen = seen.lock().unwrap();
                seen.extend(ids_of(&batch).into_iter().map(|id| (member, id)));
            }
        }));
    }

    assert_two_members_share_once(bus.as_ref(), &seen, members, 40).await;
}

async fn every_message_of_a_published_batch_is_delivered_once(kind: BusKind) {
    let test = TestBus::create(kind).await;
    let bus = test.bus.as_ref();
    let mut sub = bus.subscribe(&config("orders", LONG, 5)).await.unwrap();
    let message = |id: &String| Message {
        id: id.clone(),
        event_type: EventType::TicketCreated,
        payload: payload_of(id),
        headers: Default::default(),
    };
    let ids: Vec<String> = (0..5).map(|_| new_id()).collect();
    let first: Vec<Message> = ids[..3].iter().map(message).collect();
    bus.publish_batch(&first).await.unwrap();
    // The second batch repeats one of the first: the copy is dropped, the rest stored.
    let second: Vec<Message> = ids[2..].iter().map(message).collect();
    bus.publish_batch(&second).await.unwrap();

    let got = receive_and_ack(sub.as_mut(), ids.len()).await;
    assert_eq!(got, ids, "every message once, in the order published");
    expect_silence(sub.as_mut(), Duration::from_secs(1), "the copy was dropped").await;
}

/// A bus log in a folder of the test's own, reopened as a restarted process would.
struct BusFile {
    _dir: tempfile::TempDir,
    url: String,
}

impl BusFile {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("bus.sqlite").display());
        Self { _dir: dir, url }
    }

    async fn open(&self) -> EmbeddedBus {
        EmbeddedBus::open(&self.url).await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_bus_keeps_its_messages_across_a_restart() {
    let file = BusFile::new();
    let group = config("orders", SHORT, 5);
    let ids = [new_id(), new_id()];

    let bus = file.open().await;
    for id in &ids {
        publish(&bus, id).await;
    }
    bus.close().await;
    drop(bus);

    let bus = file.open().await;
    // The log still knows the ids it holds: a publish of one again is a duplicate.
    publish(&bus, &ids[0]).await;
    let mut sub = bus.subscribe(&group).await.unwrap();
    let got = receive_and_ack(sub.as_mut(), ids.len()).await;
    assert_eq!(got, ids);
    expect_silence(sub.as_mut(), SHORT * 2, "no copy after the restart").await;
    drop(sub);
    bus.close().await;
    drop(bus);

    // The acks are kept too: nothing comes back after another restart.
    let bus = file.open().await;
    let mut sub = bus.subscribe(&group).await.unwrap();
    expect_silence(sub.as_mut(), SHORT * 3, "every message was acked").await;
    drop(sub);
    bus.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_bus_redelivers_an_in_flight_message_after_a_restart() {
    let file = BusFile::new();
    let group = config("orders", SHORT, 5);
    let id = new_id();

    let bus = file.open().await;
    let mut sub = bus.subscribe(&group).await.unwrap();
    publish(&bus, &id).await;
    let in_hand = expect_next(sub.as_mut(), "the message").await;
    assert_eq!(
        (in_hand.message_id.as_str(), in_hand.attempt),
        (id.as_str(), 1)
    );
    // The process stops with the message in hand.
    drop(in_hand);
    drop(sub);
    bus.close().await;
    drop(bus);

    let bus = file.open().await;
    let mut sub = bus.subscribe(&group).await.unwrap();
    let again = expect_next(sub.as_mut(), "the in-flight message after the restart").await;
    assert_eq!((again.message_id.as_str(), again.attempt), (id.as_str(), 2));
    again.ack().await.unwrap();
    expect_silence(sub.as_mut(), SHORT * 3, "it was acked").await;
    drop(sub);
    bus.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_log_keeps_a_message_until_every_group_has_acknowledged_it() {
    let file = BusFile::new();
    let bus = file.open().await;
    let mut tickets = bus.subscribe(&config("tickets", LONG, 5)).await.unwrap();
    let mut orders = bus.subscribe(&config("orders", SHORT, 5)).await.unwrap();
    let ids: Vec<String> = (0..4).map(|_| new_id()).collect();
    for id in &ids {
        publish(&bus, id).await;
    }
    // Old enough, whatever their age: only the consumers decide here.
    let any_age = now_millis() + 1;

    receive_and_ack(tickets.as_mut(), ids.len()).await;
    assert_eq!(
        bus.compact(any_age).await.unwrap(),
        0,
        "orders has read none of them"
    );

    // Orders acknowledges the first two and holds the others unacknowledged.
    let mut held = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let delivery = expect_next(orders.as_mut(), id).await;
        assert_eq!(&delivery.message_id, id);
        if i < 2 {
            delivery.ack().await.unwrap();
        } else {
            held.push(delivery);
        }
    }
    assert_eq!(bus.compact(any_age).await.unwrap(), 2);
    assert_eq!(bus.size().await.unwrap().messages, 2);

    // What a consumer still holds stays deliverable: the two come back after the ack wait.
    drop(held);
    let again = receive_and_ack(orders.as_mut(), 2).await;
    assert_eq!(again, ids[2..]);
    assert_eq!(bus.compact(any_age).await.unwrap(), 2);
    assert_eq!(bus.size().await.unwrap().messages, 0);
    drop((tickets, orders));
    bus.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_recent_messages_as_copies_and_dead_letters_for_good() {
    let file = BusFile::new();
    let bus = file.open().await;
    let group = config("orders", SHORT, 5);
    let mut sub = bus.subscribe(&group).await.unwrap();
    let (kept, poison) = (new_id(), new_id());
    publish(&bus, &kept).await;
    publish(&bus, &poison).await;
    expect_next(sub.as_mut(), "the first")
        .await
        .ack()
        .await
        .unwrap();
    let dying = expect_next(sub.as_mut(), "the poison").await;
    dying.reject("cannot be read").await.unwrap();

    // Both are settled, yet within the window they stay, so a copy is still recognised.
    let window = i64::try_from(DEDUPLICATION_WINDOW.as_millis()).unwrap();
    assert_eq!(bus.compact(now_millis() - window).await.unwrap(), 0);
    publish(&bus, &kept).await;
    expect_silence(sub.as_mut(), SHORT * 2, "a copy within the window").await;

    // Past the window they go; the dead letter keeps its own copy until an operator clears it.
    assert_eq!(bus.compact(now_millis() + 1).await.unwrap(), 2);
    let size = bus.size().await.unwrap();
    assert_eq!((size.messages, size.dead_letters), (0, 1));
    let dead = bus.dead_letters(&group).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].message_id, poison);
    assert_eq!(dead[0].payload, payload_of(&poison));
    drop(sub);
    bus.close().await;
}
