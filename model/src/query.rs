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
    /// One group: the whole fleet.
    All,
}

impl GroupBy {
    pub fn parse(s: &str) -> Option<GroupBy> {
        Some(match s {
            "series" => GroupBy::Series,
            "instance" => GroupBy::Instance,
            "database" => GroupBy::Database,
            "host" => GroupBy::Host,
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
