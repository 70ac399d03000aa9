//! Search on `GET /api/tickets` and `GET /api/events`: words found by the database (FTS5 on
//! SQLite, `tsvector` on PostgreSQL) alike, filters, orders, and paging that keeps the search.

use testkit::{Backend, Client, Value, json};
use uuid::Uuid;

use crate::helpers::{
    TestApp, all_pages, create_event, event_body, id_of, order_created_at, spawn_app,
};

testkit::each_database!(
    tickets_are_found_by_words_of_their_title_or_their_event,
    tickets_are_narrowed_by_city_day_and_price_and_ordered_as_asked,
    a_search_pages_through_every_result_once_with_its_link,
    every_order_pages_through_each_item_once,
    events_are_found_narrowed_and_ordered_as_asked,
    a_bad_search_is_refused_field_by_field,
    rows_stored_before_search_are_found_once_given_their_words,
);

/// Lists a ticket titled `title` at `price`, for `event` if given, and returns its id.
async fn list(seller: &Client, title: &str, price: f64, event: Option<&Value>) -> String {
    let mut body = json!({"title": title, "price": price});
    if let Some(event) = event {
        body["eventId"] = event["id"].clone();
    }
    let reply = seller.post("/api/tickets", body).await;
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    id_of(&reply.body)
}

/// The ids a list answers, in order, every page of it, in pages of `limit`.
async fn found_in_pages(app: &TestApp, path: &str, limit: u32) -> Vec<String> {
    all_pages(app, path, limit)
        .await
        .iter()
        .map(id_of)
        .collect()
}

/// The ids a list answers, in order, every page of it.
async fn found(app: &TestApp, path: &str) -> Vec<String> {
    found_in_pages(app, path, 100).await
}

/// Two events and four tickets: one of each event, two of none.
struct Market {
    app: TestApp,
    radiohead: Value,
    beyonce: Value,
    floor: String,
    block: String,
    quiz: String,
    cafe: String,
}

async fn market(backend: Backend) -> Market {
    let app = spawn_app(backend).await;
    let seller = app.sign_in();
    let radiohead = create_event(
        &seller,
        json!({"name": "Radiohead", "venue": "Madison Square Garden", "city": "New York",
               "startsAt": format!("{}T20:00", day(30)), "timeZone": "America/New_York"}),
    )
    .await;
    let beyonce = create_event(
        &seller,
        json!({"name": "Beyoncé", "venue": "Wembley Stadium", "city": "London",
               "startsAt": format!("{}T19:30", day(40)), "timeZone": "Europe/London"}),
    )
    .await;
    let floor = list(&seller, "Floor standing", 80.0, Some(&radiohead)).await;
    let block = list(&seller, "Block 112, row K", 120.0, Some(&beyonce)).await;
    let quiz = list(&seller, "Radio quiz night", 10.0, None).await;
    let cafe = list(&seller, "Café-concert: jazz", 25.5, None).await;
    Market {
        app,
        radiohead,
        beyonce,
        floor,
        block,
        quiz,
        cafe,
    }
}

/// The day `days` from today, as `YYYY-MM-DD`.
fn day(days: i64) -> String {
    (time::OffsetDateTime::now_utc().date() + time::Duration::days(days)).to_string()
}

