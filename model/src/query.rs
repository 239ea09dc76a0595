//! What the API asks of a telemetry store — filters, groupings and the rows that come
//! back — shared by the embedded store and the Elastic bridge so both answer the same.

use serde::Serialize;
use std::collections::BTreeMap;

/// Which points a query wants.
#[derive(Debug, Clone, Default)]
pub struct MetricFilter {
    pub series_id: Option<u64>,
    pub metric: Option<String>,
    pub instance: Option<String>,
    pub from_ns: Option<i64>,
    pub to_ns: Option<i64>,
    pub limit: Option<usize>,
}

/// What windowed aggregates are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Series,
    Instance,
    Database,
    Host,
    /// The `wait.category` point attribute (wait metrics: CPU, Lock, Buffer IO, …).
    WaitCategory,
    /// The `wait.type` point attribute (`LCK_M_X`, `PAGEIOLATCH_SH`, …).
    WaitType,
    /// One group: the whole fleet.
    All,
}

impl GroupBy {
    /// The names [`GroupBy::parse`] accepts.
    pub const NAMES: &'static str =
        "series, instance, database, host, wait_category, wait_type, all";

    /// The point attribute this groups by, if it is one.
    pub fn attribute(self) -> Option<&'static str> {
        match self {
            GroupBy::WaitCategory => Some("wait.category"),
            GroupBy::WaitType => Some("wait.type"),
            _ => None,
        }
    }

    pub fn parse(s: &str) -> Option<GroupBy> {
        Some(match s {
            "series" => GroupBy::Series,
            "instance" => GroupBy::Instance,
            "database" => GroupBy::Database,
            "host" => GroupBy::Host,
            "wait_category" => GroupBy::WaitCategory,
            "wait_type" => GroupBy::WaitType,
            "all" => GroupBy::All,
            _ => return None,
        })
    }
}

/// One window of one group.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AggregateRow {
    pub window_start: chrono::DateTime<chrono::Utc>,
    pub group: String,
    pub points: u64,
    pub avg: f64,
    pub min: f64,
    pub max: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

/// One series as listed by the API.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SeriesInfo {
    pub id: String,
    pub instance: String,
    pub host: String,
    pub database: String,
    pub metric: String,
    pub attributes: BTreeMap<String, String>,
    pub unit: String,
    pub kind: String,
    pub points: u64,
    pub last_time: chrono::DateTime<chrono::Utc>,
}

/// Which anomalies to list.
#[derive(Debug, Clone, Default)]
pub struct AnomalyFilter {
    pub state: Option<String>,
    pub instance: Option<String>,
    pub rule: Option<String>,
    pub limit: Option<usize>,
}
