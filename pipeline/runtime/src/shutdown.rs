//! Shutdown in data-flow order, within `shutdown.timeout` whatever is queued:
//!
//! 1. stop accepting (receivers);
//! 2. tell the analytics stage to stop analysing and spool what is left (so the
//!    anomalies topic keeps draining and never holds up the metrics worker);
//! 3. drain the telemetry topics (process, flush, checkpoint, acknowledge): everything a
//!    client was told is accepted is stored;
//! 4. stop the analytics stage once the anomalies topic is empty (all spooled);
//! 5. give the sink's background delivery what time is left (at most a few seconds).
//!
//! Running past the timeout is an error naming the stage that did not finish.

use serde::{Deserialize, Serialize};
use sqlvigil_core::{Error, Health, Result, Sink};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// At shutdown, the most the sink's background delivery (the Elastic queue) may take
/// to empty; the rest stays on disk for the next start.
const SINK_DRAIN: Duration = Duration::from_secs(5);

/// `shutdown:`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// The longest SIGINT / SIGTERM may take to stop cleanly.
    #[serde(with = "sqlvigil_model::duration")]
    pub timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            timeout: Duration::from_secs(30),
        }
    }
}

impl ShutdownConfig {
    pub fn validate(&self) -> Result<()> {
        if self.timeout < Duration::from_secs(1) {
            return Err(Error::Config("shutdown.timeout must be at least 1s".into()));
        }
        Ok(())
    }
}

/// One stage: its stop signal and its tasks.
pub struct Stage {
    name: &'static str,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Result<()>>>,
}

impl Stage {
    pub fn new(
        name: &'static str,
        stop: watch::Sender<bool>,
        tasks: Vec<JoinHandle<Result<()>>>,
    ) -> Self {
        Stage { name, stop, tasks }
    }

    /// Signal the stage and wait for its tasks until `deadline`. Returns the first
    /// error, or a timeout naming the stage.
    async fn stop(self, deadline: Instant, timeout: Duration) -> Result<()> {
        let _ = self.stop.send(true);
        let mut first_err = None;
        for t in self.tasks {
            let outcome = match tokio::time::timeout_at(deadline, t).await {
                Ok(joined) => joined
                    .map_err(|e| Error::task(self.name, e))
                    .and_then(|r| r),
                Err(_) => {
                    return Err(Error::Failed {
                        context: format!("shutdown took longer than {timeout:?}"),
                        source: format!("the {} had not finished", self.name).into(),
                    })
                }
            };
            if let Err(e) = outcome {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// The stages, the analytics stage's spool signal, and the sink to close after them.
pub struct Shutdown {
    pub receivers: Stage,
    pub telemetry: Stage,
    pub analytics: Stage,
    /// Tells the analytics stage to stop analysing and spool the rest.
    pub spool: watch::Sender<bool>,
    /// Stops the helpers (health monitor, digests).
    pub helpers: watch::Sender<bool>,
    pub sink: Arc<dyn Sink>,
    pub health: Arc<Health>,
    pub timeout: Duration,
}

impl Shutdown {
    /// Stop everything in order (see the module docs). Returns the first error.
    pub async fn run(self) -> Result<()> {
        let deadline = Instant::now() + self.timeout;
        self.health.stopping();
        let mut first_err = self.receivers.stop(deadline, self.timeout).await.err();
        let _ = self.spool.send(true);
        for stage in [self.telemetry, self.analytics] {
            if let Err(e) = stage.stop(deadline, self.timeout).await {
                first_err.get_or_insert(e);
            }
        }
        let _ = self.helpers.send(true);
        let left = deadline.saturating_duration_since(Instant::now());
        self.sink.close(left.min(SINK_DRAIN)).await;
        match &first_err {
            None => tracing::info!("pipeline stopped"),
            Some(e) => tracing::error!("pipeline stopped with an error: {e}"),
        }
        first_err.map_or(Ok(()), Err)
    }
}
