//! Read your writes across services. A buyer who orders a ticket listed a moment ago, or pays
//! for an order placed a moment ago, names something this service hears of only by an event
//! still on its way. Such a request waits for it, bounded, before it answers 404.
//!
//! A waiter is woken, not polling: a listener announces the ids it brings (a new ticket, a new
//! order) once their batch has committed, in the process at once and, on PostgreSQL, by a
//! `NOTIFY` in the batch's transaction, so that a replica whose neighbour applied the event hears
//! of it too. Only the requests waiting for one of those ids are woken, and each looks again. The
//! number of requests waiting at once is capped: beyond it a request for an unknown id answers
//! at once, so made-up ids cannot pin connections.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use secrecy::SecretString;
use sqlx::AnyConnection;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::{Dialect, Heard, listen, notify_on_commit};

/// The PostgreSQL channel a service's listeners announce on. Each service has a database of its
/// own, and notifications stay within their database.
const CHANNEL: &str = "stubs_arrivals";

/// Ids per notification: PostgreSQL takes payloads under 8,000 bytes, and an id with its comma
/// is 37.
const IDS_PER_NOTIFICATION: usize = 200;

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

/// What the requests waiting for one id wait on, and how many they are.
type Bell = (Arc<Notify>, usize);

/// Where a service's requests wait for what its listeners bring. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Arrivals {
    /// The service whose requests wait, for the metrics.
    service: &'static str,
    awaited: Arc<Mutex<HashMap<Uuid, Bell>>>,
    turns: Arc<Semaphore>,
    settings: ArrivalSettings,
}

impl Arrivals {
    pub fn new(service: &'static str, settings: ArrivalSettings) -> Self {
        Self {
            service,
            awaited: Arc::default(),
            turns: Arc::new(Semaphore::new(settings.max_waiting)),
            settings,
        }
    }

    /// Looks for the thing with this id using `look`; if it is not there, waits for a listener
    /// to announce the id and looks again, until it is found or the wait is over. `None` when it
    /// did not come, or at once when too many requests are waiting already.
    pub async fn look_for<T, E, F, Fut>(&self, id: Uuid, look: F) -> Result<Option<T>, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
    {
        self.wait(id, look, true).await
    }

    /// Like [`Arrivals::look_for`], for the answer to something the request itself set going
    /// (a payment waiting for orders' grant), and not counted against the cap: each such wait
    /// needs a claim on one of the buyer's own orders, which the hold limits already bound.
    pub async fn await_answer<T, E, F, Fut>(&self, id: Uuid, look: F) -> Result<Option<T>, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
    {
        self.wait(id, look, false).await
    }

