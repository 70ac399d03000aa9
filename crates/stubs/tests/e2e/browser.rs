//! The marketplace as two people use it, in headless Chromium driven through ChromeDriver
//! (Debian's packages): the real `stubs up`, real clicks, real form posts, the real countdown.
//! Screenshots of the main pages at phone and laptop widths go to `screenshots/` at the repo root.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::Marketplace;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

const PHONE: (u32, u32) = (390, 844);
const LAPTOP: (u32, u32) = (1366, 900);

/// ChromeDriver on a free loopback port, stopped when dropped.
struct ChromeDriver {
    child: Child,
    url: String,
}

impl ChromeDriver {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let started = Instant::now();
        while TcpStream::connect(address).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            url: format!("http://{address}"),
        }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One person's browser: its own profile folder, so its own cookies.
struct Person {
    client: Client,
    base: String,
    _profile: tempfile::TempDir,
}

impl Person {
    async fn open(driver: &ChromeDriver, market: &Marketplace) -> Self {
        let profile = tempfile::tempdir().unwrap();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--hide-scrollbars",
                    format!("--window-size={},{}", LAPTOP.0, LAPTOP.1),
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let client = ClientBuilder::rustls()
            .unwrap()
            .capabilities(capabilities)
            .connect(&driver.url)
            .await
            .unwrap();
        Self {
            client,
            base: market.url("/").trim_end_matches('/').to_owned(),
            _profile: profile,
        }
    }

    async fn go(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap();
    }

    async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_owned()
    }

    async fn text(&self, id: &str) -> String {
        self.wait_for(id).await.text().await.unwrap()
    }

    async fn wait_for(&self, id: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Id(id))
            .await
            .unwrap_or_else(|err| panic!("no #{id}: {err}"))
    }

    async fn has(&self, id: &str) -> bool {
        self.client.find(Locator::Id(id)).await.is_ok()
    }

    async fn fill(&self, id: &str, value: &str) {
        let field = self.wait_for(id).await;
        field.clear().await.unwrap();
        field.send_keys(value).await.unwrap();
    }

    /// Clicks and waits for the next page to have loaded: the page before is marked, so the
    /// wait cannot be satisfied by it.
    async fn click(&self, id: &str) {
        let target = self.wait_for(id).await;
        self.client
            .execute("document.body.dataset.before = '1';", Vec::new())
            .await
            .unwrap();
        target.click().await.unwrap();
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css("body:not([data-before]) footer.site"))
            .await
            .unwrap();
    }

    async fn sign_up(&self, email: &str) {
        self.go("/auth/signup").await;
        self.fill("email", email).await;
        self.fill("password", "correct horse").await;
        self.click("submit").await;
        assert_eq!(self.text("current-user").await, email);
    }

    /// Saves the page at phone and laptop widths, then goes back to laptop width.
    async fn screenshots(&self, name: &str) {
        let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../screenshots");
        std::fs::create_dir_all(&folder).unwrap();
        for (label, (width, height)) in [("phone", PHONE), ("laptop", LAPTOP)] {
            self.client.set_window_size(width, height).await.unwrap();
            let png = self.client.screenshot().await.unwrap();
            std::fs::write(folder.join(format!("{name}-{label}.png")), png).unwrap();
        }
    }

    async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// `14:05` → 845 seconds.
fn seconds(clock: &str) -> i64 {
    clock
        .trim()
        .split(':')
        .fold(0, |total, part| total * 60 + part.parse::<i64>().unwrap())
}

