//! The whole purchase flow end to end, through the real binary: embedded (`stubs up`) and
//! distributed (the local cluster: every service its own `stubs serve` process, two replicas of
//! tickets, orders and payments, on PostgreSQL and JetStream, behind nginx).

use std::time::Duration;

use crate::support::{Marketplace, User};
use serde_json::{Value, json};
use testkit::eventually;
use time::format_description::well_known::Rfc3339;
use tokio::time::sleep;

/// The payment window these tests run with: long enough to pay in, short enough to wait out.
const WINDOW: &str = "4s";
const WINDOW_SECS: u64 = 4;

fn email(who: &str) -> String {
    format!("{who}-{}@example.com", uuid::Uuid::new_v4().simple())
}

async fn list_ticket(seller: &User<'_>, price: f64) -> Value {
    let (status, ticket) = seller
        .post("/api/tickets", json!({"title": "Concert", "price": price}))
        .await;
    assert_eq!(status, 201, "{ticket}");
    ticket
}

/// Places an order, at once: orders waits for a ticket it has not heard of yet.
async fn place_order(buyer: &User<'_>, ticket_id: &Value) -> (u16, Value) {
    buyer
        .post("/api/orders", json!({"ticketId": ticket_id}))
        .await
}

/// Pays, at once: payments waits for an order it has not heard of yet.
async fn pay(buyer: &User<'_>, order_id: &Value, token: &str) -> (u16, Value) {
    buyer
        .post(
            "/api/payments",
            json!({"orderId": order_id, "token": token}),
        )
        .await
}

/// Waits until orders knows the ticket: its seller is refused (400), not told it is unknown.
async fn wait_until_orders_knows(seller: &User<'_>, ticket_id: &Value) {
    eventually("the orders service to know the ticket", || async {
        let (status, _) = seller
            .post("/api/orders", json!({"ticketId": ticket_id}))
            .await;
        (status != 404).then_some(())
    })
    .await;
}

async fn order_status(buyer: &User<'_>, order_id: &Value) -> String {
    let (status, order) = buyer
        .get(&format!("/api/orders/{}", order_id.as_str().unwrap()))
        .await;
    assert_eq!(status, 200, "{order}");
    order["status"].as_str().unwrap().to_owned()
}

async fn wait_for_order_status(buyer: &User<'_>, order_id: &Value, wanted: &str) {
    eventually(&format!("the order to be {wanted}"), || async {
        (order_status(buyer, order_id).await == wanted).then_some(())
    })
    .await;
}

async fn ticket_holder(anyone: &User<'_>, ticket_id: &Value) -> Value {
    let (_, ticket) = anyone
        .get(&format!("/api/tickets/{}", ticket_id.as_str().unwrap()))
        .await;
    ticket["orderId"].clone()
}

async fn wait_for_holder(anyone: &User<'_>, ticket_id: &Value, holder: &Value) {
    eventually(&format!("the ticket to be held by {holder}"), || async {
        (ticket_holder(anyone, ticket_id).await == *holder).then_some(())
    })
    .await;
}

