//! What the service does when orders change: order:created reserves the ticket, order:cancelled
//! releases it, whatever order, however often and however late the two arrive.

use common::events::{EventType, TicketUpdated};
use common::store::Dialect;
use testkit::{Backend, json};
use uuid::Uuid;

use crate::helpers::{id_of, order_cancelled, order_created, order_created_at, spawn_app};

testkit::each_database!(
    an_order_created_reserves_the_ticket,
    an_order_cancelled_releases_the_ticket,
    a_stale_cancellation_does_not_release_a_ticket_held_by_a_newer_order,
    an_order_for_a_held_ticket_waits_for_the_earlier_cancellation,
    a_cancellation_before_its_order_leaves_the_ticket_for_sale,
    an_order_for_an_unknown_ticket_is_retried_then_dead_lettered,
    the_same_order_announced_twice_reserves_once,
    an_edit_that_crossed_an_order_is_undone_when_the_reservation_arrives,
    an_order_announced_without_a_title_restores_the_price_and_keeps_the_title,
);

async fn an_order_created_reserves_the_ticket(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut updated = app.watch::<TicketUpdated>().await;
    let alice = app.sign_in();
    let id = id_of(&app.list_ticket(&alice, "Concert", json!(20)).await);
    let order_id = Uuid::now_v7();

    app.publish(&order_created(order_id, &id)).await;

    let ticket = app.ticket_at_version(&id, 1).await;
    assert_eq!(ticket["orderId"], order_id.to_string());
    assert_eq!(ticket["title"], "Concert");
    assert_eq!(ticket["price"], json!(20));
    let event = updated.next().await;
    assert_eq!(event.data.id.to_string(), id);
    assert_eq!(event.data.version, 1);
    assert_eq!(event.data.order_id, Some(order_id));
    assert!(!app.listed_ids("").await.contains(&id));
}

async fn an_order_cancelled_releases_the_ticket(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut updated = app.watch::<TicketUpdated>().await;
    let alice = app.sign_in();
    let id = id_of(&app.list_ticket(&alice, "Concert", json!(20)).await);
    let order_id = Uuid::now_v7();
    app.publish(&order_created(order_id, &id)).await;
    app.ticket_at_version(&id, 1).await;

    app.publish(&order_cancelled(order_id, &id)).await;

    let ticket = app.ticket_at_version(&id, 2).await;
    assert_eq!(ticket["orderId"], json!(null));
    let reserved = updated.next().await;
    let released = updated.next().await;
    assert_eq!(reserved.data.version, 1);
    assert_eq!(released.data.version, 2);
    assert_eq!(released.data.order_id, None);
    assert_eq!(app.listed_ids("").await, [id]);
}

async fn a_stale_cancellation_does_not_release_a_ticket_held_by_a_newer_order(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let id = id_of(&app.list_ticket(&alice, "Concert", json!(20)).await);
    let (older, newer) = (Uuid::now_v7(), Uuid::now_v7());
    app.publish(&order_created(older, &id)).await;
    app.ticket_at_version(&id, 1).await;
    app.publish(&order_cancelled(older, &id)).await;
    app.ticket_at_version(&id, 2).await;
    app.publish(&order_created(newer, &id)).await;
    app.ticket_at_version(&id, 3).await;

    // The older order's cancellation again, as a new message (an expiry after the owner's
    // cancellation, say): the inbox cannot recognise it, the ticket's holder must.
    let stale = app.publish(&order_cancelled(older, &id)).await;
    app.handled(stale).await;

    let ticket = app.ticket(&id).await;
    assert_eq!(ticket["orderId"], newer.to_string());
    assert_eq!(ticket["version"], 3);
    assert!(app.listed_ids("").await.is_empty());
}

async fn an_order_for_a_held_ticket_waits_for_the_earlier_cancellation(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let id = id_of(&app.list_ticket(&alice, "Concert", json!(20)).await);
    let (older, newer) = (Uuid::now_v7(), Uuid::now_v7());
    app.publish(&order_created(older, &id)).await;
    app.ticket_at_version(&id, 1).await;

    // The newer order arrives while the older one still holds the ticket: it is not applied
    // and not dropped, but retried until the older order's cancellation has been applied.
    let waiting = app.publish(&order_created(newer, &id)).await;
    app.publish(&order_cancelled(older, &id)).await;

    app.handled(waiting).await;
    let ticket = app.ticket(&id).await;
    assert_eq!(ticket["orderId"], newer.to_string());
    assert_eq!(ticket["version"], 3);
}

async fn a_cancellation_before_its_order_leaves_the_ticket_for_sale(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let created = app.list_ticket(&alice, "Concert", json!(20)).await;
    let id = id_of(&created);
    let order_id = Uuid::now_v7();

    let cancelled = app.publish(&order_cancelled(order_id, &id)).await;
    app.handled(cancelled).await;
    let placed = app.publish(&order_created(order_id, &id)).await;
    app.handled(placed).await;

    assert_eq!(app.ticket(&id).await, created);
    assert_eq!(app.listed_ids("").await, [id]);
}