testkit::browser_test! {
    async fn two_people_sell_buy_pay_and_let_an_order_expire_in_a_real_browser() {
        let market = Marketplace::embedded("20s");
        let driver = ChromeDriver::start();
        let seller = Person::open(&driver, &market).await;
        let buyer = Person::open(&driver, &market).await;

        // The seller signs up, is told what is wrong with a bad form, and lists a ticket.
        seller.go("/").await;
        seller.screenshots("home-empty").await;
        seller.go("/auth/signup").await;
        seller.screenshots("signup").await;
        seller.fill("email", "not-an-email").await;
        seller.fill("password", "short").await;
        seller.click("submit").await;
        assert_eq!(seller.text("email-error").await, "Email must be valid");
        assert!(seller.text("password-error").await.contains("8 and 128"));
        seller.screenshots("signup-errors").await;
        seller.sign_up("seller@example.com").await;
        seller.go("/tickets/new").await;
        seller.click("submit").await;
        assert!(seller.has("title-error").await);
        assert!(seller.has("price-error").await);
        seller.screenshots("sell-errors").await;
        seller.fill("title", "Arctic Monkeys, Royal Albert Hall").await;
        seller.fill("price", "85.50").await;
        seller.click("submit").await;
        let ticket = seller.path().await;
        assert!(ticket.starts_with("/tickets/"), "{ticket}");
        assert_eq!(seller.text("ticket-price").await, "$85.50");
        assert!(seller.has("edit").await);
        seller.screenshots("ticket-seller").await;

        // The buyer finds it on the front page and starts a purchase.
        buyer.sign_up("buyer@example.com").await;
        buyer.go("/").await;
        let link = buyer
            .client
            .find(Locator::Css(&format!("a[href='{ticket}']")))
            .await
            .expect("the new ticket is listed on /");
        assert!(link.text().await.unwrap().contains("Arctic Monkeys"));
        buyer.screenshots("home").await;
        link.click().await.unwrap();
        buyer.wait_for("purchase").await;
        buyer.screenshots("ticket-buyer").await;
        buyer.click("purchase").await;
        let order = buyer.path().await;
        assert!(order.starts_with("/orders/"), "{order}");
        assert!(buyer.text("test-mode").await.contains("Test mode"));

        // The countdown ticks.
        let first = seconds(&buyer.text("countdown").await);
        tokio::time::sleep(Duration::from_millis(2200)).await;
        let second = seconds(&buyer.text("countdown").await);
        assert!(first <= 20 && second < first, "the countdown went from {first} to {second}");
        buyer.screenshots("order").await;

        // A declined card, then a good one.
        buyer.fill("card_number", "4000 0000 0000 0002").await;
        buyer.click("pay").await;
        assert_eq!(buyer.text("card_number-error").await, "Your card was declined.");
        buyer.screenshots("order-declined").await;
        buyer.fill("card_number", "4242 4242 4242 4242").await;
        buyer.click("pay").await;
        assert_eq!(buyer.text("order-state").await, "Paid");
        assert!(buyer.text("paid").await.contains("Paid"));
        buyer.screenshots("order-paid").await;

        // The seller sees the ticket is no longer for sale.
        seller.go(&ticket).await;
        assert_eq!(seller.text("ticket-state").await, "Reserved");
        assert!(!seller.has("edit").await);
        seller.go("/").await;
        assert!(seller.client.find(Locator::Css(&format!("a[href='{ticket}']"))).await.is_err());

        // An order nobody pays expires, and the page (which reloads itself at zero) says so.
        seller.go("/tickets/new").await;
        seller.fill("title", "Jazz night").await;
        seller.fill("price", "20").await;
        seller.click("submit").await;
        let second_ticket = seller.path().await;
        buyer.go(&second_ticket).await;
        buyer.click("purchase").await;
        let unpaid = buyer.path().await;
        let closed = buyer
            .client
            .wait()
            .at_most(Duration::from_secs(45))
            .for_element(Locator::Id("closed"))
            .await
            .expect("the order page shows the expiry by itself");
        assert!(closed.text().await.unwrap().contains("expired"), "{unpaid}");
        assert_eq!(buyer.text("order-state").await, "Expired");
        buyer.screenshots("order-expired").await;
        buyer.go("/orders").await;
        buyer.screenshots("orders").await;
        buyer.go("/no/such/page").await;
        buyer.screenshots("not-found").await;

        seller.close().await;
        buyer.close().await;
    }
}

