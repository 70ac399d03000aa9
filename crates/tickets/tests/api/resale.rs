//! Resale: an owner lists a ticket they bought again, at no more than the resale cap on what was
//! last paid for it; sold again, it changes hands again, and its owner can read its history.

use common::events::TicketUpdated;
use testkit::{Backend, User, json};
use uuid::Uuid;

use crate::helpers::{
    TestApp, create_event, event_body, id_of, list_for, order_completed, order_created,
    order_created_at, spawn_app, spawn_app_with, user_created,
};

testkit::each_database!(
    an_owner_lists_a_ticket_again_at_no_more_than_face_value,
    a_ticket_sold_again_changes_hands_again_and_keeps_its_story,
    a_cap_above_face_value_lets_the_price_rise_that_far,
    a_resale_is_refused_unless_the_owner_keeps_the_ticket,
    a_ticket_sent_as_a_gift_keeps_the_cap_of_its_last_sale,
    a_resale_keeps_its_title_and_ends_when_the_event_starts,
    a_send_and_a_resale_at_once_end_one_way,
);

/// `buyer` orders `ticket` at `cents` on its `listing` and pays; waits until it is theirs.
async fn buy(app: &TestApp, ticket: &str, buyer: &User, cents: i64, listing: i64) -> Uuid {
    let order = Uuid::now_v7();
    let version = app.ticket(ticket).await["version"].as_i64().unwrap();
    let mut placed = order_created_at(order, ticket, "Concert", cents);
    placed.data.listing = listing;
    app.publish(&placed).await;
    app.ticket_at_version(ticket, version + 1).await;
    app.publish(&order_completed(order, ticket, Some(buyer.id)))
        .await;
    app.ticket_at_version(ticket, version + 2).await;
    order
}

/// A ticket listed by a new seller at 20 and bought by `buyer`.
async fn bought_at_20(app: &TestApp, buyer: &User) -> String {
    let seller = app.sign_in();
    let id = id_of(&app.list_ticket(&seller, "Concert", json!(20)).await);
    buy(app, &id, buyer, 2000, 0).await;
    id
}

fn resale(id: &str) -> String {
    format!("/api/tickets/{id}/resale")
}

async fn an_owner_lists_a_ticket_again_at_no_more_than_face_value(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut updated = app.watch::<TicketUpdated>().await;
    let bob = app.sign_in();
    let id = bought_at_20(&app, &bob).await;
    let wallet = bob.get("/api/users/me/tickets").await;
    assert_eq!(wallet.body[0]["maxResalePrice"], json!(20));
    assert_eq!(wallet.body[0]["status"], "kept");

    for price in [json!(20.01), json!(100)] {
        let reply = bob.post(&resale(&id), json!({"price": price})).await;
        assert_eq!(reply.status, 400, "{:?}", reply.body);
        assert_eq!(reply.error_fields(), ["price"]);
        assert_eq!(
            reply.error_messages(),
            ["Price must be at most 20, the resale cap on what was paid for it"]
        );
    }
    assert_eq!(app.ticket(&id).await["version"], 2);

    let reply = bob.post(&resale(&id), json!({"price": 20})).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(
        (
            &reply.body["orderId"],
            &reply.body["price"],
            &reply.body["version"]
        ),
        (&json!(null), &json!(20), &json!(3))
    );
    assert!(app.listed_ids("").await.contains(&id));
    // Still the owner's until it sells: in their wallet, for sale.
    let wallet = bob.get("/api/users/me/tickets").await;
    assert_eq!(wallet.body[0]["orderId"], json!(null));
    assert_eq!(wallet.body[0]["status"], "listed");
    app.flushed().await;
    let announced: Vec<_> = updated
        .rest()
        .await
        .iter()
        .map(|event| (event.data.version, event.data.listing, event.data.order_id))
        .collect();
    assert_eq!(announced[2], (3, 1, None), "{announced:?}");
    // Its price moves within the cap only.
    let path = format!("/api/tickets/{id}");
    let over = bob
        .put(&path, json!({"title": "Concert", "price": 20.5}))
        .await;
    assert_eq!(
        (over.status, over.error_fields()),
        (400, vec!["price".to_owned()])
    );
    assert_eq!(app.ticket(&id).await["version"], 3);
    let under = bob
        .put(&path, json!({"title": "Concert", "price": 15}))
        .await;
    assert_eq!(under.status, 200, "{:?}", under.body);
    assert_eq!(under.body["version"], 4);
}

