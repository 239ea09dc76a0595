//! `health:` — when a part counts as stalled or over its backlog, and the monitor that
//! keeps each part's backlog current from the bus and the sink (the parts report their
//! own state and progress; see `sqlvigil_core::health`).

use serde::{Deserialize, Serialize};
use sqlvigil_core::{Bus, Component, Error, Result, Sink, Stats};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often backlogs are measured.
const MONITOR_EVERY: Duration = Duration::from_secs(1);

/// Limits behind `/ready` and `/health`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// A part with input waiting and no progress for this long is stalled: `/health`
    /// and `/ready` answer 503 naming it, and the receiver refuses data it would feed.
    #[serde(with = "sqlvigil_model::duration")]
    pub stall_after: Duration,
    /// Unprocessed records on a telemetry topic above which the pipeline is not ready
    /// (default: 90 % of `bus.capacity` on the in-process bus, 1,000,000 on Kafka).
    pub bus_lag_limit: Option<u64>,
    /// Anomaly events waiting for the analytics stage above which it is not ready.
    pub analytics_backlog_limit: u64,
    /// Rows buffered in the sink, not yet flushed, above which it is not ready.
    pub sink_backlog_limit: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            stall_after: Duration::from_secs(60),
            bus_lag_limit: None,
            analytics_backlog_limit: 10_000,
            sink_backlog_limit: 5_000_000,
        }
    }
}

impl HealthConfig {
    pub fn validate(&self) -> Result<()> {
        if self.stall_after < Duration::from_secs(1) {
            return Err(Error::Config(
                "health.stall_after must be at least 1s".into(),
            ));
        }
        if self.analytics_backlog_limit == 0 || self.sink_backlog_limit == 0 {
            return Err(Error::Config(
                "health.analytics_backlog_limit and health.sink_backlog_limit must be greater than 0"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The telemetry topics' lag limit for a bus of `capacity` (None: Kafka).
    pub fn lag_limit(&self, capacity: Option<usize>) -> u64 {
        self.bus_lag_limit
            .unwrap_or_else(|| capacity.map_or(1_000_000, |c| c as u64 * 9 / 10))
    }
}

/// A part whose backlog is a consumer group's unacknowledged records on a topic.
pub struct Lag {
    pub component: Arc<Component>,
    pub topic: String,
    pub group: &'static str,
}

/// Measure backlogs every second until `stop`: each consumer's lag on its topic, the
/// sink's buffered rows; the analytics backlog also as a gauge in `/metrics`.
pub async fn monitor(
    bus: Arc<dyn Bus>,
    lags: Vec<Lag>,
    sink: (Arc<dyn Sink>, Arc<Component>),
    analytics: Arc<Component>,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        for l in &lags {
            l.component.set_backlog(bus.pending(&l.topic, l.group));
        }
        sink.1.set_backlog(sink.0.buffered_rows() as u64);
        stats
            .analytics_backlog
            .store(analytics.backlog(), Ordering::Relaxed);
        tokio::select! {
            _ = tokio::time::sleep(MONITOR_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