/// Reloads `path` until the element `id` is on it: what a page shows may wait on an event.
async fn reload_until(person: &Person, path: &str, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        person.go(path).await;
        if person.has(id).await {
            return;
        }
        assert!(Instant::now() < deadline, "#{id} never showed on {path}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Pays the order whose page is open with the test card that succeeds.
async fn pay_with_a_good_card(person: &Person) {
    person.fill("card_number", "4242 4242 4242 4242").await;
    person.click("pay").await;
    assert_eq!(person.text("order-state").await, "Paid");
}

testkit::browser_test! {
    async fn a_fan_who_cannot_go_resells_at_face_value_in_a_real_browser() {
        resale_story(Marketplace::embedded("60s"), "").await;
    }
}

testkit::distributed_browser_test! {
    async fn a_fan_who_cannot_go_resells_at_face_value_in_a_real_browser_on_the_cluster() {
        resale_story(Marketplace::distributed("60s").await, "cluster-").await;
    }
}

/// A fan buys the best ticket of an event, cannot go, resells it at face value (told first the
/// most they may ask), another fan buys it, and the first fan's sales show it. Screenshots are
/// named after the page, after `shots` (which tells the modes apart).
async fn resale_story(market: Marketplace, shots: &str) {
    // A promoter puts an event and two of its tickets on sale, through the API.
    let promoter = market.user();
    promoter.sign_up("promoter@example.com").await;
    let day = time::OffsetDateTime::now_utc().date() + time::Duration::days(30);
    let (status, event) = promoter
        .post(
            "/api/events",
            json!({"name": "Radiohead", "venue": "Madison Square Garden",
                    "city": "New York", "startsAt": format!("{day}T20:00"),
                    "timeZone": "America/New_York"}),
        )
        .await;
    assert_eq!(status, 201, "{event}");
    let mut listed = Vec::new();
    for (title, price, section) in [
        ("Radiohead, floor", 79.5, "Floor"),
        ("Radiohead, lower bowl", 120.0, "104"),
    ] {
        let (status, ticket) = promoter
            .post(
                "/api/tickets",
                json!({"title": title, "price": price, "eventId": event["id"],
                        "section": section, "row": "C", "seat": "12"}),
            )
            .await;
        assert_eq!(status, 201, "{ticket}");
        listed.push(ticket["id"].as_str().unwrap().to_owned());
    }
    let floor = &listed[0];
    let driver = ChromeDriver::start();
    let fan = Person::open(&driver, &market).await;
    let other_fan = Person::open(&driver, &market).await;

    // A fan searches, finds the event from a ticket, and buys the best available.
    fan.sign_up("fan@example.com").await;
    fan.go("/?maxPrice=free").await;
    assert_eq!(
        fan.text("maxPrice-error").await,
        "Max price must be a number"
    );
    fan.go("/").await;
    fan.fill("q", "radiohead new york").await;
    fan.click("search-submit").await;
    assert!(fan.path().await == "/");
    let found = fan.text("tickets").await;
    assert!(
        found.contains("Radiohead, floor") && found.contains("Section Floor"),
        "{found}"
    );
    fan.screenshots(&format!("{shots}search")).await;
    fan.go(&format!("/tickets/{floor}")).await;
    fan.click("event-link").await;
    assert_eq!(fan.text("event-name").await, "Radiohead");
    assert!(
        fan.text("event-offer")
            .await
            .contains("2 for sale, from $79.50")
    );
    let event_page = fan.path().await;
    fan.screenshots(&format!("{shots}event")).await;
    fan.click("best-available").await;
    assert!(fan.path().await.starts_with("/orders/"));
    pay_with_a_good_card(&fan).await;

    // It is theirs; they cannot go, and resell it: over face value is refused.
    reload_until(&fan, "/my/tickets", &format!("status-{floor}")).await;
    assert_eq!(fan.text(&format!("status-{floor}")).await, "Yours");
    fan.screenshots(&format!("{shots}my-tickets")).await;
    fan.fill(&format!("price-{floor}"), "79.51").await;
    fan.click(&format!("resell-{floor}")).await;
    assert_eq!(
        fan.text("price-error").await,
        "Price must be at most 79.50, the resale cap on what was paid for it"
    );
    fan.screenshots(&format!("{shots}resale-refused")).await;
    fan.fill(&format!("price-{floor}"), "79.50").await;
    fan.click(&format!("resell-{floor}")).await;
    assert_eq!(fan.text(&format!("status-{floor}")).await, "For sale");

    // Another fan buys the best available of the event: the resold ticket, the cheapest.
    other_fan.sign_up("other-fan@example.com").await;
    reload_until(&other_fan, &event_page, "best-available").await;
    assert!(other_fan.text("event-offer").await.contains("from $79.50"));
    other_fan.click("best-available").await;
    assert!(other_fan.path().await.starts_with("/orders/"));
    pay_with_a_good_card(&other_fan).await;
    reload_until(&other_fan, "/my/tickets", &format!("status-{floor}")).await;

    // The first fan's sales show it, and it has left their tickets.
    reload_until(&fan, "/my/sales", "sales").await;
    let sales = fan.text("sales").await;
    assert!(
        sales.contains("Radiohead, floor") && sales.contains("$79.50"),
        "{sales}"
    );
    fan.screenshots(&format!("{shots}my-sales")).await;
    fan.go("/my/tickets").await;
    assert!(!fan.has(&format!("owned-{floor}")).await);

    fan.close().await;
    other_fan.close().await;
}

testkit::browser_test! {
    async fn the_api_reference_shows_every_operation_in_a_real_browser() {
        let market = Marketplace::embedded("60s");
        let driver = ChromeDriver::start();
        let reader = Person::open(&driver, &market).await;

        reader.go("/api/docs").await;
        // The page draws the document with its own scripts: had any of them not loaded, no
        // operation would show.
        reader
            .client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(".opblock-summary-path"))
            .await
            .unwrap();
        let shown = reader
            .client
            .find_all(Locator::Css(".opblock-summary-path"))
            .await
            .unwrap();
        let mut paths = Vec::new();
        for path in shown {
            paths.push(path.text().await.unwrap().replace('\u{200b}', ""));
        }
        paths.sort();
        paths.dedup();
        assert_eq!(
            paths,
            [
                "/api/events",
                "/api/events/{id}",
                "/api/events/{id}/tickets",
                "/api/orders",
                "/api/orders/{id}",
                "/api/payments",
                "/api/payments/webhook",
                "/api/tickets",
                "/api/tickets/{id}",
                "/api/tickets/{id}/history",
                "/api/tickets/{id}/resale",
                "/api/tickets/{id}/send",
                "/api/users/currentuser",
                "/api/users/me/sales",
                "/api/users/me/tickets",
                "/api/users/signin",
                "/api/users/signout",
                "/api/users/signout/everywhere",
                "/api/users/signup",
            ]
        );
        assert_eq!(
            reader
                .client
                .find_all(Locator::Css(".opblock"))
                .await
                .unwrap()
                .len(),
            24,
            "one block per operation"
        );
        reader.screenshots("api-docs").await;
        reader.close().await;
    }
}
