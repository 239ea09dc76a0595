//! Search hits → typed models, whatever wrote the document.
//!
//! Elasticsearch holds SQL Server telemetry in three layouts ([`Layout`]):
//!
//! - **[`Layout::Sqlvigil`]** — our own Elastic sink (`mssql-metrics-<ns>`,
//!   `mssql-logs-<ns>`): one sample per document under `metric.{name,value,unit,kind,…}`,
//!   with `instance_name`/`host_name`/`database_name`, point `attributes`, and seed 002's
//!   flat copies (`cpu_percent`, `wait_type`, `wait_time_ms`, `physical_io_bytes`) for
//!   older readers. Logs carry `severity`, `severity_number`, `message`, `log_category`.
//! - **[`Layout::Flat`]** — seed 002's documents written by other tools: flat fields such
//!   as `cpu_percent`, `wait_type` + `wait_time_ms`, `physical_io_bytes`,
//!   `blocking_session_id`, `query_hash`, several per document.
//! - **[`Layout::OtelMapping`]** — the OpenTelemetry Collector's `elasticsearch` exporter
//!   with `mapping: mode: otel`: all metrics sharing timestamp and attributes in one
//!   document under `metrics`, the source under `resource.attributes`; logs with `body`,
//!   `severity_text`, and the `sqlserver` receiver's events (`db.server.top_query`,
//!   `db.server.query_sample`) as log records.
//!
//! [`hit`] turns one hit into a [`Document`] (samples, log records, blocking events,
//! top-query observations, and the top-level fields it did not understand in
//! [`Document::extra`]) or a [`Malformed`] naming the reason; it never panics. Keys may be
//! literal dotted keys (`{"wait.type": …}`) or expanded objects (`{"wait": {"type": …}}`)
//! — both read the same.
//!
//! ```
//! use sqlvigil_bridge::normalize::{self, Layout};
//! let hit = serde_json::json!({"_index": "mssql-metrics-default", "_id": "1", "_source": {
//!     "timestamp": "2026-11-29T18:00:00Z", "instance_name": "sql1", "cpu_percent": 91.5}});
//! let doc = normalize::hit(&hit).unwrap();
//! assert_eq!(doc.layout, Layout::Flat);
//! assert_eq!(&*doc.samples[0].key.metric, "sqlserver.cpu.utilization");
//! ```
//!
//! Choices worth knowing:
//! - A value that cannot be read (a metric value that is not a number, an unknown
//!   `metric.kind`, a bad `start_timestamp`, …) makes the **whole document** malformed,
//!   with a reason naming the field: a half-read document would silently drop data.
//! - OTel histogram values (`{"counts": […], "values": […]}`, bucket midpoints) become a
//!   histogram-kind sample whose value is the approximate sum Σ count·midpoint and whose
//!   [`HistogramPoint`] keeps only the count: the exporter does not keep the bucket
//!   bounds. Summary-like values (`{"sum", "value_count"}`) are read the same way.
//! - The receiver's events become [`TopQuery`]s and [`BlockingEvent`]s, not
//!   log records. Their counters are what the receiver reports: **deltas since its
//!   previous scrape**, in seconds for `sqlserver.total_worker_time`,
//!   `sqlserver.total_elapsed_time` and `sqlserver.wait_time` (converted to ms here);
//!   Flat documents carry cumulative `sys.dm_exec_query_stats` counters instead. Tell
//!   them apart with [`Document::layout`].
//! - In a Flat document that describes a session (`session_id`, or a non-zero
//!   `blocking_session_id`), `wait_type`/`wait_time_ms` are that session's current wait:
//!   they go into the [`BlockingEvent`], not into the cumulative
//!   `sqlserver.os.wait.duration` series.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlvigil_model::catalogue::{self, MetricDef};
use sqlvigil_model::{
    BlockingEvent, HistogramPoint, LogRecord, MetricKind, Sample, SeriesKey, TopQuery,
};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Which writer's document layout a hit is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// sqlvigil's own Elastic sink.
    Sqlvigil,
    /// Seed 002's flat fields, written by other tools.
    Flat,
    /// The Collector's `elasticsearch` exporter in OTel mapping mode.
    OtelMapping,
}

/// A hit that could not be normalized, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Malformed {
    pub index: String,
    pub id: String,
    pub reason: String,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}: {}", self.index, self.id, self.reason)
    }
}

/// Everything one hit yields.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Document {
    pub index: String,
    pub id: String,
    pub layout: Layout,
    pub time: DateTime<Utc>,
    pub instance: String,
    pub samples: Vec<Sample>,
    pub logs: Vec<LogRecord>,
    pub blocking: Vec<BlockingEvent>,
    /// Top-query observations, `last_seen` = the document's time. Flat documents carry
    /// `sys.dm_exec_query_stats` totals since the plan was compiled; the Collector's
    /// `db.server.top_query` events carry deltas since its previous scrape.
    pub top_queries: Vec<TopQuery>,
    /// Fields the normalizer did not understand, kept as they were (top-level key → value).
    pub extra: Map<String, Value>,
}

/// The layout of a `_source`, or `None` when it is in none of them.
pub fn detect(source: &Value) -> Option<Layout> {
    source.as_object().and_then(detect_object)
}

fn detect_object(obj: &Map<String, Value>) -> Option<Layout> {
    if is_otel(obj) {
        Some(Layout::OtelMapping)
    } else if find(obj, "metric.name").is_some() || is_sqlvigil_log(obj) {
        Some(Layout::Sqlvigil)
    } else if is_flat(obj) {
        Some(Layout::Flat)
    } else {
        None
    }
}

/// A metrics or logs hit → Document, or why it is malformed (no/invalid timestamp, no
/// instance, a value that is not a number, not an object, …).
pub fn hit(hit: &Value) -> Result<Document, Malformed> {
    let index = hit_str(hit, "_index");
    let id = hit_str(hit, "_id");
    let malformed = |reason: String| Malformed {
        index: index.clone(),
        id: id.clone(),
        reason,
    };
    let source = source_of(hit).map_err(malformed)?;
    let layout = detect_object(source).ok_or_else(|| malformed(unknown_layout(source)))?;
    let mut fields = Fields::new(source);
    // Data-stream routing, not telemetry: understood in every layout.
    fields.mark("data_stream");
    let parts = match layout {
        Layout::Sqlvigil => sqlvigil(&mut fields),
        Layout::Flat => flat(&mut fields),
        Layout::OtelMapping => otel(&mut fields),
    }
    .map_err(malformed)?;
    Ok(Document {
        index: index.clone(),
        id: id.clone(),
        layout,
        time: DateTime::from_timestamp_nanos(parts.time_ns),
        instance: parts.instance,
        samples: parts.samples,
        logs: parts.logs,
        blocking: parts.blocking,
        top_queries: parts.top_queries,
        extra: fields.extra(),
    })
}

/// Many hits: documents plus the malformed ones (never fails as a whole).
pub fn hits(hits: &[Value]) -> (Vec<Document>, Vec<Malformed>) {
    let mut documents = Vec::new();
    let mut malformed = Vec::new();
    for h in hits {
        match hit(h) {
            Ok(doc) => documents.push(doc),
            Err(bad) => malformed.push(bad),
        }
    }
    (documents, malformed)
}

/// Whether a sample belongs to the series asked for; `metric` may be a seed 002 alias
/// (`cpu_percent`), `None` matches anything.
pub fn series_matches(sample: &Sample, metric: Option<&str>, instance: Option<&str>) -> bool {
    let metric_ok =
        metric.is_none_or(|m| &*sample.key.metric == catalogue::resolve_alias(m).unwrap_or(m));
    metric_ok && instance.is_none_or(|i| &*sample.key.instance == i)
}

// ---------------------------------------------------------------------------------------
// The hit envelope

