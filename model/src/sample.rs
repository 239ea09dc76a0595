//! Metric points and the identity of the series they belong to.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::hash::Hasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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
/// The source fields and the metric name are shared (`Arc<str>`): every point of one
/// OTLP resource and metric points at the same strings instead of owning copies.
/// The fields are public for reading; build keys with [`SeriesKey::new`],
/// [`SeriesKey::from_parts`], [`SeriesKey::with_attr`] or [`SeriesKey::renamed`], and do
/// not change a key's fields once its [`id`](SeriesKey::id) was taken: the id is
/// remembered (debug builds check it against a fresh computation).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeriesKey {
    /// `sqlserver.instance.name` (falls back to `service.instance.id`, then `host.name`).
    pub instance: Arc<str>,
    /// `host.name` (or `server.address`).
    pub host: Arc<str>,
    /// `sqlserver.database.name`, empty for instance-wide metrics.
    pub database: Arc<str>,
    /// Metric name as the Collector's `sqlserver` receiver spells it.
    pub metric: Arc<str>,
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

/// The id hash state after a key's instance, host, database and metric, shared by
/// every key with those four (see [`SeriesKey::with_id_prefix`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdPrefix(u64);

impl IdPrefix {
    pub fn new(instance: &str, host: &str, database: &str, metric: &str) -> Self {
        let mut h = fnv::FnvHasher::default();
        for part in [instance, host, database, metric] {
            h.write(part.as_bytes());
            h.write_u8(0xff);
        }
        IdPrefix(h.finish())
    }
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

/// The attribute naming the database of per-database series wherever only attributes
/// are shown (the analyzer's context, digests): the receiver's own resource attribute.
pub const DATABASE_ATTR: &str = "sqlserver.database.name";

/// `attributes` plus `database` (when set) under [`DATABASE_ATTR`], so per-database
/// series that share a metric and attributes stay apart.
pub fn with_database(
    mut attributes: BTreeMap<String, String>,
    database: &str,
) -> BTreeMap<String, String> {
    if !database.is_empty() {
        attributes.insert(DATABASE_ATTR.into(), database.into());
    }
    attributes
}

impl SeriesKey {
    /// The point attributes plus the database (see [`with_database`]).
    pub fn attributes_with_database(&self) -> BTreeMap<String, String> {
        with_database(self.attributes.clone(), &self.database)
    }

    pub fn new(instance: &str, host: &str, database: &str, metric: &str) -> Self {
        Self::from_parts(instance, host, database, metric, BTreeMap::new())
    }

    /// A key from its parts (shared strings are not copied).
    pub fn from_parts(
        instance: impl Into<Arc<str>>,
        host: impl Into<Arc<str>>,
        database: impl Into<Arc<str>>,
        metric: impl Into<Arc<str>>,
        attributes: BTreeMap<String, String>,
    ) -> Self {
        SeriesKey {
            instance: instance.into(),
            host: host.into(),
            database: database.into(),
            metric: metric.into(),
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
        let head = IdPrefix::new(&self.instance, &self.host, &self.database, &self.metric);
        self.id_after(head)
    }

    /// The id, hashing only the attributes after `head`.
    fn id_after(&self, head: IdPrefix) -> u64 {
        let mut h = fnv::FnvHasher::with_key(head.0);
        for (k, v) in &self.attributes {
            h.write(k.as_bytes());
            h.write_u8(b'=');
            h.write(v.as_bytes());
            h.write_u8(0xfe);
        }
        h.finish()
    }

    /// This key with its id taken from `head`, the [`IdPrefix`] of its own instance,
    /// host, database and metric: a decoder building every point of one metric hashes
    /// those once, not once per point.
    pub fn with_id_prefix(self, head: IdPrefix) -> Self {
        debug_assert_eq!(
            head.0,
            IdPrefix::new(&self.instance, &self.host, &self.database, &self.metric).0,
            "the id prefix of another key"
        );
        let id = self.id_after(head);
        self.memo.0.store(id, Ordering::Relaxed);
        self
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
            metric,
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
    pub unit: Arc<str>,
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
            unit: unit.into(),
            histogram: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_key() -> SeriesKey {
        SeriesKey::new("sql1", "db-host-1", "", "sqlserver.os.wait.duration")
            .with_attr("wait.type", "LCK_M_X")
            .with_attr("wait.category", "Lock")
    }

    /// FNV-1a 64 written out, independent of the `fnv` crate and of `SeriesKey`.
    fn fnv1a(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    #[test]
    fn ids_are_fnv1a_of_the_canonical_fields() {
        // The id names series in URLs, Parquet files and checkpoints: it must not change.
        let canonical = b"sql1\xffdb-host-1\xff\xffsqlserver.os.wait.duration\xff\
            wait.category=Lock\xfewait.type=LCK_M_X\xfe";
        assert_eq!(wait_key().id(), fnv1a(canonical));
        assert_eq!(wait_key().id_hex(), format!("{:016x}", fnv1a(canonical)));
    }

    #[test]
    fn a_remembered_id_never_follows_a_clone_that_changes() {
        let a = wait_key();
        let first = a.id();
        let mut b = a.clone();
        b.metric = "sqlserver.cpu.utilization".into();
        assert_ne!(b.id(), first);
        assert_eq!(a.id(), first);
        assert_ne!(
            a.clone().with_attr("wait.type", "PAGEIOLATCH_SH").id(),
            first
        );
        assert_eq!(a.renamed("sqlserver.os.wait.duration").id(), first);
    }

    #[test]
    fn a_prefix_hashed_once_gives_the_same_ids() {
        let head = IdPrefix::new("sql1", "db-host-1", "", "sqlserver.os.wait.duration");
        let fresh = wait_key();
        let seeded = wait_key().with_id_prefix(head);
        assert_eq!(seeded.id(), fresh.id());
        let bare = SeriesKey::new("sql1", "db-host-1", "", "sqlserver.os.wait.duration");
        assert_eq!(bare.clone().with_id_prefix(head).id(), bare.id());
    }
}
