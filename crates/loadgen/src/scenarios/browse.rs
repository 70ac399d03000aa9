//! Browsing: the list of tickets for sale and single tickets, read as fast as the marketplace
//! answers (or at `--rate`) for `--duration`.

use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng, rng};

use super::{Context, Listing};
use crate::progress::Progress;
use crate::report::ScenarioReport;
use crate::stats::{Operation, Pacer, per_second};

struct Browsing {
    ctx: Arc<Context>,
    tickets: Vec<String>,
    list: Operation,
    show: Operation,
    pacer: Pacer,
    until: Instant,
}

pub(crate) async fn run(ctx: &Arc<Context>, listings: &[Listing]) -> ScenarioReport {
    let browsing = Arc::new(Browsing {
        ctx: Arc::clone(ctx),
        tickets: listings.iter().map(|l| l.id.clone()).collect(),
        list: Operation::new("GET /api/tickets", &[200]),
        show: Operation::new("GET /api/tickets/{id}", &[200]),
        pacer: Pacer::new(ctx.settings.rate),
        until: Instant::now() + ctx.settings.duration,
    });
    let started = Instant::now();
    let progress = Progress::start("browse", {
        let browsing = Arc::clone(&browsing);
        move || {
            let count = browsing.list.count() + browsing.show.count();
            format!(
                "requests {count} ({:.0}/s), errors {}",
                per_second(count, started.elapsed()),
                browsing.list.errors() + browsing.show.errors()
            )
        }
    });
    let workers: Vec<_> = (0..ctx.settings.concurrency)
        .map(|_| tokio::spawn(browse(Arc::clone(&browsing))))
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
    let elapsed = started.elapsed();
    progress.finish().await;

    let requests = browsing.list.count() + browsing.show.count();
    let mut report = ScenarioReport::new("browse", "browse");
    report.elapsed_s = elapsed.as_secs_f64();
    report.operations = vec![browsing.list.summary(), browsing.show.summary()];
    report.figures = vec![
        ("requests", requests as f64),
        ("requests_per_s", per_second(requests, elapsed)),
    ];
    report
}

/// One worker: half list reads, half reads of a random listed ticket.
async fn browse(browsing: Arc<Browsing>) {
    let mut rng = StdRng::from_rng(&mut rng());
    loop {
        let due = browsing.pacer.next_slot().await;
        if Instant::now() >= browsing.until {
            break;
        }
        let api = &browsing.ctx.api;
        if browsing.tickets.is_empty() || rng.random_bool(0.5) {
            let call = api.list_tickets().await;
            browsing.list.record_since(due, &call);
        } else {
            let ticket = &browsing.tickets[rng.random_range(0..browsing.tickets.len())];
            let call = api.show_ticket(ticket).await;
            browsing.show.record_since(due, &call);
        }
    }
}