fn hit_str(hit: &Value, key: &str) -> String {
    hit.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn source_of(hit: &Value) -> Result<&Map<String, Value>, String> {
    let envelope = hit.as_object().ok_or("hit is not a JSON object")?;
    let source = envelope
        .get("_source")
        .ok_or("hit has no `_source` (searched with `_source: false`?)")?;
    let source = source.as_object().ok_or("`_source` is not an object")?;
    if source.is_empty() {
        return Err("`_source` is empty".into());
    }
    Ok(source)
}

fn unknown_layout(source: &Map<String, Value>) -> String {
    let keys: Vec<&str> = source.keys().map(String::as_str).take(8).collect();
    format!(
        "no known document layout (no `metric.name`, flat seed 002 fields or OTel `metrics`/`resource`/`body`; fields: {})",
        keys.join(", ")
    )
}

// ---------------------------------------------------------------------------------------
// Layout detection

/// Flat fields that describe a session or a query rather than a metric.
const FLAT_EVENT_FIELDS: &[&str] = &[
    "blocking_session_id",
    "session_id",
    "query_hash",
    "execution_count",
];

/// Flat fields holding a receiver counter under another name and unit.
struct FlatCounter {
    field: &'static str,
    metric: &'static str,
    /// Multiplier from the flat unit to the receiver's.
    scale: f64,
    /// A field without which the value names no series.
    needs: Option<&'static str>,
    /// In a session row the field is that session's own value, not the counter.
    per_session: bool,
}

const FLAT_COUNTERS: &[FlatCounter] = &[
    // `sys.dm_os_wait_stats.wait_time_ms`; the receiver reports seconds.
    FlatCounter {
        field: "wait_time_ms",
        metric: "sqlserver.os.wait.duration",
        scale: 1.0 / 1000.0,
        needs: Some("wait_type"),
        per_session: true,
    },
    FlatCounter {
        field: "physical_io_bytes",
        metric: "sqlserver.database.io",
        scale: 1.0,
        needs: None,
        per_session: false,
    },
];

fn is_otel(obj: &Map<String, Value>) -> bool {
    let otel_dataset = find(obj, "data_stream.dataset")
        .and_then(|(_, v)| v.as_str())
        .is_some_and(|d| d.ends_with(".otel"));
    let otel_object = ["metrics", "resource", "scope", "body"]
        .iter()
        .any(|k| obj.get(*k).is_some_and(Value::is_object));
    otel_dataset
        || otel_object
        || obj.contains_key("severity_text")
        || obj.contains_key("observed_timestamp")
}

fn is_sqlvigil_log(obj: &Map<String, Value>) -> bool {
    obj.contains_key("message") && obj.contains_key("severity_number")
}

fn has_flat_metric(obj: &Map<String, Value>) -> bool {
    let alias = catalogue::ALIASES
        .iter()
        .any(|(a, target)| catalogue::metric(target).is_some() && obj.contains_key(*a));
    alias
        || FLAT_COUNTERS.iter().any(|c| obj.contains_key(c.field))
        || FLAT_EVENT_FIELDS.iter().any(|k| obj.contains_key(*k))
        || obj.contains_key("wait_type")
}

fn is_flat(obj: &Map<String, Value>) -> bool {
    has_flat_metric(obj) || is_flat_log(obj)
}

fn is_flat_log(obj: &Map<String, Value>) -> bool {
    (obj.contains_key("message") || obj.contains_key("severity")) && !has_flat_metric(obj)
}

// ---------------------------------------------------------------------------------------
// Field access: dotted or expanded keys, and what was read

/// The value at a dotted path, written as a literal dotted key, as nested objects, or
/// any mix (`{"a.b": {"c": 1}}`), with the top-level key it was found under.
fn find<'a>(obj: &'a Map<String, Value>, path: &str) -> Option<(&'a str, &'a Value)> {
    if let Some((key, value)) = obj.get_key_value(path) {
        return Some((key.as_str(), value));
    }
    for (dot, _) in path.match_indices('.') {
        let (head, rest) = (&path[..dot], &path[dot + 1..]);
        if let Some((key, Value::Object(child))) = obj.get_key_value(head) {
            if let Some((_, value)) = find(child, rest) {
                return Some((key.as_str(), value));
            }
        }
    }
    None
}

/// A `_source` plus the top-level keys read so far: whatever was not read is kept in
/// [`Document::extra`], so adding a reader for a field is what makes it "understood".
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    used: BTreeSet<&'a str>,
}

impl<'a> Fields<'a> {
    fn new(obj: &'a Map<String, Value>) -> Self {
        Fields {
            obj,
            used: BTreeSet::new(),
        }
    }