    async fn wait<T, E, F, Fut>(&self, id: Uuid, mut look: F, capped: bool) -> Result<Option<T>, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
    {
        if let Some(found) = look().await? {
            return Ok(Some(found));
        }
        let _turn = if capped {
            let Ok(turn) = self.turns.try_acquire() else {
                metrics::counter!("stubs_arrival_waits_refused_total", "service" => self.service)
                    .increment(1);
                return Ok(None);
            };
            Some(turn)
        } else {
            None
        };
        let bell = Awaiting::register(self, id);
        let deadline = Instant::now() + self.settings.wait;
        loop {
            // Listening before the look, so an announcement between the two is not missed.
            let announced = bell.notify.notified();
            tokio::pin!(announced);
            announced.as_mut().enable();
            if let Some(found) = look().await? {
                return Ok(Some(found));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            if tokio::time::timeout_at(deadline, announced).await.is_err() {
                // A last look: a neighbour's announcement may have been lost with its connection.
                return look().await;
            }
        }
    }

    /// How many requests are waiting now.
    pub fn waiting(&self) -> usize {
        self.settings.max_waiting - self.turns.available_permits()
    }

    /// Wakes the requests of this process waiting for these ids: a listener committed them.
    pub fn announce(&self, ids: &[Uuid]) {
        let awaited = self.awaited.lock().unwrap_or_else(PoisonError::into_inner);
        if awaited.is_empty() {
            return;
        }
        for id in ids {
            if let Some((bell, _)) = awaited.get(id) {
                bell.notify_waiters();
            }
        }
    }

    /// Wakes every waiting request of this process to look again: announcements may have been
    /// missed.
    fn announce_all(&self) {
        let awaited = self.awaited.lock().unwrap_or_else(PoisonError::into_inner);
        for (bell, _) in awaited.values() {
            bell.notify_waiters();
        }
    }

    /// Announces these ids to the other replicas when the transaction `tx` commits.
    pub async fn announce_on_commit(
        tx: &mut AnyConnection,
        dialect: Dialect,
        ids: &[Uuid],
    ) -> Result<(), sqlx::Error> {
        // One process on SQLite: the listener's `announce` after the commit reaches every waiter.
        if dialect == Dialect::Sqlite {
            return Ok(());
        }
        for chunk in ids.chunks(IDS_PER_NOTIFICATION) {
            let payload = chunk
                .iter()
                .map(Uuid::to_string)
                .collect::<Vec<_>>()
                .join(",");
            notify_on_commit(tx, CHANNEL, &payload).await?;
        }
        Ok(())
    }

    /// Relays other replicas' announcements to this process's waiters until shutdown. After a
    /// lost connection every waiter looks again, since what was announced meanwhile is lost.
    pub async fn relay_announcements(self, url: SecretString, shutdown: CancellationToken) {
        let what = "other replicas' events";
        listen(&url, CHANNEL, what, &shutdown, |heard| {
            match heard {
                Heard::Notice(payload) => self.announce(&parse_ids(&payload)),
                Heard::Listening | Heard::Missed => self.announce_all(),
            }
            std::future::ready(Ok(()))
        })
        .await;
    }
}

/// The ids of a notification's payload; anything else in it is ignored.
fn parse_ids(payload: &str) -> Vec<Uuid> {
    payload
        .split(',')
        .filter_map(|id| Uuid::try_parse(id).ok())
        .collect()
}

/// A request's place among those waiting for an id, given up when the request is done.
struct Awaiting<'a> {
    arrivals: &'a Arrivals,
    id: Uuid,
    notify: Arc<Notify>,
}

impl<'a> Awaiting<'a> {
    fn register(arrivals: &'a Arrivals, id: Uuid) -> Self {
        let mut awaited = arrivals
            .awaited
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (notify, count) = awaited.entry(id).or_default();
        *count += 1;
        let notify = notify.clone();
        Self {
            arrivals,
            id,
            notify,
        }
    }
}

