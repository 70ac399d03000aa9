//! `/api/tickets`: every status code of every tickets endpoint, in the one error shape.

use testkit::{Backend, json};
use uuid::Uuid;

use crate::helpers::{id_of, order_created, order_created_at, spawn_app};

testkit::each_database!(
    creating_a_ticket_returns_201_with_the_ticket,
    a_price_of_19_99_round_trips_exactly,
    creating_a_ticket_requires_signing_in,
    creating_a_ticket_reports_every_invalid_field_at_once,
    a_body_that_is_not_json_is_refused_in_the_error_shape,
    a_body_that_is_not_an_object_is_refused_without_naming_our_types,
    a_key_given_twice_is_refused,
    a_title_that_shows_nothing_or_steers_the_text_is_refused_on_its_field,
    an_unknown_or_malformed_ticket_id_is_404,
    listing_shows_only_unreserved_tickets_newest_first,
    listing_honours_limit_and_offset,
    listing_refuses_bad_paging_values,
    paging_by_cursor_shows_each_ticket_once_while_more_are_listed,
    paging_by_cursor_orders_tickets_listed_in_one_millisecond_by_id,
    updating_a_ticket_returns_it_with_the_next_version,
    updating_a_ticket_requires_signing_in,
    updating_someone_elses_ticket_returns_401,
    updating_an_unknown_or_malformed_ticket_id_is_404,
    updating_with_invalid_fields_reports_each_of_them,
    a_reserved_ticket_cannot_be_edited,
);

async fn creating_a_ticket_returns_201_with_the_ticket(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();

    let reply = alice
        .post("/api/tickets", json!({"title": "  Concert  ", "price": 20}))
        .await;

    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let ticket = &reply.body;
    let id = Uuid::parse_str(ticket["id"].as_str().unwrap()).unwrap();
    assert_eq!(id.get_version_num(), 7);
    assert_eq!(ticket["title"], "Concert");
    assert_eq!(ticket["price"], json!(20));
    assert_eq!(ticket["userId"], alice.id.to_string());
    assert_eq!(ticket["version"], 0);
    assert_eq!(ticket["orderId"], json!(null));
    let created_at = ticket["createdAt"].as_str().unwrap();
    let parsed =
        time::OffsetDateTime::parse(created_at, &time::format_description::well_known::Rfc3339)
            .unwrap();
    assert!(created_at.ends_with('Z'), "{created_at} is not UTC");
    assert!((time::OffsetDateTime::now_utc() - parsed).abs() < time::Duration::minutes(1));
    assert_eq!(ticket.as_object().unwrap().len(), 7, "{ticket}");
    // What was answered is what was stored.
    assert_eq!(&app.ticket(&id.to_string()).await, ticket);
}

async fn a_price_of_19_99_round_trips_exactly(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();

    let created = app.list_ticket(&alice, "Concert", json!(19.99)).await;
    let shown = app.ticket(&id_of(&created)).await;
    let edited = alice
        .put(
            &format!("/api/tickets/{}", id_of(&created)),
            json!({"title": "Concert", "price": 0.1}),
        )
        .await;

    assert_eq!(created["price"].to_string(), "19.99");
    assert_eq!(shown["price"].to_string(), "19.99");
    assert_eq!(edited.status, 200, "{:?}", edited.body);
    assert_eq!(edited.body["price"].to_string(), "0.1");
}

async fn creating_a_ticket_requires_signing_in(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = json!({"title": "Concert", "price": 20});

    let anonymous = app.anonymous().post("/api/tickets", body.clone()).await;
    let client = app.anonymous();
    let forged = client
        .send(
            client
                .http
                .post(format!("{}/api/tickets", client.base))
                .bearer_auth("not.a.token")
                .json(&body),
        )
        .await;

    for reply in [anonymous, forged] {
        assert_eq!(reply.status, 401, "{:?}", reply.body);
        reply.assert_error_shape();
        assert!(reply.error_fields().is_empty());
    }
    assert!(app.listed_ids("").await.is_empty());
}

