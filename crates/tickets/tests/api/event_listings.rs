//! `/api/events`: events, found once however often they are created, and the tickets for them,
//! cheapest first.

use std::time::Duration;

use testkit::{Backend, Value, json};
use uuid::Uuid;

use crate::helpers::{
    all_pages, create_event, event_body, id_of, list_for, order_created_at, spawn_app,
};

testkit::each_database!(
    creating_an_event_returns_201_with_its_start_on_the_venues_clocks,
    creating_an_event_requires_signing_in,
    creating_an_event_reports_every_invalid_field_at_once,
    an_event_created_again_is_offered_instead_of_made_twice,
    an_event_created_by_many_at_once_is_made_once,
    upcoming_events_are_listed_soonest_first_with_what_is_on_sale,
    paging_events_by_cursor_shows_each_once,
    an_events_tickets_are_listed_cheapest_first_without_the_held_ones,
    a_ticket_for_an_event_carries_its_event_and_seat,
    a_ticket_for_no_event_or_a_started_one_is_refused_on_its_field,
    an_events_tickets_leave_the_lists_when_it_starts,
    an_unknown_or_malformed_event_id_is_404,
);

async fn creating_an_event_returns_201_with_its_start_on_the_venues_clocks(backend: Backend) {
    let year = time::OffsetDateTime::now_utc().year() + 2;
    let app = spawn_app(backend).await;
    let alice = app.sign_in();

    let reply = alice
        .post(
            "/api/events",
            json!({"name": " Radiohead ", "venue": "Madison Square Garden", "city": "New York",
                   "startsAt": format!("{year}-06-12T20:00"), "timeZone": "america/new_york"}),
        )
        .await;

    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let event = &reply.body;
    assert_eq!(event["name"], "Radiohead");
    assert_eq!(event["venue"], "Madison Square Garden");
    assert_eq!(event["city"], "New York");
    // 20:00 in New York in June is midnight UTC.
    assert_eq!(event["startsAt"], format!("{year}-06-13T00:00:00Z"));
    assert_eq!(event["timeZone"], "America/New_York");
    assert_eq!(
        event["localStartsAt"],
        format!("{year}-06-12T20:00:00-04:00")
    );
    assert_eq!(event["userId"], alice.id.to_string());
    assert_eq!(event["ticketsForSale"], 0);
    assert_eq!(event["lowestPrice"], json!(null));
    let location = format!("/api/events/{}", id_of(event));
    assert_eq!(reply.headers["location"], location.as_str());
    let shown = app.anonymous().get(&location).await;
    assert_eq!(shown.status, 200);
    assert_eq!(&shown.body, event);
}

async fn creating_an_event_requires_signing_in(backend: Backend) {
    let app = spawn_app(backend).await;

    let reply = app
        .anonymous()
        .post("/api/events", event_body("Radiohead", "O2", 30))
        .await;

    assert_eq!(reply.status, 401, "{:?}", reply.body);
    assert_eq!(reply.error_codes(), ["not_authorized"]);
    assert_eq!(app.anonymous().get("/api/events").await.body, json!([]));
}

async fn creating_an_event_reports_every_invalid_field_at_once(backend: Backend) {
    let year = time::OffsetDateTime::now_utc().year() + 2;
    let app = spawn_app(backend).await;
    let alice = app.sign_in();

    let reply = alice
        .post(
            "/api/events",
            json!({"name": "", "venue": "O2\u{202E}", "city": 3,
                   "startsAt": "2020-01-01T20:00", "timeZone": "Europe/London"}),
        )
        .await;
    assert_eq!(reply.status, 400, "{:?}", reply.body);
    assert_eq!(reply.error_fields(), ["name", "venue", "city", "startsAt"]);
    assert_eq!(
        reply.error_messages(),
        [
            "Name is required",
            "Venue must not contain control or text-direction characters",
            "City must be text",
            "Start time must be in the future",
        ]
    );

    let reply = alice
        .post(
            "/api/events",
            json!({"name": "Radiohead", "venue": "O2", "city": "London",
                   "startsAt": format!("{year}-01-01T20:00"), "timeZone": "Europe/Londres"}),
        )
        .await;
    assert_eq!(reply.status, 400, "{:?}", reply.body);
    assert_eq!(reply.error_fields(), ["timeZone"]);
    assert_eq!(reply.error_codes(), ["invalid_field"]);
    assert_eq!(app.anonymous().get("/api/events").await.body, json!([]));
}

