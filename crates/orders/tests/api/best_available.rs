//! `POST /api/orders` with an event instead of a ticket: the cheapest ticket of the event that the
//! buyer may have is held, and buyers asking at once each get a different one.

use futures::future::join_all;
use testkit::{Backend, Client, Value, json};
use uuid::Uuid;

use crate::helpers::{id_of, spawn_app};

testkit::each_database!(
    the_cheapest_ticket_for_sale_that_is_not_the_buyers_own_is_held,
    a_max_price_is_respected_to_the_cent,
    a_ticket_the_buyer_let_go_is_passed_over_while_it_cools_down,
    buyers_asking_at_once_get_different_tickets_until_none_is_left,
    a_request_naming_an_event_is_checked_field_by_field,
);

/// Asks for the best ticket of `event` as `buyer`.
async fn order_best(buyer: &Client, event: Uuid, max_price: Option<Value>) -> testkit::Reply {
    let mut body = json!({"eventId": event.to_string()});
    if let Some(max_price) = max_price {
        body["maxPrice"] = max_price;
    }
    buyer.post("/api/orders", body).await
}

/// The id of the ticket an order holds.
fn ticket_of(order: &Value) -> Uuid {
    Uuid::parse_str(order["ticket"]["id"].as_str().unwrap()).unwrap()
}

async fn the_cheapest_ticket_for_sale_that_is_not_the_buyers_own_is_held(backend: Backend) {
    let app = spawn_app(backend).await;
    let seller = app.sign_in();
    let buyer = app.sign_in();
    let rival = app.sign_in();
    let event = Uuid::now_v7();
    let own = app
        .list_ticket_for(buyer.id, Some(event), "Mine", 500)
        .await;
    let held = app
        .list_ticket_for(seller.id, Some(event), "Held", 1000)
        .await;
    let twenty_a = app.list_ticket_for(seller.id, Some(event), "A", 2000).await;
    let twenty_b = app.list_ticket_for(seller.id, Some(event), "B", 2000).await;
    let thirty = app.list_ticket_for(seller.id, Some(event), "C", 3000).await;
    app.list_ticket_for(seller.id, Some(Uuid::now_v7()), "Other event", 100)
        .await;
    app.list_ticket(seller.id, "No event", 100).await;
    app.place_order(&rival, held.id).await;

    let mut given = Vec::new();
    for _ in 0..3 {
        let reply = order_best(&buyer, event, None).await;
        assert_eq!(reply.status, 201, "{:?}", reply.body);
        assert_eq!(reply.body["userId"], buyer.id.to_string());
        given.push(ticket_of(&reply.body));
    }

    // The tie at 20 goes to the older listing (UUID v7 ids grow with time).
    assert_eq!(given, [twenty_a.id, twenty_b.id, thirty.id]);
    // The buyer's own ticket was never theirs to hold; it is for sale to others.
    let order = app.place_order(&rival, own.id).await;
    assert_eq!(order["ticket"]["title"], "Mine");
    let reply = order_best(&buyer, event, None).await;
    assert_eq!(reply.status, 400, "{:?}", reply.body);
    assert_eq!(reply.error_codes(), ["sold_out"]);
    assert_eq!(
        reply.error_messages(),
        ["No ticket of this event is for sale at your price"]
    );
}

async fn a_max_price_is_respected_to_the_cent(backend: Backend) {
    let app = spawn_app(backend).await;
    let seller = app.sign_in();
    let buyer = app.sign_in();
    let event = Uuid::now_v7();
    let ticket = app
        .list_ticket_for(seller.id, Some(event), "Stalls", 2000)
        .await;

    let under = order_best(&buyer, event, Some(json!(19.99))).await;
    let at = order_best(&buyer, event, Some(json!(20))).await;

    assert_eq!(under.status, 400, "{:?}", under.body);
    assert_eq!(under.error_codes(), ["sold_out"]);
    assert_eq!(at.status, 201, "{:?}", at.body);
    assert_eq!(ticket_of(&at.body), ticket.id);
    assert_eq!(at.body["ticket"]["price"], json!(20));
}

async fn a_ticket_the_buyer_let_go_is_passed_over_while_it_cools_down(backend: Backend) {
    let app = spawn_app(backend).await;
    let seller = app.sign_in();
    let buyer = app.sign_in();
    let other = app.sign_in();
    let event = Uuid::now_v7();
    let cheap = app
        .list_ticket_for(seller.id, Some(event), "Cheap", 1000)
        .await;
    let dear = app
        .list_ticket_for(seller.id, Some(event), "Dear", 5000)
        .await;
    let first = order_best(&buyer, event, None).await;
    assert_eq!(ticket_of(&first.body), cheap.id);
    let cancelled = buyer
        .delete(&format!("/api/orders/{}", id_of(&first.body)))
        .await;
    assert_eq!(cancelled.status, 204, "{:?}", cancelled.body);

    // Cancelling and asking again cannot renew a hold on the same ticket.
    let again = order_best(&buyer, event, None).await;
    assert_eq!(again.status, 201, "{:?}", again.body);
    assert_eq!(ticket_of(&again.body), dear.id);
    // For everyone else it is for sale.
    let theirs = order_best(&other, event, None).await;
    assert_eq!(theirs.status, 201, "{:?}", theirs.body);
    assert_eq!(ticket_of(&theirs.body), cheap.id);
}

const BUYERS: usize = 24;
const TICKETS: usize = 9;

async fn buyers_asking_at_once_get_different_tickets_until_none_is_left(backend: Backend) {
    let app = spawn_app(backend).await;
    let seller = app.sign_in();
    let buyers: Vec<_> = (0..BUYERS).map(|_| app.sign_in()).collect();
    for round in 0..3 {
        let event = Uuid::now_v7();
        let mut listed = Vec::new();
        for n in 0..TICKETS {
            let cents = 1000 + 100 * i64::try_from(n % 4).unwrap();
            listed.push(
                app.list_ticket_for(seller.id, Some(event), "Seat", cents)
                    .await
                    .id,
            );
        }

        let replies = join_all(buyers.iter().map(|buyer| order_best(buyer, event, None))).await;

        let mut held: Vec<Uuid> = Vec::new();
        for reply in &replies {
            match reply.status {
                201 => held.push(ticket_of(&reply.body)),
                400 => assert_eq!(reply.error_codes(), ["sold_out"], "round {round}"),
                _ => panic!("round {round}: {reply:?}"),
            }
        }
        held.sort();
        listed.sort();
        assert_eq!(held, listed, "round {round}: every ticket held once");
    }
}

async fn a_request_naming_an_event_is_checked_field_by_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let buyer = app.sign_in();
    let event = Uuid::now_v7().to_string();

    for (body, field) in [
        (json!({"eventId": "soon"}), "eventId"),
        (json!({"eventId": event, "ticketId": event}), "eventId"),
        (json!({"eventId": event, "maxPrice": -1}), "maxPrice"),
        (json!({"ticketId": event, "maxPrice": 10}), "maxPrice"),
        (json!({}), "ticketId"),
    ] {
        let reply = buyer.post("/api/orders", body.clone()).await;
        assert_eq!(reply.status, 400, "{body}: {:?}", reply.body);
        assert_eq!(reply.error_fields(), [field], "{body}");
        assert_eq!(reply.error_codes(), ["invalid_field"], "{body}");
    }
    // An event nobody listed a ticket for has none for sale.
    let reply = order_best(&buyer, Uuid::now_v7(), None).await;
    assert_eq!(reply.status, 400, "{:?}", reply.body);
    assert_eq!(reply.error_codes(), ["sold_out"]);
}