async fn creating_a_ticket_reports_every_invalid_field_at_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let long_title = "x".repeat(201);
    let cases = [
        (json!({}), vec!["title", "price"]),
        (json!({"title": "", "price": 0}), vec!["title", "price"]),
        (json!({"title": 5, "price": null}), vec!["title", "price"]),
        (json!({"title": "   ", "price": 10}), vec!["title"]),
        (json!({"title": long_title, "price": 10}), vec!["title"]),
        (json!({"title": "Concert"}), vec!["price"]),
        (json!({"title": "Concert", "price": "10"}), vec!["price"]),
        (json!({"title": "Concert", "price": 0}), vec!["price"]),
        (json!({"title": "Concert", "price": -5}), vec!["price"]),
        (json!({"title": "Concert", "price": 10.001}), vec!["price"]),
        (
            json!({"title": "Concert", "price": 1_000_000.01}),
            vec!["price"],
        ),
    ];

    for (body, fields) in cases {
        let reply = alice.post("/api/tickets", body.clone()).await;

        assert_eq!(reply.status, 400, "{body}: {:?}", reply.body);
        reply.assert_error_shape();
        assert_eq!(reply.error_fields(), fields, "{body}");
    }
    assert!(app.listed_ids("").await.is_empty());
}

async fn a_body_that_is_not_json_is_refused_in_the_error_shape(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();

    let reply = alice.post_raw_json("/api/tickets", "{\"title\": ").await;

    assert_eq!(reply.status, 400, "{:?}", reply.body);
    reply.assert_error_shape();
    assert_eq!(reply.error_messages(), ["Request body is not valid JSON"]);
}

async fn a_title_that_shows_nothing_or_steers_the_text_is_refused_on_its_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();

    // A NUL is also what PostgreSQL cannot store in text: refused here, not a 500 there.
    for title in [
        "\u{200B}\u{200B}\u{200B}",
        "Con\0cert",
        "Concert \u{202E}llehS",
    ] {
        let reply = alice
            .post("/api/tickets", json!({"title": title, "price": 20}))
            .await;

        assert_eq!(reply.status, 400, "{title:?}: {:?}", reply.body);
        reply.assert_error_shape();
        assert_eq!(reply.error_fields(), ["title"], "{title:?}");
    }
    assert!(app.listed_ids("").await.is_empty());
}

async fn a_body_that_is_not_an_object_is_refused_without_naming_our_types(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();

    for body in ["\"Concert\"", "20", "true", "null", "[\"Concert\", 20]"] {
        let reply = alice.post_raw_json("/api/tickets", body).await;

        assert_eq!(reply.status, 400, "{body}: {:?}", reply.body);
        reply.assert_error_shape();
        assert_eq!(
            reply.error_messages(),
            ["Request body must be a JSON object"],
            "{body}"
        );
    }
}

async fn a_key_given_twice_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();

    let reply = alice
        .post_raw_json(
            "/api/tickets",
            r#"{"title": "A", "title": "B", "price": 10}"#,
        )
        .await;

    assert_eq!(reply.status, 400, "{:?}", reply.body);
    reply.assert_error_shape();
    assert!(
        reply.error_messages()[0].contains("duplicate field `title`"),
        "{:?}",
        reply.body
    );
    assert!(app.listed_ids("").await.is_empty());
}

async fn an_unknown_or_malformed_ticket_id_is_404(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = app.anonymous();

    for id in [Uuid::now_v7().to_string(), "not-a-uuid".to_owned()] {
        let reply = client.get(&format!("/api/tickets/{id}")).await;

        assert_eq!(reply.status, 404, "{id}: {:?}", reply.body);
        reply.assert_error_shape();
    }
}

async fn listing_shows_only_unreserved_tickets_newest_first(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let bob = app.sign_in();
    assert!(app.listed_ids("").await.is_empty());
    let first = id_of(&app.list_ticket(&alice, "First", json!(10)).await);
    let second = id_of(&app.list_ticket(&bob, "Second", json!(20)).await);
    let third = id_of(&app.list_ticket(&alice, "Third", json!(30)).await);

    app.publish(&order_created_at(Uuid::now_v7(), &second, "Second", 2000))
        .await;
    app.ticket_at_version(&second, 1).await;

    assert_eq!(app.listed_ids("").await, [third.clone(), first.clone()]);
    let listed = app.anonymous().get("/api/tickets").await.body;
    assert_eq!(listed[0], app.ticket(&third).await);
}