async fn a_paid_order_completes_and_stays_complete(market: Marketplace) {
    let seller = market.user();
    seller.sign_up(&email("seller")).await;
    let buyer = market.user();
    buyer.sign_up(&email("buyer")).await;
    let ticket = list_ticket(&seller, 19.99).await;
    let (_, for_sale) = buyer.get("/api/tickets?limit=100").await;
    assert!(
        for_sale
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == ticket["id"])
    );

    let (status, order) = place_order(&buyer, &ticket["id"]).await;
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["status"], "created");
    assert_eq!(order["ticket"]["price"], json!(19.99));

    // The ticket shows the order, leaves the listing and cannot be edited or bought again.
    wait_for_holder(&seller, &ticket["id"], &order["id"]).await;
    let (_, for_sale) = buyer.get("/api/tickets?limit=100").await;
    assert!(
        !for_sale
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == ticket["id"])
    );
    let ticket_path = format!("/api/tickets/{}", ticket["id"].as_str().unwrap());
    let (status, body) = seller
        .put(&ticket_path, json!({"title": "Concert", "price": 5}))
        .await;
    assert_eq!(
        (status, body["errors"][0]["message"].clone()),
        (400, json!("Cannot edit a reserved ticket"))
    );
    let rival = market.user();
    rival.sign_up(&email("rival")).await;
    let (status, _) = rival
        .post("/api/orders", json!({"ticketId": ticket["id"]}))
        .await;
    assert_eq!(status, 400);

    let (status, payment) = pay(&buyer, &order["id"], "tok_visa").await;
    assert_eq!(status, 201, "{payment}");
    wait_for_order_status(&buyer, &order["id"], "complete").await;

    // Past its expiry time the paid order stays complete and the ticket stays sold.
    sleep(Duration::from_secs(WINDOW_SECS + 2)).await;
    assert_eq!(order_status(&buyer, &order["id"]).await, "complete");
    assert_eq!(ticket_holder(&seller, &ticket["id"]).await, order["id"]);
    let (status, _) = buyer
        .delete(&format!("/api/orders/{}", order["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, 400);
    assert!(market.stop().await, "a process did not stop cleanly");
}

/// The ids of `user`'s wallet.
async fn owned(user: &User<'_>) -> Vec<Value> {
    let (status, tickets) = user.get("/api/users/me/tickets").await;
    assert_eq!(status, 200, "{tickets}");
    tickets
        .as_array()
        .unwrap()
        .iter()
        .map(|ticket| ticket["id"].clone())
        .collect()
}

async fn a_bought_ticket_is_kept_or_sent_on_and_its_seller_is_owed(market: Marketplace) {
    let seller = market.user();
    seller.sign_up(&email("seller")).await;
    let buyer = market.user();
    let buyer_id = buyer.sign_up(&email("buyer")).await["id"].clone();
    let friend = market.user();
    let friend_email = email("friend");
    let friend_id = friend.sign_up(&friend_email).await["id"].clone();
    let ticket = list_ticket(&seller, 30.0).await;
    let (status, order) = place_order(&buyer, &ticket["id"]).await;
    assert_eq!(status, 201, "{order}");
    let (status, payment) = pay(&buyer, &order["id"], "tok_visa").await;
    assert_eq!(status, 201, "{payment}");

    // Paid, it is the buyer's: in their wallet, by its owner's id, through events.
    eventually("the ticket to be in the buyer's wallet", || async {
        (owned(&buyer).await == [ticket["id"].clone()]).then_some(())
    })
    .await;
    let ticket_path = format!("/api/tickets/{}", ticket["id"].as_str().unwrap());
    let (_, shown) = buyer.get(&ticket_path).await;
    assert_eq!(shown["userId"], buyer_id);
    assert!(owned(&seller).await.is_empty());
    // And the seller's sale, with what they are owed: all of it, at no fee.
    let (status, sales) = seller.get("/api/users/me/sales").await;
    assert_eq!(status, 200, "{sales}");
    assert_eq!(sales.as_array().unwrap().len(), 1, "{sales}");
    assert_eq!(
        (&sales[0]["orderId"], &sales[0]["price"], &sales[0]["owed"]),
        (&order["id"], &json!(30), &json!(30))
    );

    // The buyer cannot go, and sends it to a friend, typing the address as it comes.
    let send = format!("{ticket_path}/send");
    let (status, sent) = buyer
        .post(&send, json!({"email": friend_email.to_uppercase()}))
        .await;
    assert_eq!(status, 200, "{sent}");
    assert_eq!(sent["userId"], friend_id);
    assert_eq!(owned(&friend).await, [ticket["id"].clone()]);
    assert!(owned(&buyer).await.is_empty());
    for (who, user) in [("the buyer", &buyer), ("the seller", &seller)] {
        let (status, body) = user.post(&send, json!({"email": friend_email})).await;
        assert_eq!(status, 401, "{who}: {body}");
    }
    // Sent on, it stays off the market: nobody may order it.
    for (who, user) in [("the friend", &friend), ("the seller", &seller)] {
        let (status, body) = user
            .post("/api/orders", json!({"ticketId": ticket["id"]}))
            .await;
        assert_eq!(status, 400, "{who}: {body}");
        assert_eq!(
            body["errors"][0]["code"], "ticket_reserved",
            "{who}: {body}"
        );
    }
    assert!(market.stop().await, "a process did not stop cleanly");
}

/// Orders a ticket as `buyer` and pays for it; waits until it is in their wallet.
async fn buy_and_keep(buyer: &User<'_>, ticket_id: &Value) -> Value {
    let (status, order) = place_order(buyer, ticket_id).await;
    assert_eq!(status, 201, "{order}");
    let (status, payment) = pay(buyer, &order["id"], "tok_visa").await;
    assert_eq!(status, 201, "{payment}");
    eventually("the ticket to be in its buyer's wallet", || async {
        owned(buyer).await.contains(ticket_id).then_some(())
    })
    .await;
    order
}

async fn a_fan_who_cannot_go_resells_at_face_value(market: Marketplace) {
    let seller = market.user();
    seller.sign_up(&email("seller")).await;
    let fan = market.user();
    fan.sign_up(&email("fan")).await;
    let other_fan = market.user();
    let other_fan_id = other_fan.sign_up(&email("other-fan")).await["id"].clone();
    let ticket = list_ticket(&seller, 45.5).await;
    buy_and_keep(&fan, &ticket["id"]).await;

    // The fan cannot go: over face value is refused, naming the most they may ask.
    let resale = format!("/api/tickets/{}/resale", ticket["id"].as_str().unwrap());
    let (status, refused) = fan.post(&resale, json!({"price": 45.51})).await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["errors"][0]["field"], "price");
    assert_eq!(
        refused["errors"][0]["message"],
        "Price must be at most 45.50, the resale cap on what was paid for it"
    );
    let (status, listed) = fan.post(&resale, json!({"price": 45.5})).await;
    assert_eq!(status, 200, "{listed}");

    // Another fan buys it once orders has heard it is for sale again.
    let order = eventually("orders to take orders for the resale", || async {
        let (status, order) = place_order(&other_fan, &ticket["id"]).await;
        (status == 201).then_some(order)
    })
    .await;
    assert_eq!(order["ticket"]["price"], json!(45.5));
    let (status, payment) = pay(&other_fan, &order["id"], "tok_visa").await;
    assert_eq!(status, 201, "{payment}");
    eventually("the ticket to be in the other fan's wallet", || async {
        owned(&other_fan)
            .await
            .contains(&ticket["id"])
            .then_some(())
    })
    .await;
    let ticket_path = format!("/api/tickets/{}", ticket["id"].as_str().unwrap());
    let (_, shown) = other_fan.get(&ticket_path).await;
    assert_eq!(shown["userId"], other_fan_id);
    assert!(owned(&fan).await.is_empty());

    // The first fan's sales show the resale, and the seller's the first sale.
    for (who, user) in [("the fan", &fan), ("the seller", &seller)] {
        let (status, sales) = user.get("/api/users/me/sales").await;
        assert_eq!(status, 200, "{who}: {sales}");
        assert_eq!(sales.as_array().unwrap().len(), 1, "{who}: {sales}");
        assert_eq!(sales[0]["owed"], json!(45.5), "{who}: {sales}");
    }
    let (status, history) = other_fan.get(&format!("{ticket_path}/history")).await;
    assert_eq!(status, 200, "{history}");
    let prices: Vec<_> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| (entry["kind"].clone(), entry["price"].clone()))
        .collect();
    assert_eq!(
        prices,
        [(json!("sold"), json!(45.5)), (json!("sold"), json!(45.5))]
    );
    assert!(market.stop().await, "a process did not stop cleanly");
}

