//! Tickets changing hands: a paid order makes the ticket its buyer's, in their wallet, and an
//! owner sends a ticket they keep to another account by e-mail.

use common::events::TicketUpdated;
use testkit::{Backend, User, json};
use uuid::Uuid;

use crate::helpers::{TestApp, id_of, order_completed, order_created, spawn_app, user_created};

testkit::each_database!(
    a_paid_order_makes_the_ticket_its_buyers,
    a_payment_waits_for_its_reservation_and_hands_over_once,
    an_order_paid_before_tickets_changed_hands_leaves_the_ticket_with_its_seller,
    a_wallet_pages_through_what_its_owner_acquired_last_first,
    an_owner_sends_a_ticket_they_keep_by_email,
    a_send_is_refused_unless_the_owner_keeps_the_ticket_and_the_recipient_exists,
);

/// Lists a ticket as `seller` and has `buyer` order and pay for it; returns its id once it is
/// the buyer's (version 2).
async fn bought(app: &TestApp, seller: &User, buyer: &User) -> String {
    let id = id_of(&app.list_ticket(seller, "Concert", json!(20)).await);
    let order = Uuid::now_v7();
    app.publish(&order_created(order, &id)).await;
    app.ticket_at_version(&id, 1).await;
    app.publish(&order_completed(order, &id, Some(buyer.id)))
        .await;
    app.ticket_at_version(&id, 2).await;
    id
}

/// The ids in `user`'s wallet, first page (asserting 200).
async fn wallet(user: &User) -> Vec<String> {
    let reply = user.get("/api/users/me/tickets").await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.body.as_array().unwrap().iter().map(id_of).collect()
}

/// Waits until the service knows `user`'s account, as auth would announce it.
async fn announced(app: &TestApp, user: &User) {
    let event = app.publish(&user_created(user.id)).await;
    app.handled(event).await;
}

async fn a_paid_order_makes_the_ticket_its_buyers(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut updated = app.watch::<TicketUpdated>().await;
    let (alice, bob) = (app.sign_in(), app.sign_in());
    let id = id_of(&app.list_ticket(&alice, "Concert", json!(20)).await);
    let order = Uuid::now_v7();
    app.publish(&order_created(order, &id)).await;
    app.ticket_at_version(&id, 1).await;
    assert!(wallet(&bob).await.is_empty(), "held is not yet bought");

    let paid = order_completed(order, &id, Some(bob.id));
    app.publish(&paid).await;

    let ticket = app.ticket_at_version(&id, 2).await;
    assert_eq!(ticket["userId"], bob.id.to_string());
    assert_eq!(ticket["orderId"], order.to_string());
    let reply = bob.get("/api/users/me/tickets").await;
    assert_eq!(reply.status, 200);
    let owned = reply.body.as_array().unwrap();
    assert_eq!(owned.len(), 1);
    assert_eq!(owned[0]["id"], id.as_str());
    assert_eq!(owned[0]["userId"], bob.id.to_string());
    assert_eq!(owned[0]["version"], 2);
    // When the order was paid, to the millisecond.
    let acquired_at = time::OffsetDateTime::parse(
        owned[0]["acquiredAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(
        acquired_at.unix_timestamp_nanos() / 1_000_000,
        paid.occurred_at.unix_timestamp_nanos() / 1_000_000
    );
    assert!(wallet(&alice).await.is_empty());
    assert!(!app.listed_ids("").await.contains(&id));
    // The replicas hear of the new owner at the next version.
    let versions: Vec<_> = [updated.next().await, updated.next().await]
        .into_iter()
        .map(|event| (event.data.version, event.data.user_id))
        .collect();
    assert_eq!(versions, [(1, alice.id), (2, bob.id)]);
    // The seller may no longer change it.
    let edit = alice
        .put(
            &format!("/api/tickets/{id}"),
            json!({"title": "Mine", "price": 99}),
        )
        .await;
    assert_eq!(edit.status, 401, "{:?}", edit.body);
    assert_eq!(
        app.anonymous().get("/api/users/me/tickets").await.status,
        401
    );
}

async fn a_payment_waits_for_its_reservation_and_hands_over_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut updated = app.watch::<TicketUpdated>().await;
    let (alice, bob) = (app.sign_in(), app.sign_in());
    let id = id_of(&app.list_ticket(&alice, "Concert", json!(20)).await);
    let order = Uuid::now_v7();

    // The payment's news outruns the order's: it waits for the reservation, and then applies.
    let paid = app
        .publish(&order_completed(order, &id, Some(bob.id)))
        .await;
    app.publish(&order_created(order, &id)).await;
    app.handled(paid).await;
    assert_eq!(app.ticket(&id).await["userId"], bob.id.to_string());

    // The same payment announced again, as a new message: nothing more happens.
    let again = app
        .publish(&order_completed(order, &id, Some(bob.id)))
        .await;
    app.handled(again).await;
    app.flushed().await;
    let ticket = app.ticket(&id).await;
    assert_eq!(ticket["version"], 2);
    let versions: Vec<_> = updated
        .rest()
        .await
        .iter()
        .map(|e| e.data.version)
        .collect();
    assert_eq!(versions, [1, 2]);
    assert_eq!(wallet(&bob).await, [id]);
}

async fn an_order_paid_before_tickets_changed_hands_leaves_the_ticket_with_its_seller(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let id = id_of(&app.list_ticket(&alice, "Concert", json!(20)).await);
    let order = Uuid::now_v7();
    app.publish(&order_created(order, &id)).await;
    app.ticket_at_version(&id, 1).await;

    let paid = app.publish(&order_completed(order, &id, None)).await;

    app.handled(paid).await;
    let ticket = app.ticket(&id).await;
    assert_eq!(ticket["version"], 1);
    assert_eq!(ticket["userId"], alice.id.to_string());
    assert_eq!(ticket["orderId"], order.to_string());
}