    fn get(&mut self, path: &str) -> Option<&'a Value> {
        let (key, value) = find(self.obj, path)?;
        self.used.insert(key);
        Some(value).filter(|v| !v.is_null())
    }

    fn has(&self, path: &str) -> bool {
        find(self.obj, path).is_some_and(|(_, v)| !v.is_null())
    }

    /// Count a top-level field as understood without reading it.
    fn mark(&mut self, key: &str) {
        if let Some((key, _)) = self.obj.get_key_value(key) {
            self.used.insert(key.as_str());
        }
    }

    /// A scalar as text (numbers and booleans as their JSON text).
    fn text(&mut self, path: &str) -> Result<Option<String>, String> {
        match self.get(path) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(Some(v.to_string())),
            Some(v) => Err(format!("`{path}` is not a string: {}", preview(v))),
        }
    }

    /// A non-empty text, or the reason it is required.
    fn required_text(&mut self, path: &str, what: &str) -> Result<String, String> {
        self.text(path)?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("no {what} (`{path}`)"))
    }

    fn number(&mut self, path: &str) -> Result<Option<f64>, String> {
        self.get(path).map(|v| number(v, path)).transpose()
    }

    /// The first of several field names that is present, as a number.
    fn first_number(&mut self, paths: &[&str]) -> Result<Option<f64>, String> {
        for path in paths {
            if let Some(n) = self.number(path)? {
                return Ok(Some(n));
            }
        }
        Ok(None)
    }

    fn integer(&mut self, path: &str) -> Result<Option<i64>, String> {
        self.get(path).map(|v| integer(v, path)).transpose()
    }

    fn boolean(&mut self, path: &str) -> Result<Option<bool>, String> {
        match self.get(path) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(format!("`{path}` is not a boolean: {}", preview(v))),
        }
    }

    /// An object's leaves as dotted keys (see [`flatten`]); absent → empty.
    fn object(&mut self, path: &str) -> Result<BTreeMap<String, &'a Value>, String> {
        match self.get(path) {
            None => Ok(BTreeMap::new()),
            Some(Value::Object(obj)) => {
                let mut out = BTreeMap::new();
                flatten(obj, "", &mut out);
                Ok(out)
            }
            Some(v) => Err(format!("`{path}` is not an object: {}", preview(v))),
        }
    }

    fn extra(&self) -> Map<String, Value> {
        self.obj
            .iter()
            .filter(|(k, _)| !self.used.contains(k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Nested objects → dotted keys, so `{"wait": {"type": "X"}}` and `{"wait.type": "X"}`
/// read the same. Arrays and scalars are leaves; nulls are dropped.
fn flatten<'a>(obj: &'a Map<String, Value>, prefix: &str, out: &mut BTreeMap<String, &'a Value>) {
    for (key, value) in obj {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Value::Object(child) => flatten(child, &path, out),
            Value::Null => {}
            leaf => {
                out.insert(path, leaf);
            }
        }
    }
}

/// Attribute values as strings: text as is, numbers and booleans (and arrays) as JSON.
fn stringify(attrs: &BTreeMap<String, &Value>) -> BTreeMap<String, String> {
    attrs
        .iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect()
}

fn number(value: &Value, path: &str) -> Result<f64, String> {
    value
        .as_f64()
        .filter(|n| n.is_finite())
        .ok_or_else(|| format!("`{path}` is not a number: {}", preview(value)))
}

fn integer(value: &Value, path: &str) -> Result<i64, String> {
    let whole = || {
        value
            .as_f64()
            .filter(|n| n.fract() == 0.0 && n.abs() < 9.0e15)
            .map(|n| n as i64)
    };
    value
        .as_i64()
        .or_else(whole)
        .ok_or_else(|| format!("`{path}` is not an integer: {}", preview(value)))
}

/// A value for an error message, cut short: documents can hold whole query plans.
fn preview(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(80) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

// ---------------------------------------------------------------------------------------
// Timestamps

/// Nanoseconds since the Unix epoch from an Elasticsearch date value.
///
/// Accepts RFC 3339 (up to nanoseconds; without an offset it is UTC, as Elasticsearch
/// reads it), epoch milliseconds as a number (fractions allowed, sub-microsecond
/// precision is lost to f64) or as a digit string, and the Collector exporter's
/// `"<millis>.<nanos>"` string. The exporter writes the nanoseconds within the
/// millisecond **unpadded** (`…000.42` is 42 ns), so a fraction is read as that integer;
/// with six digits — the usual case — it is the same as a decimal fraction of a millisecond.
pub(crate) fn parse_time(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => match n.as_i64() {
            Some(millis) => millis.checked_mul(1_000_000),
            None => n.as_f64().and_then(millis_f64),
        },
        Value::String(s) => time_from_str(s.trim()),
        _ => None,
    }
}

/// Whole and fractional milliseconds apart: multiplying the whole value by 10⁶ would
/// round away the sub-millisecond part at today's epoch values.
fn millis_f64(millis: f64) -> Option<i64> {
    if !millis.is_finite() || millis.abs() >= 9.2e12 {
        return None;
    }
    let whole = millis.trunc();
    let nanos = ((millis - whole) * 1e6).round();
    (whole as i64)
        .checked_mul(1_000_000)?
        .checked_add(nanos as i64)
}

fn time_from_str(s: &str) -> Option<i64> {
    if let Some(ns) = epoch_millis_str(s) {
        return Some(ns);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return t.timestamp_nanos_opt();
    }
    const NAIVE: &[&str] = &["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"];
    NAIVE
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .and_then(|t| t.and_utc().timestamp_nanos_opt())
}

fn epoch_millis_str(s: &str) -> Option<i64> {
    let all_digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let (millis, nanos) = match s.split_once('.') {
        Some((m, n)) if all_digits(n) && n.len() <= 6 => (m, n.parse::<i64>().ok()?),
        Some(_) => return None,
        None => (s, 0),
    };
    if !all_digits(millis) {
        return None;
    }
    millis
        .parse::<i64>()
        .ok()?
        .checked_mul(1_000_000)?
        .checked_add(nanos)
}

/// The document time from the first of `names` present.
fn doc_time(f: &mut Fields, names: &[&str]) -> Result<i64, String> {
    let mut found = None;
    // Read them all: a second timestamp field is a duplicate, not an unknown field.
    for name in names {
        if let Some(value) = f.get(name) {
            found = found.or(Some((*name, value)));
        }
    }
    let Some((name, value)) = found else {
        let names: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
        return Err(format!("no timestamp ({})", names.join(" or ")));
    };
    parse_time(value).ok_or_else(|| bad_time(name, value))
}

fn optional_time(f: &mut Fields, name: &str) -> Result<Option<i64>, String> {
    f.get(name)
        .map(|v| parse_time(v).ok_or_else(|| bad_time(name, v)))
        .transpose()
}

fn bad_time(name: &str, value: &Value) -> String {
    format!(
        "`{name}` is not a date (RFC 3339 or epoch milliseconds): {}",
        preview(value)
    )
}

// ---------------------------------------------------------------------------------------
// Shared pieces

/// What a layout parser makes of one `_source` ([`hit`] adds index, id and extra).
#[derive(Default)]
struct Parts {
    time_ns: i64,
    instance: String,
    samples: Vec<Sample>,
    logs: Vec<LogRecord>,
    blocking: Vec<BlockingEvent>,
    top_queries: Vec<TopQuery>,
}

/// Where a document's telemetry comes from.
struct Origin {
    instance: String,
    host: String,
    database: String,
}

impl Origin {
    fn key(&self, metric: &str, attributes: BTreeMap<String, String>) -> SeriesKey {
        SeriesKey::from_parts(
            self.instance.clone(),
            self.host.clone(),
            self.database.clone(),
            metric.to_string(),
            attributes,
        )
    }
}

/// A sample whose kind and unit come from the receiver's catalogue.
fn catalogue_sample(
    origin: &Origin,
    def: &MetricDef,
    time_ns: i64,
    value: f64,
    attributes: BTreeMap<String, String>,
) -> Sample {
    Sample {
        time_ns,
        start_time_ns: 0,
        key: origin.key(def.name, attributes),
        value,
        kind: def.kind,
        monotonic: def.monotonic,
        unit: def.unit.into(),
        histogram: None,
    }
}

/// Severity text and number, each derived from the other when missing.
fn severity(text: Option<String>, number: Option<i32>) -> (String, i32) {
    let text = text.filter(|t| !t.is_empty());
    match (text, number) {
        (Some(t), Some(n)) => (t, n),
        (Some(t), None) => {
            let n = sqlvigil_model::log::severity_number(&t);
            (t, n)
        }
        (None, Some(n)) => (sqlvigil_model::log::severity_text(n).to_string(), n),
        (None, None) => (sqlvigil_model::log::severity_text(0).to_string(), 0),
    }
}

fn severity_number_field(f: &mut Fields, path: &str) -> Result<Option<i32>, String> {
    f.integer(path)?
        .map(|n| i32::try_from(n).map_err(|_| format!("`{path}` is out of range: {n}")))
        .transpose()
}

// ---------------------------------------------------------------------------------------
// Layout 1: sqlvigil's own sink

/// The flat copies our sink adds for seed 002 readers: the same sample again.
const SQLVIGIL_COPIES: &[&str] = &[
    "cpu_percent",
    "wait_type",
    "wait_time_ms",
    "physical_io_bytes",
];

fn sqlvigil(f: &mut Fields) -> Result<Parts, String> {
    if f.has("metric.name") {
        sqlvigil_metric(f)
    } else {
        log_doc(f, &["@timestamp", "timestamp"])
    }
}

fn sqlvigil_metric(f: &mut Fields) -> Result<Parts, String> {
    let time_ns = doc_time(f, &["@timestamp"])?;
    let origin = flat_origin(f)?;
    // Derived from the series key; `SeriesKey::id_hex` recomputes it.
    f.mark("series_id");
    let name = f.required_text("metric.name", "metric name")?;
    let def = catalogue::metric(&name);
    let value = f.number("metric.value")?.ok_or("no `metric.value`")?;
    let kind = match f.text("metric.kind")? {
        Some(k) => MetricKind::parse(&k)
            .ok_or_else(|| format!("`metric.kind` is not a metric kind: {k:?}"))?,
        None => def.map_or(MetricKind::Gauge, |d| d.kind),
    };
    let unit = f.text("metric.unit")?;
    let monotonic = f.boolean("metric.monotonic")?;
    let start_time_ns = optional_time(f, "metric.start_time")?.unwrap_or(0);
    let histogram = f
        .get("metric.histogram")
        .map(sqlvigil_histogram)
        .transpose()?;
    let attributes = stringify(&f.object("attributes")?);
    for copy in SQLVIGIL_COPIES {
        f.mark(copy);
    }
    let sample = Sample {
        time_ns,
        start_time_ns,
        key: origin.key(&name, attributes),
        value,
        kind,
        monotonic: monotonic.unwrap_or(def.is_some_and(|d| d.monotonic)),
        unit: unit
            .unwrap_or_else(|| def.map_or("", |d| d.unit).to_string())
            .into(),
        histogram,
    };
    let mut parts = flat_events(f, &origin, time_ns)?;
    parts.samples.push(sample);
    Ok(parts)
}

fn sqlvigil_histogram(value: &Value) -> Result<HistogramPoint, String> {
    let obj = value
        .as_object()
        .ok_or_else(|| format!("`metric.histogram` is not an object: {}", preview(value)))?;
    let count = match obj.get("count") {
        None => 0,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| format!("`metric.histogram.count` is not a count: {v}"))?,
    };
    Ok(HistogramPoint {
        count,
        bounds: array(obj.get("bounds"), "metric.histogram.bounds", |v| {
            v.as_f64().filter(|n| n.is_finite())
        })?,
        bucket_counts: array(
            obj.get("bucket_counts"),
            "metric.histogram.bucket_counts",
            |v| v.as_u64(),
        )?,
    })
}

fn array<T>(
    value: Option<&Value>,
    path: &str,
    item: impl Fn(&Value) -> Option<T>,
) -> Result<Vec<T>, String> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let items = value
        .as_array()
        .ok_or_else(|| format!("`{path}` is not an array: {}", preview(value)))?;
    items
        .iter()
        .map(|v| item(v).ok_or_else(|| format!("`{path}` holds a bad item: {}", preview(v))))
        .collect()
}

/// A log document of the Sqlvigil or Flat layout (they differ only in the time field).
fn log_doc(f: &mut Fields, time_fields: &[&str]) -> Result<Parts, String> {
    let time_ns = doc_time(f, time_fields)?;
    let origin = flat_origin(f)?;
    let number = severity_number_field(f, "severity_number")?;
    let (severity, severity_number) = severity(f.text("severity")?, number);
    let record = LogRecord {
        time: DateTime::from_timestamp_nanos(time_ns),
        severity,
        severity_number,
        message: f.text("message")?.unwrap_or_default(),
        category: f.text("log_category")?.unwrap_or_default(),
        instance: origin.instance.clone(),
        host: origin.host,
        attributes: stringify(&f.object("attributes")?),
    };
    Ok(Parts {
        time_ns,
        instance: origin.instance,
        logs: vec![record],
        ..Parts::default()
    })
}

