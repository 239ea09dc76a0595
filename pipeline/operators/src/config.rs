//! `operators:` — micro-batching of the operator stage, baselines, lateness, state
//! expiry, checkpoints and event-time windows.

use crate::baseline::BaselineConfig;
use crate::rate::classify::RateMode;
use crate::window::WindowConfig;
use serde::{Deserialize, Serialize};
use sqlvigil_core::{Error, Result};
use std::collections::BTreeMap;
use std::time::Duration;

/// How far behind the watermark a point may arrive and still be judged.
pub const DEFAULT_ALLOWED_LATENESS: Duration = Duration::from_secs(300);

/// Micro-batching of the operator stage.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OperatorsConfig {
    /// Longest wait to fill a micro-batch.
    #[serde(with = "sqlvigil_model::duration")]
    pub batch_interval: Duration,
    /// Most bus records in one micro-batch.
    pub batch_records: usize,
    /// Baseline estimators of deviation rules.
    pub baseline: BaselineConfig,
    /// Points further behind the newest event time than this are stored and counted
    /// (`sqlvigil_late_points`) but not judged by the rules.
    #[serde(with = "sqlvigil_model::duration")]
    pub allowed_lateness: Duration,
    /// Operator state of series silent this long (event time) is dropped, unless an
    /// anomaly is open on them.
    #[serde(with = "sqlvigil_model::duration")]
    pub idle_series_after: Duration,
    /// How often operator state is snapshotted per partition (and bus offsets committed
    /// on a durable bus): a crash or a partition handover replays at most this much.
    #[serde(with = "sqlvigil_model::duration")]
    pub checkpoint_interval: Duration,
    /// Event-time windows (tumbling or sliding) that turn chosen metrics into aggregate
    /// series (`<metric>.<stat>_<name>`); none by default.
    pub windows: Vec<WindowConfig>,
    /// How the receiver's `…/s` gauges are read, per metric name: `auto` (the default:
    /// decided per series from what it does: a running total from a direct connection
    /// is differentiated, a Windows perf-counter rate is passed through), `counter` or
    /// `gauge` to force it. Naming any other gauge here makes it a rate too.
    pub rates: BTreeMap<String, RateMode>,
    /// Open-rate limit per rule and instance: past `max_opens` within `per`, anomalies
    /// are folded into one storm anomaly carrying their count (a rule's own `storm`
    /// overrides it).
    pub storm: crate::rules::StormConfig,
}

impl Default for OperatorsConfig {
    fn default() -> Self {
        OperatorsConfig {
            batch_interval: Duration::from_secs(1),
            batch_records: 512,
            baseline: BaselineConfig::default(),
            allowed_lateness: DEFAULT_ALLOWED_LATENESS,
            idle_series_after: crate::DEFAULT_IDLE_AFTER,
            checkpoint_interval: Duration::from_secs(10),
            windows: Vec::new(),
            rates: BTreeMap::new(),
            storm: crate::rules::StormConfig::default(),
        }
    }
}

impl OperatorsConfig {
    pub fn validate(&self) -> Result<()> {
        if self.batch_records == 0 {
            return Err(Error::Config(
                "operators.batch_records must be greater than 0".into(),
            ));
        }
        self.baseline
            .validate()
            .map_err(|e| Error::Config(format!("operators.{e}")))?;
        for w in &self.windows {
            w.validate()?;
        }
        self.storm
            .validate()
            .map_err(|e| Error::Config(format!("operators.{e}")))?;
        if let Some(name) = self.rates.keys().find(|m| m.trim().is_empty()) {
            return Err(Error::Config(format!(
                "operators.rates: metric name `{name}` must not be empty"
            )));
        }
        Ok(())
    }
}