async fn listing_honours_limit_and_offset(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let mut ids = Vec::new();
    for n in 0..51 {
        ids.push(id_of(
            &app.list_ticket(&alice, &format!("Ticket {n}"), json!(n + 1))
                .await,
        ));
    }
    ids.reverse(); // newest first

    assert_eq!(
        app.listed_ids("").await,
        ids[..50],
        "the default page is 50"
    );
    assert_eq!(app.listed_ids("?limit=100").await, ids);
    assert_eq!(app.listed_ids("?limit=2").await, ids[..2]);
    assert_eq!(app.listed_ids("?limit=2&offset=2").await, ids[2..4]);
    assert_eq!(app.listed_ids("?offset=49").await, ids[49..]);
    assert!(app.listed_ids("?offset=51").await.is_empty());
}

async fn listing_refuses_bad_paging_values(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = app.anonymous();
    let cut_short = format!("?cursor={}", "0".repeat(47));
    let beside_an_offset = format!("?cursor={}&offset=0", "0".repeat(48));
    let cases = [
        ("?limit=0", vec!["limit"]),
        ("?limit=101", vec!["limit"]),
        ("?limit=ten", vec!["limit"]),
        ("?limit=-1", vec!["limit"]),
        ("?offset=-1", vec!["offset"]),
        ("?offset=x", vec!["offset"]),
        ("?limit=0&offset=x", vec!["limit", "offset"]),
        ("?cursor=nope", vec!["cursor"]),
        (cut_short.as_str(), vec!["cursor"]),
        (beside_an_offset.as_str(), vec!["cursor"]),
    ];

    for (query, fields) in cases {
        let reply = client.get(&format!("/api/tickets{query}")).await;

        assert_eq!(reply.status, 400, "{query}: {:?}", reply.body);
        reply.assert_error_shape();
        assert_eq!(reply.error_fields(), fields, "{query}");
    }
}

async fn paging_by_cursor_shows_each_ticket_once_while_more_are_listed(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let mut before = Vec::new();
    for n in 0..10 {
        before.push(id_of(
            &app.list_ticket(&alice, &format!("Ticket {n}"), json!(n + 1))
                .await,
        ));
    }
    before.reverse(); // newest first

    // Every page is followed by more listings, which an offset would count and show again.
    let pages = app
        .anonymous()
        .pages("/api/tickets?limit=3", |pages| {
            let (app, alice) = (&app, &alice);
            async move {
                for n in 0..2 {
                    app.list_ticket(alice, &format!("Later {pages}.{n}"), json!(5))
                        .await;
                }
            }
        })
        .await;
    assert!(pages.iter().all(|page| page.len() <= 3));
    let seen: Vec<String> = pages.iter().flatten().map(id_of).collect();
    let pages = pages.len();

    assert_eq!(
        seen, before,
        "each ticket once, newest first, nothing listed later"
    );
    assert_eq!(pages, 4, "three full pages and one of a single ticket");
}

async fn paging_by_cursor_orders_tickets_listed_in_one_millisecond_by_id(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut ids: Vec<String> = (0..7).map(|_| Uuid::now_v7().to_string()).collect();
    for id in &ids {
        sqlx::query(
            "INSERT INTO tickets (id, title, price_cents, user_id, version, order_id, created_at) \
             VALUES ($1, 'Same moment', 100, $2, 0, NULL, 1780000000000)",
        )
        .bind(id)
        .bind(Uuid::now_v7().to_string())
        .execute(app.ctx.store.writer())
        .await
        .unwrap();
    }
    ids.sort();
    ids.reverse();

    let pages = app
        .anonymous()
        .pages("/api/tickets?limit=3", |_| async {})
        .await;
    let seen: Vec<String> = pages.iter().flatten().map(id_of).collect();

    assert_eq!(seen, ids, "each once, the later id first");
}