async fn tickets_are_found_by_words_of_their_title_or_their_event(backend: Backend) {
    let Market {
        app,
        floor,
        block,
        quiz,
        cafe,
        ..
    } = market(backend).await;
    let (floor, block, quiz, cafe) = (floor.as_str(), block.as_str(), quiz.as_str(), cafe.as_str());

    for (q, expected) in [
        ("radiohead", vec![floor]),
        // Each word begins a word: "radio" is the start of both.
        ("radio", vec![quiz, floor]),
        ("GARDEN floor", vec![floor]),
        ("new york", vec![floor]),
        ("beyonce", vec![block]),
        ("wembley 112", vec![block]),
        ("cafe concert", vec![cafe]),
        ("Café", vec![cafe]),
        ("radiohead london", Vec::<&str>::new()),
        ("row", vec![block]),
        ("standing ovation", Vec::<&str>::new()),
        // The databases' query syntax is not the client's to use.
        (r#""radio" NEAR* -x OR 'quiz'"#, Vec::<&str>::new()),
        ("radio*", vec![quiz, floor]),
    ] {
        let path = format!(
            "/api/tickets?{}",
            serde_urlencoded::to_string([("q", q)]).unwrap()
        );
        assert_eq!(found(&app, &path).await, expected, "q={q}");
    }

    // A held ticket is not for sale, so not found; an edited one is found by its new title only.
    let held = order_created_at(Uuid::now_v7(), quiz, "Radio quiz night", 1000);
    app.handled(app.publish(&held).await).await;
    assert_eq!(found(&app, "/api/tickets?q=radio").await, [floor]);
    let seller = app.sign_in();
    let mine = list(&seller, "Stalls", 30.0, None).await;
    let edited = seller
        .put(
            &format!("/api/tickets/{mine}"),
            json!({"title": "Balcony", "price": 30}),
        )
        .await;
    assert_eq!(edited.status, 200, "{:?}", edited.body);
    assert_eq!(found(&app, "/api/tickets?q=balcony").await, [mine.as_str()]);
    assert_eq!(
        found(&app, "/api/tickets?q=stalls").await,
        Vec::<String>::new()
    );
}

async fn tickets_are_narrowed_by_city_day_and_price_and_ordered_as_asked(backend: Backend) {
    let Market {
        app,
        floor,
        block,
        quiz,
        cafe,
        ..
    } = market(backend).await;
    let (floor, block, quiz, cafe) = (floor.as_str(), block.as_str(), quiz.as_str(), cafe.as_str());
    let radiohead_day = day(30);

    for (query, expected) in [
        ("city=new+YORK".to_owned(), vec![floor]),
        ("city=london&q=block".to_owned(), vec![block]),
        ("city=paris".to_owned(), Vec::<&str>::new()),
        (
            format!("from={radiohead_day}&to={radiohead_day}"),
            vec![floor],
        ),
        (format!("from={}", day(31)), vec![block]),
        (format!("to={}", day(29)), Vec::<&str>::new()),
        ("maxPrice=80".to_owned(), vec![cafe, quiz, floor]),
        ("maxPrice=25.49".to_owned(), vec![quiz]),
        ("sort=newest".to_owned(), vec![cafe, quiz, block, floor]),
        ("sort=price".to_owned(), vec![quiz, cafe, floor, block]),
        // Soonest event first, tickets of no event last (oldest listing first among them).
        ("sort=date".to_owned(), vec![floor, block, quiz, cafe]),
        ("sort=price&maxPrice=100&q=r".to_owned(), vec![quiz, floor]),
    ] {
        let path = format!("/api/tickets?{query}");
        assert_eq!(found(&app, &path).await, expected, "{query}");
    }
}

async fn a_search_pages_through_every_result_once_with_its_link(backend: Backend) {
    let app = spawn_app(backend).await;
    let seller = app.sign_in();
    let mut cheapest_first = Vec::new();
    for (n, price) in [30.0, 10.0, 20.0, 10.0, 50.0, 40.0, 20.0]
        .into_iter()
        .enumerate()
    {
        cheapest_first.push((
            price,
            list(&seller, &format!("Jazz night {n}"), price, None).await,
        ));
    }
    list(&seller, "Opera night", 5.0, None).await;
    // Equal prices are in listing order: the ids grow with it.
    cheapest_first.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let cheapest_first: Vec<String> = cheapest_first.into_iter().map(|(_, id)| id).collect();

    let first = app
        .anonymous()
        .get("/api/tickets?q=jazz&sort=price&limit=3")
        .await;
    let next = first.next_page().unwrap();
    assert!(
        next.contains("q=jazz") && next.contains("sort=price"),
        "{next}"
    );
    let paged: Vec<String> = all_pages(&app, "/api/tickets?q=jazz&sort=price", 3)
        .await
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(paged, cheapest_first);
}

async fn every_order_pages_through_each_item_once(backend: Backend) {
    let Market {
        app,
        radiohead,
        beyonce,
        floor,
        block,
        quiz,
        cafe,
    } = market(backend).await;
    let seller = app.sign_in();
    let second_floor = list(&seller, "Floor standing", 80.0, Some(&radiohead)).await;
    let opera = create_event(&seller, event_body("Tosca", "Royal Opera House", 10)).await;
    let (radiohead, beyonce, opera) = (id_of(&radiohead), id_of(&beyonce), id_of(&opera));

    // A page of one or two at a time, across ties and across the tickets of no event.
    for limit in [1, 2] {
        assert_eq!(
            found_in_pages(&app, "/api/tickets?sort=date", limit).await,
            [
                floor.clone(),
                second_floor.clone(),
                block.clone(),
                quiz.clone(),
                cafe.clone()
            ],
            "limit {limit}"
        );
        assert_eq!(
            found_in_pages(&app, "/api/tickets?sort=price", limit).await,
            [
                quiz.clone(),
                cafe.clone(),
                floor.clone(),
                second_floor.clone(),
                block.clone()
            ],
            "limit {limit}"
        );
        assert_eq!(
            found_in_pages(&app, "/api/tickets?q=r", limit).await,
            [
                second_floor.clone(),
                quiz.clone(),
                block.clone(),
                floor.clone()
            ],
            "limit {limit}"
        );
        assert_eq!(
            found_in_pages(&app, "/api/events?sort=price", limit).await,
            [radiohead.clone(), beyonce.clone(), opera.clone()],
            "limit {limit}"
        );
        assert_eq!(
            found_in_pages(&app, "/api/events?sort=newest", limit).await,
            [opera.clone(), beyonce.clone(), radiohead.clone()],
            "limit {limit}"
        );
    }
}

async fn events_are_found_narrowed_and_ordered_as_asked(backend: Backend) {
    let Market {
        app,
        radiohead,
        beyonce,
        ..
    } = market(backend).await;
    let seller = app.sign_in();
    // Created last, starting soonest, with no ticket for sale.
    let opera = create_event(&seller, event_body("Tosca", "Royal Opera House", 10)).await;
    let (radiohead, beyonce, opera) = (id_of(&radiohead), id_of(&beyonce), id_of(&opera));
    let (radiohead, beyonce, opera) = (radiohead.as_str(), beyonce.as_str(), opera.as_str());

    for (query, expected) in [
        ("".to_owned(), vec![opera, radiohead, beyonce]),
        ("q=garden".to_owned(), vec![radiohead]),
        ("q=lond".to_owned(), vec![opera, beyonce]),
        ("q=beyonce+wembley".to_owned(), vec![beyonce]),
        ("q=floor".to_owned(), Vec::<&str>::new()),
        ("city=London".to_owned(), vec![opera, beyonce]),
        (
            format!("from={}&to={}", day(30), day(40)),
            vec![radiohead, beyonce],
        ),
        ("maxPrice=100".to_owned(), vec![radiohead]),
        ("sort=price".to_owned(), vec![radiohead, beyonce, opera]),
        ("sort=newest".to_owned(), vec![opera, beyonce, radiohead]),
        ("sort=date".to_owned(), vec![opera, radiohead, beyonce]),
    ] {
        let path = format!("/api/events?{query}");
        assert_eq!(found(&app, &path).await, expected, "{query}");
    }
}

async fn a_bad_search_is_refused_field_by_field(backend: Backend) {
    let app = spawn_app(backend).await;
    for path in ["/api/tickets", "/api/events"] {
        let reply = app
            .anonymous()
            .get(&format!(
                "{path}?q=%21%21%21&from=12%2F06%2F2030&to=2030-02-30&maxPrice=free&sort=popular"
            ))
            .await;
        assert_eq!(reply.status, 400, "{path}: {:?}", reply.body);
        assert_eq!(
            reply.error_fields(),
            ["q", "from", "to", "maxPrice", "sort"],
            "{path}"
        );
        assert_eq!(
            reply.error_messages(),
            [
                "Search must hold a word of letters or digits",
                "From must be a date such as 2030-06-12",
                "To must be a date such as 2030-06-12",
                "Max price must be a number",
                "Sort must be one of price, date, newest",
            ],
            "{path}"
        );
        let reply = app
            .anonymous()
            .get(&format!("{path}?from=2030-06-12&to=2030-06-11"))
            .await;
        assert_eq!(reply.error_fields(), ["to"], "{path}");
        assert_eq!(reply.error_messages(), ["To must be on or after from"]);
    }
}

async fn rows_stored_before_search_are_found_once_given_their_words(backend: Backend) {
    let app = spawn_app(backend).await;
    let store = &app.ctx.store;
    let start = (time::OffsetDateTime::now_utc() + time::Duration::days(3)).unix_timestamp() * 1000;
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let (event, ticket) = (Uuid::now_v7().to_string(), Uuid::now_v7().to_string());
    // As stored before search: no words, no copy of the event's start.
    sqlx::query(
        "INSERT INTO events (id, name, venue, city, starts_at, time_zone, user_id, created_at, \
         duplicate_key) VALUES ($1, 'Pixies', 'Olympia', 'Paris', $2, 'Europe/Paris', $3, $4, $5)",
    )
    .bind(&event)
    .bind(start)
    .bind(Uuid::now_v7().to_string())
    .bind(now)
    .bind(Uuid::now_v7().to_string())
    .execute(store.writer())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO tickets (id, title, price_cents, user_id, version, created_at, event_id) \
         VALUES ($1, 'Fosse', 4500, $2, 0, $3, $4)",
    )
    .bind(&ticket)
    .bind(Uuid::now_v7().to_string())
    .bind(now)
    .bind(&event)
    .execute(store.writer())
    .await
    .unwrap();
    // Stored before search too, but reserved (or edited) since, which gave it its title's words
    // and no more.
    let reserved = Uuid::now_v7().to_string();
    sqlx::query(
        "INSERT INTO tickets (id, title, price_cents, user_id, version, created_at, event_id, \
         title_words) VALUES ($1, 'Balcony', 4500, $2, 0, $3, $4, 'balcony')",
    )
    .bind(&reserved)
    .bind(Uuid::now_v7().to_string())
    .bind(now)
    .bind(&event)
    .execute(store.writer())
    .await
    .unwrap();

    // The service fills them in when it starts, and may be doing so now: either way, once this
    // has run they have their words.
    tickets::store::fill_search_words(store).await.unwrap();

    assert_eq!(
        found(&app, "/api/tickets?q=pixies+fosse").await,
        [ticket.as_str()]
    );
    assert_eq!(
        found(&app, "/api/tickets?q=pixies&sort=price").await,
        [ticket.as_str(), reserved.as_str()]
    );
    // Paris is an hour or two ahead of UTC: its day is one of these.
    let query = format!(
        "/api/events?q=olympia&city=paris&from={}&to={}",
        day(2),
        day(4)
    );
    assert_eq!(found(&app, &query).await, [event.as_str()], "{query}");
    assert_eq!(tickets::store::fill_search_words(store).await.unwrap(), 0);
}