async fn an_unpaid_order_expires_and_the_ticket_sells_again(market: Marketplace) {
    let seller = market.user();
    seller.sign_up(&email("seller")).await;
    let buyer = market.user();
    buyer.sign_up(&email("buyer")).await;
    let ticket = list_ticket(&seller, 25.0).await;
    let (status, order) = place_order(&buyer, &ticket["id"]).await;
    assert_eq!(status, 201);
    wait_for_holder(&seller, &ticket["id"], &order["id"]).await;

    wait_for_order_status(&buyer, &order["id"], "cancelled").await;
    wait_for_holder(&seller, &ticket["id"], &Value::Null).await;
    let (status, body) = buyer
        .post(
            "/api/payments",
            json!({"orderId": order["id"], "token": "tok_visa"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    let next = market.user();
    next.sign_up(&email("next")).await;
    let (status, second) = place_order(&next, &ticket["id"]).await;
    assert_eq!(status, 201, "{second}");
    wait_for_holder(&seller, &ticket["id"], &second["id"]).await;
}

async fn cancelling_an_order_releases_the_ticket(market: Marketplace) {
    let seller = market.user();
    seller.sign_up(&email("seller")).await;
    let buyer = market.user();
    buyer.sign_up(&email("buyer")).await;
    let ticket = list_ticket(&seller, 10.0).await;
    let (_, order) = place_order(&buyer, &ticket["id"]).await;
    wait_for_holder(&seller, &ticket["id"], &order["id"]).await;

    let (status, _) = buyer
        .delete(&format!("/api/orders/{}", order["id"].as_str().unwrap()))
        .await;

    assert_eq!(status, 204);
    assert_eq!(order_status(&buyer, &order["id"]).await, "cancelled");
    wait_for_holder(&seller, &ticket["id"], &Value::Null).await;
    let other = market.user();
    other.sign_up(&email("other")).await;
    let (status, _) = place_order(&other, &ticket["id"]).await;
    assert_eq!(status, 201);
}

async fn fifty_concurrent_buyers_of_one_ticket_get_one_order(market: Marketplace) {
    let seller = market.user();
    seller.sign_up(&email("seller")).await;
    let mut buyers = Vec::new();
    for i in 0..50 {
        let buyer = market.user();
        buyer.sign_up(&email(&format!("buyer{i}"))).await;
        buyers.push(buyer);
    }
    for round in 0..3 {
        let ticket = list_ticket(&seller, 30.0).await;
        // So that every buyer races for it, none gets a 404.
        wait_until_orders_knows(&seller, &ticket["id"]).await;

        let attempts = buyers
            .iter()
            .map(|buyer| buyer.post("/api/orders", json!({"ticketId": ticket["id"]})));
        let replies = futures::future::join_all(attempts).await;

        let created = replies.iter().filter(|(status, _)| *status == 201).count();
        let refused = replies
            .iter()
            .filter(|(status, body)| {
                *status == 400 && body["errors"][0]["message"] == "Ticket is already reserved"
            })
            .count();
        assert_eq!((created, refused), (1, 49), "round {round}: {replies:?}");
    }
}

async fn a_double_click_on_pay_charges_once(market: Marketplace) {
    let seller = market.user();
    seller.sign_up(&email("seller")).await;
    let buyer = market.user();
    buyer.sign_up(&email("buyer")).await;
    let ticket = list_ticket(&seller, 42.0).await;
    let (_, order) = place_order(&buyer, &ticket["id"]).await;
    // The first click waits until payments knows the order; the rest follow at once.
    let (first, _) = pay(&buyer, &order["id"], "tok_visa").await;
    let clicks = (0..9).map(|_| {
        buyer.post(
            "/api/payments",
            json!({"orderId": order["id"], "token": "tok_visa"}),
        )
    });
    let others = futures::future::join_all(clicks).await;

    let successes = usize::from(first == 201) + others.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(successes, 1, "{first} {others:?}");
    assert!(
        others.iter().all(|(s, _)| *s == 201 || *s == 400),
        "{others:?}"
    );
    wait_for_order_status(&buyer, &order["id"], "complete").await;
}

async fn paying_as_the_order_expires_never_leaves_a_sold_ticket_unpaid(market: Marketplace) {
    let seller = market.user();
    seller.sign_up(&email("seller")).await;
    let buyer = market.user();
    buyer.sign_up(&email("buyer")).await;
    let mut orders = Vec::new();
    for _ in 0..6 {
        let ticket = list_ticket(&seller, 12.5).await;
        let (status, order) = place_order(&buyer, &ticket["id"]).await;
        assert_eq!(status, 201);
        orders.push((ticket, order));
    }
    // Pay each order at a different moment around its expiry.
    let payments = orders.iter().enumerate().map(|(i, (_, order))| {
        let buyer = &buyer;
        async move {
            let offset = Duration::from_millis(WINDOW_SECS * 1000 - 600 + 200 * i as u64);
            sleep(offset).await;
            buyer
                .post(
                    "/api/payments",
                    json!({"orderId": order["id"], "token": "tok_visa"}),
                )
                .await
        }
    });
    let replies = futures::future::join_all(payments).await;

    for ((ticket, order), (status, body)) in orders.iter().zip(&replies) {
        assert!(*status == 201 || *status == 400, "{status} {body}");
        // Every order ends final, and the ticket agrees with it.
        let final_status = eventually("the order to settle", || async {
            let status = order_status(&buyer, &order["id"]).await;
            (status == "complete" || status == "cancelled").then_some(status)
        })
        .await;
        if final_status == "complete" {
            assert_eq!(*status, 201, "a complete order whose payment was refused");
            wait_for_holder(&seller, &ticket["id"], &order["id"]).await;
        } else {
            wait_for_holder(&seller, &ticket["id"], &Value::Null).await;
        }
    }
}

/// A buyer who orders a ticket the moment it is listed and pays the moment the order is placed
/// is never told either does not exist; and the seller's edit in that same moment changes
/// nothing of what the buyer sees or pays.
async fn a_buyer_who_acts_at_once_pays_what_they_ordered_at(market: Marketplace) {
    let seller = market.user();
    seller.sign_up(&email("seller")).await;
    let buyer = market.user();
    buyer.sign_up(&email("buyer")).await;
    let ticket = list_ticket(&seller, 10.0).await;
    let ticket_path = format!("/api/tickets/{}", ticket["id"].as_str().unwrap());

    let (status, order) = place_order(&buyer, &ticket["id"]).await;
    assert_eq!(status, 201, "{order}");
    // Accepted if tickets has not heard of the order yet, refused if it has: either way the
    // buyer's order stands as placed.
    let (edit_status, edited) = seller
        .put(&ticket_path, json!({"title": "Cheap seats", "price": 1}))
        .await;
    assert!(edit_status == 200 || edit_status == 400, "{edited}");
    let (status, payment) = pay(&buyer, &order["id"], "tok_visa").await;
    assert_eq!(status, 201, "{payment}");

    wait_for_order_status(&buyer, &order["id"], "complete").await;
    let (_, paid) = buyer
        .get(&format!("/api/orders/{}", order["id"].as_str().unwrap()))
        .await;
    assert_eq!(paid["ticket"]["price"], json!(10));
    assert_eq!(paid["ticket"]["title"], "Concert");
    wait_for_holder(&seller, &ticket["id"], &order["id"]).await;
    let (_, sold) = seller.get(&ticket_path).await;
    assert_eq!(
        (sold["title"].clone(), sold["price"].clone()),
        (json!("Concert"), json!(10))
    );
    assert!(market.stop().await, "a process did not stop cleanly");
}

/// A buyer who pays for an order and cancels it in the same moment is told one story: paid (201)
/// and the cancellation refused, or cancelled (204) and the payment refused before any charge;
/// never paid and cancelled.
async fn paying_and_cancelling_at_once_end_one_way(market: Marketplace) {
    let seller = market.user();
    seller.sign_up(&email("seller")).await;
    let buyer = market.user();
    buyer.sign_up(&email("buyer")).await;
    let mut outcomes = Vec::new();
    // The cancellation leaves later each round, to meet the payment at each of its steps.
    for lag in [0, 0, 10, 30, 100, 300, 1000] {
        let ticket = list_ticket(&seller, 20.0).await;
        let (status, order) = place_order(&buyer, &ticket["id"]).await;
        assert_eq!(status, 201, "{order}");
        let path = format!("/api/orders/{}", order["id"].as_str().unwrap());

        let ((paid, payment), (cancelled, cancellation)) =
            tokio::join!(pay(&buyer, &order["id"], "tok_visa"), async {
                sleep(Duration::from_millis(lag)).await;
                buyer.delete(&path).await
            });

        let end = eventually("the order to settle", || async {
            let status = order_status(&buyer, &order["id"]).await;
            (status == "complete" || status == "cancelled").then_some(status)
        })
        .await;
        if end == "complete" {
            assert_eq!(paid, 201, "{payment}");
            assert_eq!(cancelled, 400, "{cancellation}");
            let message = cancellation["errors"][0]["message"].as_str().unwrap();
            assert!(
                message == "Cannot cancel an order while it is being paid"
                    || message == "Cannot cancel a paid order",
                "{message}"
            );
            wait_for_holder(&seller, &ticket["id"], &order["id"]).await;
        } else {
            assert_eq!(cancelled, 204, "{cancellation}");
            // Refused outright, or given up while orders' cancellation was on its way.
            assert!(paid == 400 || paid == 503, "{paid} {payment}");
            assert!(payment["errors"][0]["message"].is_string(), "{payment}");
            wait_for_holder(&seller, &ticket["id"], &Value::Null).await;
        }
        outcomes.push((lag, end, paid, cancelled));
    }
    eprintln!("(lag ms, end, payment, cancellation): {outcomes:?}");
}

/// A declined card gives the order back to its buyer, who may then cancel it, or pay with
/// another card.
async fn a_declined_card_gives_the_order_back(market: Marketplace) {
    let seller = market.user();
    seller.sign_up(&email("seller")).await;
    let buyer = market.user();
    buyer.sign_up(&email("buyer")).await;
    for then_pay in [false, true] {
        let ticket = list_ticket(&seller, 15.0).await;
        let (_, order) = place_order(&buyer, &ticket["id"]).await;

        let (declined, body) = pay(&buyer, &order["id"], "tok_chargeDeclined").await;

        assert_eq!(declined, 402, "{body}");
        wait_for_order_status(&buyer, &order["id"], "created").await;
        if then_pay {
            let (paid, payment) = pay(&buyer, &order["id"], "tok_visa").await;
            assert_eq!(paid, 201, "{payment}");
            wait_for_order_status(&buyer, &order["id"], "complete").await;
        } else {
            let path = format!("/api/orders/{}", order["id"].as_str().unwrap());
            let (cancelled, body) = buyer.delete(&path).await;
            assert_eq!(cancelled, 204, "{body}");
            wait_for_holder(&seller, &ticket["id"], &Value::Null).await;
        }
    }
}

/// An event's page as a buyer reads it: the event with what is on sale, and its tickets
/// cheapest first. Through the ingress, `/api/events` reaches the tickets service.
async fn a_buyer_orders_the_cheapest_ticket_of_an_event(market: Marketplace) {
    let year = time::OffsetDateTime::now_utc().year() + 2;
    let seller = market.user();
    seller.sign_up(&email("seller")).await;
    let buyer = market.user();
    buyer.sign_up(&email("buyer")).await;
    let body = json!({"name": "Radiohead", "venue": "Madison Square Garden", "city": "New York",
                      "startsAt": format!("{year}-06-12T20:00"), "timeZone": "America/New_York"});
    let (status, event) = seller.post("/api/events", body.clone()).await;
    assert_eq!(status, 201, "{event}");
    assert_eq!(
        event["localStartsAt"],
        format!("{year}-06-12T20:00:00-04:00")
    );
    // Created again, it is offered instead: the 303 leads a client to the event as it stands.
    let (status, again) = buyer.post("/api/events", body).await;
    assert_eq!((status, &again["id"]), (200, &event["id"]), "{again}");
    for (price, seat) in [(80.0, "1"), (35.5, "2"), (50.0, "3")] {
        let (status, ticket) = seller
            .post(
                "/api/tickets",
                json!({"title": "Radiohead", "price": price, "eventId": event["id"],
                       "section": "Floor", "seat": seat}),
            )
            .await;
        assert_eq!(status, 201, "{ticket}");
    }
    let event_path = format!("/api/events/{}", event["id"].as_str().unwrap());

    let (status, upcoming) = buyer.get("/api/events?limit=100").await;
    assert_eq!(status, 200, "{upcoming}");
    let listed = upcoming
        .as_array()
        .unwrap()
        .iter()
        .find(|listed| listed["id"] == event["id"])
        .unwrap();
    assert_eq!(
        (&listed["ticketsForSale"], &listed["lowestPrice"]),
        (&json!(3), &json!(35.5))
    );
    let (status, tickets) = buyer.get(&format!("{event_path}/tickets")).await;
    assert_eq!(status, 200, "{tickets}");
    let seats: Vec<_> = tickets
        .as_array()
        .unwrap()
        .iter()
        .map(|ticket| ticket["seat"].as_str().unwrap())
        .collect();
    assert_eq!(seats, ["2", "3", "1"]);
    let (status, order) = place_order(&buyer, &tickets[0]["id"]).await;
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["ticket"]["price"], json!(35.5));

    eventually("the held ticket to leave the event's list", || async {
        let (_, shown) = buyer.get(&event_path).await;
        (shown["ticketsForSale"] == 2 && shown["lowestPrice"] == 50).then_some(())
    })
    .await;
}

/// Buyers asking at once for an event's best ticket each get a different one, whichever orders
/// replica answers them, until none is left.
async fn buyers_asking_at_once_for_an_events_best_ticket_get_different_ones(market: Marketplace) {
    let year = time::OffsetDateTime::now_utc().year() + 2;
    let seller = market.user();
    seller.sign_up(&email("seller")).await;
    let (status, event) = seller
        .post(
            "/api/events",
            json!({"name": "Flash sale", "venue": "Arena", "city": "Leeds",
                   "startsAt": format!("{year}-09-01T19:00"), "timeZone": "Europe/London"}),
        )
        .await;
    assert_eq!(status, 201, "{event}");
    let mut listed = Vec::new();
    for n in 0..7 {
        let (status, ticket) = seller
            .post(
                "/api/tickets",
                json!({"title": "Arena", "price": 20 + n % 3, "eventId": event["id"]}),
            )
            .await;
        assert_eq!(status, 201, "{ticket}");
        // So that every ticket is there to be given.
        wait_until_orders_knows(&seller, &ticket["id"]).await;
        listed.push(ticket["id"].as_str().unwrap().to_owned());
    }
    let mut buyers = Vec::new();
    for i in 0..20 {
        let buyer = market.user();
        buyer.sign_up(&email(&format!("buyer{i}"))).await;
        buyers.push(buyer);
    }

    let replies = futures::future::join_all(
        buyers
            .iter()
            .map(|buyer| buyer.post("/api/orders", json!({"eventId": event["id"]}))),
    )
    .await;

    let mut held = Vec::new();
    for (status, body) in &replies {
        match status {
            201 => held.push(body["ticket"]["id"].as_str().unwrap().to_owned()),
            400 => assert_eq!(body["errors"][0]["code"], "sold_out", "{body}"),
            _ => panic!("{status}: {body}"),
        }
    }
    held.sort();
    listed.sort();
    assert_eq!(held, listed, "every ticket held once");
}

const LONG_WINDOW: &str = "90s";

/// An event that starts in a few seconds: a hold on its ticket lasts until the start, not the
/// whole payment window, and is then let go by the expiration service like any lapsed hold; its
/// tickets leave the lists, and nobody can order them any more.
async fn an_events_sale_and_holds_end_when_it_starts(market: Marketplace) {
    let seller = market.user();
    seller.sign_up(&email("seller")).await;
    let buyer = market.user();
    buyer.sign_up(&email("buyer")).await;
    let late = market.user();
    late.sign_up(&email("late")).await;
    // Time enough to list and order on a busy machine; the hold's end at the start, not the
    // window's, is what the test watches.
    let start = time::OffsetDateTime::now_utc() + time::Duration::seconds(10);
    let (status, event) = seller
        .post(
            "/api/events",
            json!({"name": "Matinee", "venue": "Globe", "city": "London",
                   "startsAt": start.format(&Rfc3339).unwrap(), "timeZone": "Europe/London"}),
        )
        .await;
    assert_eq!(status, 201, "{event}");
    let mut tickets = Vec::new();
    for price in [30, 40] {
        let (status, ticket) = seller
            .post(
                "/api/tickets",
                json!({"title": "Matinee", "price": price, "eventId": event["id"]}),
            )
            .await;
        assert_eq!(status, 201, "{ticket}");
        tickets.push(ticket);
    }
    let (status, order) = place_order(&buyer, &tickets[0]["id"]).await;
    assert_eq!(status, 201, "{order}");
    let instant = |value: &Value| time::OffsetDateTime::parse(value.as_str().unwrap(), &Rfc3339);
    assert_eq!(
        instant(&order["expiresAt"]).unwrap(),
        instant(&event["startsAt"]).unwrap()
    );
    wait_until_orders_knows(&seller, &tickets[1]["id"]).await;

    let until_start =
        Duration::try_from(start - time::OffsetDateTime::now_utc()).unwrap_or_default();
    sleep(until_start).await;

    // Waited for far less than the 90 s window: the start ended the hold.
    wait_for_order_status(&buyer, &order["id"], "cancelled").await;
    wait_for_holder(&seller, &tickets[0]["id"], &Value::Null).await;
    let (status, for_sale) = late.get("/api/tickets?limit=100").await;
    assert_eq!(status, 200, "{for_sale}");
    let listed: Vec<_> = for_sale
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["id"])
        .collect();
    assert!(!listed.contains(&&tickets[0]["id"]) && !listed.contains(&&tickets[1]["id"]));
    let event_path = format!("/api/events/{}", event["id"].as_str().unwrap());
    let (_, of_event) = late.get(&format!("{event_path}/tickets")).await;
    assert_eq!(of_event, json!([]));
    let (_, shown) = late.get(&event_path).await;
    assert_eq!(
        (&shown["ticketsForSale"], &shown["lowestPrice"]),
        (&json!(0), &Value::Null)
    );
    for ticket in &tickets {
        let (status, refused) = place_order(&late, &ticket["id"]).await;
        assert_eq!(
            (status, &refused["errors"][0]["code"]),
            (400, &json!("sale_ended")),
            "{refused}"
        );
    }
    let (status, refused) = late
        .post("/api/orders", json!({"eventId": event["id"]}))
        .await;
    assert_eq!(
        (status, &refused["errors"][0]["code"]),
        (400, &json!("sold_out")),
        "{refused}"
    );
}

macro_rules! in_both_modes {
    ($($name:ident),* $(,)?) => { in_both_modes!(window super::WINDOW; $($name),*); };
    (window $window:expr; $($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                super::$name(super::Marketplace::embedded($window)).await
            }
            testkit::distributed_test! {
                async fn distributed() {
                    super::$name(super::Marketplace::distributed($window).await).await
                }
            }
        }
    )*};
}

