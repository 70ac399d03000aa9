//! The scheduler: fires due jobs, then sleeps until the next one is due.
//!
//! It does not poll. It sleeps until the earliest job's due time, or until the order:created
//! listener wakes it for a job earlier than that, or until shutdown. When jobs are due it fires
//! them in batches, each in one transaction: take the due jobs off the table, write one
//! expiration:complete per job to the outbox, record the orders as finished, commit. An event
//! leaves if and only if its job was deleted, so each job fires exactly once, whether one replica
//! runs or several (on PostgreSQL each replica claims different jobs). Jobs that fell due while
//! the service was down fire in the first round after start.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use common::ServiceContext;
use common::background::{Next, run_passes};
use common::clock::now_millis;
use common::events::ExpirationComplete;
use common::outbox;
use tokio::sync::Notify;

use crate::store::{self, Finish};

/// Jobs fired per transaction.
const BATCH: i64 = 100;

/// The longest the scheduler sleeps without looking. A replica only hears about the jobs its own
/// listeners write; a job that another replica wrote and then died before firing would otherwise
/// wait until this replica's next due job, however far off. So this is a safety net for the
/// replicas, not a poll: on its own, the scheduler wakes exactly when a job is due.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// How the order:created listener wakes the scheduler when a job is earlier than its alarm.
#[derive(Debug)]
pub(crate) struct Wakeup {
    notify: Notify,
    /// When the scheduler means to wake, in unix milliseconds; `i64::MAX` while it is awake, so
    /// that a job written while it looks always leaves a wake-up behind.
    alarm: AtomicI64,
}

impl Default for Wakeup {
    fn default() -> Self {
        Self {
            notify: Notify::new(),
            alarm: AtomicI64::new(i64::MAX),
        }
    }
}

impl Wakeup {
    /// Tells the scheduler about a job due at `due_at` (unix milliseconds), waking it if that is
    /// no later than its alarm. Called inside the transaction that writes the job, which holds
    /// [`store::hold_scheduling_lock`], so the scheduler sees the job once it wakes and waits.
    pub(crate) fn job_scheduled(&self, due_at: i64) {
        if due_at <= self.alarm.load(Ordering::SeqCst) {
            // One stored permit is enough, however many jobs arrive before it is taken.
            self.notify.notify_one();
        }
    }

    fn awake(&self) {
        self.alarm.store(i64::MAX, Ordering::SeqCst);
    }

    fn sleeping_until(&self, at: i64) {
        self.alarm.store(at, Ordering::SeqCst);
    }
}

/// What one round did: how many jobs it took off the table, and when the next one is due.
#[derive(Debug, Clone, Copy)]
struct Round {
    claimed: usize,
    next_due: Option<i64>,
}

/// Fires due jobs until `ctx.shutdown`, backing off while the database is away.
pub(crate) async fn run(ctx: ServiceContext, wakeup: std::sync::Arc<Wakeup>) {
    run_passes(
        "expiration scheduler",
        &wakeup.notify,
        &ctx.shutdown,
        || async {
            // Awake before looking, so that a job written while this pass looks leaves a wake-up.
            wakeup.awake();
            let round = fire_due(&ctx).await?;
            if round.claimed as i64 >= BATCH {
                return Ok::<_, sqlx::Error>(Next::Again);
            }
            let pause = pause_until(round.next_due, now_millis());
            let pause_ms = i64::try_from(pause.as_millis()).unwrap_or(i64::MAX);
            wakeup.sleeping_until(now_millis().saturating_add(pause_ms));
            Ok(Next::Pause(pause))
        },
    )
    .await
}

/// How long to sleep when the next job is due at `next_due` (or there is none) and it is `now`.
fn pause_until(next_due: Option<i64>, now: i64) -> Duration {
    match next_due {
        Some(due) => {
            let millis = u64::try_from(due.saturating_sub(now)).unwrap_or(0);
            Duration::from_millis(millis).min(MAX_SLEEP)
        }
        None => MAX_SLEEP,
    }
}

/// Fires up to one batch of due jobs in one transaction and reads when the next one is due.
async fn fire_due(ctx: &ServiceContext) -> Result<Round, sqlx::Error> {
    store::wait_for_scheduling(&ctx.store).await?;
    let dialect = ctx.store.dialect();
    let mut tx = ctx.store.begin().await?;
    let now = now_millis();
    let due = store::claim_due(&mut tx, dialect, now, BATCH).await?;
    let mut fired = Vec::with_capacity(due.len());
    for job in &due {
        // An order cancelled or paid while its order:created was being applied can leave a job
        // behind; its tombstone is there by now, and it keeps the job from firing.
        if store::record_finished(&mut tx, job.order_id, Finish::Expired).await? {
            outbox::enqueue(
                &mut tx,
                ExpirationComplete {
                    order_id: job.order_id,
                },
            )
            .await?;
            fired.push(job);
        } else {
            tracing::info!(order = %job.order_id, "order already finished, not expiring it");
        }
    }
    let next_due = store::next_due(&mut tx, dialect).await?;
    ctx.outbox.commit(tx).await?;

    for job in fired {
        let lateness_ms = now.saturating_sub(job.due_at).max(0);
        metrics::counter!("stubs_expirations_fired_total").increment(1);
        metrics::histogram!("stubs_expiration_lateness_seconds")
            .record(lateness_ms as f64 / 1000.0);
        tracing::info!(order = %job.order_id, lateness_ms, "order expired");
    }
    Ok(Round {
        claimed: due.len(),
        next_due,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheduler_sleeps_until_the_next_job_and_no_longer_than_the_cap() {
        assert_eq!(
            pause_until(Some(10_500), 10_000),
            Duration::from_millis(500)
        );
        assert_eq!(pause_until(Some(9_000), 10_000), Duration::ZERO);
        assert_eq!(pause_until(Some(i64::MAX), 10_000), MAX_SLEEP);
        assert_eq!(pause_until(None, 10_000), MAX_SLEEP);
    }

    #[tokio::test]
    async fn a_job_earlier_than_the_alarm_wakes_the_scheduler_and_a_later_one_does_not() {
        let wakeup = Wakeup::default();
        wakeup.sleeping_until(5_000);

        wakeup.job_scheduled(6_000);
        let later = tokio::time::timeout(Duration::from_millis(50), wakeup.notify.notified());
        assert!(later.await.is_err(), "woken for a later job");

        wakeup.job_scheduled(4_000);
        let earlier = tokio::time::timeout(Duration::from_millis(50), wakeup.notify.notified());
        assert!(earlier.await.is_ok(), "not woken for an earlier job");
    }

    #[tokio::test]
    async fn any_job_written_while_the_scheduler_looks_wakes_it_again() {
        let wakeup = Wakeup::default();
        wakeup.awake();

        wakeup.job_scheduled(i64::MAX - 1);

        let woken = tokio::time::timeout(Duration::from_millis(50), wakeup.notify.notified());
        assert!(woken.await.is_ok());
    }
}
