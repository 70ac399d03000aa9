//! The loop every background task runs (the outbox relay, the expiration scheduler, payments'
//! reconciler and refunder): a pass at once when woken, otherwise after the pause the pass asks
//! for; after a failure, a pause that doubles from 100 ms up to 30 s while the database or the
//! bus is away, reset by the next pass that succeeds.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What a pass that succeeded asks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Another pass at once: this one did a whole batch, and more may be waiting.
    Again,
    /// Wait this long, or until woken.
    Pause(Duration),
}

/// Runs `pass` until `shutdown`, as the module says. `task` names the task in the warning a
/// failed pass logs. A wake that comes while a pass runs, or during a back-off, is kept for the
/// next wait, so none is missed.
pub async fn run_passes<F, Fut, E>(
    task: &str,
    wake: &Notify,
    shutdown: &CancellationToken,
    mut pass: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Next, E>>,
    E: Display,
{
    let mut backoff = MIN_BACKOFF;
    while !shutdown.is_cancelled() {
        // Listening before the pass, so that a wake during it is not missed.
        let woken = wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        match pass().await {
            Ok(next) => {
                backoff = MIN_BACKOFF;
                let pause = match next {
                    Next::Again => continue,
                    Next::Pause(pause) => pause,
                };
                if pause.is_zero() {
                    continue;
                }
                tokio::select! {
                    () = &mut woken => {}
                    () = tokio::time::sleep(pause) => {}
                    () = shutdown.cancelled() => {}
                }
            }
            Err(err) => {
                tracing::warn!(task, error = %err, retry_in = ?backoff, "background pass failed");
                // The back-off is not cut short by a wake: with the database or the bus away,
                // every commit would otherwise bring a failing pass at once. A wake meanwhile is
                // kept for the pass after it.
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_pass_runs_when_woken_and_failures_back_off_doubling() {
        let wake = Arc::new(Notify::new());
        let shutdown = CancellationToken::new();
        let passes = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let (wake, shutdown, passes) = (wake.clone(), shutdown.clone(), passes.clone());
            async move {
                run_passes("test", &wake, &shutdown, || {
                    let n = passes.fetch_add(1, Ordering::SeqCst);
                    async move {
                        // Three failures, then passes that ask to sleep for an hour.
                        if n < 3 {
                            Err("away")
                        } else {
                            Ok(Next::Pause(Duration::from_secs(3600)))
                        }
                    }
                })
                .await
            }
        });
        let start = tokio::time::Instant::now();
        let count_at = |ms: u64| {
            let passes = passes.clone();
            async move {
                tokio::time::sleep_until(start + Duration::from_millis(ms)).await;
                passes.load(Ordering::SeqCst)
            }
        };
        // Failures at 0, 100 and 300 ms (pauses of 100, 200 and 400 ms), a success at 700.
        assert_eq!(count_at(50).await, 1);
        assert_eq!(count_at(150).await, 2);
        assert_eq!(
            count_at(299).await,
            2,
            "the second pause is twice the first"
        );
        assert_eq!(count_at(301).await, 3);
        assert_eq!(count_at(699).await, 3);
        assert_eq!(count_at(701).await, 4);

        wake.notify_one();
        assert_eq!(
            count_at(800).await,
            5,
            "woken well before the hour it asked for"
        );

        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_wake_during_a_back_off_waits_for_it_to_end() {
        let wake = Arc::new(Notify::new());
        let shutdown = CancellationToken::new();
        let passes = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let (wake, shutdown, passes) = (wake.clone(), shutdown.clone(), passes.clone());
            async move {
                run_passes("test", &wake, &shutdown, || {
                    passes.fetch_add(1, Ordering::SeqCst);
                    async { Err::<Next, _>("away") }
                })
                .await
            }
        });
        let start = tokio::time::Instant::now();
        tokio::time::sleep_until(start + Duration::from_millis(50)).await;
        assert_eq!(passes.load(Ordering::SeqCst), 1);

        wake.notify_one();
        tokio::time::sleep_until(start + Duration::from_millis(99)).await;
        assert_eq!(
            passes.load(Ordering::SeqCst),
            1,
            "the wake waits for the back-off"
        );
        tokio::time::sleep_until(start + Duration::from_millis(101)).await;
        assert_eq!(passes.load(Ordering::SeqCst), 2);

        shutdown.cancel();
        task.await.unwrap();
    }
}