in_both_modes!(
    a_paid_order_completes_and_stays_complete,
    an_unpaid_order_expires_and_the_ticket_sells_again,
    cancelling_an_order_releases_the_ticket,
    fifty_concurrent_buyers_of_one_ticket_get_one_order,
    a_double_click_on_pay_charges_once,
    paying_as_the_order_expires_never_leaves_a_sold_ticket_unpaid,
    a_buyer_who_acts_at_once_pays_what_they_ordered_at,
    paying_and_cancelling_at_once_end_one_way,
    a_declined_card_gives_the_order_back,
    a_buyer_orders_the_cheapest_ticket_of_an_event,
    buyers_asking_at_once_for_an_events_best_ticket_get_different_ones,
    a_bought_ticket_is_kept_or_sent_on_and_its_seller_is_owed,
    a_fan_who_cannot_go_resells_at_face_value,
);

// A payment window far longer than the wait for the event's start, so that a hold ending at the
// start is the start's doing.
in_both_modes!(window super::LONG_WINDOW; an_events_sale_and_holds_end_when_it_starts);

testkit::distributed_test! {
    async fn a_cluster_leaves_no_ingress_process_behind() {
        for graceful in [true, false] {
            let market = Marketplace::distributed(WINDOW).await;
            let group = market.nginx_pid().unwrap();
            let running = cluster::group_members(group);
            assert!(running.len() >= 2, "the ingress's master and workers: {running:?}");

            if graceful {
                assert!(market.stop().await, "a process did not stop cleanly");
            } else {
                drop(market);
            }

            eventually("the ingress's processes to end", || async {
                cluster::group_members(group).is_empty().then_some(())
            })
            .await;
        }
    }
}
