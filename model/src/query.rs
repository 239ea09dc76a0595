//! What the API asks of a telemetry store — filters, groupings and the rows that come
//! back — shared by the embedded store and the Elastic bridge so both answer the same.

use serde::Serialize;
use std::collections::BTreeMap;

/// The instances a read covers: every one, or only those listed (a request's
/// `instance` narrowed by the caller's token scope). `Only` of an empty list covers
/// none: a scoped token asking for an instance outside its scope sees nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Instances {
    #[default]
    All,
    Only(Vec<String>),
}

impl Instances {
    /// Just `name`.
    pub fn one(name: impl Into<String>) -> Self {
        Instances::Only(vec![name.into()])
    }

    /// `Some(name)`: just it; `None`: all.
    pub fn from_option(name: Option<String>) -> Self {
        name.map_or(Instances::All, Instances::one)
    }

    /// Whether `instance` is covered.
    pub fn allows(&self, instance: &str) -> bool {
        match self {
            Instances::All => true,
            Instances::Only(list) => list.iter().any(|i| i == instance),
        }
    }

    /// The instances listed, `None` for all.
    pub fn only(&self) -> Option<&[String]> {
        match self {
            Instances::All => None,
            Instances::Only(list) => Some(list),
        }
    }

    /// Covers no instance at all (a read of it is empty without asking the store).
    pub fn is_empty(&self) -> bool {
        matches!(self, Instances::Only(list) if list.is_empty())
    }

    /// Those of `self` that `scope` also covers.
    pub fn within(self, scope: &Instances) -> Instances {
        match (self, scope) {
            (me, Instances::All) => me,
            (Instances::All, s) => s.clone(),
            (Instances::Only(mine), s) => {
                Instances::Only(mine.into_iter().filter(|i| s.allows(i)).collect())
            }
        }
    }
}

/// Which points a query wants.
#[derive(Debug, Clone, Default)]
pub struct MetricFilter {
    pub series_id: Option<u64>,
    pub metric: Option<String>,
    pub instances: Instances,
    pub from_ns: Option<i64>,
    pub to_ns: Option<i64>,
    pub limit: Option<usize>,
    /// Continue after this point (a page's `next_cursor`), in the order asked for.
    pub after: Option<PointCursor>,
    /// Newest first (by time, then series id, both descending) instead of oldest first.
    pub newest_first: bool,
}

/// Where a page of points ended: its last point's time and series id (points are ordered
/// by time, then series id). Opaque text on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PointCursor {
    pub time_ns: i64,
    pub series_id: u64,
}

impl PointCursor {
    /// The cursor after `s`.
    pub fn after(s: &crate::Sample) -> Self {
        PointCursor {
            time_ns: s.time_ns,
            series_id: s.key.id(),
        }
    }

    /// `<time ns>.<series id, 16 hex digits>`.
    pub fn encode(&self) -> String {
        format!("{}.{:016x}", self.time_ns, self.series_id)
    }

    /// The cursor `encode` wrote, or `None` for anything else.
    pub fn decode(s: &str) -> Option<Self> {
        let (ns, id) = s.split_once('.')?;
        Some(PointCursor {
            time_ns: ns.parse().ok()?,
            series_id: u64::from_str_radix(id, 16).ok()?,
        })
    }

    /// Whether a point at `time_ns` on `series_id` comes after the cursor in the order
    /// given (`newest_first` or oldest first).
    pub fn precedes(&self, time_ns: i64, series_id: u64, newest_first: bool) -> bool {
        let key = (time_ns, series_id);
        let at = (self.time_ns, self.series_id);
        if newest_first {
            key < at
        } else {
            key > at
        }
    }
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

/// The resolution a store served a range at: the points as sent, or the embedded
/// store's rollups (per minute, per hour) where it answers from them.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Resolution {
    #[default]
    #[serde(rename = "raw")]
    Raw,
    #[serde(rename = "1m")]
    Minute,
    #[serde(rename = "1h")]
    Hour,
}

impl Resolution {
    /// The width of one bucket (0 for raw points).
    pub fn width_ns(self) -> i64 {
        match self {
            Resolution::Raw => 0,
            Resolution::Minute => 60_000_000_000,
            Resolution::Hour => 3_600_000_000_000,
        }
    }
}

/// A stretch of a query's range and the resolution it was served at.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Served {
    pub resolution: Resolution,
    pub from: chrono::DateTime<chrono::Utc>,
    pub to: chrono::DateTime<chrono::Utc>,
}

/// One window of one group.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AggregateRow {
    pub window_start: chrono::DateTime<chrono::Utc>,
    pub group: String,
    /// The coarsest resolution the window was computed from.
    pub resolution: Resolution,
    pub points: u64,
    pub avg: f64,
    pub min: f64,
    pub max: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

/// What one table of the embedded store holds on disk (`sqlvigil store stats`,
/// `/metrics`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TableStorage {
    pub table: String,
    pub files: u64,
    pub bytes: u64,
    /// Rows as written (a point redelivered after a crash counts until compaction).
    pub rows: u64,
    pub oldest: Option<chrono::DateTime<chrono::Utc>>,
    pub newest: Option<chrono::DateTime<chrono::Utc>>,
    /// Small files not compacted yet: the compaction backlog.
    pub uncompacted_files: u64,
    /// Series catalogued (metrics only).
    pub series: u64,
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
    pub instances: Instances,
    pub rule: Option<String>,
    /// `critical`, `warning` or `info`.
    pub severity: Option<String>,
    /// Opened at or after this time.
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    /// Opened at or before this time.
    pub to: Option<chrono::DateTime<chrono::Utc>>,
    pub limit: Option<usize>,
    /// Continue after this anomaly (a page's `next_cursor`): keyset paging, so anomalies
    /// opening meanwhile never shift a page.
    pub after: Option<AnomalyCursor>,
}