async fn an_event_created_again_is_offered_instead_of_made_twice(backend: Backend) {
    let year = time::OffsetDateTime::now_utc().year() + 2;
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let bob = app.sign_in();
    let first = create_event(
        &alice,
        json!({"name": "Beyoncé", "venue": "Stade de France", "city": "Paris",
               "startsAt": format!("{year}-07-01T21:00"), "timeZone": "Europe/Paris"}),
    )
    .await;

    // Another person types it another way, with the start as an instant in UTC.
    let again = bob
        .post(
            "/api/events",
            json!({"name": "BEYONCE", "venue": "stade de france!", "city": "Saint-Denis",
                   "startsAt": format!("{year}-07-01T19:00:00Z"), "timeZone": "Europe/Paris"}),
        )
        .await;

    assert_eq!(again.status, 303, "{:?}", again.body);
    let location = format!("/api/events/{}", id_of(&first));
    assert_eq!(again.headers["location"], location.as_str());
    assert_eq!(again.body, first);
    // A minute later, or at another venue, is another event.
    let later = bob
        .post(
            "/api/events",
            json!({"name": "Beyoncé", "venue": "Stade de France", "city": "Paris",
                   "startsAt": format!("{year}-07-01T21:01"), "timeZone": "Europe/Paris"}),
        )
        .await;
    assert_eq!(later.status, 201, "{:?}", later.body);
    let events = app.anonymous().get("/api/events").await.body;
    assert_eq!(events.as_array().unwrap().len(), 2, "{events}");
}

async fn an_event_created_by_many_at_once_is_made_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let people: Vec<_> = (0..12).map(|_| app.sign_in()).collect();

    let replies = futures::future::join_all(
        people
            .iter()
            .map(|person| person.post("/api/events", event_body("Adele", "Wembley", 40))),
    )
    .await;

    let created: Vec<_> = replies.iter().filter(|reply| reply.status == 201).collect();
    assert_eq!(created.len(), 1, "{replies:?}");
    let id = id_of(&created[0].body);
    for reply in &replies {
        assert!(matches!(reply.status, 201 | 303), "{reply:?}");
        assert_eq!(id_of(&reply.body), id);
    }
    let events = app.anonymous().get("/api/events").await.body;
    assert_eq!(events.as_array().unwrap().len(), 1, "{events}");
}

async fn upcoming_events_are_listed_soonest_first_with_what_is_on_sale(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let later = create_event(&alice, event_body("Adele", "Wembley", 60)).await;
    let soon = create_event(&alice, event_body("Blur", "Wembley", 10)).await;
    let middle = create_event(&alice, event_body("Coldplay", "Wembley", 30)).await;
    let cheap = list_for(&alice, &soon, json!(35.5)).await;
    list_for(&alice, &soon, json!(80)).await;
    list_for(&alice, &soon, json!(50)).await;

    let listed = app.anonymous().get("/api/events").await.body;
    let names: Vec<_> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Blur", "Coldplay", "Adele"]);
    assert_eq!(listed[0]["ticketsForSale"], 3);
    assert_eq!(listed[0]["lowestPrice"], json!(35.5));
    assert_eq!(listed[1]["ticketsForSale"], 0);
    assert_eq!(listed[1]["lowestPrice"], json!(null));
    assert_eq!(listed[2]["id"], later["id"]);
    assert_eq!(listed[1]["id"], middle["id"]);

    // Once an order holds the cheapest ticket, the event shows what is left.
    let order = order_created_at(Uuid::now_v7(), &id_of(&cheap), "Standing", 3550);
    app.handled(app.publish(&order).await).await;
    let shown = app
        .anonymous()
        .get(&format!("/api/events/{}", id_of(&soon)))
        .await
        .body;
    assert_eq!(shown["ticketsForSale"], 2);
    assert_eq!(shown["lowestPrice"], json!(50));
}

