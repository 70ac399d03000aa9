//! `/api/orders`: every status code of every orders endpoint, in the one error shape.

use std::time::Duration;

use common::events::{
    Envelope, EventType, OrderCancelled, OrderCreated, OrderStatus, OrderTicket, TicketCreated,
};
use common::money::Cents;
use testkit::{Backend, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::helpers::{id_of, payment_created, spawn_app, spawn_app_awaiting, spawn_app_with};

testkit::each_database!(
    placing_an_order_returns_201_with_the_order_and_announces_it,
    the_payment_window_is_the_configured_one,
    placing_an_order_requires_signing_in,
    placing_an_order_without_a_valid_ticket_id_names_the_field,
    a_body_that_is_not_json_is_refused_in_the_error_shape,
    ordering_a_ticket_that_is_not_listed_is_404,
    ordering_a_ticket_listed_a_moment_ago_waits_for_it,
    ordering_a_reserved_ticket_returns_400,
    ordering_your_own_ticket_returns_400,
    listing_shows_only_my_orders_newest_first_with_their_tickets,
    listing_orders_requires_signing_in,
    paging_by_cursor_shows_each_order_once_while_more_are_placed,
    showing_an_order_to_its_owner_returns_it,
    showing_an_order_to_anyone_else_returns_401,
    showing_an_unknown_or_malformed_order_is_404,
    cancelling_an_order_returns_204_and_announces_it,
    cancelling_a_cancelled_order_returns_204_and_announces_nothing,
    cancelling_a_paid_order_returns_400,
    cancelling_an_order_as_anyone_else_returns_401,
    cancelling_an_unknown_or_malformed_order_is_404,
    a_cancelled_orders_ticket_can_be_ordered_again_by_someone_else,
);

fn parse_time(text: &str) -> OffsetDateTime {
    assert!(text.ends_with('Z'), "{text} is not UTC");
    OffsetDateTime::parse(text, &Rfc3339).unwrap()
}

/// Asserts that an order placed between `before` and `after` expires `window` after it was
/// placed (times are kept to the millisecond, hence the one millisecond of slack).
fn assert_expires_within(
    expires_at: OffsetDateTime,
    before: OffsetDateTime,
    after: OffsetDateTime,
    window: time::Duration,
) {
    let earliest = before + window - time::Duration::milliseconds(1);
    let latest = after + window;
    assert!(
        earliest <= expires_at && expires_at <= latest,
        "expires at {expires_at}, not between {earliest} and {latest}"
    );
}

async fn placing_an_order_returns_201_with_the_order_and_announces_it(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut created = app.watch::<OrderCreated>().await;
    let (seller, buyer) = (app.sign_in(), app.sign_in());
    let ticket = app.list_ticket(seller.id, "Concert", 1999).await;
    let before = OffsetDateTime::now_utc();

    let reply = buyer
        .post("/api/orders", json!({"ticketId": ticket.id.to_string()}))
        .await;

    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let order = &reply.body;
    let id = id_of(order);
    assert_eq!(id.get_version_num(), 7);
    assert_eq!(order["userId"], buyer.id.to_string());
    assert_eq!(order["status"], "created");
    assert_eq!(order["version"], 0);
    assert_eq!(
        order["ticket"],
        json!({"id": ticket.id.to_string(), "title": "Concert", "price": 19.99, "version": 0})
    );
    let expires_at = parse_time(order["expiresAt"].as_str().unwrap());
    assert_expires_within(
        expires_at,
        before,
        OffsetDateTime::now_utc(),
        time::Duration::minutes(15),
    );
    assert_eq!(order.as_object().unwrap().len(), 6, "{order}");
    // What was answered is what was stored.
    assert_eq!(&app.order(&buyer, id).await, order);

    let event = created.next().await;
    assert_eq!(event.event_type, EventType::OrderCreated);
    assert_eq!(
        event.data,
        OrderCreated {
            id,
            version: 0,
            status: OrderStatus::Created,
            user_id: buyer.id,
            expires_at,
            ticket: OrderTicket {
                id: ticket.id,
                price: Cents::new(1999).unwrap(),
                title: Some("Concert".into()),
            },
            listing: 0,
        }
    );
}

async fn the_payment_window_is_the_configured_one(backend: Backend) {
    let settings = orders::Settings {
        order_expiration: Duration::from_secs(5),
        ..orders::Settings::default()
    };
    let app = spawn_app_with(backend, &settings, testkit::quick_listeners()).await;
    let (seller, buyer) = (app.sign_in(), app.sign_in());
    let ticket = app.list_ticket(seller.id, "Concert", 2000).await;
    let before = OffsetDateTime::now_utc();

    let order = app.place_order(&buyer, ticket.id).await;

    let expires_at = parse_time(order["expiresAt"].as_str().unwrap());
    assert_expires_within(
        expires_at,
        before,
        OffsetDateTime::now_utc(),
        time::Duration::seconds(5),
    );
}

async fn placing_an_order_requires_signing_in(backend: Backend) {
    let app = spawn_app(backend).await;
    let seller = app.sign_in();
    let ticket = app.list_ticket(seller.id, "Concert", 2000).await;
    let body = json!({"ticketId": ticket.id.to_string()});

    let anonymous = app.anonymous().post("/api/orders", body.clone()).await;
    let client = app.anonymous();
    let forged = client
        .send(
            client
                .http
                .post(format!("{}/api/orders", client.base))
                .bearer_auth("not.a.token")
                .json(&body),
        )
        .await;

    for reply in [anonymous, forged] {
        assert_eq!(reply.status, 401, "{:?}", reply.body);
        reply.assert_error_shape();
        assert!(reply.error_fields().is_empty());
    }
    // Nobody holds the ticket.
    app.place_order(&app.sign_in(), ticket.id).await;
}

async fn placing_an_order_without_a_valid_ticket_id_names_the_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let buyer = app.sign_in();
    let cases = [
        (json!({}), "Ticket id is required"),
        (json!({"ticketId": null}), "Ticket id is required"),
        (json!({"ticketId": ""}), "Ticket id is required"),
        (
            json!({"ticketId": "not-a-uuid"}),
            "Ticket id must be a valid id",
        ),
        (json!({"ticketId": 42}), "Ticket id must be a valid id"),
        (json!({"ticketId": ["x"]}), "Ticket id must be a valid id"),
    ];

    for (body, message) in cases {
        let reply = buyer.post("/api/orders", body.clone()).await;

        assert_eq!(reply.status, 400, "{body}: {:?}", reply.body);
        reply.assert_error_shape();
        assert_eq!(reply.error_fields(), ["ticketId"], "{body}");
        assert_eq!(reply.error_messages(), [message], "{body}");
    }
}