/// Where a page of anomalies ended: the last one's opening time and id (the list is
/// ordered by opening time, newest first, then id). Opaque text on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnomalyCursor {
    pub opened_at: chrono::DateTime<chrono::Utc>,
    pub id: String,
}

impl AnomalyCursor {
    /// The cursor after `a`.
    pub fn after(a: &crate::Anomaly) -> Self {
        AnomalyCursor {
            opened_at: a.opened_at,
            id: a.id.clone(),
        }
    }

    /// `<opened_at ns>.<id>`, URL-safe (ids are `rule:hex-ns`).
    pub fn encode(&self) -> String {
        let ns = self.opened_at.timestamp_nanos_opt().unwrap_or(i64::MAX);
        format!("{ns}.{}", self.id)
    }

    /// The cursor `encode` wrote, or `None` for anything else.
    pub fn decode(s: &str) -> Option<Self> {
        let (ns, id) = s.split_once('.')?;
        let ns: i64 = ns.parse().ok()?;
        (!id.is_empty()).then(|| AnomalyCursor {
            opened_at: crate::ns_to_datetime(ns),
            id: id.to_string(),
        })
    }
}

/// A time range in nanoseconds since the epoch (either end open), both ends inclusive.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Range {
    pub from_ns: Option<i64>,
    pub to_ns: Option<i64>,
}

impl Range {
    /// From `from_ns` to `to_ns`, both included.
    pub fn between(from_ns: i64, to_ns: i64) -> Range {
        Range {
            from_ns: Some(from_ns),
            to_ns: Some(to_ns),
        }
    }

    pub fn contains(&self, ns: i64) -> bool {
        self.from_ns.is_none_or(|f| ns >= f) && self.to_ns.is_none_or(|t| ns <= t)
    }
}

/// A stored document a backend could not read, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Malformed {
    pub index: String,
    pub id: String,
    pub reason: String,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}: {}", self.index, self.id, self.reason)
    }
}

/// Rows of an answer plus what could not be read.
#[derive(Debug, Clone, Serialize)]
pub struct Answer<T> {
    pub rows: Vec<T>,
    /// Documents that could not be normalized (bounded; `malformed_count` has them all).
    pub malformed: Vec<Malformed>,
    pub malformed_count: usize,
    /// The scan stopped at its document limit before the range was exhausted.
    pub truncated: bool,
}

/// How many malformed documents an [`Answer`] lists (it counts them all).
pub const MALFORMED_SHOWN: usize = 20;

impl<T> Answer<T> {
    pub fn new(rows: Vec<T>, malformed: Vec<Malformed>, truncated: bool) -> Self {
        let malformed_count = malformed.len();
        let malformed = malformed.into_iter().take(MALFORMED_SHOWN).collect();
        Answer {
            rows,
            malformed,
            malformed_count,
            truncated,
        }
    }
}

/// Summary of one series over a window (digests and time-range analyses).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct MetricStat {
    pub metric: String,
    /// The point attributes plus the database under [`DATABASE_ATTR`](crate::DATABASE_ATTR).
    pub attributes: BTreeMap<String, String>,
    pub unit: String,
    pub avg: f64,
    pub min: f64,
    pub max: f64,
    pub points: u64,
}

/// Builds [`MetricStat`]s from points or from partial aggregates (a backend that can
/// aggregate where the data is adds groups; one that scans adds points): the one
/// definition of per-series statistics, whichever backend feeds it.
#[derive(Debug, Default)]
pub struct MetricStats {
    by_series: BTreeMap<(String, BTreeMap<String, String>), MetricStat>,
}

impl MetricStats {
    /// Fold in a partial aggregate of one series: counts add, extremes combine, the mean
    /// is weighted.
    pub fn add(&mut self, part: MetricStat) {
        let key = (part.metric.clone(), part.attributes.clone());
        match self.by_series.get_mut(&key) {
            None => {
                self.by_series.insert(key, part);
            }
            Some(s) => {
                let n = (s.points + part.points).max(1) as f64;
                s.avg = (s.avg * s.points as f64 + part.avg * part.points as f64) / n;
                s.min = s.min.min(part.min);
                s.max = s.max.max(part.max);
                s.points += part.points;
            }
        }
    }

    /// Fold in one point. Only gauges (and derived rates) count: raw cumulative counters
    /// say little as averages.
    pub fn add_sample(&mut self, s: &crate::Sample) {
        if s.kind != crate::MetricKind::Gauge {
            return;
        }
        self.add(MetricStat {
            metric: s.key.metric.to_string(),
            attributes: s.key.attributes_with_database(),
            unit: s.unit.to_string(),
            avg: s.value,
            min: s.value,
            max: s.value,
            points: 1,
        });
    }

    /// The statistics, by metric then attributes.
    pub fn finish(self) -> Vec<MetricStat> {
        self.by_series.into_values().collect()
    }
}

#[cfg(test)]
mod instances_tests {
    use super::Instances;

    #[test]
    fn a_request_is_narrowed_by_the_scope() {
        let scope = Instances::Only(vec!["a".into(), "b".into()]);
        assert_eq!(Instances::All.within(&scope), scope);
        assert_eq!(Instances::one("a").within(&scope), Instances::one("a"));
        let outside = Instances::one("c").within(&scope);
        assert!(outside.is_empty() && !outside.allows("c"));
        assert_eq!(
            Instances::one("c").within(&Instances::All),
            Instances::one("c")
        );
        assert!(Instances::All.allows("anything"));
    }
}
