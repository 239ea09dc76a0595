//! Workers run under a supervisor: one that fails is started again with backoff (and
//! reported in health and `sqlvigil_worker_restarts`) instead of leaving the pipeline
//! half-stopped while the receiver goes on accepting.

use sqlvigil_core::{Component, Result, Stats};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A run this long counts as healthy: the next failure starts the backoff afresh.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Run `start()` until it returns `Ok` (a clean stop) or fails while stopping; on any
/// other failure report it and start it again after a growing pause.
pub fn supervise<F, Fut>(
    component: Arc<Component>,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
    mut start: F,
) -> JoinHandle<Result<()>>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    // Running from the moment it is started, not from its first poll: the receiver opens
    // before the task runs and must not refuse data meanwhile.
    component.running();
    tokio::spawn(async move {
        let name = component.name.clone();
        let mut backoff = FIRST_BACKOFF;
        loop {
            let began = Instant::now();
            let err = match start().await {
                Ok(()) => {
                    component.stopped("shut down");
                    return Ok(());
                }
                Err(e) => e,
            };
            if *stop.borrow() {
                tracing::error!("{name} failed while stopping: {err}");
                component.stopped(&err.to_string());
                return Err(err);
            }
            if began.elapsed() >= HEALTHY_RUN {
                backoff = FIRST_BACKOFF;
            }
            tracing::error!("{name} failed, starting it again in {backoff:?}: {err}");
            component.failed(&err.to_string());
            Stats::add(&stats.worker_restarts, 1);
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.wait_for(|s| *s) => {
                    component.stopped(&format!("stopped while waiting to restart after: {err}"));
                    return Err(err);
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            component.running();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlvigil_core::health::State;
    use sqlvigil_core::{Error, Health};
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn a_failing_worker_is_restarted_with_backoff_and_reported() {
        let health = Health::default();
        let c = health.register("worker", true, 0);
        let stats = Arc::new(Stats::default());
        let (_stop_tx, stop) = watch::channel(false);
        let attempts = Arc::new(AtomicU32::new(0));
        let seen = attempts.clone();
        let handle = supervise(c.clone(), stats.clone(), stop, move || {
            let n = seen.fetch_add(1, Ordering::Relaxed);
            async move {
                match n {
                    0 | 1 => Err(Error::Unavailable(format!("attempt {n} failed"))),
                    _ => Ok(()),
                }
            }
        });
        // Running as soon as it is started: the receiver must not refuse meanwhile.
        assert_eq!(c.state(), State::Running);
        assert_eq!(health.refusal(), None);
        handle.await.unwrap().unwrap();
        assert_eq!(attempts.load(Ordering::Relaxed), 3);
        assert_eq!(Stats::get(&stats.worker_restarts), 2);
        assert_eq!(c.restarts(), 2);
        assert!(matches!(c.state(), State::Stopped(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_during_the_backoff_ends_it() {
        let health = Health::default();
        let c = health.register("worker", true, 0);
        let (stop_tx, stop) = watch::channel(false);
        let handle = supervise(c.clone(), Arc::new(Stats::default()), stop, || async {
            Err(Error::Unavailable("down".into()))
        });
        tokio::task::yield_now().await;
        assert!(matches!(c.state(), State::Restarting(_)));
        assert!(health.refusal().unwrap().contains("down"));
        stop_tx.send(true).unwrap();
        assert!(
            handle.await.unwrap().is_err(),
            "the last failure is returned"
        );
        assert!(matches!(c.state(), State::Stopped(_)));
    }
}
