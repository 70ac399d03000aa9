//! The web pages without a browser: the real `stubs up`, plain HTTP as a browser without
//! JavaScript sends it (form posts with an `Origin`, redirects read by hand).

use std::time::{Duration, Instant};

use crate::support::Marketplace;
use reqwest::header::{HeaderMap, LOCATION};
use reqwest::{Client, StatusCode, redirect};
use serde_json::json;

/// One person with a browser that has JavaScript turned off.
struct Browser {
    http: Client,
    base: String,
}

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers.get(LOCATION).unwrap().to_str().unwrap()
    }

    fn assert_contains(&self, text: &str) {
        assert!(
            self.body.contains(text),
            "expected {text:?} in the page:\n{}",
            self.body
        );
    }
}

impl Browser {
    fn new(market: &Marketplace) -> Self {
        let http = Client::builder()
            .cookie_store(true)
            .redirect(redirect::Policy::none())
            .build()
            .unwrap();
        let base = market.url("/").trim_end_matches('/').to_owned();
        Self { http, base }
    }

    async fn read(request: reqwest::RequestBuilder) -> Page {
        let response = request.send().await.unwrap();
        Page {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        }
    }

    async fn get(&self, path: &str) -> Page {
        Self::read(self.http.get(format!("{}{path}", self.base))).await
    }

    /// A form post from one of our own pages.
    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        Self::read(
            self.http
                .post(format!("{}{path}", self.base))
                .header("origin", &self.base)
                .form(form),
        )
        .await
    }

    async fn sign_up(&self, email: &str) {
        let page = self
            .post(
                "/auth/signup",
                &[
                    ("email", email),
                    ("password", "correct horse"),
                    ("next", "/"),
                ],
            )
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    }

    /// Posts the sign-in form for `email` with the right password, to go on to `next`.
    async fn sign_in(&self, email: &str, next: &str) -> Page {
        let form = [
            ("email", email),
            ("password", "correct horse"),
            ("next", next),
        ];
        self.post("/auth/signin", &form).await
    }

    /// Lists a ticket through the form and returns its page's path.
    async fn sell(&self, title: &str, price: &str) -> String {
        let page = self
            .post("/tickets/new", &[("title", title), ("price", price)])
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        page.location().to_owned()
    }
}