// ---------------------------------------------------------------------------------------
// Layout 2: seed 002's flat fields

fn flat(f: &mut Fields) -> Result<Parts, String> {
    if is_flat_log(f.obj) {
        return log_doc(f, &["timestamp", "@timestamp"]);
    }
    let time_ns = doc_time(f, &["timestamp", "@timestamp"])?;
    let origin = flat_origin(f)?;
    // Events first: they decide whether the wait fields describe a session.
    let mut parts = flat_events(f, &origin, time_ns)?;
    let session = f.has("session_id") || !parts.blocking.is_empty();
    parts.samples = alias_samples(f, &origin, time_ns)?;
    parts
        .samples
        .extend(counter_samples(f, &origin, time_ns, session)?);
    Ok(parts)
}

/// `instance_name`, `host_name` (or ECS `host.name`), `database_name` (may be absent).
fn flat_origin(f: &mut Fields) -> Result<Origin, String> {
    let instance = f.required_text("instance_name", "instance")?;
    let host = match f.text("host_name")? {
        Some(h) => h,
        None => f.text("host.name")?.unwrap_or_default(),
    };
    let database = f.text("database_name")?.unwrap_or_default();
    Ok(Origin {
        instance,
        host,
        database,
    })
}

/// Blocking event and top-query observation of a flat document (either may be absent).
fn flat_events(f: &mut Fields, origin: &Origin, time_ns: i64) -> Result<Parts, String> {
    let time = DateTime::from_timestamp_nanos(time_ns);
    let blocking = flat_blocking(f, origin, time)?;
    let top_query = flat_top_query(f, origin, time)?;
    Ok(Parts {
        time_ns,
        instance: origin.instance.clone(),
        blocking: blocking.into_iter().collect(),
        top_queries: top_query.into_iter().collect(),
        ..Parts::default()
    })
}

fn flat_statement(f: &mut Fields) -> Result<String, String> {
    match f.text("statement")? {
        Some(s) => Ok(s),
        None => Ok(f.text("query_text")?.unwrap_or_default()),
    }
}

/// A non-zero `blocking_session_id` (SQL Server uses 0 for "not blocked").
fn flat_blocking(
    f: &mut Fields,
    origin: &Origin,
    time: DateTime<Utc>,
) -> Result<Option<BlockingEvent>, String> {
    let blocker = f.integer("blocking_session_id")?.unwrap_or(0);
    if blocker == 0 {
        return Ok(None);
    }
    Ok(Some(BlockingEvent {
        time,
        instance: origin.instance.clone(),
        session_id: f.integer("session_id")?,
        blocking_session_id: blocker,
        wait_type: f.text("wait_type")?.unwrap_or_default(),
        wait_time_ms: f.number("wait_time_ms")?.unwrap_or(0.0),
        database: origin.database.clone(),
        query_hash: f.text("query_hash")?.unwrap_or_default(),
        statement: flat_statement(f)?,
    }))
}

fn flat_top_query(
    f: &mut Fields,
    origin: &Origin,
    time: DateTime<Utc>,
) -> Result<Option<TopQuery>, String> {
    let Some(query_hash) = f.text("query_hash")?.filter(|h| !h.is_empty()) else {
        return Ok(None);
    };
    Ok(Some(TopQuery {
        last_seen: time,
        instance: origin.instance.clone(),
        query_hash,
        executions: f.number("execution_count")?.unwrap_or(0.0),
        total_cpu_ms: f
            .first_number(&["total_worker_time_ms", "cpu_time_ms"])?
            .unwrap_or(0.0),
        total_elapsed_ms: f.number("total_elapsed_time_ms")?.unwrap_or(0.0),
        total_logical_reads: f
            .first_number(&["total_logical_reads", "logical_reads"])?
            .unwrap_or(0.0),
        statement: flat_statement(f)?,
    }))
}

/// Seed 002 aliases that name a receiver metric directly (`cpu_percent`, …). Aliases of
/// derived `.per_second` series are the operators' output, not a point: they stay in
/// `extra`.
fn alias_samples(f: &mut Fields, origin: &Origin, time_ns: i64) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for (alias, target) in catalogue::ALIASES {
        let Some(def) = catalogue::metric(target) else {
            continue;
        };
        if let Some(value) = f.number(alias)? {
            let attributes = flat_attributes(f, def)?;
            out.push(catalogue_sample(origin, def, time_ns, value, attributes));
        }
    }
    Ok(out)
}

fn counter_samples(
    f: &mut Fields,
    origin: &Origin,
    time_ns: i64,
    session: bool,
) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for counter in FLAT_COUNTERS {
        let wanted = !(counter.per_session && session)
            && counter.needs.is_none_or(|n| f.has(n))
            && f.has(counter.field);
        let Some(def) = catalogue::metric(counter.metric).filter(|_| wanted) else {
            continue;
        };
        if let Some(value) = f.number(counter.field)? {
            let attributes = flat_attributes(f, def)?;
            let value = value * counter.scale;
            out.push(catalogue_sample(origin, def, time_ns, value, attributes));
        }
    }
    Ok(out)
}

/// The receiver's point attributes of `def` from flat fields: `wait.type` is read from
/// `wait_type` (or `wait.type`), `direction` from `direction`.
fn flat_attributes(f: &mut Fields, def: &MetricDef) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for attr in def.attributes {
        let flat_name = attr.replace('.', "_");
        let value = match f.text(&flat_name)? {
            Some(v) => Some(v),
            None => f.text(attr)?,
        };
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            out.insert(attr.to_string(), v);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Layout 3: the Collector's elasticsearch exporter, OTel mapping mode

/// Top-level fields of the exporter that carry no telemetry we model.
const OTEL_ENVELOPE: &[&str] = &[
    "_metric_names_hash",
    "_doc_count",
    "observed_timestamp",
    "trace_id",
    "span_id",
    "dropped_attributes_count",
    "resource",
    "scope",
];

fn otel(f: &mut Fields) -> Result<Parts, String> {
    let resource = stringify(&f.object("resource.attributes")?);
    for key in OTEL_ENVELOPE {
        f.mark(key);
    }
    let origin = otel_origin(&resource)?;
    if f.has("metrics") {
        otel_metrics(f, origin)
    } else {
        otel_log(f, origin)
    }
}

/// The source of a resource, with the fallbacks of the OTLP receiver (so a series read
/// back from Elastic has the same key as the one decoded live).
fn otel_origin(resource: &BTreeMap<String, String>) -> Result<Origin, String> {
    let get = |k: &str| resource.get(k).filter(|v| !v.is_empty()).cloned();
    let host = get("host.name")
        .or_else(|| get("server.address"))
        .unwrap_or_default();
    let instance = get("sqlserver.instance.name")
        .or_else(|| get("service.instance.id"))
        .or_else(|| (!host.is_empty()).then(|| host.clone()))
        .ok_or("no instance (resource attribute `sqlserver.instance.name`, `service.instance.id`, `host.name` or `server.address`)")?;
    Ok(Origin {
        instance,
        host,
        database: get("sqlserver.database.name").unwrap_or_default(),
    })
}

fn otel_metrics(f: &mut Fields, mut origin: Origin) -> Result<Parts, String> {
    let time_ns = doc_time(f, &["@timestamp"])?;
    let start_time_ns = optional_time(f, "start_timestamp")?.unwrap_or(0);
    let mut attributes = stringify(&f.object("attributes")?);
    // A resource attribute in the receiver; a point attribute if a processor moved it.
    if let Some(db) = attributes
        .remove("sqlserver.database.name")
        .filter(|d| !d.is_empty())
    {
        origin.database = db;
    }
    let doc_unit = f.text("unit")?;
    let metrics = match f.get("metrics") {
        Some(Value::Object(m)) => m,
        Some(v) => return Err(format!("`metrics` is not an object: {}", preview(v))),
        None => return Err("no `metrics`".into()),
    };
    let mut entries = Vec::new();
    flatten_metrics(metrics, "", &mut entries);
    let mut samples = Vec::with_capacity(entries.len());
    for (name, value) in entries {
        let (value, histogram) = otel_value(&name, value)?;
        let def = catalogue::metric(&name);
        let (kind, monotonic) = match (&histogram, def) {
            (Some(_), _) => (MetricKind::Histogram, false),
            (None, Some(d)) => (d.kind, d.monotonic),
            (None, None) => (MetricKind::Gauge, false),
        };
        let unit = def
            .map(|d| d.unit.to_string())
            .or_else(|| doc_unit.clone())
            .unwrap_or_default();
        samples.push(Sample {
            time_ns,
            start_time_ns,
            key: origin.key(&name, attributes.clone()),
            value,
            kind,
            monotonic,
            unit: unit.into(),
            histogram,
        });
    }
    Ok(Parts {
        time_ns,
        instance: origin.instance,
        samples,
        ..Parts::default()
    })
}

/// Metric name → value; names may be literal dotted keys or expanded objects. An object
/// with histogram or summary fields is a value, not a level of the name.
fn flatten_metrics<'a>(
    obj: &'a Map<String, Value>,
    prefix: &str,
    out: &mut Vec<(String, &'a Value)>,
) {
    for (key, value) in obj {
        let name = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Value::Object(child) if !is_distribution(child) => flatten_metrics(child, &name, out),
            other => out.push((name, other)),
        }
    }
}

