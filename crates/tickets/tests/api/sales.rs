//! The seller's side: each paid order records what the buyer paid, the marketplace's fee at the
//! time and what is owed to the seller, on the seller's sales list.

use testkit::{Backend, User, json};
use uuid::Uuid;

use crate::helpers::{
    TestApp, id_of, order_completed, order_created_at, spawn_app, spawn_app_with,
};

testkit::each_database!(
    a_paid_order_owes_its_seller_the_price_less_the_fee,
    sales_page_last_sold_first,
);

/// Lists a ticket as `seller` at `cents` and has `buyer` order and pay for it: returns the order.
async fn sold(app: &TestApp, seller: &User, buyer: &User, cents: i64) -> Uuid {
    let price = json!(cents as f64 / 100.0);
    let id = id_of(&app.list_ticket(seller, "Concert", price).await);
    let order = Uuid::now_v7();
    app.publish(&order_created_at(order, &id, "Concert", cents))
        .await;
    app.ticket_at_version(&id, 1).await;
    let paid = app
        .publish(&order_completed(order, &id, Some(buyer.id)))
        .await;
    app.handled(paid).await;
    order
}

async fn a_paid_order_owes_its_seller_the_price_less_the_fee(backend: Backend) {
    let settings = tickets::Settings {
        seller_fee: tickets::sales::SellerFee::parse_percent("2.5").unwrap(),
        ..Default::default()
    };
    let app = spawn_app_with(backend, settings).await;
    let (alice, bob) = (app.sign_in(), app.sign_in());

    let order = sold(&app, &alice, &bob, 1999).await;

    let reply = alice.get("/api/users/me/sales").await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let sales = reply.body.as_array().unwrap();
    assert_eq!(sales.len(), 1);
    let sale = &sales[0];
    assert_eq!(sale["orderId"], order.to_string());
    assert_eq!(sale["title"], "Concert");
    // 2.5% of 19.99 is 49.975 cents: 50 to the seller's loss, half a cent up.
    assert_eq!(
        (&sale["price"], &sale["fee"], &sale["owed"], &sale["payout"]),
        (&json!(19.99), &json!(0.5), &json!(19.49), &json!("owed"))
    );
    assert!(sale["soldAt"].as_str().unwrap().ends_with('Z'));
    let ticket = app.ticket(sale["ticketId"].as_str().unwrap()).await;
    assert_eq!(ticket["userId"], bob.id.to_string());
    // The buyer sold nothing; the sale is recorded once, however often it is announced.
    assert_eq!(bob.get("/api/users/me/sales").await.body, json!([]));
    let again = app
        .publish(&order_completed(
            order,
            sale["ticketId"].as_str().unwrap(),
            Some(bob.id),
        ))
        .await;
    app.handled(again).await;
    let reply = alice.get("/api/users/me/sales").await;
    assert_eq!(reply.body.as_array().unwrap().len(), 1);
    assert_eq!(app.anonymous().get("/api/users/me/sales").await.status, 401);
}

async fn sales_page_last_sold_first(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, bob) = (app.sign_in(), app.sign_in());
    let mut orders = Vec::new();
    for cents in [1000, 2550, 4000] {
        orders.push(sold(&app, &alice, &bob, cents).await.to_string());
    }
    orders.reverse();

    let mut seen = Vec::new();
    let mut path = Some("/api/users/me/sales?limit=2".to_owned());
    while let Some(next) = path {
        let reply = alice.get(&next).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        for sale in reply.body.as_array().unwrap() {
            // No fee unless the operator sets one.
            assert_eq!((&sale["fee"], &sale["owed"]), (&json!(0), &sale["price"]));
            seen.push(sale["orderId"].as_str().unwrap().to_owned());
        }
        path = reply.next_page();
    }
    assert_eq!(seen, orders);
}
