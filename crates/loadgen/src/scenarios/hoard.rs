//! Hoarding (OWASP OAT-021, denial of inventory): one bot buyer tries to take a sale off the
//! market. It orders all of `--hoard-tickets` fresh tickets at once; then it renews each hold it
//! got by cancelling it and ordering the same ticket again at once; then it churns, ordering and
//! cancelling the tickets it never held, one after the other, until it is refused. The report
//! says what got through. At the end the bot cancels what it still holds, and joins the buyers
//! whose orders the invariant check reads.

use std::time::Instant;

use futures::StreamExt;

use super::{Cast, Context, Listing, await_replication, list_tickets, sign_up_many};
use crate::client::{OrderView, Session};
use crate::report::ScenarioReport;
use crate::stats::Operation;

/// The requests of the scenario, each counted by what it answered.
struct Requests {
    grab: Operation,
    renew: Operation,
    churn: Operation,
    cancel: Operation,
}

/// Runs the bot; the report, the tickets it listed, and the bot if it could sign up.
pub(crate) async fn run(
    ctx: &Context,
    cast: &Cast,
) -> (ScenarioReport, Vec<Listing>, Option<Session>) {
    let started = Instant::now();
    let mut report = ScenarioReport::new("hoard", "hoarding: one buyer tries to hold a sale");
    let signup = Operation::new("POST /api/users/signup", &[201]);
    let listing = Operation::new("POST /api/tickets", &[201]);
    let requests = Requests {
        grab: Operation::new("POST /api/orders (grab all)", &[201, 400, 429]),
        renew: Operation::new("POST /api/orders (renew)", &[201, 400, 429]),
        churn: Operation::new("POST /api/orders (churn)", &[201, 400, 429]),
        cancel: Operation::new("DELETE /api/orders/{id}", &[204]),
    };
    let bot = sign_up_many(ctx, "hoarder", 1, &signup).await.pop();
    let listings = list_tickets(
        ctx,
        cast,
        ctx.settings.hoard_tickets,
        "Hoarded seat",
        None,
        &listing,
    )
    .await;
    let unknown = await_replication(ctx, cast, &listings).await;
    let Some(bot) = bot else {
        report.notes.push("the hoarder could not sign up".into());
        report.operations = vec![signup.summary()];
        return (report, listings, None);
    };

    // Everything at once.
    let grabbed: Vec<(String, String)> = futures::stream::iter(&listings)
        .map(|listing| hold(ctx, &bot, &listing.id, &requests.grab))
        .buffer_unordered(ctx.settings.concurrency)
        .filter_map(|held| async move { held })
        .collect()
        .await;
    let held_at_once = grabbed.len();

    // Renewing: a hold cancelled and placed again starts a fresh payment window.
    let mut holding = Vec::new();
    let mut renewed = 0;
    for (order_id, ticket_id) in &grabbed {
        requests
            .cancel
            .record(&ctx.api.cancel_order(&bot, order_id).await);
        if let Some(again) = hold(ctx, &bot, ticket_id, &requests.renew).await {
            renewed += 1;
            holding.push(again);
        }
    }

    // Churning: hold and let go of one ticket after another, until refused.
    let grabbed_tickets: Vec<&String> = grabbed.iter().map(|(_, ticket)| ticket).collect();
    let mut churned = 0;
    let mut churn_stopped_by = None;
    for listing in listings
        .iter()
        .filter(|listing| !grabbed_tickets.contains(&&listing.id))
    {
        let call = ctx.api.create_order(&bot, &listing.id).await;
        requests.churn.record(&call);
        match call.answer_with(201).and_then(|a| a.json::<OrderView>()) {
            Some(order) => {
                churned += 1;
                requests
                    .cancel
                    .record(&ctx.api.cancel_order(&bot, &order.id).await);
            }
            None => {
                churn_stopped_by = Some(call.label());
                break;
            }
        }
    }

    // The bot leaves: what it holds goes back on sale.
    for (order_id, _) in &holding {
        requests
            .cancel
            .record(&ctx.api.cancel_order(&bot, order_id).await);
    }
    report.elapsed_s = started.elapsed().as_secs_f64();
    report.figures = vec![
        ("tickets", listings.len() as f64),
        ("held_at_once", held_at_once as f64),
        ("renewals_tried", grabbed.len() as f64),
        ("renewed", f64::from(renewed)),
        ("churned", f64::from(churned)),
    ];
    if unknown > 0 {
        report.notes.push(format!(
            "{unknown} tickets were still unknown to orders when the grab began"
        ));
    }
    report.notes.push(match churn_stopped_by {
        Some(label) => format!("churning stopped at a {label} after {churned} holds"),
        None => format!("churning was never refused: {churned} holds, every ticket tried"),
    });
    report.operations = vec![
        requests.grab.summary(),
        requests.renew.summary(),
        requests.churn.summary(),
        requests.cancel.summary(),
    ];
    (report, listings, Some(bot))
}

/// Orders a ticket for the bot; the order's and the ticket's ids if it was held.
async fn hold(
    ctx: &Context,
    bot: &Session,
    ticket_id: &str,
    op: &Operation,
) -> Option<(String, String)> {
    let call = ctx.api.create_order(bot, ticket_id).await;
    op.record(&call);
    let order = call.answer_with(201)?.json::<OrderView>()?;
    Some((order.id, order.ticket.id))
}