async fn a_body_that_is_not_json_is_refused_in_the_error_shape(backend: Backend) {
    let app = spawn_app(backend).await;
    let buyer = app.sign_in();

    let reply = buyer.post_raw_json("/api/orders", "{\"ticketId\": ").await;

    assert_eq!(reply.status, 400, "{:?}", reply.body);
    reply.assert_error_shape();
}

async fn ordering_a_ticket_that_is_not_listed_is_404(backend: Backend) {
    let app = spawn_app(backend).await;
    let buyer = app.sign_in();

    let reply = buyer
        .post(
            "/api/orders",
            json!({"ticketId": Uuid::now_v7().to_string()}),
        )
        .await;

    assert_eq!(reply.status, 404, "{:?}", reply.body);
    reply.assert_error_shape();
    assert!(reply.error_fields().is_empty());
    assert_eq!(buyer.get("/api/orders").await.body, json!([]));
}

async fn ordering_a_ticket_listed_a_moment_ago_waits_for_it(backend: Backend) {
    let app = spawn_app_awaiting(backend).await;
    let (seller, buyer) = (app.sign_in(), app.sign_in());
    let listed = Envelope::new(TicketCreated {
        id: Uuid::now_v7(),
        version: 0,
        title: "Concert".into(),
        price: Cents::new(2000).unwrap(),
        user_id: seller.id,
        event_id: None,
        event_starts_at: None,
    });

    // The buyer's order comes before the ticket's event; the event comes while it waits.
    let order = buyer.post(
        "/api/orders",
        json!({"ticketId": listed.data.id.to_string()}),
    );
    let event_on_its_way = async {
        testkit::eventually("the order to wait for its ticket", || async {
            (app.ctx.arrivals.waiting() == 1).then_some(())
        })
        .await;
        app.publish(&listed).await;
    };
    let (reply, ()) = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(order, event_on_its_way)
    })
    .await
    .expect("the order is woken when its ticket arrives");

    assert_eq!(reply.status, 201, "{:?}", reply.body);
    assert_eq!(reply.body["ticket"]["id"], listed.data.id.to_string());
    assert_eq!(app.ctx.arrivals.waiting(), 0);
}

