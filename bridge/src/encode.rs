//! The documents sqlvigil writes to Elasticsearch and their `_bulk` lines.
//!
//! A metric document is one point: the OTel identity (`metric.name`, `attributes`,
//! instance/host/database) plus seed 002's flat fields when the metric has one
//! (`cpu_percent`, `wait_type` + `wait_time_ms`, `physical_io_bytes`), so dashboards
//! built on either vocabulary work. Metrics go to a time series data stream, where
//! Elasticsearch derives `_id` from the dimensions and `@timestamp`; every other
//! document carries a deterministic `_id` ([`log_id`], the anomaly or insight id), so a
//! retried or replayed write is a version conflict or an overwrite, never a duplicate.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlvigil_model::{catalogue, Anomaly, HistogramPoint, Insight, LogRecord, Sample};
use std::collections::BTreeMap;

/// The `_bulk` operation of an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Fails with 409 when the `_id` exists (data streams accept only this).
    Create,
    /// Replaces the document with that `_id` (anomalies move open → resolved).
    Index,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Index => "index",
        }
    }
}

fn rfc3339_ns(ns: i64) -> String {
    sqlvigil_model::ns_to_datetime(ns).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

#[derive(Serialize)]
struct MetricField<'a> {
    name: &'a str,
    value: f64,
    #[serde(skip_serializing_if = "str::is_empty")]
    unit: &'a str,
    kind: &'static str,
    monotonic: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_time: Option<String>,
}

#[derive(Serialize)]
struct MetricDoc<'a> {
    #[serde(rename = "@timestamp")]
    timestamp: String,
    series_id: String,
    instance_name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    host_name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    database_name: &'a str,
    metric: MetricField<'a>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    attributes: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    histogram: Option<&'a HistogramPoint>,
    // Seed 002's flat vocabulary.
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu_percent: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    wait_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    wait_time_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    physical_io_bytes: Option<f64>,
}

fn metric_struct(s: &Sample) -> MetricDoc<'_> {
    let name = &*s.key.metric;
    let is = |alias: &str| catalogue::resolve_alias(alias) == Some(name);
    let wait = name == "sqlserver.os.wait.duration";
    MetricDoc {
        timestamp: rfc3339_ns(s.time_ns),
        series_id: s.key.id_hex(),
        instance_name: &s.key.instance,
        host_name: &s.key.host,
        database_name: &s.key.database,
        metric: MetricField {
            name,
            value: s.value,
            unit: &s.unit,
            kind: s.kind.as_str(),
            monotonic: s.monotonic,
            start_time: (s.start_time_ns > 0).then(|| rfc3339_ns(s.start_time_ns)),
        },
        attributes: &s.key.attributes,
        histogram: s.histogram.as_ref(),
        cpu_percent: is("cpu_percent").then_some(s.value),
        wait_type: wait
            .then(|| s.key.attributes.get("wait.type").map(String::as_str))
            .flatten(),
        // The receiver reports wait time in seconds; seed 002 speaks milliseconds.
        wait_time_ms: wait.then_some(s.value * 1000.0),
        physical_io_bytes: (name == "sqlserver.database.io").then_some(s.value),
    }
}

/// The document of one metric point.
pub fn metric_doc(s: &Sample) -> Value {
    serde_json::to_value(metric_struct(s)).unwrap_or(Value::Null)
}

/// The document of one log record.
pub fn log_doc(l: &LogRecord) -> Value {
    serde_json::json!({
        "@timestamp": l.time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        "severity": l.severity,
        "severity_number": l.severity_number,
        "message": l.message,
        "log_category": l.category,
        "instance_name": l.instance,
        "host_name": l.host,
        "attributes": l.attributes,
    })
}

/// Deterministic `_id` of a log record: a hash of everything that identifies it.
pub fn log_id(l: &LogRecord) -> String {
    let mut h = Sha256::new();
    for part in [&l.instance, &l.host, &l.severity, &l.category, &l.message] {
        h.update(part.as_bytes());
        h.update([0xff]);
    }
    h.update(
        l.time
            .timestamp_nanos_opt()
            .unwrap_or_default()
            .to_be_bytes(),
    );
    for (k, v) in &l.attributes {
        h.update(k.as_bytes());
        h.update([b'=']);
        h.update(v.as_bytes());
        h.update([0xfe]);
    }
    hex::encode(&h.finalize()[..16])
}

