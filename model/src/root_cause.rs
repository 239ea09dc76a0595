//! The root-cause chain of an anomaly (`GET /api/v1/anomalies/{id}/root-cause`): the
//! anomaly → the wait categories that moved most against their baseline in its window
//! → the top queries of the window by the resource that moved → the blocking head, if
//! any → related anomalies on the same instance. Each link carries its numbers and the
//! series to chart it.

use crate::{Anomaly, BlockingChain, TopQuery};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What to ask `/api/v1/metrics` or `/api/v1/aggregates` to chart a link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChartRef {
    pub metric: String,
    pub instance: String,
    /// An attribute the chart is narrowed to or grouped by (`wait.type` …), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series_id: Option<String>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// A wait category's waiting in the window against the hour before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitShift {
    pub wait_category: String,
    /// Seconds waited per second, on average, in the window and before it.
    pub window: f64,
    pub baseline: f64,
    /// `window - baseline`.
    pub increase: f64,
    /// `window / baseline` (`None` when nothing was waited before).
    pub ratio: Option<f64>,
    /// The wait types that moved most within the category, most first.
    pub wait_types: Vec<String>,
    pub chart: ChartRef,
}

/// The resource the window's queries are ranked by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    Cpu,
    Reads,
    Duration,
}

/// A top query of the window and its share of the resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryShare {
    pub query: TopQuery,
    /// Of the window's total of the resource across its top queries, 0–1.
    pub share: f64,
}

/// The chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootCause {
    pub anomaly: Anomaly,
    /// The anomaly's own series.
    pub chart: ChartRef,
    /// The window looked at (the anomaly's, with a lead-in) and the baseline before it.
    pub window: (DateTime<Utc>, DateTime<Utc>),
    pub baseline: (DateTime<Utc>, DateTime<Utc>),
    /// Most increased first.
    pub waits: Vec<WaitShift>,
    pub resource: Resource,
    pub top_queries: Vec<QueryShare>,
    /// The blocking chain with the most victims in the window, if any.
    pub blocking_head: Option<BlockingChain>,
    /// Other anomalies of the instance opened around the window, oldest first.
    pub related: Vec<Anomaly>,
    /// The chain in one line, e.g. `cpu_percent 97 (expected 85) ← CPU waits 4.1× ← query 0x… 62 % of CPU`.
    pub summary: String,
    /// Where each part came from: `otlp` (the stored telemetry) or `live` (the live
    /// monitor's DMV snapshot), and what was missing.
    pub sources: Vec<String>,
}