async fn paging_events_by_cursor_shows_each_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let mut created = Vec::new();
    for day in [9, 3, 7, 3, 5, 1, 3] {
        let name = format!("Show {}", created.len());
        created.push(create_event(&alice, event_body(&name, "Palladium", day)).await);
    }

    let paged = all_pages(&app, "/api/events", 2).await;

    let whole = app.anonymous().get("/api/events?limit=100").await.body;
    assert_eq!(&paged, whole.as_array().unwrap());
    assert_eq!(paged.len(), created.len());
    let starts: Vec<_> = paged
        .iter()
        .map(|event| event["startsAt"].as_str().unwrap().to_owned())
        .collect();
    assert!(starts.is_sorted(), "{starts:?}");
}

async fn an_events_tickets_are_listed_cheapest_first_without_the_held_ones(backend: Backend) {
    let app = spawn_app(backend).await;
    let seller = app.sign_in();
    let event = create_event(&seller, event_body("Coldplay", "Wembley", 20)).await;
    let other = create_event(&seller, event_body("Coldplay", "Wembley", 21)).await;
    let mut for_sale = Vec::new();
    for price in [60.0, 20.0, 45.0, 20.0, 99.99, 20.0, 45.0] {
        for_sale.push(list_for(&seller, &event, json!(price)).await);
    }
    list_for(&seller, &other, json!(1)).await;
    app.list_ticket(&seller, "Coldplay, no event", json!(2))
        .await;
    let held = list_for(&seller, &event, json!(10)).await;
    let order = order_created_at(Uuid::now_v7(), &id_of(&held), "Standing", 1000);
    app.handled(app.publish(&order).await).await;

    let path = format!("/api/events/{}/tickets", id_of(&event));
    let paged = all_pages(&app, &path, 2).await;

    let prices: Vec<_> = paged.iter().map(|t| t["price"].as_f64().unwrap()).collect();
    assert_eq!(prices, [20.0, 20.0, 20.0, 45.0, 45.0, 60.0, 99.99]);
    let mut ids: Vec<_> = paged.iter().map(id_of).collect();
    ids.sort();
    let mut expected: Vec<_> = for_sale.iter().map(id_of).collect();
    expected.sort();
    assert_eq!(ids, expected);
    for ticket in &paged {
        assert_eq!(ticket["eventId"], event["id"]);
    }
}

async fn a_ticket_for_an_event_carries_its_event_and_seat(backend: Backend) {
    let app = spawn_app(backend).await;
    let seller = app.sign_in();
    let event = create_event(&seller, event_body("Hamilton", "Victoria Palace", 14)).await;

    let reply = seller
        .post(
            "/api/tickets",
            json!({"title": "Hamilton, stalls", "price": 120, "eventId": event["id"],
                   "section": " Stalls ", "row": "F", "seat": "12"}),
        )
        .await;

    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let ticket = &reply.body;
    assert_eq!(ticket["eventId"], event["id"]);
    assert_eq!(ticket["section"], "Stalls");
    assert_eq!(ticket["row"], "F");
    assert_eq!(ticket["seat"], "12");
    assert_eq!(&app.ticket(&id_of(ticket)).await, ticket);
    // It is for sale like any ticket, and editing its title and price keeps its seat.
    assert_eq!(app.listed_ids("").await, [id_of(ticket)]);
    let edited = seller
        .put(
            &format!("/api/tickets/{}", id_of(ticket)),
            json!({"title": "Hamilton", "price": 110}),
        )
        .await;
    assert_eq!(edited.status, 200, "{:?}", edited.body);
    assert_eq!(edited.body["eventId"], event["id"]);
    assert_eq!(edited.body["seat"], "12");
}