async fn ordering_a_reserved_ticket_returns_400(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut created = app.watch::<OrderCreated>().await;
    let (seller, first, second) = (app.sign_in(), app.sign_in(), app.sign_in());
    let ticket = app.list_ticket(seller.id, "Concert", 2000).await;
    let held = app.place_order(&first, ticket.id).await;

    let again = first
        .post("/api/orders", json!({"ticketId": ticket.id.to_string()}))
        .await;
    let other = second
        .post("/api/orders", json!({"ticketId": ticket.id.to_string()}))
        .await;

    for reply in [again, other] {
        assert_eq!(reply.status, 400, "{:?}", reply.body);
        reply.assert_error_shape();
        assert_eq!(reply.error_messages(), ["Ticket is already reserved"]);
        assert_eq!(reply.error_codes(), ["ticket_reserved"]);
        assert!(reply.error_fields().is_empty());
    }
    assert_eq!(second.get("/api/orders").await.body, json!([]));
    assert_eq!(first.get("/api/orders").await.body, json!([held]));
    app.flushed().await;
    let announced: Vec<Uuid> = created.rest().await.iter().map(|e| e.data.id).collect();
    assert_eq!(
        announced,
        [id_of(&held)],
        "only the placed order is announced"
    );
}

async fn ordering_your_own_ticket_returns_400(backend: Backend) {
    let app = spawn_app(backend).await;
    let seller = app.sign_in();
    let ticket = app.list_ticket(seller.id, "Concert", 2000).await;

    let reply = seller
        .post("/api/orders", json!({"ticketId": ticket.id.to_string()}))
        .await;

    assert_eq!(reply.status, 400, "{:?}", reply.body);
    reply.assert_error_shape();
    assert_eq!(reply.error_messages(), ["You cannot buy your own ticket"]);
    assert_eq!(reply.error_codes(), ["own_ticket"]);
    assert!(reply.error_fields().is_empty());
    assert_eq!(seller.get("/api/orders").await.body, json!([]));
    // The ticket is still for sale to anyone else.
    app.place_order(&app.sign_in(), ticket.id).await;
}

async fn listing_shows_only_my_orders_newest_first_with_their_tickets(backend: Backend) {
    let app = spawn_app(backend).await;
    let (seller, alice, bob) = (app.sign_in(), app.sign_in(), app.sign_in());
    let first = app.list_ticket(seller.id, "First", 1000).await;
    let second = app.list_ticket(seller.id, "Second", 2050).await;
    let third = app.list_ticket(seller.id, "Third", 3000).await;
    assert_eq!(alice.get("/api/orders").await.body, json!([]));

    let older = app.place_order(&alice, first.id).await;
    let bobs = app.place_order(&bob, second.id).await;
    let newer = app.place_order(&alice, third.id).await;
    let cancelled = alice
        .delete(&format!("/api/orders/{}", id_of(&older)))
        .await;
    assert_eq!(cancelled.status, 204);

    let reply = alice.get("/api/orders").await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let listed = reply.body.as_array().unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0], newer);
    assert_eq!(listed[1]["id"], older["id"]);
    assert_eq!(
        listed[1]["status"], "cancelled",
        "cancelled orders stay listed"
    );
    assert_eq!(listed[1]["ticket"]["title"], "First");
    assert_eq!(bob.get("/api/orders").await.body, json!([bobs]));
}

async fn listing_orders_requires_signing_in(backend: Backend) {
    let app = spawn_app(backend).await;
    let (seller, buyer) = (app.sign_in(), app.sign_in());
    let ticket = app.list_ticket(seller.id, "Concert", 2000).await;
    app.place_order(&buyer, ticket.id).await;

    let reply = app.anonymous().get("/api/orders").await;

    assert_eq!(reply.status, 401, "{:?}", reply.body);
    reply.assert_error_shape();
}

