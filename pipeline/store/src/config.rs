//! `store:` — which backend keeps telemetry, where local files live, how often the
//! workers flush.

use crate::writer::Store;
use serde::{Deserialize, Serialize};
use sqlvigil_core::{async_trait, Build, BuildContext, Error, Result};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where telemetry, anomalies and insights are kept.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Parquet files and SQLite under `data_dir` (the embedded default).
    #[default]
    Embedded,
    /// Elasticsearch (the `elastic:` section); the API reads it back through the bridge.
    Elastic,
}

/// The store: the backend, and `data_dir` — Parquet files and the SQLite database of
/// state (tokens, checkpoints; anomalies and insights too) and the Elastic disk queue.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub backend: Backend,
    pub data_dir: PathBuf,
    /// Buffered rows are written to a Parquet file at least this often.
    #[serde(with = "sqlvigil_model::duration")]
    pub flush_interval: Duration,
    /// …or as soon as this many rows are buffered.
    pub flush_rows: usize,
    /// Background compaction of the embedded store's files.
    pub compaction: CompactionConfig,
    /// How long anomalies and insights are kept (both backends keep them in SQLite).
    pub retention: RetentionConfig,
}

/// `store.retention:` — telemetry and the ledger's records, by age.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Raw points, log records and events of the embedded store are deleted once their
    /// hour ended longer ago than this (metrics stay as rollups; see [`crate::retention`]).
    #[serde(with = "sqlvigil_model::duration")]
    pub raw: Duration,
    /// Per-minute and per-hour rollups are deleted once older than this.
    #[serde(with = "sqlvigil_model::duration")]
    pub rollup: Duration,
    /// Resolved anomalies last updated longer ago than this are deleted (open ones stay).
    #[serde(with = "sqlvigil_model::duration")]
    pub anomalies: Duration,
    /// Insights and records of failed analyses older than this are deleted.
    #[serde(with = "sqlvigil_model::duration")]
    pub insights: Duration,
    /// How often the retention is applied.
    #[serde(with = "sqlvigil_model::duration")]
    pub interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        let days = |n: u64| Duration::from_secs(n * 86_400);
        RetentionConfig {
            raw: days(7),
            rollup: days(90),
            anomalies: days(90),
            insights: days(90),
            interval: Duration::from_secs(3_600),
        }
    }
}

/// `store.compaction:` — when an hour's files are merged (see [`crate::compact`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CompactionConfig {
    /// Compact in the background while `sqlvigil run` runs (`sqlvigil store compact`
    /// does it by hand).
    pub enabled: bool,
    /// How often to look for hours to compact.
    #[serde(with = "sqlvigil_model::duration")]
    pub interval: Duration,
    /// An hour is compacted once it ended this long ago; data arriving for it later is
    /// merged by a later pass.
    #[serde(with = "sqlvigil_model::duration")]
    pub settle: Duration,
    /// Share of one core compaction may take (it rests between hours), 0 < share ≤ 1.
    pub cpu_share: f64,
    /// Replaced files are deleted this long after the swap (queries that listed them
    /// are done by then).
    #[serde(with = "sqlvigil_model::duration")]
    pub grace: Duration,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            enabled: true,
            interval: Duration::from_secs(300),
            settle: Duration::from_secs(600),
            cpu_share: 0.25,
            grace: Duration::from_secs(60),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: Backend::Embedded,
            data_dir: PathBuf::from("sqlvigil-data"),
            flush_interval: Duration::from_secs(2),
            flush_rows: 100_000,
            compaction: CompactionConfig::default(),
            retention: RetentionConfig::default(),
        }
    }
}

#[async_trait]
impl Build for StoreConfig {
    /// The embedded Parquet store.
    type Output = Arc<Store>;

    fn validate(&self) -> Result<()> {
        if self.flush_rows == 0 {
            return Err(Error::Config(
                "store.flush_rows must be greater than 0".into(),
            ));
        }
        let c = &self.compaction;
        if !(c.cpu_share > 0.0 && c.cpu_share <= 1.0) {
            return Err(Error::Config(format!(
                "store.compaction.cpu_share must be above 0 and at most 1, not {}",
                c.cpu_share
            )));
        }
        for (field, d) in [
            ("store.compaction.interval", c.interval),
            ("store.retention.interval", self.retention.interval),
            ("store.retention.raw", self.retention.raw),
            ("store.retention.rollup", self.retention.rollup),
        ] {
            if d.is_zero() {
                return Err(Error::Config(format!("{field} must be greater than 0")));
            }
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(Error::Config("store.data_dir must not be empty".into()));
        }
        Ok(())
    }

    async fn build(&self, ctx: &BuildContext) -> Result<Arc<Store>> {
        Ok(Arc::new(Store::open(&ctx.data_dir, ctx.stats.clone())?))
    }
}