fn is_distribution(obj: &Map<String, Value>) -> bool {
    ["counts", "values", "sum", "value_count"]
        .iter()
        .any(|k| obj.contains_key(*k))
}

/// A metric's value, and for histogram-like values a count-only histogram point.
fn otel_value(name: &str, value: &Value) -> Result<(f64, Option<HistogramPoint>), String> {
    let path = format!("metrics.{name}");
    let Value::Object(obj) = value else {
        return Ok((number(value, &path)?, None));
    };
    let (sum, count) = if obj.contains_key("counts") || obj.contains_key("values") {
        let counts = array(obj.get("counts"), &format!("{path}.counts"), Value::as_u64)?;
        let mids = array(obj.get("values"), &format!("{path}.values"), |v| {
            v.as_f64().filter(|n| n.is_finite())
        })?;
        if counts.len() != mids.len() {
            return Err(format!(
                "`{path}` has {} counts but {} values",
                counts.len(),
                mids.len()
            ));
        }
        let sum = counts.iter().zip(&mids).map(|(c, m)| *c as f64 * m).sum();
        (sum, counts.iter().sum())
    } else {
        let sum = obj
            .get("sum")
            .map_or(Ok(0.0), |v| number(v, &format!("{path}.sum")))?;
        let count = obj.get("value_count").map_or(Ok(0), |v| {
            v.as_u64()
                .ok_or_else(|| format!("`{path}.value_count` is not a count: {}", preview(v)))
        })?;
        (sum, count)
    };
    let point = HistogramPoint {
        count,
        bounds: Vec::new(),
        bucket_counts: Vec::new(),
    };
    Ok((sum, Some(point)))
}

/// The `sqlserver` receiver's events (event names from its `metadata.yaml`; early
/// versions named the sample event "query sample").
enum Event {
    TopQuery,
    QuerySample,
}

fn event_kind(name: Option<&str>, attrs: &BTreeMap<String, &Value>) -> Option<Event> {
    match name {
        Some("db.server.top_query") => Some(Event::TopQuery),
        Some("db.server.query_sample" | "query sample") => Some(Event::QuerySample),
        // No (known) event name: the receiver's attributes still say what it is.
        _ if attrs.contains_key("sqlserver.execution_count")
            && attrs.contains_key("sqlserver.query_hash") =>
        {
            Some(Event::TopQuery)
        }
        _ if attrs.contains_key("sqlserver.blocking_session_id") => Some(Event::QuerySample),
        _ => None,
    }
}

fn otel_log(f: &mut Fields, origin: Origin) -> Result<Parts, String> {
    let time_ns = doc_time(f, &["@timestamp", "observed_timestamp"])?;
    let time = DateTime::from_timestamp_nanos(time_ns);
    let attrs = f.object("attributes")?;
    let event = f.text("event_name")?.filter(|e| !e.is_empty());
    let mut parts = Parts {
        time_ns,
        instance: origin.instance.clone(),
        ..Parts::default()
    };
    match event_kind(event.as_deref(), &attrs) {
        Some(Event::TopQuery) => {
            mark_log_fields(f);
            parts
                .top_queries
                .push(otel_top_query(&attrs, &origin, time)?);
        }
        Some(Event::QuerySample) => {
            mark_log_fields(f);
            parts
                .blocking
                .extend(otel_query_sample(&attrs, &origin, time)?);
        }
        None => parts
            .logs
            .push(otel_record(f, &attrs, event, origin, time)?),
    }
    Ok(parts)
}

/// Log fields an event document carries that the typed event does not keep.
fn mark_log_fields(f: &mut Fields) {
    for key in ["severity_text", "severity_number", "body"] {
        f.mark(key);
    }
}

fn otel_record(
    f: &mut Fields,
    attrs: &BTreeMap<String, &Value>,
    event: Option<String>,
    origin: Origin,
    time: DateTime<Utc>,
) -> Result<LogRecord, String> {
    let number = severity_number_field(f, "severity_number")?;
    let (severity, severity_number) = severity(f.text("severity_text")?, number);
    let mut attributes = stringify(attrs);
    // LogRecord has no event name of its own; keep it where OTel semantic conventions did.
    if let Some(e) = event {
        attributes.entry("event.name".to_string()).or_insert(e);
    }
    let scope = f.text("scope.name")?.unwrap_or_default();
    Ok(LogRecord {
        time,
        severity,
        severity_number,
        message: body_text(f.get("body")),
        category: attributes.get("log.category").cloned().unwrap_or(scope),
        instance: origin.instance,
        host: origin.host,
        attributes,
    })
}

