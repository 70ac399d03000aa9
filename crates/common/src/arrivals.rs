//! Read your writes across services. A buyer who orders a ticket listed a moment ago, or pays
//! for an order placed a moment ago, names something this service hears of only by an event
//! still on its way. Such a request waits for it, bounded, before it answers 404.
//!
//! A waiter is woken, not polling: the service's listeners announce every batch they commit,
//! in the process at once and, on PostgreSQL, by `NOTIFY` in the batch's transaction, so that a
//! replica whose neighbour applied the event hears of it too. A woken waiter looks again. The
//! number of requests waiting at once is capped: beyond it a request for an unknown id answers
//! at once, so made-up ids cannot pin connections.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::AnyConnection;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::store::Dialect;

/// The PostgreSQL channel a service's listeners announce their batches on, as a literal for the
/// `NOTIFY` statement. Each service has a database of its own, and notifications stay within
/// their database.
macro_rules! channel {
    () => {
        "stubs_arrivals"
    };
}

/// How long a request waits, and how many may wait at once.
#[derive(Debug, Clone, Copy)]
pub struct ArrivalSettings {
    pub wait: Duration,
    pub max_waiting: usize,
}

impl Default for ArrivalSettings {
    fn default() -> Self {
        Self {
            wait: Duration::from_secs(2),
            max_waiting: 256,
        }
    }
}

/// Where a service's requests wait for what its listeners bring. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Arrivals {
    applied: Arc<Notify>,
    waiting: Arc<Semaphore>,
    settings: ArrivalSettings,
}

impl Default for Arrivals {
    fn default() -> Self {
        Self::new(ArrivalSettings::default())
    }
}

impl Arrivals {
    pub fn new(settings: ArrivalSettings) -> Self {
        Self {
            applied: Arc::new(Notify::new()),
            waiting: Arc::new(Semaphore::new(settings.max_waiting)),
            settings,
        }
    }

    /// Looks for something with `look`; if it is not there, waits for the listeners to apply
    /// events and looks again each time, until it is found or the wait is over. `None` when it
    /// did not come, or at once when too many requests are waiting already.
    pub async fn look_for<T, E, F, Fut>(&self, mut look: F) -> Result<Option<T>, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
    {
        if let Some(found) = look().await? {
            return Ok(Some(found));
        }
        let Ok(_turn) = self.waiting.try_acquire() else {
            metrics::counter!("stubs_arrival_waits_refused_total").increment(1);
            return Ok(None);
        };
        let deadline = Instant::now() + self.settings.wait;
        loop {
            // Registered before the look, so an announcement between the two is not missed.
            let announced = self.applied.notified();
            tokio::pin!(announced);
            announced.as_mut().enable();
            if let Some(found) = look().await? {
                return Ok(Some(found));
            }
            if tokio::time::timeout_at(deadline, announced).await.is_err() {
                // A last look: a neighbour's announcement may have been lost with its connection.
                return look().await;
            }
        }
    }

    /// How many requests are waiting now.
    pub fn waiting(&self) -> usize {
        self.settings.max_waiting - self.waiting.available_permits()
    }

    /// Wakes the requests waiting in this process: a listener committed a batch.
    pub fn announce(&self) {
        self.applied.notify_waiters();
    }

    /// Announces, to the other replicas, the batch of the transaction `tx` when it commits.
    pub async fn announce_on_commit(
        tx: &mut AnyConnection,
        dialect: Dialect,
    ) -> Result<(), sqlx::Error> {
        match dialect {
            // One process: the listener's `announce` after the commit reaches every waiter.
            Dialect::Sqlite => Ok(()),
            Dialect::Postgres => sqlx::query(concat!("NOTIFY ", channel!()))
                .execute(tx)
                .await
                .map(|_| ()),
        }
    }