#[tokio::test]
async fn pages_answer_in_html_with_security_headers_and_assets_are_cached() {
    let market = Marketplace::embedded("1m");
    let browser = Browser::new(&market);

    let home = browser.get("/").await;
    let signin = browser.get("/auth/signin").await;
    let css = browser.get("/static/style.css").await;
    let missing_page = browser.get("/no/such/page").await;
    let missing_api = browser.get("/api/no/such/thing").await;

    assert_eq!(home.status, 200);
    home.assert_contains("Tickets for sale");
    home.assert_contains(r#"href="/auth/signin""#);
    let csp = home.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("stripe"), "no Stripe without a key: {csp}");
    assert_eq!(home.headers["x-content-type-options"], "nosniff");
    assert_eq!(home.headers["referrer-policy"], "same-origin");
    assert_eq!(signin.status, 200);
    signin.assert_contains(r#"<form method="post" action="/auth/signin""#);
    assert_eq!(css.status, 200);
    assert!(
        css.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    assert!(
        css.headers["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age=31536000")
    );
    assert_eq!(missing_page.status, 404);
    assert!(
        missing_page.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    missing_page.assert_contains("Page not found");
    assert_eq!(missing_api.status, 404);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&missing_api.body).unwrap(),
        json!({"errors": [{"message": "Not found", "code": "not_found"}]})
    );
}

/// The value of the hidden `request_key` of the form posted to `action`.
fn request_key_of(html: &str, action: &str) -> String {
    let form = &html[html.find(&format!(r#"action="{action}""#)).unwrap()..];
    let input = &form[form.find(r#"name="request_key" value=""#).unwrap() + 26..];
    input[..input.find('"').unwrap()].to_owned()
}

#[tokio::test]
async fn a_form_sent_twice_acts_once() {
    let market = Marketplace::embedded("1m");
    let seller = Browser::new(&market);
    let buyer = Browser::new(&market);
    seller.sign_up("seller@example.com").await;
    buyer.sign_up("buyer@example.com").await;

    let form = seller.get("/tickets/new").await;
    let key = request_key_of(&form.body, "/tickets/new");
    let listing = [
        ("title", "Concert"),
        ("price", "20"),
        ("request_key", key.as_str()),
    ];
    let (first, second) = tokio::join!(
        seller.post("/tickets/new", &listing),
        seller.post("/tickets/new", &listing)
    );
    assert_eq!(
        (first.status, second.status),
        (StatusCode::SEE_OTHER, StatusCode::SEE_OTHER)
    );
    assert_eq!(first.location(), second.location(), "one listing");
    let ticket = first.location().to_owned();

    let page = buyer.get(&ticket).await;
    let purchase = format!("{ticket}/purchase");
    let key = request_key_of(&page.body, &purchase);
    let keyed = [("request_key", key.as_str())];
    let (first, second) =
        tokio::join!(buyer.post(&purchase, &keyed), buyer.post(&purchase, &keyed));
    assert_eq!(
        (first.status, second.status),
        (StatusCode::SEE_OTHER, StatusCode::SEE_OTHER)
    );
    assert_eq!(first.location(), second.location(), "one order");
    let order = first.location().to_owned();

    let page = buyer.get(&order).await;
    let pay = format!("{order}/pay");
    let key = request_key_of(&page.body, &pay);
    let card = [
        ("card_number", "4242 4242 4242 4242"),
        ("request_key", key.as_str()),
    ];
    let (first, second) = tokio::join!(buyer.post(&pay, &card), buyer.post(&pay, &card));
    for paid in [&first, &second] {
        assert!(
            [StatusCode::SEE_OTHER, StatusCode::OK].contains(&paid.status),
            "{}",
            paid.body
        );
        assert!(!paid.body.contains("already"), "{}", paid.body);
    }
    let orders = buyer.get("/orders").await;
    assert_eq!(orders.body.matches(r#"<span class="title">"#).count(), 1);
    buyer.get(&order).await.assert_contains(r#"id="paid""#);
}

#[tokio::test]
async fn a_purchase_works_from_start_to_finish_without_javascript() {
    let market = Marketplace::embedded("1m");
    let seller = Browser::new(&market);
    let buyer = Browser::new(&market);

    seller.sign_up("seller@example.com").await;
    let ticket = seller.sell("Concert in the park", "19.99").await;
    let as_seller = seller.get(&ticket).await;
    buyer.sign_up("buyer@example.com").await;
    let home = buyer.get("/").await;
    let as_buyer = buyer.get(&ticket).await;
    let purchase = buyer.post(&format!("{ticket}/purchase"), &[]).await;
    let order = purchase.location().to_owned();
    let open = buyer.get(&order).await;
    let declined = buyer
        .post(
            &format!("{order}/pay"),
            &[("card_number", "4000 0000 0000 0002")],
        )
        .await;
    let paid = buyer
        .post(
            &format!("{order}/pay"),
            &[("card_number", "4242 4242 4242 4242")],
        )
        .await;
    let after = buyer.get(&order).await;
    let orders = buyer.get("/orders").await;
    let sold = seller.get(&ticket).await;
    let home_after = seller.get("/").await;

    assert!(ticket.starts_with("/tickets/"), "{ticket}");
    as_seller.assert_contains("Concert in the park");
    as_seller.assert_contains("$19.99");
    as_seller.assert_contains(r#"id="edit""#);
    as_seller.assert_contains("seller@example.com");
    home.assert_contains("Concert in the park");
    home.assert_contains("buyer@example.com");
    as_buyer.assert_contains(r#"id="purchase""#);
    assert!(!as_buyer.body.contains(r#"id="edit""#));
    assert_eq!(purchase.status, StatusCode::SEE_OTHER);
    assert!(order.starts_with("/orders/"), "{order}");
    open.assert_contains("Test mode");
    open.assert_contains("Awaiting payment");
    let seconds: i64 = open
        .body
        .split(r#"data-seconds=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!((50..=60).contains(&seconds), "{seconds} seconds left of 1m");
    assert_eq!(declined.status, StatusCode::PAYMENT_REQUIRED);
    declined.assert_contains(
        r#"<p class="field-error" id="card_number-error">Your card was declined.</p>"#,
    );
    assert_eq!(paid.status, StatusCode::SEE_OTHER, "{}", paid.body);
    after.assert_contains(r#"id="paid""#);
    assert!(!after.body.contains(r#"id="payment-form""#));
    orders.assert_contains("Concert in the park");
    orders.assert_contains("Paid");
    sold.assert_contains("Reserved");
    assert!(!sold.body.contains(r#"id="edit""#));
    assert!(!home_after.body.contains("Concert in the park"));
}

#[tokio::test]
async fn validation_messages_show_next_to_their_fields_and_the_form_keeps_its_values() {
    let market = Marketplace::embedded("1m");
    let browser = Browser::new(&market);

    let bad_signup = browser
        .post(
            "/auth/signup",
            &[("email", "not-an-email"), ("password", "short")],
        )
        .await;
    browser.sign_up("me@example.com").await;
    let taken = browser
        .post(
            "/auth/signup",
            &[("email", "me@example.com"), ("password", "correct horse")],
        )
        .await;
    let bad_ticket = browser
        .post("/tickets/new", &[("title", "  "), ("price", "0")])
        .await;
    let not_a_number = browser
        .post("/tickets/new", &[("title", "Opera"), ("price", "twenty")])
        .await;

    assert_eq!(bad_signup.status, 400);
    bad_signup.assert_contains(r#"id="email-error">Email must be valid<"#);
    bad_signup
        .assert_contains(r#"id="password-error">Password must be between 8 and 128 characters<"#);
    bad_signup.assert_contains(r#"value="not-an-email""#);
    assert_eq!(taken.status, 400);
    taken.assert_contains("Email in use");
    assert_eq!(bad_ticket.status, 400);
    bad_ticket.assert_contains(r#"id="title-error""#);
    bad_ticket.assert_contains(r#"id="price-error""#);
    assert_eq!(not_a_number.status, 400);
    not_a_number.assert_contains(r#"id="price-error">Price must be a number"#);
    not_a_number.assert_contains(r#"value="Opera""#);
}

#[tokio::test]
async fn too_many_sign_ins_show_the_page_with_the_reason_not_an_error() {
    let market = Marketplace::embedded_limiting_auth("1m", "2");
    let browser = Browser::new(&market);
    let wrong = [("email", "me@example.com"), ("password", "wrong password")];

    let first = browser.post("/auth/signin", &wrong).await;
    browser.post("/auth/signin", &wrong).await;
    let limited = browser.post("/auth/signin", &wrong).await;

    assert_eq!(first.status, 400, "{}", first.body);
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        limited.body
    );
    limited.assert_contains("Too many requests, please slow down");
    limited.assert_contains(r#"<form method="post" action="/auth/signin""#);
    limited.assert_contains(r#"value="me@example.com""#);
}

#[tokio::test]
async fn pages_that_need_a_session_send_you_to_sign_in_and_back() {
    let market = Marketplace::embedded("1m");
    let browser = Browser::new(&market);
    browser.sign_up("me@example.com").await;
    browser.post("/auth/signout", &[]).await;

    let orders = browser.get("/orders").await;
    let sell = browser.get("/tickets/new").await;
    let signin = browser.get(orders.location()).await;
    let signed_in = browser.sign_in("me@example.com", "/orders").await;
    let elsewhere = browser.sign_in("me@example.com", "//evil.example").await;
    let wrong = browser
        .post(
            "/auth/signin",
            &[("email", "me@example.com"), ("password", "wrong horse")],
        )
        .await;

    assert_eq!(orders.status, StatusCode::SEE_OTHER);
    assert_eq!(orders.location(), "/auth/signin?next=/orders");
    assert_eq!(sell.location(), "/auth/signin?next=/tickets/new");
    signin.assert_contains(r#"name="next" value="/orders""#);
    assert_eq!(signed_in.status, StatusCode::SEE_OTHER);
    assert_eq!(signed_in.location(), "/orders");
    assert!(signed_in.headers.get("set-cookie").is_some());
    assert_eq!(elsewhere.location(), "/");
    assert_eq!(wrong.status, 400);
    wrong.assert_contains("Invalid credentials");
}

#[tokio::test]
async fn signing_out_everywhere_ends_the_session_in_every_browser() {
    let market = Marketplace::embedded("1m");
    let (laptop, phone) = (Browser::new(&market), Browser::new(&market));
    laptop.sign_up("me@example.com").await;
    let signed_in = phone.sign_in("me@example.com", "/orders").await;
    assert_eq!(
        signed_in.status,
        StatusCode::SEE_OTHER,
        "{}",
        signed_in.body
    );
    let orders = phone.get("/orders").await;
    orders.assert_contains(r#"<form method="post" action="/auth/signout/everywhere""#);
    assert_eq!(laptop.get("/orders").await.status, StatusCode::OK);

    let signed_out = phone.post("/auth/signout/everywhere", &[]).await;

    assert_eq!(
        signed_out.status,
        StatusCode::SEE_OTHER,
        "{}",
        signed_out.body
    );
    assert_eq!(signed_out.location(), "/");
    // The laptop still holds its cookie; the session in it is over all the same.
    let laptop_orders = laptop.get("/orders").await;
    assert_eq!(laptop_orders.status, StatusCode::SEE_OTHER);
    assert!(
        laptop_orders.location().starts_with("/auth/signin"),
        "{}",
        laptop_orders.location()
    );
    assert_eq!(phone.get("/orders").await.status, StatusCode::SEE_OTHER);
    let again = laptop.post("/auth/signout/everywhere", &[]).await;
    assert_eq!(again.status, StatusCode::SEE_OTHER);
    assert!(
        again.location().starts_with("/auth/signin"),
        "{}",
        again.location()
    );
}

#[tokio::test]
async fn a_form_posted_from_another_site_is_refused() {
    let market = Marketplace::embedded("1m");
    let browser = Browser::new(&market);
    browser.sign_up("me@example.com").await;
    let url = format!("{}/tickets/new", browser.base);
    let form = [("title", "Forged"), ("price", "1")];

    let foreign = Browser::read(
        browser
            .http
            .post(&url)
            .header("origin", "https://evil.example")
            .form(&form),
    )
    .await;
    let foreign_referer = Browser::read(
        browser
            .http
            .post(&url)
            .header("referer", "https://evil.example/page")
            .form(&form),
    )
    .await;
    let anonymous = Browser::read(browser.http.post(&url).form(&form)).await;
    let home = browser.get("/").await;

    for page in [&foreign, &foreign_referer, &anonymous] {
        assert_eq!(page.status, 403);
        page.assert_contains("Form refused");
        assert_eq!(page.headers["x-content-type-options"], "nosniff");
    }
    assert!(!home.body.contains("Forged"));
}

#[tokio::test]
async fn forms_that_cannot_be_read_show_a_page_that_says_why() {
    let market = Marketplace::embedded("1m");
    let browser = Browser::new(&market);
    browser.sign_up("me@example.com").await;
    let url = format!("{}/tickets/new", browser.base);
    let from_our_page = || browser.http.post(&url).header("origin", &browser.base);
    let long_title = "x".repeat(70 * 1024);

    let not_a_form =
        Browser::read(from_our_page().json(&json!({"title": "Concert", "price": 1}))).await;
    let malformed = Browser::read(
        from_our_page()
            .header("content-type", "application/x-www-form-urlencoded")
            .body("title=Concert&title=Again&price=1"),
    )
    .await;
    let too_large =
        Browser::read(from_our_page().form(&[("title", long_title.as_str()), ("price", "1")]))
            .await;
    assert_eq!(too_large.headers["connection"], "close");
    let home = browser.get("/").await;

    for (page, status, heading) in [
        (&too_large, 413, "Form too large"),
        (&not_a_form, 415, "Form not accepted"),
        (&malformed, 400, "Form not accepted"),
    ] {
        assert_eq!(page.status, status, "{}", page.body);
        assert!(
            page.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{:?}",
            page.headers
        );
        page.assert_contains(heading);
        page.assert_contains("Go back");
    }
    assert!(!home.body.contains("Concert"));
}

/// Where a page's `rel="next"` link goes.
fn next_link(html: &str) -> Option<String> {
    let before = &html[..html.find(r#"rel="next""#)?];
    let href = &before[before.rfind(r#"href=""#)? + 6..];
    Some(href[..href.find('"')?].to_owned())
}

#[tokio::test]
async fn the_home_page_with_a_thousand_tickets_listed_renders_quickly() {
    let market = Marketplace::embedded("1m");
    let seller = market.user();
    seller.sign_up("seller@example.com").await;
    // Through the API, in parallel: 1,000 form posts would only test the same code more slowly.
    let mut listed = 0;
    for chunk in 0..20 {
        let posts = (0..50).map(|i| {
            seller.post(
                "/api/tickets",
                json!({"title": format!("Ticket {}", chunk * 50 + i), "price": 10 + i}),
            )
        });
        for (status, _) in futures::future::join_all(posts).await {
            assert_eq!(status, 201);
            listed += 1;
        }
    }
    // Signed in, so each page also asks the API who the visitor is, as real pages do.
    let browser = Browser::new(&market);
    browser.sign_up("reader@example.com").await;

    // The pages' own "More" links, followed as a reader would, to the last page.
    let mut paths = vec!["/".to_owned()];
    let mut shown = 0;
    while let Some(path) = paths.last() {
        let page = browser.get(path).await;
        assert_eq!(page.status, 200, "{path}");
        shown += page.body.matches("Listed ").count();
        match next_link(&page.body) {
            Some(next) => paths.push(next),
            None => break,
        }
    }

    let (first, deep) = (&paths[0], &paths[paths.len() - 1]);
    let mut times = Vec::new();
    for path in [first, &paths[1], deep].iter().cycle().take(60) {
        let started = Instant::now();
        let page = browser.get(path).await;
        times.push((started.elapsed(), path.as_str()));
        assert_eq!(page.status, 200);
    }
    let first = browser.get(first).await;
    let last = browser.get(deep).await;

    assert_eq!(listed, 1000);
    assert_eq!(shown, 1000, "every ticket on one page or another");
    // 24 a page: 41 full pages, then the last 16.
    assert_eq!(paths.len(), 42);
    assert_eq!(first.body.matches("Listed ").count(), 24);
    first.assert_contains(r#"rel="next""#);
    assert_eq!(last.body.matches("Listed ").count(), 16);
    assert!(!last.body.contains(r#"rel="next""#));
    last.assert_contains(r#"<a href="/" rel="first">"#);
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "home page with 1,000 tickets listed, signed in, {} requests over loopback: median {:.2} ms, p90 {:.2} ms, max {:.2} ms",
        times.len(),
        ms(times[times.len() / 2].0),
        ms(times[times.len() * 9 / 10].0),
        ms(times[times.len() - 1].0),
    );
}

#[tokio::test]
async fn the_orders_page_shows_older_orders_a_page_further() {
    let market = Marketplace::embedded("1m");
    let seller = market.user();
    seller.sign_up("seller@example.com").await;
    let buyer = Browser::new(&market);
    buyer.sign_up("buyer@example.com").await;
    for n in 0..21 {
        let (status, ticket) = seller
            .post(
                "/api/tickets",
                json!({"title": format!("Show {n}"), "price": 10}),
            )
            .await;
        assert_eq!(status, 201, "{ticket}");
        let api = format!("{}/api/orders", buyer.base);
        let placed = buyer
            .http
            .post(&api)
            .json(&json!({"ticketId": ticket["id"]}));
        let placed = Browser::read(placed).await;
        assert_eq!(placed.status, 201, "{}", placed.body);
        // Cancelled at once, so that the cap on live holds never refuses one.
        let order: serde_json::Value = serde_json::from_str(&placed.body).unwrap();
        let cancel = buyer
            .http
            .delete(format!("{api}/{}", order["id"].as_str().unwrap()));
        assert_eq!(Browser::read(cancel).await.status, 204);
    }

    let newest = buyer.get("/orders").await;
    let older = buyer.get(&next_link(&newest.body).unwrap()).await;

    let shown = |page: &Page| page.body.matches(r#"<span class="title">"#).count();
    assert_eq!(shown(&newest), 20);
    newest.assert_contains("Show 20<");
    assert!(!newest.body.contains("Show 0<"));
    assert_eq!(shown(&older), 1);
    older.assert_contains("Show 0<");
    older.assert_contains(r#"<a href="/orders" rel="first">"#);
    assert_eq!(next_link(&older.body), None);
}

#[tokio::test]
async fn serve_web_calls_the_api_over_http_and_passes_the_session_cookie_both_ways() {
    let api = Marketplace::embedded("1m");
    let pages = crate::support::Process::start(
        &[
            "serve",
            "web",
            "--listen",
            "127.0.0.1:0",
            "--api-url",
            &api.url("/"),
        ],
        &[],
    );
    let browser = Browser {
        http: Client::builder()
            .cookie_store(true)
            .redirect(redirect::Policy::none())
            .build()
            .unwrap(),
        base: pages.base.clone(),
    };

    browser.sign_up("remote@example.com").await;
    let ticket = browser.sell("Theatre", "42").await;
    let page = browser.get(&ticket).await;
    let api_path = browser.get("/api/tickets").await;

    page.assert_contains("remote@example.com");
    page.assert_contains("$42.00");
    page.assert_contains(r#"id="edit""#);
    // The pages process serves pages only; the ingress routes /api elsewhere.
    assert_eq!(api_path.status, 404);
    assert!(
        api_path.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
}

#[test]
fn serve_web_without_an_api_url_stops_with_one_clear_line() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_stubs"))
        .args(["serve", "web", "--listen", "127.0.0.1:0"])
        .env_remove("STUBS_API_URL")
        .output()
        .unwrap();

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--api-url (STUBS_API_URL) is required"),
        "{stderr}"
    );
}

#[tokio::test]
async fn with_a_stripe_key_the_payment_form_uses_stripe_elements_and_the_policy_allows_stripe() {
    let data = tempfile::tempdir().unwrap();
    let process = crate::support::Process::start(
        &[
            "up",
            "--listen",
            "127.0.0.1:0",
            "--auth-attempts-per-minute",
            "0",
            "--data-dir",
            &data.path().display().to_string(),
        ],
        &[("STUBS_STRIPE_PUBLISHABLE_KEY", "pk_test_stubs".to_owned())],
    );
    let person = || Browser {
        http: Client::builder()
            .cookie_store(true)
            .redirect(redirect::Policy::none())
            .build()
            .unwrap(),
        base: process.base.clone(),
    };
    let (seller, browser) = (person(), person());
    seller.sign_up("seller@example.com").await;
    let ticket = seller.sell("Ballet", "30").await;
    browser.sign_up("buyer@example.com").await;
    let order = browser.post(&format!("{ticket}/purchase"), &[]).await;
    let page = browser.get(order.location()).await;

    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self' https://js.stripe.com"),
        "{csp}"
    );
    page.assert_contains(r#"data-stripe-key="pk_test_stubs""#);
    page.assert_contains(r#"<script src="https://js.stripe.com/v3/"></script>"#);
    page.assert_contains(r#"id="card-element""#);
    assert!(!page.body.contains("Test mode"));
}