impl Drop for Awaiting<'_> {
    fn drop(&mut self) {
        let mut awaited = self
            .arrivals
            .awaited
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((_, count)) = awaited.get_mut(&self.id) {
            *count -= 1;
            if *count == 0 {
                awaited.remove(&self.id);
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
        Arrivals::new(
            "test",
            ArrivalSettings {
                wait: Duration::from_secs(2),
                max_waiting,
            },
        )
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

        let found = arrivals
            .look_for(Uuid::now_v7(), || look(&flag, &looks))
            .await;

        assert_eq!(found, Ok(Some(())));
        assert_eq!(looks.load(Ordering::SeqCst), 1);
        assert_eq!(arrivals.waiting(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_is_woken_by_the_announcement_of_its_id_only() {
        let arrivals = arrivals(1);
        let id = Uuid::now_v7();
        let (flag, looks) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
        );
        let started = Instant::now();
        let waiter = tokio::spawn({
            let (arrivals, flag, looks) = (arrivals.clone(), flag.clone(), looks.clone());
            async move {
                let found = arrivals.look_for(id, || look(&flag, &looks)).await;
                (found, started.elapsed())
            }
        });
        // The look before waiting, and the one after listening for announcements.
        while looks.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        // Another id: no look.
        arrivals.announce(&[Uuid::now_v7()]);
        tokio::task::yield_now().await;
        assert_eq!(looks.load(Ordering::SeqCst), 2);
        // Its id, not there yet: it looks again and waits on.
        arrivals.announce(&[id]);
        while looks.load(Ordering::SeqCst) < 3 {
            tokio::task::yield_now().await;
        }

        flag.store(true, Ordering::SeqCst);
        arrivals.announce(&[Uuid::now_v7(), id]);

        // Found at once: time stands still here unless every task waits for a timer.
        assert_eq!(waiter.await.unwrap(), (Ok(Some(())), Duration::ZERO));
        assert_eq!(looks.load(Ordering::SeqCst), 4);
        assert_eq!(arrivals.waiting(), 0);
        assert!(arrivals.awaited.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gives_up_when_the_wait_is_over() {
        let arrivals = arrivals(1);
        let (flag, looks) = (AtomicBool::new(false), AtomicUsize::new(0));
        let started = Instant::now();

        let found = arrivals
            .look_for(Uuid::now_v7(), || look(&flag, &looks))
            .await;

        assert_eq!(found, Ok(None));
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert_eq!(arrivals.waiting(), 0);
        assert!(arrivals.awaited.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn announcements_that_never_bring_it_do_not_stretch_the_wait() {
        let arrivals = arrivals(1);
        let id = Uuid::now_v7();
        let started = Instant::now();
        let waiter = tokio::spawn({
            let arrivals = arrivals.clone();
            async move {
                let looks = AtomicUsize::new(0);
                let found = arrivals
                    .look_for(id, || async {
                        looks.fetch_add(1, Ordering::SeqCst);
                        // Each look takes a while, and the id is announced meanwhile.
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        Ok::<_, ()>(None::<()>)
                    })
                    .await;
                (found, started.elapsed())
            }
        });
        let bell = loop {
            if let Some((bell, _)) = arrivals.awaited.lock().unwrap().get(&id) {
                break bell.clone();
            }
            // A sleep, not a yield: the waiter's look sleeps, and paused time moves only while
            // every task waits for a timer.
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let announcing = tokio::spawn(async move {
            loop {
                bell.notify_waiters();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });

        let (found, waited) = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the wait ends")
            .unwrap();

        announcing.abort();
        assert_eq!(found, Ok(None));
        assert!(waited <= Duration::from_millis(2600), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn beyond_the_cap_a_request_is_answered_at_once() {
        let arrivals = arrivals(1);
        let id = Uuid::now_v7();
        let flag = Arc::new(AtomicBool::new(false));
        let waiter = tokio::spawn({
            let (arrivals, flag) = (arrivals.clone(), flag.clone());
            async move {
                let looks = AtomicUsize::new(0);
                arrivals.look_for(id, || look(&flag, &looks)).await
            }
        });
        while arrivals.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        let started = Instant::now();
        let looks = AtomicUsize::new(0);

        let second = arrivals
            .look_for(Uuid::now_v7(), || look(&flag, &looks))
            .await;

        assert_eq!(second, Ok(None));
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(looks.load(Ordering::SeqCst), 1);
        flag.store(true, Ordering::SeqCst);
        arrivals.announce(&[id]);
        assert_eq!(waiter.await.unwrap(), Ok(Some(())));
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_awaited_is_not_turned_away_by_the_cap() {
        let arrivals = arrivals(1);
        let flag = Arc::new(AtomicBool::new(false));
        let unknown = tokio::spawn({
            let (arrivals, flag) = (arrivals.clone(), flag.clone());
            async move {
                let looks = AtomicUsize::new(0);
                arrivals
                    .look_for(Uuid::now_v7(), || look(&flag, &looks))
                    .await
            }
        });
        while arrivals.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        let (id, answered) = (Uuid::now_v7(), Arc::new(AtomicBool::new(false)));
        let answer = tokio::spawn({
            let (arrivals, answered) = (arrivals.clone(), answered.clone());
            async move {
                let looks = AtomicUsize::new(0);
                arrivals.await_answer(id, || look(&answered, &looks)).await
            }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!answer.is_finished(), "it waits, though the cap is reached");

        answered.store(true, Ordering::SeqCst);
        arrivals.announce(&[id]);

        assert_eq!(answer.await.unwrap(), Ok(Some(())));
        assert_eq!(arrivals.waiting(), 1, "only the capped wait holds a turn");
        unknown.abort();
    }

    #[test]
    fn a_payload_is_read_as_ids_and_nothing_else() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(parse_ids(&format!("{a},{b}")), [a, b]);
        assert_eq!(parse_ids(&format!("{a},not-an-id,")), [a]);
        assert!(parse_ids("").is_empty());
    }
}
