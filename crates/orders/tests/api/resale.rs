//! A ticket its buyer lists again takes orders again: one live order per listing, the paid order
//! of the listing before holding nothing back, and a listing sold taking no more.

use common::events::{Envelope, OrderCreated, TicketCreated, TicketUpdated};
use common::money::Cents;
use testkit::{Backend, json};
use uuid::Uuid;

use crate::helpers::{TestApp, expiration_complete, id_of, payment_created, spawn_app};

testkit::each_database!(a_ticket_listed_again_is_sold_again_once_per_listing);

/// Applies a ticket:updated as the tickets service announces a change of the ticket.
async fn ticket_changed(
    app: &TestApp,
    ticket: &TicketCreated,
    version: i64,
    owner: Uuid,
    (order_id, cents, listing): (Option<Uuid>, i64, i64),
) {
    let event = app
        .publish(&Envelope::new(TicketUpdated {
            id: ticket.id,
            version,
            title: "Concert".into(),
            price: Cents::new(cents).unwrap(),
            user_id: owner,
            order_id,
            listing,
        }))
        .await;
    app.handled(event).await;
}

async fn a_ticket_listed_again_is_sold_again_once_per_listing(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut placed = app.watch::<OrderCreated>().await;
    let (seller, fan, rival, late) = (app.sign_in(), app.sign_in(), app.sign_in(), app.sign_in());
    let ticket = app.list_ticket(seller.id, "Concert", 2000).await;
    let first = id_of(&app.place_order(&fan, ticket.id).await);
    app.handled(app.publish(&payment_created(first)).await)
        .await;
    app.order_in_status(&fan, first, "complete").await;
    let order = |who: &testkit::User| {
        let body = json!({"ticketId": ticket.id.to_string()});
        let client = who.client.clone();
        async move { client.post("/api/orders", body).await }
    };

    // Sold: reserved for the fan, then theirs. Nobody may order it.
    ticket_changed(&app, &ticket, 1, seller.id, (Some(first), 2000, 0)).await;
    ticket_changed(&app, &ticket, 2, fan.id, (Some(first), 2000, 0)).await;
    let refused = order(&rival).await;
    assert_eq!(
        refused.error_codes(),
        ["ticket_reserved"],
        "{:?}",
        refused.body
    );

    // The fan lists it again at 18: a new listing, which takes one order.
    ticket_changed(&app, &ticket, 3, fan.id, (None, 1800, 1)).await;
    let second = order(&rival).await;
    assert_eq!(second.status, 201, "{:?}", second.body);
    assert_eq!(second.body["ticket"]["price"], json!(18));
    let refused = order(&late).await;
    assert_eq!(
        refused.error_codes(),
        ["ticket_reserved"],
        "{:?}",
        refused.body
    );
    let own = order(&fan).await;
    assert_eq!(own.error_codes(), ["ticket_reserved"], "{:?}", own.body);
    // Tickets hears which listing each order is of, to turn away one of a listing gone by.
    let listings: Vec<_> = [placed.next().await, placed.next().await]
        .iter()
        .map(|event| (event.data.id, event.data.listing))
        .collect();
    assert_eq!(listings, [(first, 0), (id_of(&second.body), 1)]);

    // Its hold lapses: the listing takes an order again, and the first sale stands.
    let lapsed = app.publish(&expiration_complete(id_of(&second.body))).await;
    app.handled(lapsed).await;
    let third = order(&late).await;
    assert_eq!(third.status, 201, "{:?}", third.body);
    assert_eq!(app.order(&fan, first).await["status"], "complete");
}
