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

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlvigil_model::catalogue::{self};
use sqlvigil_model::{BlockingEvent, LogRecord, Sample, TopQuery};

mod detect;
mod fields;
mod flat;
mod otel;
mod sqlvigil;

use detect::*;
use fields::*;
use flat::*;
use otel::*;
use sqlvigil::*;

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

pub use sqlvigil_model::query::Malformed;

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sqlvigil_model::{HistogramPoint, MetricKind, SeriesKey};
    use std::collections::BTreeMap;

    const SQLVIGIL_METRICS: &str = include_str!("../../tests/fixtures/sqlvigil_metrics.json");
    const SQLVIGIL_LOGS: &str = include_str!("../../tests/fixtures/sqlvigil_logs.json");
    const FLAT: &str = include_str!("../../tests/fixtures/flat_seed002.json");
    const OTEL_METRICS: &str = include_str!("../../tests/fixtures/otel_metrics.json");
    const OTEL_LOGS: &str = include_str!("../../tests/fixtures/otel_logs.json");
    const MALFORMED: &str = include_str!("../../tests/fixtures/malformed.json");

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
                ..TopQuery::default()
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
                query_plan_hash: "307844333131323930393432394131423530".into(),
                total_logical_writes: 3.0,
                total_physical_reads: 4.0,
                total_rows: 5.0,
                ..TopQuery::default()
            }]
        );
        assert!(doc.extra.is_empty(), "{:?}", doc.extra);
        let expanded = &docs["otel-top-query-expanded"];
        let core = |q: &TopQuery| {
            (
                q.query_hash.clone(),
                q.executions,
                q.total_cpu_ms,
                q.statement.clone(),
            )
        };
        assert_eq!(core(&expanded.top_queries[0]), core(&doc.top_queries[0]));
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
                wait_resource: "KEY: 5:72057594043170816 (8194443284a0)".into(),
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