async fn an_order_for_an_unknown_ticket_is_retried_then_dead_lettered(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let existing = app.list_ticket(&alice, "Concert", json!(20)).await;
    let unknown = Uuid::now_v7().to_string();

    let event = app.publish(&order_created(Uuid::now_v7(), &unknown)).await;

    let dead = app.dead_lettered(EventType::OrderCreated, event).await;
    assert_eq!(
        dead.deliveries, app.ctx.listeners.max_deliver,
        "retried before giving up"
    );
    assert!(!app.has_handled(event).await);
    assert_eq!(app.ticket(&id_of(&existing)).await, existing);
    let reply = app
        .anonymous()
        .get(&format!("/api/tickets/{unknown}"))
        .await;
    assert_eq!(reply.status, 404);
}

async fn the_same_order_announced_twice_reserves_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let id = id_of(&app.list_ticket(&alice, "Concert", json!(20)).await);
    let order_id = Uuid::now_v7();

    // Two messages, two ids, one order: the inbox sees two events, the ticket one reservation.
    let first = app.publish(&order_created(order_id, &id)).await;
    let second = app.publish(&order_created(order_id, &id)).await;
    app.handled(first).await;
    app.handled(second).await;

    let ticket = app.ticket(&id).await;
    assert_eq!(ticket["orderId"], order_id.to_string());
    assert_eq!(ticket["version"], 1);
}

async fn an_edit_that_crossed_an_order_is_undone_when_the_reservation_arrives(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut updated = app.watch::<TicketUpdated>().await;
    let alice = app.sign_in();
    let id = id_of(&app.list_ticket(&alice, "Concert", json!(20)).await);
    let order_id = Uuid::now_v7();
    // A buyer has ordered the ticket as listed, and the seller edits it before the order's
    // event arrives here: the edit is accepted, as nothing here knows of the order yet.
    edit_to_cheap_seats(&alice, &id).await;

    app.publish(&order_created_at(order_id, &id, "Concert", 2000))
        .await;

    let reserved = app.ticket_at_version(&id, 2).await;
    assert_eq!(reserved["orderId"], order_id.to_string());
    assert_eq!(reserved["title"], "Concert");
    assert_eq!(reserved["price"], json!(20));
    let edited = updated.next().await;
    assert_eq!((edited.data.version, edited.data.price.get()), (1, 100));
    let announced = updated.next().await;
    assert_eq!(announced.data.version, 2);
    assert_eq!(announced.data.price.get(), 2000);
    assert_eq!(announced.data.title, "Concert");

    // If the order lapses the ticket is for sale again as its buyer saw it.
    app.publish(&order_cancelled(order_id, &id)).await;
    let released = app.ticket_at_version(&id, 3).await;
    assert_eq!(released["orderId"], json!(null));
    assert_eq!(released["price"], json!(20));
}

async fn an_order_announced_without_a_title_restores_the_price_and_keeps_the_title(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let id = id_of(&app.list_ticket(&alice, "Concert", json!(20)).await);
    edit_to_cheap_seats(&alice, &id).await;
    // An order:created from before orders kept the title it was placed at.
    let mut untitled = order_created_at(Uuid::now_v7(), &id, "Concert", 2000);
    untitled.data.ticket.title = None;

    app.publish(&untitled).await;

    let reserved = app.ticket_at_version(&id, 2).await;
    assert_eq!(reserved["orderId"], untitled.data.id.to_string());
    assert_eq!(reserved["title"], "Cheap seats");
    assert_eq!(reserved["price"], json!(20));
}

/// The seller edits the ticket to "Cheap seats" at 1, which is accepted.
async fn edit_to_cheap_seats(seller: &testkit::Client, id: &str) {
    let edit = seller
        .put(
            &format!("/api/tickets/{id}"),
            json!({"title": "Cheap seats", "price": 1}),
        )
        .await;
    assert_eq!(edit.status, 200, "{:?}", edit.body);
}

testkit::postgres_test! {
    async fn a_reservation_that_waited_for_the_ticket_sees_the_cancellation_committed_meanwhile() {
        let app = spawn_app(Backend::Postgres).await;
        let alice = app.sign_in();
        let ticket = Uuid::parse_str(&id_of(&app.list_ticket(&alice, "Concert", json!(20)).await))
            .unwrap();
        let order = Uuid::now_v7();
        let store = app.ctx.store.clone();
        // The order's cancellation holds the ticket's lock, its tombstone written, not committed.
        let mut cancelling = store.begin().await.unwrap();
        tickets::store::lock(&mut cancelling, Dialect::Postgres, ticket)
            .await
            .unwrap();
        tickets::store::record_cancelled_order(&mut cancelling, order, ticket)
            .await
            .unwrap();
        // The order's own order:created asks for the lock meanwhile, and waits for it.
        let reserving = tokio::spawn({
            let store = store.clone();
            async move {
                let mut tx = store.begin().await.unwrap();
                tickets::store::lock_for_order(&mut tx, Dialect::Postgres, ticket, order)
                    .await
                    .unwrap()
            }
        });
        testkit::eventually("the reservation to wait for the lock", || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(store.pool())
            .await
            .unwrap();
            (waiting > 0).then_some(())
        })
        .await;

        cancelling.commit().await.unwrap();

        let (_, cancelled) = reserving.await.unwrap().unwrap();
        assert!(cancelled, "the reservation missed the cancellation it waited for");
    }
}
