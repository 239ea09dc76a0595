//! Metric points and the identity of the series they belong to.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::hash::Hasher;
use std::sync::atomic::{AtomicU64, Ordering};

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
///
/// The fields are public for reading; build keys with [`SeriesKey::new`],
/// [`SeriesKey::from_parts`], [`SeriesKey::with_attr`] or [`SeriesKey::renamed`], and do
/// not change a key's fields once its [`id`](SeriesKey::id) was taken: the id is
/// remembered (debug builds check it against a fresh computation).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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
    #[serde(skip)]
    memo: IdMemo,
}

/// [`SeriesKey::id`] once computed (0: not yet). Every stage (rate, rules, windows, the
/// store) asks a point for its id, and hashing the key byte by byte each time was about
/// a tenth of the Kafka pipeline's CPU. Invisible to comparison and hashing; a clone
/// starts empty, so a clone that is then changed never carries a stale id.
#[derive(Default)]
struct IdMemo(AtomicU64);

impl Clone for IdMemo {
    fn clone(&self) -> Self {
        IdMemo::default()
    }
}

impl PartialEq for IdMemo {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for IdMemo {}

impl PartialOrd for IdMemo {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for IdMemo {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl std::hash::Hash for IdMemo {
    fn hash<H: Hasher>(&self, _: &mut H) {}
}

impl std::fmt::Debug for SeriesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeriesKey")
            .field("instance", &self.instance)
            .field("host", &self.host)
            .field("database", &self.database)
            .field("metric", &self.metric)
            .field("attributes", &self.attributes)
            .finish()
    }
}

impl SeriesKey {
    pub fn new(instance: &str, host: &str, database: &str, metric: &str) -> Self {
        Self::from_parts(
            instance.to_string(),
            host.to_string(),
            database.to_string(),
            metric.to_string(),
            BTreeMap::new(),
        )
    }

    /// A key from owned parts (no copies).
    pub fn from_parts(
        instance: String,
        host: String,
        database: String,
        metric: String,
        attributes: BTreeMap<String, String>,
    ) -> Self {
        SeriesKey {
            instance,
            host,
            database,
            metric,
            attributes,
            memo: IdMemo::default(),
        }
    }

    pub fn with_attr(mut self, key: &str, value: &str) -> Self {
        self.attributes.insert(key.to_string(), value.to_string());
        self.memo = IdMemo::default();
        self
    }

    /// Stable 64-bit id (FNV-1a over the canonical fields), the same in every process
    /// and release, so it can name a series in URLs, Parquet files and checkpoints.
    pub fn id(&self) -> u64 {
        let memo = self.memo.0.load(Ordering::Relaxed);
        if memo == 0 {
            let id = self.compute_id();
            self.memo.0.store(id, Ordering::Relaxed);
            return id;
        }
        debug_assert_eq!(
            memo,
            self.compute_id(),
            "{self:?} was changed after its id was taken"
        );
        memo
    }

    fn compute_id(&self) -> u64 {
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
        Self::from_parts(
            self.instance.clone(),
            self.host.clone(),
            self.database.clone(),
            metric.to_string(),
            self.attributes.clone(),
        )
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
