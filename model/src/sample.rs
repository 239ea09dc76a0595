//! Metric points and the identity of the series they belong to.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::hash::Hasher;

/// How a point's value must be read, following the OTLP data point types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// An instantaneous value.
    Gauge,
    /// A running total since `start_time`; rates come from differences.
    CumulativeSum,
    /// The change since the previous point.
    DeltaSum,
    /// A histogram; `value` holds the sum and [`HistogramPoint`] the rest.
    Histogram,
}

impl MetricKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Gauge => "gauge",
            MetricKind::CumulativeSum => "cumulative_sum",
            MetricKind::DeltaSum => "delta_sum",
            MetricKind::Histogram => "histogram",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "gauge" => MetricKind::Gauge,
            "cumulative_sum" => MetricKind::CumulativeSum,
            "delta_sum" => MetricKind::DeltaSum,
            "histogram" => MetricKind::Histogram,
            _ => return None,
        })
    }
}

/// Identity of one time series: where it comes from, what it measures and the
/// point attributes (e.g. `wait.type`, `direction`) that split it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeriesKey {
    /// `sqlserver.instance.name` (falls back to `service.instance.id`, then `host.name`).
    pub instance: String,
    /// `host.name` (or `server.address`).
    pub host: String,
    /// `sqlserver.database.name`, empty for instance-wide metrics.
    pub database: String,
    /// Metric name as the Collector's `sqlserver` receiver spells it.
    pub metric: String,
    /// Point attributes, sorted by key.
    pub attributes: BTreeMap<String, String>,
}

impl SeriesKey {
    pub fn new(instance: &str, host: &str, database: &str, metric: &str) -> Self {
        SeriesKey {
            instance: instance.to_string(),
            host: host.to_string(),
            database: database.to_string(),
            metric: metric.to_string(),
            attributes: BTreeMap::new(),
        }
    }

    pub fn with_attr(mut self, key: &str, value: &str) -> Self {
        self.attributes.insert(key.to_string(), value.to_string());
        self
    }

    /// Stable 64-bit id (FNV-1a over the canonical fields), the same in every process
    /// and release, so it can name a series in URLs, Parquet files and checkpoints.
    pub fn id(&self) -> u64 {
        let mut h = fnv::FnvHasher::default();
        for part in [&self.instance, &self.host, &self.database, &self.metric] {
            h.write(part.as_bytes());
            h.write_u8(0xff);
        }
        for (k, v) in &self.attributes {
            h.write(k.as_bytes());
            h.write_u8(b'=');
            h.write(v.as_bytes());
            h.write_u8(0xfe);
        }
        h.finish()
    }

    /// The id as 16 lowercase hex digits, the form the API uses.
    pub fn id_hex(&self) -> String {
        format!("{:016x}", self.id())
    }

    /// The attributes as a compact JSON object, the form stored in Parquet.
    pub fn attributes_json(&self) -> String {
        serde_json::to_string(&self.attributes).unwrap_or_else(|_| "{}".to_string())
    }

    /// The same source and attributes under another metric name (used for derived series).
    pub fn renamed(&self, metric: &str) -> Self {
        SeriesKey {
            metric: metric.to_string(),
            ..self.clone()
        }
    }
}

/// Count, sum and buckets of one OTLP histogram point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistogramPoint {
    pub count: u64,
    pub bounds: Vec<f64>,
    pub bucket_counts: Vec<u64>,
}

/// One metric point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Event time, nanoseconds since the Unix epoch.
    pub time_ns: i64,
    /// Start of the accumulation window for sums (0 when unknown).
    pub start_time_ns: i64,
    pub key: SeriesKey,
    pub value: f64,
    pub kind: MetricKind,
    /// OTLP `is_monotonic` for sums; false otherwise.
    pub monotonic: bool,
    /// UCUM unit as sent (`%`, `s`, `{requests}/s`, …).
    pub unit: String,
    pub histogram: Option<HistogramPoint>,
}

impl Sample {
    /// A gauge point, the common case in tests and the simulator.
    pub fn gauge(key: SeriesKey, time_ns: i64, value: f64, unit: &str) -> Self {
        Sample {
            time_ns,
            start_time_ns: 0,
            key,
            value,
            kind: MetricKind::Gauge,
            monotonic: false,
            unit: unit.to_string(),
            histogram: None,
        }
    }
}
