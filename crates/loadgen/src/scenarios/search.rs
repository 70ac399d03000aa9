//! Searching: a catalogue of `--search-tickets` tickets over `--search-events` events is listed
//! first, then searched for `--duration` (at `--rate` if given) the ways a buyer does: by an
//! artist's name, a name and a city, a prefix as typed, a city by date, some days under a
//! price, events by name, the whole catalogue by price; and the plain newest-first list beside
//! them.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng, rng};

use super::{Cast, Context, Listing, SETUP_TRIES, retry_pause};
use crate::progress::Progress;
use crate::report::ScenarioReport;
use crate::stats::{Operation, Pacer, per_second};

const ARTISTS: [&str; 20] = [
    "Radiohead",
    "Adele",
    "Coldplay",
    "Beyoncé",
    "Metallica",
    "Madonna",
    "Queen",
    "Muse",
    "Oasis",
    "Blur",
    "Pixies",
    "Björk",
    "Drake",
    "Rihanna",
    "Shakira",
    "Eminem",
    "Prince",
    "Sting",
    "Genesis",
    "Kraftwerk",
];

const VENUES: [(&str, &str, &str); 10] = [
    ("Madison Square Garden", "New York", "America/New_York"),
    ("Wembley Stadium", "London", "Europe/London"),
    ("O2 Arena", "London", "Europe/London"),
    ("Olympia", "Paris", "Europe/Paris"),
    ("Ziggo Dome", "Amsterdam", "Europe/Amsterdam"),
    ("Mercedes-Benz Arena", "Berlin", "Europe/Berlin"),
    ("Palau Sant Jordi", "Barcelona", "Europe/Madrid"),
    ("Hollywood Bowl", "Los Angeles", "America/Los_Angeles"),
    ("Red Rocks", "Morrison", "America/Denver"),
    ("Sydney Opera House", "Sydney", "Australia/Sydney"),
];

const SECTIONS: [&str; 8] = [
    "Floor",
    "Stalls",
    "Circle",
    "Balcony",
    "Box",
    "Standing",
    "Block 101",
    "Upper tier",
];

/// How many of the last listings must be known to orders before searching begins.
const SETTLE_SAMPLE: usize = 50;

/// The days ahead the catalogue's events spread over.
const DAYS_SPREAD: i64 = 365;

/// The ways of searching, each timed on its own.
struct Searches {
    word: Operation,
    words_by_price: Operation,
    prefix: Operation,
    city_by_date: Operation,
    days_under_price: Operation,
    events_by_price: Operation,
    all_by_price: Operation,
    newest: Operation,
}

impl Searches {
    fn all(&self) -> [&Operation; 8] {
        [
            &self.word,
            &self.words_by_price,
            &self.prefix,
            &self.city_by_date,
            &self.days_under_price,
            &self.events_by_price,
            &self.all_by_price,
            &self.newest,
        ]
    }
}

struct Searching {
    ctx: Arc<Context>,
    searches: Searches,
    pacer: Pacer,
    until: Instant,
}

pub(crate) async fn run(ctx: &Arc<Context>, cast: &Cast) -> ScenarioReport {
    let mut report = ScenarioReport::new("search", "search over a catalogue");
    let listing = Arc::new(Operation::new("POST /api/tickets", &[201]));
    let creating = Operation::new("POST /api/events", &[201]);
    let started = Instant::now();
    let events = create_events(ctx, cast, &creating).await;
    let listed = list_catalogue(ctx, cast, &events, &listing).await;
    let listing_s = started.elapsed().as_secs_f64();
    // The marketplace is still taking in the listings (orders replicates each one): searches
    // start once it is done, so that they are timed on their own. The last listings are the
    // last it replicates, near enough.
    let settling = Instant::now();
    let tail = &listed[listed.len().saturating_sub(SETTLE_SAMPLE)..];
    let unknown = super::await_replication(ctx, cast, tail).await;
    if unknown > 0 {
        report.notes.push(format!(
            "{unknown} of the last listings were still unknown to orders when searching began"
        ));
    }
    let settle_s = settling.elapsed().as_secs_f64();

    let searching = Arc::new(Searching {
        ctx: Arc::clone(ctx),
        searches: Searches {
            word: Operation::new("GET tickets?q=artist", &[200]),
            words_by_price: Operation::new("GET tickets?q=artist+city,price", &[200]),
            prefix: Operation::new("GET tickets?q=prefix", &[200]),
            city_by_date: Operation::new("GET tickets?city,sort=date", &[200]),
            days_under_price: Operation::new("GET tickets?from,to,maxPrice", &[200]),
            events_by_price: Operation::new("GET events?q=artist,sort=price", &[200]),
            all_by_price: Operation::new("GET tickets?sort=price", &[200]),
            newest: Operation::new("GET /api/tickets", &[200]),
        },
        pacer: Pacer::new(ctx.settings.rate),
        until: Instant::now() + ctx.settings.duration,
    });
    let searched = Instant::now();
    let progress = Progress::start("search", {
        let searching = Arc::clone(&searching);
        move || {
            let count: u64 = searching.searches.all().iter().map(|op| op.count()).sum();
            format!(
                "searches {count} ({:.0}/s)",
                per_second(count, searched.elapsed())
            )
        }
    });
    let workers: Vec<_> = (0..ctx.settings.concurrency)
        .map(|_| tokio::spawn(search(Arc::clone(&searching))))
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
    let elapsed = searched.elapsed();
    progress.finish().await;

    let count: u64 = searching.searches.all().iter().map(|op| op.count()).sum();
    report.elapsed_s = elapsed.as_secs_f64();
    report.operations = vec![creating.summary(), listing.summary()];
    report
        .operations
        .extend(searching.searches.all().iter().map(|op| op.summary()));
    report.figures = vec![
        ("events", events.len() as f64),
        ("tickets_listed", listed.len() as f64),
        ("listing_s", listing_s),
        ("settle_s", settle_s),
        ("searches", count as f64),
        ("searches_per_s", per_second(count, elapsed)),
    ];
    report.notes.push(
        "latencies are from each request's scheduled start; the marketplace may hold tickets of \
         earlier runs too"
            .into(),
    );
    report
}