async fn a_ticket_sold_again_changes_hands_again_and_keeps_its_story(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, bob, carol) = (app.sign_in(), app.sign_in(), app.sign_in());
    let id = id_of(&app.list_ticket(&alice, "Concert", json!(20)).await);
    let first = buy(&app, &id, &bob, 2000, 0).await;
    let relisted = bob.post(&resale(&id), json!({"price": 18})).await;
    assert_eq!(relisted.status, 200, "{:?}", relisted.body);
    // The first order comes again, as a new message (a consumer recreated): it was of the
    // listing before, and takes nothing from this one.
    let replayed = app.publish(&order_created(first, &id)).await;
    app.handled(replayed).await;
    let ticket = app.ticket(&id).await;
    assert_eq!(
        (&ticket["orderId"], &ticket["version"]),
        (&json!(null), &json!(3))
    );

    buy(&app, &id, &carol, 1800, 1).await;

    let ticket = app.ticket(&id).await;
    assert_eq!(ticket["userId"], carol.id.to_string());
    assert!(bob.get("/api/users/me/tickets").await.body == json!([]));
    let wallet = carol.get("/api/users/me/tickets").await;
    assert_eq!(wallet.body[0]["id"], id.as_str());
    assert_eq!(wallet.body[0]["maxResalePrice"], json!(18));
    let history = carol.get(&format!("/api/tickets/{id}/history")).await;
    assert_eq!(history.status, 200, "{:?}", history.body);
    let story: Vec<_> = history
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| (entry["kind"].clone(), entry["price"].clone()))
        .collect();
    assert_eq!(
        story,
        [(json!("sold"), json!(20)), (json!("sold"), json!(18))]
    );
    assert_eq!(
        bob.get(&format!("/api/tickets/{id}/history")).await.status,
        401
    );
    // Each seller is owed for their own sale.
    for (seller, price) in [(&alice, 20), (&bob, 18)] {
        let sales = seller.get("/api/users/me/sales").await.body;
        assert_eq!(sales.as_array().unwrap().len(), 1, "{sales}");
        assert_eq!(
            (&sales[0]["price"], &sales[0]["owed"]),
            (&json!(price), &json!(price))
        );
    }
}

async fn a_cap_above_face_value_lets_the_price_rise_that_far(backend: Backend) {
    let settings = tickets::Settings {
        resale_cap: tickets::sales::ResaleCap::parse_factor("1.5").unwrap(),
        ..Default::default()
    };
    let app = spawn_app_with(backend, settings).await;
    let bob = app.sign_in();
    let id = bought_at_20(&app, &bob).await;

    let over = bob.post(&resale(&id), json!({"price": 30.01})).await;
    assert_eq!(
        over.error_messages(),
        ["Price must be at most 30, the resale cap on what was paid for it"]
    );
    let at_cap = bob.post(&resale(&id), json!({"price": 30})).await;
    assert_eq!(at_cap.status, 200, "{:?}", at_cap.body);
}

async fn a_resale_is_refused_unless_the_owner_keeps_the_ticket(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, bob) = (app.sign_in(), app.sign_in());
    let kept = bought_at_20(&app, &bob).await;
    let body = json!({"price": 10});

    assert_eq!(
        app.anonymous()
            .post(&resale(&kept), body.clone())
            .await
            .status,
        401
    );
    assert_eq!(alice.post(&resale(&kept), body.clone()).await.status, 401);
    assert_eq!(
        bob.post(&resale(&Uuid::now_v7().to_string()), body.clone())
            .await
            .status,
        404
    );
    let bad = bob.post(&resale(&kept), json!({"price": "ten"})).await;
    assert_eq!(
        (bad.status, bad.error_fields()),
        (400, vec!["price".to_owned()])
    );

    // A first listing is for sale already; one an order holds is its buyer's to pay for.
    let listed = id_of(&app.list_ticket(&alice, "Concert", json!(20)).await);
    let reply = alice.post(&resale(&listed), body.clone()).await;
    assert_eq!(reply.error_codes(), ["ticket_listed"], "{:?}", reply.body);
    app.publish(&order_created(Uuid::now_v7(), &listed)).await;
    app.ticket_at_version(&listed, 1).await;
    let reply = alice.post(&resale(&listed), body.clone()).await;
    assert_eq!(reply.error_codes(), ["ticket_reserved"], "{:?}", reply.body);
    // Listed again, and held by a second buyer: neither can be listed once more.
    assert_eq!(bob.post(&resale(&kept), body.clone()).await.status, 200);
    let again = bob.post(&resale(&kept), body.clone()).await;
    assert_eq!(again.error_codes(), ["ticket_listed"], "{:?}", again.body);
    let mut held = order_created(Uuid::now_v7(), &kept);
    held.data.listing = 1;
    app.publish(&held).await;
    app.ticket_at_version(&kept, 4).await;
    let wallet = bob.get("/api/users/me/tickets").await;
    assert_eq!(wallet.body[0]["status"], "held");
    let refused = bob.post(&resale(&kept), body.clone()).await;
    assert_eq!(
        refused.error_codes(),
        ["ticket_reserved"],
        "{:?}",
        refused.body
    );
    assert_eq!(
        app.anonymous()
            .get(&format!("/api/tickets/{kept}/history"))
            .await
            .status,
        401
    );
    assert_eq!(
        bob.get(&format!("/api/tickets/{}/history", Uuid::now_v7()))
            .await
            .status,
        404
    );
}