async fn a_wallet_pages_through_what_its_owner_acquired_last_first(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, bob) = (app.sign_in(), app.sign_in());
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(bought(&app, &alice, &bob).await);
    }
    ids.reverse();

    let mut seen = Vec::new();
    let mut path = Some("/api/users/me/tickets?limit=2".to_owned());
    while let Some(next) = path {
        let reply = bob.get(&next).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        seen.extend(reply.body.as_array().unwrap().iter().map(id_of));
        path = reply.next_page();
    }
    assert_eq!(seen, ids);
    let bad = bob.get("/api/users/me/tickets?limit=0").await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.error_fields(), ["limit"]);
}

async fn an_owner_sends_a_ticket_they_keep_by_email(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, bob, carol) = (app.sign_in(), app.sign_in(), app.sign_in());
    let id = bought(&app, &alice, &bob).await;
    announced(&app, &carol).await;
    let mut updated = app.watch::<TicketUpdated>().await;
    let email = format!("  {}@EXAMPLE.com ", carol.id.simple()).to_uppercase();

    let key = Uuid::now_v7().to_string();
    let send = format!("/api/tickets/{id}/send");
    let reply = bob
        .post_with_key(&send, &key, json!({"email": email}))
        .await;

    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.body["userId"], carol.id.to_string());
    assert_eq!(reply.body["version"], 3);
    assert!(wallet(&bob).await.is_empty());
    assert_eq!(wallet(&carol).await, std::slice::from_ref(&id));
    app.flushed().await;
    let owners: Vec<_> = updated
        .rest()
        .await
        .iter()
        .map(|event| (event.data.version, event.data.user_id))
        .collect();
    assert_eq!(owners, [(1, alice.id), (2, bob.id), (3, carol.id)]);
    // Sent again with its key, the request answers as it did and sends nothing more.
    let retried = bob
        .post_with_key(&send, &key, json!({"email": email}))
        .await;
    assert_eq!((retried.status, &retried.body), (200, &reply.body));
    assert_eq!(app.ticket(&id).await["version"], 3);
    // Carol keeps it as Bob did, and may send it on.
    announced(&app, &alice).await;
    let onward = carol
        .post(
            &send,
            json!({"email": format!("{}@example.com", alice.id.simple())}),
        )
        .await;
    assert_eq!(onward.status, 200, "{:?}", onward.body);
    assert_eq!(wallet(&alice).await, [id]);
}

async fn a_send_is_refused_unless_the_owner_keeps_the_ticket_and_the_recipient_exists(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let (alice, bob, carol) = (app.sign_in(), app.sign_in(), app.sign_in());
    let kept = bought(&app, &alice, &bob).await;
    announced(&app, &bob).await;
    announced(&app, &carol).await;
    let to_carol = json!({"email": format!("{}@example.com", carol.id.simple())});
    let send = |id: &str| format!("/api/tickets/{id}/send");

    let unknown = bob
        .post(&send(&kept), json!({"email": "nobody@example.com"}))
        .await;
    assert_eq!(
        (unknown.status, unknown.error_fields()),
        (400, vec!["email".to_owned()])
    );
    assert_eq!(unknown.error_messages(), ["No account has this e-mail"]);
    let to_self = bob
        .post(
            &send(&kept),
            json!({"email": format!("{}@example.com", bob.id.simple())}),
        )
        .await;
    assert_eq!(to_self.error_messages(), ["The ticket is yours already"]);
    let blank = bob.post(&send(&kept), json!({"email": " "})).await;
    assert_eq!(
        (blank.status, blank.error_fields()),
        (400, vec!["email".to_owned()])
    );
    assert_eq!(
        app.anonymous()
            .post(&send(&kept), to_carol.clone())
            .await
            .status,
        401
    );
    // Its seller no longer owns it.
    assert_eq!(alice.post(&send(&kept), to_carol.clone()).await.status, 401);
    assert_eq!(
        bob.post(&send(&Uuid::now_v7().to_string()), to_carol.clone())
            .await
            .status,
        404
    );
    assert_eq!(
        bob.post(&send("not-an-id"), to_carol.clone()).await.status,
        404
    );

    // A ticket for sale is the market's, and one an order holds is the buyer's to pay for.
    let listed = id_of(&app.list_ticket(&alice, "Concert", json!(20)).await);
    let reply = alice.post(&send(&listed), to_carol.clone()).await;
    assert_eq!(reply.status, 400, "{:?}", reply.body);
    assert_eq!(reply.error_codes(), ["ticket_listed"]);
    assert_eq!(
        reply.error_messages(),
        ["Cannot send a ticket listed for sale"]
    );
    app.publish(&order_created(Uuid::now_v7(), &listed)).await;
    app.ticket_at_version(&listed, 1).await;
    let reply = alice.post(&send(&listed), to_carol.clone()).await;
    assert_eq!(reply.status, 400, "{:?}", reply.body);
    assert_eq!(reply.error_codes(), ["ticket_reserved"]);
    assert_eq!(
        reply.error_messages(),
        ["Cannot send a ticket an order holds"]
    );

    // Nothing moved.
    assert_eq!(app.ticket(&kept).await["version"], 2);
    assert_eq!(app.ticket(&listed).await["version"], 1);
    assert_eq!(wallet(&bob).await, [kept]);
    assert!(wallet(&carol).await.is_empty());
}