async fn paging_by_cursor_shows_each_order_once_while_more_are_placed(backend: Backend) {
    let app = spawn_app(backend).await;
    let (seller, alice) = (app.sign_in(), app.sign_in());
    // Each order is cancelled once placed, so that the cap on live holds never refuses one.
    let order_one = |title: String| {
        let (app, seller, alice) = (&app, &seller, &alice);
        async move {
            let ticket = app.list_ticket(seller.id, &title, 1000).await;
            let order = id_of(&app.place_order(alice, ticket.id).await);
            let cancelled = alice.delete(&format!("/api/orders/{order}")).await;
            assert_eq!(cancelled.status, 204, "{:?}", cancelled.body);
            order
        }
    };
    let mut before = Vec::new();
    for n in 0..7 {
        before.push(order_one(format!("Ticket {n}")).await);
    }
    before.reverse(); // newest first

    let pages = alice
        .pages("/api/orders?limit=3", |pages| {
            let order_one = &order_one;
            async move {
                for n in 0..2 {
                    order_one(format!("Later {pages}.{n}")).await;
                }
            }
        })
        .await;
    assert!(pages.iter().all(|page| page.len() <= 3));
    let seen: Vec<_> = pages.iter().flatten().map(id_of).collect();
    let pages = pages.len();

    assert_eq!(
        seen, before,
        "each order once, newest first, nothing placed later"
    );
    assert_eq!(pages, 3, "two full pages and one of a single order");

    let reply = alice.get("/api/orders?cursor=nope").await;
    assert_eq!(reply.status, 400, "{:?}", reply.body);
    assert_eq!(reply.error_fields(), ["cursor"]);
}

async fn showing_an_order_to_its_owner_returns_it(backend: Backend) {
    let app = spawn_app(backend).await;
    let (seller, buyer) = (app.sign_in(), app.sign_in());
    let ticket = app.list_ticket(seller.id, "Concert", 2000).await;
    let placed = app.place_order(&buyer, ticket.id).await;

    let reply = buyer.get(&format!("/api/orders/{}", id_of(&placed))).await;

    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.body, placed);
}

async fn showing_an_order_to_anyone_else_returns_401(backend: Backend) {
    let app = spawn_app(backend).await;
    let (seller, buyer, other) = (app.sign_in(), app.sign_in(), app.sign_in());
    let ticket = app.list_ticket(seller.id, "Concert", 2000).await;
    let path = format!(
        "/api/orders/{}",
        id_of(&app.place_order(&buyer, ticket.id).await)
    );

    for reply in [
        other.get(&path).await,
        seller.get(&path).await,
        app.anonymous().get(&path).await,
    ] {
        assert_eq!(reply.status, 401, "{:?}", reply.body);
        reply.assert_error_shape();
    }
}

async fn showing_an_unknown_or_malformed_order_is_404(backend: Backend) {
    let app = spawn_app(backend).await;
    let buyer = app.sign_in();

    for id in [Uuid::now_v7().to_string(), "not-a-uuid".to_owned()] {
        let reply = buyer.get(&format!("/api/orders/{id}")).await;

        assert_eq!(reply.status, 404, "{id}: {:?}", reply.body);
        reply.assert_error_shape();
    }
}

async fn cancelling_an_order_returns_204_and_announces_it(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut cancelled = app.watch::<OrderCancelled>().await;
    let (seller, buyer) = (app.sign_in(), app.sign_in());
    let ticket = app.list_ticket(seller.id, "Concert", 2000).await;
    let placed = app.place_order(&buyer, ticket.id).await;
    let id = id_of(&placed);

    let reply = buyer.delete(&format!("/api/orders/{id}")).await;

    assert_eq!(reply.status, 204, "{:?}", reply.body);
    let order = app.order(&buyer, id).await;
    assert_eq!(order["status"], "cancelled");
    assert_eq!(order["version"], 1);
    assert_eq!(order["expiresAt"], placed["expiresAt"]);
    let event = cancelled.next().await;
    assert_eq!(event.event_type, EventType::OrderCancelled);
    assert_eq!(
        event.data,
        OrderCancelled {
            id,
            version: 1,
            ticket: common::events::TicketRef { id: ticket.id },
        }
    );
}