async fn a_ticket_sent_as_a_gift_keeps_the_cap_of_its_last_sale(backend: Backend) {
    let app = spawn_app(backend).await;
    let (bob, carol) = (app.sign_in(), app.sign_in());
    let id = bought_at_20(&app, &bob).await;
    let announced = app.publish(&user_created(carol.id)).await;
    app.handled(announced).await;
    let email = format!("{}@example.com", carol.id.simple());
    let sent = bob
        .post(&format!("/api/tickets/{id}/send"), json!({"email": email}))
        .await;
    assert_eq!(sent.status, 200, "{:?}", sent.body);

    // Carol paid nothing, but the ticket was bought at 20: that is her cap too.
    let wallet = carol.get("/api/users/me/tickets").await;
    assert_eq!(wallet.body[0]["maxResalePrice"], json!(20));
    let over = carol.post(&resale(&id), json!({"price": 20.01})).await;
    assert_eq!(over.error_fields(), ["price"], "{:?}", over.body);
    let history = carol.get(&format!("/api/tickets/{id}/history")).await;
    let story = history.body.as_array().unwrap();
    assert_eq!(story.len(), 2, "{story:?}");
    assert_eq!(
        (&story[0]["kind"], &story[0]["price"]),
        (&json!("sold"), &json!(20))
    );
    assert_eq!(story[1]["kind"], "sent");
    assert!(
        story[1].get("price").is_none(),
        "a gift has no price: {story:?}"
    );
}

async fn a_resale_keeps_its_title_and_ends_when_the_event_starts(backend: Backend) {
    let app = spawn_app(backend).await;
    let (promoter, bob) = (app.sign_in(), app.sign_in());
    let event = create_event(&promoter, event_body("Pixies", "Olympia", 5)).await;
    let id = id_of(&list_for(&promoter, &event, json!(30)).await);
    buy(&app, &id, &bob, 3000, 0).await;
    let listed = bob.post(&resale(&id), json!({"price": 25})).await;
    assert_eq!(listed.status, 200, "{:?}", listed.body);

    // A resale changes its price, not what is sold.
    let path = format!("/api/tickets/{id}");
    let renamed = bob
        .put(&path, json!({"title": "Front row!", "price": 25}))
        .await;
    assert_eq!(renamed.error_fields(), ["title"], "{:?}", renamed.body);
    // As it was sold: the title the buyer ordered at.
    assert_eq!(app.ticket(&id).await["title"], "Concert");
    let cheaper = bob
        .put(&path, json!({"title": "Concert", "price": 22}))
        .await;
    assert_eq!(cheaper.status, 200, "{:?}", cheaper.body);

    // Bought by Carol, who keeps it; then the event starts, and it can be listed no more.
    let carol = app.sign_in();
    let kept = buy(&app, &id, &carol, 2200, 1).await;
    sqlx::query("UPDATE events SET starts_at = $1 WHERE id = $2")
        .bind(time::OffsetDateTime::now_utc().unix_timestamp() * 1000 - 1000)
        .bind(event["id"].as_str().unwrap())
        .execute(app.ctx.store.writer())
        .await
        .unwrap();
    let late = carol.post(&resale(&id), json!({"price": 22})).await;
    assert_eq!(late.error_codes(), ["sale_ended"], "{:?}", late.body);
    assert_eq!(app.ticket(&id).await["orderId"], kept.to_string());
}

async fn a_send_and_a_resale_at_once_end_one_way(backend: Backend) {
    let app = spawn_app(backend).await;
    let (bob, carol) = (app.sign_in(), app.sign_in());
    let announced = app.publish(&user_created(carol.id)).await;
    app.handled(announced).await;
    let to_carol = json!({"email": format!("{}@example.com", carol.id.simple())});
    for _ in 0..5 {
        let id = bought_at_20(&app, &bob).await;
        let send_path = format!("/api/tickets/{id}/send");
        let resale_path = resale(&id);
        let (sent, listed) = tokio::join!(
            bob.post(&send_path, to_carol.clone()),
            bob.post(&resale_path, json!({"price": 20})),
        );

        let ticket = app.ticket(&id).await;
        match (sent.status, listed.status) {
            (200, _) => {
                // Sent first: the resale found it Carol's.
                assert_eq!(listed.status, 401, "{:?}", listed.body);
                assert_eq!(ticket["userId"], carol.id.to_string());
                assert_ne!(ticket["orderId"], json!(null));
            }
            (_, 200) => {
                // Listed first: it is for sale, and stays Bob's.
                assert_eq!(sent.error_codes(), ["ticket_listed"], "{:?}", sent.body);
                assert_eq!(ticket["userId"], bob.id.to_string());
                assert_eq!(ticket["orderId"], json!(null));
            }
            other => panic!("neither won: {other:?} {:?} {:?}", sent.body, listed.body),
        }
        // One change, one version.
        assert_eq!(ticket["version"], 3);
    }
}