/// `body.text` as is; `body.structured` (or anything else) as compact JSON.
fn body_text(body: Option<&Value>) -> String {
    let inner = match body {
        None => return String::new(),
        Some(Value::Object(b)) => b.get("text").or_else(|| b.get("structured")),
        Some(other) => Some(other),
    };
    match inner.or(body) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

fn attr_text(attrs: &BTreeMap<String, &Value>, key: &str) -> String {
    match attrs.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

fn attr_number(attrs: &BTreeMap<String, &Value>, key: &str) -> Result<f64, String> {
    attrs
        .get(key)
        .map_or(Ok(0.0), |v| number(v, &format!("attributes.{key}")))
}

/// `db.server.top_query`: counters are deltas since the receiver's previous scrape;
/// `sqlserver.total_worker_time` and `sqlserver.total_elapsed_time` are seconds.
fn otel_top_query(
    attrs: &BTreeMap<String, &Value>,
    origin: &Origin,
    time: DateTime<Utc>,
) -> Result<TopQuery, String> {
    let query_hash = attr_text(attrs, "sqlserver.query_hash");
    if query_hash.is_empty() {
        return Err("top_query event without `sqlserver.query_hash`".into());
    }
    Ok(TopQuery {
        last_seen: time,
        instance: origin.instance.clone(),
        query_hash,
        executions: attr_number(attrs, "sqlserver.execution_count")?,
        total_cpu_ms: attr_number(attrs, "sqlserver.total_worker_time")? * 1000.0,
        total_elapsed_ms: attr_number(attrs, "sqlserver.total_elapsed_time")? * 1000.0,
        total_logical_reads: attr_number(attrs, "sqlserver.total_logical_reads")?,
        statement: attr_text(attrs, "db.query.text"),
    })
}

/// `db.server.query_sample`: a blocking event when the session is blocked
/// (`sqlserver.wait_time` is seconds).
fn otel_query_sample(
    attrs: &BTreeMap<String, &Value>,
    origin: &Origin,
    time: DateTime<Utc>,
) -> Result<Option<BlockingEvent>, String> {
    let int = |key: &str| {
        attrs
            .get(key)
            .map(|v| integer(v, &format!("attributes.{key}")))
            .transpose()
    };
    let blocker = int("sqlserver.blocking_session_id")?.unwrap_or(0);
    if blocker == 0 {
        return Ok(None);
    }
    let database = Some(attr_text(attrs, "db.namespace"))
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| origin.database.clone());
    Ok(Some(BlockingEvent {
        time,
        instance: origin.instance.clone(),
        session_id: int("sqlserver.session_id")?,
        blocking_session_id: blocker,
        wait_type: attr_text(attrs, "sqlserver.wait_type"),
        wait_time_ms: attr_number(attrs, "sqlserver.wait_time")? * 1000.0,
        database,
        query_hash: attr_text(attrs, "sqlserver.query_hash"),
        statement: attr_text(attrs, "db.query.text"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SQLVIGIL_METRICS: &str = include_str!("../tests/fixtures/sqlvigil_metrics.json");
    const SQLVIGIL_LOGS: &str = include_str!("../tests/fixtures/sqlvigil_logs.json");
    const FLAT: &str = include_str!("../tests/fixtures/flat_seed002.json");
    const OTEL_METRICS: &str = include_str!("../tests/fixtures/otel_metrics.json");
    const OTEL_LOGS: &str = include_str!("../tests/fixtures/otel_logs.json");
    const MALFORMED: &str = include_str!("../tests/fixtures/malformed.json");

    /// 2026-11-29T18:00:00Z in nanoseconds.
    const T0: i64 = 1_795_975_200_000_000_000;
    const SEC: i64 = 1_000_000_000;

    fn fixture(text: &str) -> Vec<Value> {
        serde_json::from_str(text).expect("fixture is a JSON array")
    }

    /// The fixture's documents by `_id`, failing on any malformed one.
    fn documents(text: &str) -> BTreeMap<String, Document> {
        let (docs, bad) = hits(&fixture(text));
        assert!(bad.is_empty(), "unexpected malformed: {bad:?}");
        docs.into_iter().map(|d| (d.id.clone(), d)).collect()
    }

    fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn only_sample(doc: &Document) -> &Sample {
        assert_eq!(doc.samples.len(), 1, "{:?}", doc.samples);
        &doc.samples[0]
    }

    #[test]
    fn sqlvigil_metric_document_reads_exactly() {
        let docs = documents(SQLVIGIL_METRICS);
        let doc = &docs["sv-wait-dotted"];
        assert_eq!(doc.layout, Layout::Sqlvigil);
        assert_eq!(doc.index, ".ds-mssql-metrics-default-2026.11.29-000001");
        assert_eq!(doc.instance, "sql1");
        assert_eq!(doc.time.timestamp_nanos_opt(), Some(T0 + 123_456_789));
        // The flat copies describe the same point: one sample, and not "unknown".
        let s = only_sample(doc);
        assert_eq!(&*s.key.instance, "sql1");
        assert_eq!(&*s.key.host, "db-host-1");
        assert_eq!(&*s.key.database, "sales");
        assert_eq!(&*s.key.metric, "sqlserver.os.wait.duration");
        assert_eq!(
            s.key.attributes,
            attrs(&[("wait.category", "Lock"), ("wait.type", "LCK_M_X")])
        );
        assert_eq!(s.value, 12.5);
        assert_eq!(s.kind, MetricKind::CumulativeSum);
        assert!(s.monotonic);
        assert_eq!(&*s.unit, "s");
        assert_eq!(s.time_ns, T0 + 123_456_789);
        assert_eq!(s.start_time_ns, T0 - 3600 * SEC);
        assert_eq!(s.histogram, None);
        assert!(doc.logs.is_empty() && doc.blocking.is_empty() && doc.top_queries.is_empty());
        let extra: Vec<&String> = doc.extra.keys().collect();
        assert_eq!(extra, ["collector_note"]);
        assert_eq!(doc.extra["collector_note"], "replayed from backup");
    }

    #[test]
    fn sqlvigil_dotted_and_expanded_attributes_are_one_series() {
        let docs = documents(SQLVIGIL_METRICS);
        let dotted = only_sample(&docs["sv-wait-dotted"]);
        let expanded = only_sample(&docs["sv-wait-expanded"]);
        assert_eq!(dotted.key, expanded.key);
        assert_eq!(dotted.key.id(), expanded.key.id());
        // Expanded `metric` object fields are read too.
        assert_eq!(expanded.kind, MetricKind::CumulativeSum);
        assert!(docs["sv-wait-expanded"].extra.is_empty());
    }

    #[test]
    fn sqlvigil_gauge_without_database_or_attributes() {
        let docs = documents(SQLVIGIL_METRICS);
        let doc = &docs["sv-cpu"];
        let s = only_sample(doc);
        assert_eq!(&*s.key.database, "");
        assert!(s.key.attributes.is_empty());
        assert_eq!(&*s.key.metric, "sqlserver.cpu.utilization");
        assert_eq!(
            (s.value, s.kind, s.monotonic),
            (42.5, MetricKind::Gauge, false)
        );
        assert_eq!(&*s.unit, "%");
        assert_eq!(s.time_ns, T0 + SEC);
        assert_eq!(s.start_time_ns, 0);
        assert!(doc.extra.is_empty(), "{:?}", doc.extra);
    }

    #[test]
    fn sqlvigil_histogram_and_non_string_attributes() {
        let docs = documents(SQLVIGIL_METRICS);
        let s = only_sample(&docs["sv-hist"]);
        assert_eq!(s.kind, MetricKind::Histogram);
        assert_eq!(s.value, 3.75);
        assert_eq!(
            s.histogram,
            Some(HistogramPoint {
                count: 4,
                bounds: vec![0.5, 1.0],
                bucket_counts: vec![1, 2, 1],
            })
        );
        // Expanded objects flatten to dotted keys; numbers and booleans keep their JSON text.
        assert_eq!(
            s.key.attributes,
            attrs(&[
                ("cached", "true"),
                ("db.operation", "select"),
                ("retries", "2")
            ])
        );
        // Not in the catalogue and no `metric.monotonic`: not monotonic.
        assert_eq!(&*s.unit, "s");
        assert!(!s.monotonic);
    }

    #[test]
    fn sqlvigil_log_document() {
        let docs = documents(SQLVIGIL_LOGS);
        let doc = &docs["sv-log"];
        assert_eq!(doc.layout, Layout::Sqlvigil);
        assert!(doc.samples.is_empty());
        let log = &doc.logs[0];
        assert_eq!(
            log.time.timestamp_nanos_opt(),
            Some(T0 + 30 * SEC + 250_000_000)
        );
        assert_eq!((log.severity.as_str(), log.severity_number), ("ERROR", 17));
        assert_eq!(
            log.message,
            "Deadlock encountered .... Printing deadlock information"
        );
        assert_eq!(log.category, "errorlog");
        assert_eq!(
            (log.instance.as_str(), log.host.as_str()),
            ("sql1", "db-host-1")
        );
        assert_eq!(
            log.attributes,
            attrs(&[
                ("sqlserver.error.number", "1205"),
                ("sqlserver.error.severity", "13")
            ])
        );
        // Severity text derived from the number when absent.
        let log = &docs["sv-log-warning"].logs[0];
        assert_eq!((log.severity.as_str(), log.severity_number), ("WARN", 13));
        assert_eq!(docs["sv-log-warning"].layout, Layout::Sqlvigil);
    }

    #[test]
    fn flat_snapshot_document_gives_every_sample() {
        let docs = documents(FLAT);
        let doc = &docs["flat-snapshot"];
        assert_eq!(doc.layout, Layout::Flat);
        assert_eq!(doc.time.timestamp_nanos_opt(), Some(T0 + 5 * SEC));
        let by_metric: BTreeMap<&str, &Sample> =
            doc.samples.iter().map(|s| (&*s.key.metric, s)).collect();
        assert_eq!(by_metric.len(), 3, "{:?}", doc.samples);

        let cpu = by_metric["sqlserver.cpu.utilization"];
        assert_eq!(
            (cpu.value, cpu.kind, &*cpu.unit),
            (91.5, MetricKind::Gauge, "%")
        );
        assert_eq!(
            cpu.key,
            SeriesKey::new("sql1", "db-host-1", "", "sqlserver.cpu.utilization")
        );
        assert_eq!(cpu.time_ns, T0 + 5 * SEC);

        // wait_time_ms is milliseconds; the receiver's series is seconds.
        let wait = by_metric["sqlserver.os.wait.duration"];
        assert_eq!(wait.value, 12.5);
        assert_eq!(
            (wait.kind, wait.monotonic),
            (MetricKind::CumulativeSum, true)
        );
        assert_eq!(&*wait.unit, "s");
        assert_eq!(
            wait.key.attributes,
            attrs(&[("wait.type", "PAGEIOLATCH_SH")])
        );

        let io = by_metric["sqlserver.database.io"];
        assert_eq!(
            (io.value, io.kind, io.monotonic),
            (1_048_576.0, MetricKind::CumulativeSum, true)
        );
        assert_eq!(&*io.unit, "By");
        assert_eq!(io.key.attributes, attrs(&[("direction", "read")]));

        // blocking_session_id 0 means "not blocked".
        assert!(doc.blocking.is_empty());
        let q = &doc.top_queries[0];
        assert_eq!(q.query_hash, "0x1A2B3C4D5E6F7081");
        assert_eq!(
            (q.executions, q.total_cpu_ms, q.statement.as_str()),
            (0.0, 0.0, "")
        );
        let extra: Vec<&String> = doc.extra.keys().collect();
        assert_eq!(extra, ["source_tool"]);
    }

    #[test]
    fn flat_blocking_document() {
        let docs = documents(FLAT);
        let doc = &docs["flat-blocking"];
        assert_eq!(doc.time.timestamp_nanos_opt(), Some(T0 + 5 * SEC));
        let b = &doc.blocking[0];
        assert_eq!(b.time, doc.time);
        assert_eq!(b.instance, "sql1");
        assert_eq!((b.session_id, b.blocking_session_id), (Some(72), 55));
        assert_eq!((b.wait_type.as_str(), b.wait_time_ms), ("LCK_M_X", 4200.0));
        assert_eq!(b.database, "sales");
        assert_eq!(b.query_hash, "0x9F00AA11BB22CC33");
        assert_eq!(
            b.statement,
            "UPDATE dbo.orders SET status = @1 WHERE id = @2"
        );
        // The session's own wait is not the instance's cumulative wait counter.
        assert!(doc.samples.is_empty(), "{:?}", doc.samples);
        assert_eq!(doc.top_queries[0].query_hash, "0x9F00AA11BB22CC33");
        assert!(doc.extra.is_empty(), "{:?}", doc.extra);
    }

    #[test]
    fn flat_top_query_document() {
        let docs = documents(FLAT);
        let doc = &docs["flat-top-query"];
        assert_eq!(doc.time.timestamp_nanos_opt(), Some(T0 + 10 * SEC));
        assert!(doc.samples.is_empty() && doc.blocking.is_empty());
        assert_eq!(
            doc.top_queries,
            vec![TopQuery {
                last_seen: doc.time,
                instance: "sql2".into(),
                query_hash: "0x77".into(),
                executions: 1500.0,
                total_cpu_ms: 8200.5,
                total_elapsed_ms: 9100.0,
                total_logical_reads: 420_000.0,
                statement: "SELECT * FROM dbo.orders WHERE customer_id = @1".into(),
            }]
        );
    }

    #[test]
    fn flat_log_document() {
        let docs = documents(FLAT);
        let doc = &docs["flat-log"];
        assert_eq!(doc.layout, Layout::Flat);
        let log = &doc.logs[0];
        assert_eq!(
            log.time.timestamp_nanos_opt(),
            Some(T0 + 7 * SEC + 500_000_000)
        );
        assert_eq!((log.severity.as_str(), log.severity_number), ("ERROR", 17));
        assert_eq!(log.message, "Login failed for user 'app'.");
        assert_eq!(log.category, "Logon");
        assert_eq!((log.instance.as_str(), log.host.as_str()), ("sql1", ""));
    }

    #[test]
    fn otel_metric_document_reads_exactly() {
        let docs = documents(OTEL_METRICS);
        let doc = &docs["otel-wait-dotted"];
        assert_eq!(doc.layout, Layout::OtelMapping);
        let s = only_sample(doc);
        assert_eq!(&*s.key.instance, "sql1");
        assert_eq!(&*s.key.host, "db-host-1");
        assert_eq!(&*s.key.database, "sales");
        assert_eq!(&*s.key.metric, "sqlserver.os.wait.duration");
        assert_eq!(
            s.key.attributes,
            attrs(&[("wait.category", "Lock"), ("wait.type", "LCK_M_X")])
        );
        assert_eq!(s.value, 12.5);
        assert_eq!((s.kind, s.monotonic), (MetricKind::CumulativeSum, true));
        assert_eq!(&*s.unit, "s");
        // The exporter's "<millis>.<nanos>" form.
        assert_eq!(s.time_ns, T0 + 123_456_789);
        assert_eq!(s.start_time_ns, T0 - 3600 * SEC);
        assert!(doc.extra.is_empty(), "{:?}", doc.extra);
    }

    #[test]
    fn otel_expanded_objects_read_like_dotted_keys() {
        let docs = documents(OTEL_METRICS);
        let dotted = only_sample(&docs["otel-wait-dotted"]);
        let expanded = only_sample(&docs["otel-wait-expanded"]);
        // The database came from a point attribute here and was taken out of the attributes.
        assert_eq!(dotted.key, expanded.key);
        assert_eq!(dotted.key.id(), expanded.key.id());
        assert_eq!(dotted.value, expanded.value);
    }

    #[test]
    fn otel_document_with_several_metrics() {
        let docs = documents(OTEL_METRICS);
        let doc = &docs["otel-perf-counters"];
        // No sqlserver.instance.name: service.instance.id names the instance.
        assert_eq!(doc.instance, "db-host-2:1433");
        let by_metric: BTreeMap<&str, &Sample> =
            doc.samples.iter().map(|s| (&*s.key.metric, s)).collect();
        assert_eq!(by_metric.len(), 3);
        let rate = by_metric["sqlserver.batch.request.rate"];
        assert_eq!(
            (rate.value, rate.kind, &*rate.unit),
            (120.0, MetricKind::Gauge, "{requests}/s")
        );
        assert_eq!(&*rate.key.host, "db-host-2");
        let ple = by_metric["sqlserver.page.life_expectancy"];
        assert_eq!((ple.value, &*ple.unit), (300.0, "s"));
        let custom = by_metric["vendor.custom.metric"];
        assert_eq!(
            (custom.value, custom.kind, &*custom.unit),
            (7.0, MetricKind::Gauge, "")
        );
        let extra: Vec<&String> = doc.extra.keys().collect();
        assert_eq!(extra, ["agent"]);
    }

    #[test]
    fn otel_unknown_metric_takes_the_document_unit_and_host_fallback() {
        let docs = documents(OTEL_METRICS);
        let s = only_sample(&docs["otel-host-only"]);
        assert_eq!((&*s.key.instance, &*s.key.host), ("db-host-3", "db-host-3"));
        assert_eq!((s.value, s.kind, &*s.unit), (3.5, MetricKind::Gauge, "ms"));
        assert_eq!(s.time_ns, T0 + 15 * SEC);
    }

    #[test]
    fn otel_histogram_is_an_approximate_sum_with_its_count() {
        let docs = documents(OTEL_METRICS);
        let s = only_sample(&docs["otel-histogram"]);
        assert_eq!(&*s.key.metric, "db.server.query.duration");
        assert_eq!(s.kind, MetricKind::Histogram);
        assert_eq!(s.value, 2.0 * 0.5 + 3.0 * 1.5);
        assert_eq!(s.histogram.as_ref().map(|h| h.count), Some(5));
        assert_eq!(s.key.attributes, attrs(&[("db.operation.name", "SELECT")]));
    }

    #[test]
    fn otel_log_records() {
        let docs = documents(OTEL_LOGS);
        let doc = &docs["otel-log-error"];
        assert_eq!(doc.layout, Layout::OtelMapping);
        let log = &doc.logs[0];
        assert_eq!(log.time.timestamp_nanos_opt(), Some(T0 + 30 * SEC));
        assert_eq!((log.severity.as_str(), log.severity_number), ("ERROR", 17));
        assert_eq!(
            log.message,
            "Login failed for user 'app'. Reason: Password did not match."
        );
        assert_eq!(log.category, "Logon");
        assert_eq!(
            (log.instance.as_str(), log.host.as_str()),
            ("sql1", "db-host-1")
        );
        assert_eq!(
            log.attributes,
            attrs(&[
                ("log.category", "Logon"),
                ("sqlserver.error.number", "18456")
            ])
        );

        let log = &docs["otel-log-structured"].logs[0];
        assert_eq!((log.severity.as_str(), log.severity_number), ("INFO", 9));
        assert_eq!(log.message, r#"{"database":"sales","event":"backup"}"#);
        // No log.category attribute: the scope names the category.
        assert_eq!(log.category, "sqlvigil.tests");
        assert_eq!(log.attributes, attrs(&[("event.name", "backup.finished")]));
    }

    #[test]
    fn otel_top_query_event() {
        let docs = documents(OTEL_LOGS);
        let doc = &docs["otel-top-query"];
        assert!(doc.logs.is_empty() && doc.blocking.is_empty());
        assert_eq!(
            doc.top_queries,
            vec![TopQuery {
                last_seen: DateTime::from_timestamp_nanos(T0 + 40 * SEC),
                instance: "sql1".into(),
                query_hash: "307833373834394538373431373145334633".into(),
                executions: 5.0,
                // Seconds in the event, milliseconds here.
                total_cpu_ms: 250.0,
                total_elapsed_ms: 400.0,
                total_logical_reads: 120.0,
                statement: "SELECT * FROM dbo.orders WHERE id = ?".into(),
            }]
        );
        assert!(doc.extra.is_empty(), "{:?}", doc.extra);
        let expanded = &docs["otel-top-query-expanded"];
        assert_eq!(expanded.top_queries, doc.top_queries);
    }

    #[test]
    fn otel_query_sample_events() {
        let docs = documents(OTEL_LOGS);
        let doc = &docs["otel-query-sample-blocked"];
        assert!(doc.logs.is_empty() && doc.top_queries.is_empty());
        assert_eq!(
            doc.blocking,
            vec![BlockingEvent {
                time: DateTime::from_timestamp_nanos(T0 + 45 * SEC),
                instance: "sql1".into(),
                session_id: Some(72),
                blocking_session_id: 55,
                wait_type: "LCK_M_X".into(),
                wait_time_ms: 4200.0,
                database: "sales".into(),
                query_hash: "3078394630304141".into(),
                statement: "UPDATE dbo.orders SET status = ? WHERE id = ?".into(),
            }]
        );
        let running = &docs["otel-query-sample-running"];
        assert!(running.blocking.is_empty() && running.logs.is_empty());
    }

    #[test]
    fn malformed_hits_say_why() {
        let (docs, bad) = hits(&fixture(MALFORMED));
        assert!(docs.is_empty(), "{docs:?}");
        let reasons: BTreeMap<&str, &str> = bad
            .iter()
            .map(|m| (m.id.as_str(), m.reason.as_str()))
            .collect();
        let expect = [
            ("no-timestamp", "no timestamp (`@timestamp`)"),
            ("bad-timestamp", "`@timestamp` is not a date"),
            ("string-value", "`metric.value` is not a number: \"12.5\""),
            ("source-not-object", "`_source` is not an object"),
            ("no-instance", "no instance (`instance_name`)"),
            ("empty-doc", "`_source` is empty"),
            ("no-source", "hit has no `_source`"),
            ("", "hit is not a JSON object"),
            (
                "otel-string-value",
                "`metrics.sqlserver.cpu.utilization` is not a number",
            ),
            (
                "unknown-kind",
                "`metric.kind` is not a metric kind: \"summary\"",
            ),
            ("unknown-layout", "no known document layout"),
            ("otel-no-instance", "no instance (resource attribute"),
            ("attributes-not-object", "`attributes` is not an object"),
            ("bad-blocking-id", "`blocking_session_id` is not an integer"),
        ];
        assert_eq!(bad.len(), expect.len(), "{bad:?}");
        for (id, reason) in expect {
            let got = reasons
                .get(id)
                .unwrap_or_else(|| panic!("{id} not malformed"));
            assert!(got.contains(reason), "{id}: {got:?} lacks {reason:?}");
        }
        let first = &bad[0];
        assert_eq!(first.index, "mssql-metrics-default");
    }

    #[test]
    fn hits_splits_good_from_bad() {
        let mut all = fixture(MALFORMED);
        for text in [
            SQLVIGIL_METRICS,
            SQLVIGIL_LOGS,
            FLAT,
            OTEL_METRICS,
            OTEL_LOGS,
        ] {
            all.extend(fixture(text));
        }
        let (docs, bad) = hits(&all);
        assert_eq!(bad.len(), fixture(MALFORMED).len());
        assert_eq!(docs.len(), all.len() - bad.len());
    }

    #[test]
    fn detect_tells_the_layouts_apart() {
        let cases = [
            (
                json!({"metric": {"name": "m", "value": 1}}),
                Some(Layout::Sqlvigil),
            ),
            (json!({"metric.name": "m"}), Some(Layout::Sqlvigil)),
            (
                json!({"message": "x", "severity_number": 9}),
                Some(Layout::Sqlvigil),
            ),
            (json!({"cpu_percent": 1}), Some(Layout::Flat)),
            (json!({"user_connections": 12}), Some(Layout::Flat)),
            (
                json!({"message": "x", "severity": "INFO"}),
                Some(Layout::Flat),
            ),
            (json!({"metrics": {"a": 1}}), Some(Layout::OtelMapping)),
            (json!({"body": {"text": "x"}}), Some(Layout::OtelMapping)),
            (
                json!({"data_stream": {"dataset": "generic.otel"}}),
                Some(Layout::OtelMapping),
            ),
            (json!({"foo": 1}), None),
            (json!([1, 2]), None),
        ];
        for (source, layout) in cases {
            assert_eq!(detect(&source), layout, "{source}");
        }
    }

    #[test]
    fn timestamps_in_every_form() {
        let cases = [
            (
                json!("2026-11-29T18:00:00.123456789Z"),
                Some(T0 + 123_456_789),
            ),
            (json!("2026-11-29T19:00:00+01:00"), Some(T0)),
            (json!("2026-11-29T18:00:00.5"), Some(T0 + 500_000_000)),
            (json!("2026-11-29 18:00:00"), Some(T0)),
            (json!(1_795_975_200_000_i64), Some(T0)),
            (json!(1_795_975_200_000.5_f64), Some(T0 + 500_000)),
            (json!("1795975200000"), Some(T0)),
            (json!("1795975200123.456789"), Some(T0 + 123_456_789)),
            // The exporter does not pad: 42 ns within the millisecond.
            (json!("1795975200000.42"), Some(T0 + 42)),
            (json!("1795975200000.1234567"), None),
            (json!("yesterday"), None),
            (json!(true), None),
            (json!(null), None),
            (json!(1e300), None),
            (json!("99999999999999999999"), None),
        ];
        for (value, ns) in cases {
            assert_eq!(parse_time(&value), ns, "{value}");
        }
    }

    #[test]
    fn series_matches_by_metric_alias_and_instance() {
        let s = Sample::gauge(
            SeriesKey::new("sql1", "h", "", "sqlserver.cpu.utilization"),
            T0,
            1.0,
            "%",
        );
        assert!(series_matches(&s, None, None));
        assert!(series_matches(
            &s,
            Some("sqlserver.cpu.utilization"),
            Some("sql1")
        ));
        assert!(series_matches(&s, Some("cpu_percent"), None));
        assert!(!series_matches(
            &s,
            Some("sqlserver.os.wait.duration"),
            None
        ));
        assert!(!series_matches(&s, None, Some("sql2")));
    }

    #[test]
    fn odd_documents_never_panic() {
        let odd = [
            json!(null),
            json!("text"),
            json!({"_source": null}),
            json!({"_source": {"metric": null}}),
            json!({"_source": {"metric": {"name": null}, "@timestamp": 1}}),
            json!({"_source": {"metric": {"name": ["a"]}, "@timestamp": 1, "instance_name": "i"}}),
            json!({"_source": {"metrics": [], "resource": {"attributes": {"host.name": "h"}}, "@timestamp": 1}}),
            json!({"_source": {"metrics": {"m": {"counts": [1], "values": []}}, "resource": {"attributes": {"host.name": "h"}}, "@timestamp": 1}}),
            json!({"_source": {"metrics": {"m": {"counts": [-1], "values": [1]}}, "resource": {"attributes": {"host.name": "h"}}, "@timestamp": 1}}),
            json!({"_source": {"resource": "x", "body": 5}}),
            json!({"_source": {"resource": {"attributes": {"host.name": "h"}}, "body": [1], "@timestamp": 1, "severity_number": 1e12}}),
            json!({"_source": {"event_name": "db.server.top_query", "resource": {"attributes": {"host.name": "h"}}, "@timestamp": 1}}),
            json!({"_source": {"blocking_session_id": 1.5, "instance_name": "i", "timestamp": 1}}),
            json!({"_source": {"cpu_percent": {"a": 1}, "instance_name": "i", "timestamp": 1}}),
            json!({"_source": {"wait_time_ms": 5, "instance_name": "i", "timestamp": 1}}),
        ];
        for h in odd {
            // Either outcome is fine; what matters is an answer, not a panic.
            let _ = hit(&h);
        }
        // A wait without its type names no series: kept, not guessed.
        let doc =
            hit(&json!({"_source": {"wait_time_ms": 5, "instance_name": "i", "timestamp": 1}}))
                .expect("a flat document");
        assert!(doc.samples.is_empty());
        assert_eq!(doc.extra["wait_time_ms"], 5);
    }
}