async fn updating_a_ticket_returns_it_with_the_next_version(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let created = app.list_ticket(&alice, "Concert", json!(20)).await;
    let path = format!("/api/tickets/{}", id_of(&created));

    let first = alice
        .put(&path, json!({"title": " Opera ", "price": 15.5}))
        .await;
    let second = alice
        .put(&path, json!({"title": "Ballet", "price": 12}))
        .await;

    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.body["title"], "Opera");
    assert_eq!(first.body["price"], json!(15.5));
    assert_eq!(first.body["version"], 1);
    assert_eq!(second.status, 200, "{:?}", second.body);
    assert_eq!(second.body["version"], 2);
    for key in ["id", "userId", "createdAt", "orderId"] {
        assert_eq!(second.body[key], created[key], "{key}");
    }
    assert_eq!(app.ticket(&id_of(&created)).await, second.body);
}

async fn updating_a_ticket_requires_signing_in(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let created = app.list_ticket(&alice, "Concert", json!(20)).await;

    let reply = app
        .anonymous()
        .put(
            &format!("/api/tickets/{}", id_of(&created)),
            json!({"title": "Mine now", "price": 1}),
        )
        .await;

    assert_eq!(reply.status, 401, "{:?}", reply.body);
    reply.assert_error_shape();
    assert_eq!(app.ticket(&id_of(&created)).await, created);
}

async fn updating_someone_elses_ticket_returns_401(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let bob = app.sign_in();
    let created = app.list_ticket(&alice, "Concert", json!(20)).await;

    let reply = bob
        .put(
            &format!("/api/tickets/{}", id_of(&created)),
            json!({"title": "Mine now", "price": 1}),
        )
        .await;

    assert_eq!(reply.status, 401, "{:?}", reply.body);
    reply.assert_error_shape();
    assert_eq!(app.ticket(&id_of(&created)).await, created);
}

async fn updating_an_unknown_or_malformed_ticket_id_is_404(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();

    for id in [Uuid::now_v7().to_string(), "not-a-uuid".to_owned()] {
        let reply = alice
            .put(
                &format!("/api/tickets/{id}"),
                json!({"title": "Concert", "price": 20}),
            )
            .await;

        assert_eq!(reply.status, 404, "{id}: {:?}", reply.body);
        reply.assert_error_shape();
    }
}

async fn updating_with_invalid_fields_reports_each_of_them(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let created = app.list_ticket(&alice, "Concert", json!(20)).await;
    let path = format!("/api/tickets/{}", id_of(&created));

    let both = alice.put(&path, json!({"title": "", "price": 0})).await;
    let price = alice
        .put(&path, json!({"title": "Opera", "price": 1.234}))
        .await;

    assert_eq!(both.status, 400, "{:?}", both.body);
    both.assert_error_shape();
    assert_eq!(both.error_fields(), ["title", "price"]);
    assert_eq!(price.status, 400, "{:?}", price.body);
    price.assert_error_shape();
    assert_eq!(price.error_fields(), ["price"]);
    assert_eq!(app.ticket(&id_of(&created)).await, created);
}

async fn a_reserved_ticket_cannot_be_edited(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.sign_in();
    let id = id_of(&app.list_ticket(&alice, "Concert", json!(20)).await);
    let order_id = Uuid::now_v7();
    app.publish(&order_created(order_id, &id)).await;
    let reserved = app.ticket_at_version(&id, 1).await;

    let reply = alice
        .put(
            &format!("/api/tickets/{id}"),
            json!({"title": "Cheaper", "price": 1}),
        )
        .await;

    assert_eq!(reply.status, 400, "{:?}", reply.body);
    reply.assert_error_shape();
    assert_eq!(reply.error_messages(), ["Cannot edit a reserved ticket"]);
    assert_eq!(reply.error_codes(), ["ticket_reserved"]);
    assert!(reply.error_fields().is_empty());
    assert_eq!(reserved["orderId"], order_id.to_string());
    assert_eq!(app.ticket(&id).await, reserved);
}