/// What a creation (of an event or a ticket) answers, as far as this needs it.
#[derive(serde::Deserialize)]
struct Created {
    id: String,
}

/// Creates the catalogue's events, each an artist at a venue on a day; returns their ids.
async fn create_events(ctx: &Context, cast: &Cast, op: &Operation) -> Vec<String> {
    let Some(seller) = cast.sellers.first() else {
        return Vec::new();
    };
    futures::stream::iter(0..ctx.settings.search_events)
        .map(|n| async move {
            let artist = ARTISTS[n % ARTISTS.len()];
            let venue = VENUES[(n / ARTISTS.len()) % VENUES.len()];
            // The run and the number keep each event from being another's duplicate.
            let name = format!("{artist} {} {n}", ctx.run_id);
            let days = 1 + (i64::try_from(n).unwrap_or(0) * 7) % DAYS_SPREAD;
            for attempt in 0..SETUP_TRIES {
                let call = ctx.api.create_event_at(seller, &name, venue, days).await;
                op.record(&call);
                if let Some(event) = call.answer_with(201).and_then(|a| a.json::<Created>()) {
                    return Some(event.id);
                }
                retry_pause(attempt).await;
            }
            None
        })
        .buffered(ctx.settings.concurrency)
        .filter_map(|event| async move { event })
        .collect()
        .await
}

/// Lists the catalogue's tickets round the events and sellers, with a section and row each and
/// prices from 20 to 119, and returns them in the order they were listed.
async fn list_catalogue(
    ctx: &Context,
    cast: &Cast,
    events: &[String],
    op: &Arc<Operation>,
) -> Vec<Listing> {
    if events.is_empty() || cast.sellers.is_empty() {
        return Vec::new();
    }
    let total = ctx.settings.search_tickets;
    let progress = Progress::start("search catalogue", {
        let op = Arc::clone(op);
        move || format!("listed {}/{total}, errors {}", op.count(), op.errors())
    });
    let listed = futures::stream::iter(0..total)
        .map(|n| async move {
            let event = &events[n % events.len()];
            let title = format!(
                "{} row {}",
                SECTIONS[(n / events.len()) % SECTIONS.len()],
                1 + n % 30
            );
            let price = 20.0 + (n % 100) as f64;
            super::list_ticket(ctx, cast, n, &title, price, Some(event), op).await
        })
        .buffer_unordered(ctx.settings.concurrency)
        .filter_map(|listing| async move { listing })
        .collect()
        .await;
    progress.finish().await;
    listed
}

/// One worker: searches of every kind, chosen at random.
async fn search(searching: Arc<Searching>) {
    let mut rng = StdRng::from_rng(&mut rng());
    loop {
        let due = searching.pacer.next_slot().await;
        if Instant::now() >= searching.until {
            break;
        }
        let artist = ARTISTS[rng.random_range(0..ARTISTS.len())];
        let (_, city, _) = VENUES[rng.random_range(0..VENUES.len())];
        let today = time::OffsetDateTime::now_utc().date();
        let from = today + time::Duration::days(rng.random_range(0..DAYS_SPREAD));
        let searches = &searching.searches;
        let (op, path) = match rng.random_range(0..8) {
            0 => (&searches.word, tickets(&[("q", artist)])),
            1 => (
                &searches.words_by_price,
                tickets(&[("q", &format!("{artist} {city}")), ("sort", "price")]),
            ),
            2 => (
                &searches.prefix,
                tickets(&[("q", &artist.chars().take(3).collect::<String>())]),
            ),
            3 => (
                &searches.city_by_date,
                tickets(&[("city", city), ("sort", "date")]),
            ),
            4 => (
                &searches.days_under_price,
                tickets(&[
                    ("from", &from.to_string()),
                    ("to", &(from + time::Duration::days(7)).to_string()),
                    ("maxPrice", "40"),
                    ("sort", "price"),
                ]),
            ),
            5 => (
                &searches.events_by_price,
                format!("/api/events?{}", query(&[("q", artist), ("sort", "price")])),
            ),
            6 => (&searches.all_by_price, tickets(&[("sort", "price")])),
            _ => (&searches.newest, "/api/tickets".to_owned()),
        };
        let call = searching.ctx.api.get(&path).await;
        op.record_since(due, &call);
    }
}

/// `GET /api/tickets` with a query.
fn tickets(pairs: &[(&str, &str)]) -> String {
    format!("/api/tickets?{}", query(pairs))
}

/// Pairs as a query string.
fn query(pairs: &[(&str, &str)]) -> String {
    // Pairs of plain strings always encode.
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}
