//! Layout 3: the Collector's `elasticsearch` exporter in OTel mapping mode.

use super::*;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlvigil_model::catalogue::{self};
use sqlvigil_model::{BlockingEvent, HistogramPoint, LogRecord, MetricKind, Sample, TopQuery};
use std::collections::BTreeMap;

/// Top-level fields of the exporter that carry no telemetry we model.
pub(crate) const OTEL_ENVELOPE: &[&str] = &[
    "_metric_names_hash",
    "_doc_count",
    "observed_timestamp",
    "trace_id",
    "span_id",
    "dropped_attributes_count",
    "resource",
    "scope",
];

pub(crate) fn otel(f: &mut Fields) -> Result<Parts, String> {
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
pub(crate) fn otel_origin(resource: &BTreeMap<String, String>) -> Result<Origin, String> {
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

pub(crate) fn otel_metrics(f: &mut Fields, mut origin: Origin) -> Result<Parts, String> {
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
pub(crate) fn flatten_metrics<'a>(
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

pub(crate) fn is_distribution(obj: &Map<String, Value>) -> bool {
    ["counts", "values", "sum", "value_count"]
        .iter()
        .any(|k| obj.contains_key(*k))
}

/// A metric's value, and for histogram-like values a count-only histogram point.
pub(crate) fn otel_value(
    name: &str,
    value: &Value,
) -> Result<(f64, Option<HistogramPoint>), String> {
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
pub(crate) enum Event {
    TopQuery,
    QuerySample,
}

pub(crate) fn event_kind(name: Option<&str>, attrs: &BTreeMap<String, &Value>) -> Option<Event> {
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

pub(crate) fn otel_log(f: &mut Fields, origin: Origin) -> Result<Parts, String> {
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
pub(crate) fn mark_log_fields(f: &mut Fields) {
    for key in ["severity_text", "severity_number", "body"] {
        f.mark(key);
    }
}

pub(crate) fn otel_record(
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
pub(crate) fn body_text(body: Option<&Value>) -> String {
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

pub(crate) fn attr_text(attrs: &BTreeMap<String, &Value>, key: &str) -> String {
    match attrs.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

pub(crate) fn attr_number(attrs: &BTreeMap<String, &Value>, key: &str) -> Result<f64, String> {
    attrs
        .get(key)
        .map_or(Ok(0.0), |v| number(v, &format!("attributes.{key}")))
}

/// `db.server.top_query`: counters are deltas since the receiver's previous scrape;
/// `sqlserver.total_worker_time` and `sqlserver.total_elapsed_time` are seconds.
pub(crate) fn otel_top_query(
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
pub(crate) fn otel_query_sample(
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