/// The document of an anomaly (the whole model plus the fields dashboards filter on).
pub fn anomaly_doc(a: &Anomaly) -> Value {
    let mut doc = serde_json::to_value(a).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut doc {
        m.insert("@timestamp".into(), Value::String(a.opened_at.to_rfc3339()));
        m.insert(
            "instance_name".into(),
            Value::String(a.series.instance.to_string()),
        );
        m.insert(
            "metric_name".into(),
            Value::String(a.series.metric.to_string()),
        );
    }
    doc
}

/// The document of an insight (`llm_insights`, seed 002's fields and the audit trail).
pub fn insight_doc(i: &Insight) -> Value {
    let mut doc = serde_json::to_value(i).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut doc {
        m.insert(
            "@timestamp".into(),
            Value::String(i.generated_at.to_rfc3339()),
        );
        m.insert("instance_name".into(), Value::String(i.instance.clone()));
        // `inputs` holds whole prompts: stored for audit, not indexed (see the mapping).
    }
    doc
}

/// Append one `_bulk` item (action line + source line) to `out`.
pub fn push_item<S: Serialize>(
    out: &mut Vec<u8>,
    op: Op,
    index: &str,
    id: Option<&str>,
    source: &S,
) {
    let action = match id {
        Some(id) => serde_json::json!({ op.as_str(): { "_index": index, "_id": id } }),
        None => serde_json::json!({ op.as_str(): { "_index": index } }),
    };
    // Serializing a Value or our own structs into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &action);
    out.push(b'\n');
    let _ = serde_json::to_writer(&mut *out, source);
    out.push(b'\n');
}

/// Append the `_bulk` item of a metric point (no `_id`: the data stream derives it).
pub fn push_metric(out: &mut Vec<u8>, data_stream: &str, s: &Sample) {
    push_item(out, Op::Create, data_stream, None, &metric_struct(s));
}

/// Append the `_bulk` item of a log record.
pub fn push_log(out: &mut Vec<u8>, data_stream: &str, l: &LogRecord) {
    push_item(out, Op::Create, data_stream, Some(&log_id(l)), &log_doc(l));
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlvigil_model::{MetricKind, SeriesKey};

    #[test]
    fn wait_points_carry_seed_002_fields_in_milliseconds() {
        let key = SeriesKey::new("sql1", "h1", "", "sqlserver.os.wait.duration")
            .with_attr("wait.type", "LCK_M_X");
        let mut s = Sample::gauge(key, 1_700_000_000_123_456_789, 1.5, "s");
        s.kind = MetricKind::CumulativeSum;
        let doc = metric_doc(&s);
        assert_eq!(doc["@timestamp"], "2023-11-14T22:13:20.123456789Z");
        assert_eq!(doc["metric"]["name"], "sqlserver.os.wait.duration");
        assert_eq!(doc["metric"]["kind"], "cumulative_sum");
        assert_eq!(doc["attributes"]["wait.type"], "LCK_M_X");
        assert_eq!(doc["wait_type"], "LCK_M_X");
        assert_eq!(doc["wait_time_ms"], 1500.0);
        assert!(doc.get("cpu_percent").is_none());
        assert!(doc.get("database_name").is_none());
    }

    #[test]
    fn bulk_items_are_two_lines_and_log_ids_are_stable() {
        let l = LogRecord {
            time: chrono::DateTime::from_timestamp(1_700_000_000, 5).unwrap_or_default(),
            severity: "ERROR".into(),
            severity_number: 17,
            message: "Login failed".into(),
            category: "Logon".into(),
            instance: "sql1".into(),
            host: "h1".into(),
            attributes: BTreeMap::new(),
        };
        let mut out = Vec::new();
        push_log(&mut out, "mssql-logs-default", &l);
        let text = String::from_utf8(out).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let action: Value = serde_json::from_str(lines[0]).unwrap_or_default();
        assert_eq!(action["create"]["_id"], log_id(&l));
        let mut other = l.clone();
        other.message.push('!');
        assert_ne!(log_id(&l), log_id(&other));
        assert_eq!(log_id(&l), log_id(&l.clone()));
    }
}
