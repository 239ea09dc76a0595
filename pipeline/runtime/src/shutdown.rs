//! Shutdown in data-flow order: stop accepting (receivers), drain the telemetry topics
//! (flush, checkpoint, acknowledge), then drain the anomalies topic (analytics), and
//! last give the sink's background delivery a grace period — so everything a client was
//! told is accepted is stored.

use sqlvigil_core::{Result, Sink};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// At shutdown, how long the sink's background delivery (the Elastic queue) may take to
/// empty; the rest stays on disk for the next start.
const SINK_DRAIN: Duration = Duration::from_secs(5);

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
}

/// The stages in the order they stop, and the sink to close after them.
pub struct Shutdown {
    pub stages: Vec<Stage>,
    pub sink: Arc<dyn Sink>,
}

impl Shutdown {
    /// Stop each stage and wait for its tasks before the next. Returns the first error.
    pub async fn run(self) -> Result<()> {
        let mut first_err = None;
        for stage in self.stages {
            let _ = stage.stop.send(true);
            for t in stage.tasks {
                let outcome = t
                    .await
                    .map_err(|e| sqlvigil_core::Error::task(stage.name, e))
                    .and_then(|r| r);
                if let Err(e) = outcome {
                    first_err.get_or_insert(e);
                }
            }
        }
        self.sink.close(SINK_DRAIN).await;
        tracing::info!("pipeline stopped");
        first_err.map_or(Ok(()), Err)
    }
}