    /// Relays other replicas' announcements to this process's waiters until shutdown. Lost
    /// connections are made again; waiters whose announcement was lost meanwhile take their last
    /// look at the end of their wait.
    pub async fn relay_announcements(self, url: SecretString, shutdown: CancellationToken) {
        loop {
            let listened = async {
                let mut listener = PgListener::connect(url.expose_secret()).await?;
                listener.listen(channel!()).await?;
                // What was announced while this replica was not listening is looked for again.
                self.announce();
                loop {
                    listener.recv().await?;
                    self.announce();
                }
            };
            let result: Result<(), sqlx::Error> = tokio::select! {
                result = listened => result,
                () = shutdown.cancelled() => return,
            };
            if let Err(err) = result {
                tracing::warn!(error = %err, "cannot listen for other replicas' events; retrying");
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;

    fn arrivals(max_waiting: usize) -> Arrivals {
        Arrivals::new(ArrivalSettings {
            wait: Duration::from_secs(2),
            max_waiting,
        })
    }

    /// A look at a flag: found once it is set, counting the looks.
    async fn look(flag: &AtomicBool, looks: &AtomicUsize) -> Result<Option<()>, ()> {
        looks.fetch_add(1, Ordering::SeqCst);
        Ok(flag.load(Ordering::SeqCst).then_some(()))
    }

    #[tokio::test(start_paused = true)]
    async fn what_is_there_is_found_without_waiting() {
        let arrivals = arrivals(1);
        let (flag, looks) = (AtomicBool::new(true), AtomicUsize::new(0));

        let found = arrivals.look_for(|| look(&flag, &looks)).await;

        assert_eq!(found, Ok(Some(())));
        assert_eq!(looks.load(Ordering::SeqCst), 1);
        assert_eq!(arrivals.waiting(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_is_woken_by_the_announcement_of_what_it_waits_for() {
        let arrivals = arrivals(1);
        let (flag, looks) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
        );
        let started = Instant::now();
        let waiter = tokio::spawn({
            let (arrivals, flag, looks) = (arrivals.clone(), flag.clone(), looks.clone());
            async move {
                let found = arrivals.look_for(|| look(&flag, &looks)).await;
                (found, started.elapsed())
            }
        });
        // The look before waiting, and the one after registering for announcements.
        while looks.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        // An announcement of something else: the waiter looks again and waits on.
        arrivals.announce();
        while looks.load(Ordering::SeqCst) < 3 {
            tokio::task::yield_now().await;
        }

        flag.store(true, Ordering::SeqCst);
        arrivals.announce();

        // Found at once: time stands still here unless every task waits for a timer.
        assert_eq!(waiter.await.unwrap(), (Ok(Some(())), Duration::ZERO));
        assert_eq!(looks.load(Ordering::SeqCst), 4);
        assert_eq!(arrivals.waiting(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gives_up_when_the_wait_is_over() {
        let arrivals = arrivals(1);
        let (flag, looks) = (AtomicBool::new(false), AtomicUsize::new(0));
        let started = Instant::now();

        let found = arrivals.look_for(|| look(&flag, &looks)).await;

        assert_eq!(found, Ok(None));
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert_eq!(arrivals.waiting(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn beyond_the_cap_a_request_is_answered_at_once() {
        let arrivals = arrivals(1);
        let flag = Arc::new(AtomicBool::new(false));
        let waiter = tokio::spawn({
            let (arrivals, flag) = (arrivals.clone(), flag.clone());
            async move {
                let looks = AtomicUsize::new(0);
                arrivals.look_for(|| look(&flag, &looks)).await
            }
        });
        while arrivals.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        let started = Instant::now();
        let looks = AtomicUsize::new(0);

        let second = arrivals.look_for(|| look(&flag, &looks)).await;

        assert_eq!(second, Ok(None));
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(looks.load(Ordering::SeqCst), 1);
        flag.store(true, Ordering::SeqCst);
        arrivals.announce();
        assert_eq!(waiter.await.unwrap(), Ok(Some(())));
    }
}
