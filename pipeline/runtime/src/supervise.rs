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
    tokio::spawn(async move {
        let name = component.name.clone();
        let mut backoff = FIRST_BACKOFF;
        loop {
            let began = Instant::now();
            component.running();
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
        }
    })
}