async fn a_ticket_for_no_event_or_a_started_one_is_refused_on_its_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let seller = app.sign_in();
    // Soon enough to wait for, late enough to be ahead when it is created on a busy machine.
    let starts_soon = (time::OffsetDateTime::now_utc() + time::Duration::seconds(4))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let event = create_event(
        &seller,
        json!({"name": "Matinee", "venue": "Globe", "city": "London",
               "startsAt": starts_soon, "timeZone": "Europe/London"}),
    )
    .await;

    for (body, message) in [
        (
            json!({"title": "T", "price": 5, "eventId": Uuid::now_v7()}),
            "No such event",
        ),
        (
            json!({"title": "T", "price": 5, "eventId": "soon"}),
            "Event id must be a valid id",
        ),
        (
            json!({"title": "T", "price": 5, "row": "A"}),
            "Event id is required with a seat",
        ),
    ] {
        let reply = seller.post("/api/tickets", body.clone()).await;
        assert_eq!(reply.status, 400, "{body}: {:?}", reply.body);
        assert_eq!(reply.error_fields(), ["eventId"], "{body}");
        assert_eq!(reply.error_messages(), [message], "{body}");
    }

    tokio::time::sleep(Duration::from_millis(4_100)).await;
    let reply = seller
        .post(
            "/api/tickets",
            json!({"title": "T", "price": 5, "eventId": event["id"]}),
        )
        .await;
    assert_eq!(reply.status, 400, "{:?}", reply.body);
    assert_eq!(reply.error_messages(), ["The event has started"]);
    assert_eq!(app.listed_ids("").await, Vec::<String>::new());
    // A started event is still shown, but no longer among the upcoming ones.
    let shown = app
        .anonymous()
        .get(&format!("/api/events/{}", id_of(&event)))
        .await;
    assert_eq!(shown.status, 200);
    assert_eq!(app.anonymous().get("/api/events").await.body, json!([]));
}

async fn an_events_tickets_leave_the_lists_when_it_starts(backend: Backend) {
    let app = spawn_app(backend).await;
    let seller = app.sign_in();
    // Soon enough to wait for, late enough to list for on a busy machine first.
    let start = time::OffsetDateTime::now_utc() + time::Duration::seconds(6);
    let starting = create_event(
        &seller,
        json!({"name": "Matinee", "venue": "Globe", "city": "London",
               "startsAt": start.format(&time::format_description::well_known::Rfc3339).unwrap(),
               "timeZone": "Europe/London"}),
    )
    .await;
    let later = create_event(&seller, event_body("Evening", "Globe", 1)).await;
    let ending = list_for(&seller, &starting, json!(30)).await;
    let staying = list_for(&seller, &later, json!(40)).await;
    let of_no_event = seller
        .post("/api/tickets", json!({"title": "Raffle", "price": 5}))
        .await
        .body;
    let event_path = format!("/api/events/{}", id_of(&starting));
    assert_eq!(
        app.listed_ids("").await,
        [id_of(&of_no_event), id_of(&staying), id_of(&ending)]
    );
    let on_sale = app.anonymous().get(&event_path).await.body;
    assert_eq!(
        (&on_sale["ticketsForSale"], &on_sale["lowestPrice"]),
        (&json!(1), &json!(30))
    );

    let until_start =
        Duration::try_from(start - time::OffsetDateTime::now_utc()).unwrap_or_default();
    tokio::time::sleep(until_start + Duration::from_millis(100)).await;

    assert_eq!(
        app.listed_ids("").await,
        [id_of(&of_no_event), id_of(&staying)]
    );
    assert_eq!(
        all_pages(&app, &format!("{event_path}/tickets"), 10).await,
        Vec::<Value>::new()
    );
    let started = app.anonymous().get(&event_path).await.body;
    assert_eq!(
        (&started["ticketsForSale"], &started["lowestPrice"]),
        (&json!(0), &json!(null))
    );
    // The ticket itself is still shown, as a ticket of an event that has started.
    let shown = app
        .anonymous()
        .get(&format!("/api/tickets/{}", id_of(&ending)))
        .await;
    assert_eq!(shown.status, 200, "{:?}", shown.body);
    assert_eq!(shown.body["eventId"], starting["id"]);
}

async fn an_unknown_or_malformed_event_id_is_404(backend: Backend) {
    let app = spawn_app(backend).await;
    let unknown = Uuid::now_v7();

    for path in [
        format!("/api/events/{unknown}"),
        format!("/api/events/{unknown}/tickets"),
        "/api/events/not-an-id".to_owned(),
        "/api/events/not-an-id/tickets".to_owned(),
    ] {
        let reply = app.anonymous().get(&path).await;
        assert_eq!(reply.status, 404, "{path}: {:?}", reply.body);
        assert_eq!(reply.error_codes(), ["not_found"], "{path}");
    }
}