async fn cancelling_a_cancelled_order_returns_204_and_announces_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut cancelled = app.watch::<OrderCancelled>().await;
    let (seller, buyer) = (app.sign_in(), app.sign_in());
    let ticket = app.list_ticket(seller.id, "Concert", 2000).await;
    let id = id_of(&app.place_order(&buyer, ticket.id).await);
    let path = format!("/api/orders/{id}");
    assert_eq!(buyer.delete(&path).await.status, 204);

    let again = buyer.delete(&path).await;

    assert_eq!(again.status, 204, "{:?}", again.body);
    let order = app.order(&buyer, id).await;
    assert_eq!(order["status"], "cancelled");
    assert_eq!(order["version"], 1);
    app.flushed().await;
    let versions: Vec<i64> = cancelled
        .rest()
        .await
        .iter()
        .map(|e| e.data.version)
        .collect();
    assert_eq!(versions, [1], "one order:cancelled");
}

async fn cancelling_a_paid_order_returns_400(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut cancelled = app.watch::<OrderCancelled>().await;
    let (seller, buyer) = (app.sign_in(), app.sign_in());
    let ticket = app.list_ticket(seller.id, "Concert", 2000).await;
    let id = id_of(&app.place_order(&buyer, ticket.id).await);
    app.publish(&payment_created(id)).await;
    let paid = app.order_in_status(&buyer, id, "complete").await;

    let reply = buyer.delete(&format!("/api/orders/{id}")).await;

    assert_eq!(reply.status, 400, "{:?}", reply.body);
    reply.assert_error_shape();
    assert_eq!(reply.error_messages(), ["Cannot cancel a paid order"]);
    assert_eq!(reply.error_codes(), ["order_paid"]);
    assert!(reply.error_fields().is_empty());
    assert_eq!(app.order(&buyer, id).await, paid);
    app.flushed().await;
    assert!(cancelled.rest().await.is_empty());
}

async fn cancelling_an_order_as_anyone_else_returns_401(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut cancelled = app.watch::<OrderCancelled>().await;
    let (seller, buyer, other) = (app.sign_in(), app.sign_in(), app.sign_in());
    let ticket = app.list_ticket(seller.id, "Concert", 2000).await;
    let placed = app.place_order(&buyer, ticket.id).await;
    let path = format!("/api/orders/{}", id_of(&placed));

    for reply in [
        other.delete(&path).await,
        seller.delete(&path).await,
        app.anonymous().delete(&path).await,
    ] {
        assert_eq!(reply.status, 401, "{:?}", reply.body);
        reply.assert_error_shape();
    }
    assert_eq!(app.order(&buyer, id_of(&placed)).await, placed);
    app.flushed().await;
    assert!(cancelled.rest().await.is_empty());
}

async fn cancelling_an_unknown_or_malformed_order_is_404(backend: Backend) {
    let app = spawn_app(backend).await;
    let buyer = app.sign_in();

    for id in [Uuid::now_v7().to_string(), "not-a-uuid".to_owned()] {
        let reply = buyer.delete(&format!("/api/orders/{id}")).await;

        assert_eq!(reply.status, 404, "{id}: {:?}", reply.body);
        reply.assert_error_shape();
    }
}

async fn a_cancelled_orders_ticket_can_be_ordered_again_by_someone_else(backend: Backend) {
    let app = spawn_app(backend).await;
    let (seller, first, second) = (app.sign_in(), app.sign_in(), app.sign_in());
    let ticket = app.list_ticket(seller.id, "Concert", 2000).await;
    let held = id_of(&app.place_order(&first, ticket.id).await);
    assert_eq!(
        first.delete(&format!("/api/orders/{held}")).await.status,
        204
    );

    let reply = second
        .post("/api/orders", json!({"ticketId": ticket.id.to_string()}))
        .await;

    assert_eq!(reply.status, 201, "{:?}", reply.body);
    assert_eq!(reply.body["status"], "created");
    assert_ne!(id_of(&reply.body), held);
    // And now it is held again.
    let third = first
        .post("/api/orders", json!({"ticketId": ticket.id.to_string()}))
        .await;
    assert_eq!(third.status, 400, "{:?}", third.body);
    third.assert_error_shape();
    assert_eq!(third.error_messages(), ["Ticket is already reserved"]);
}
