//! Layout 3: the Collector's `elasticsearch` exporter in OTel mapping mode.

use super::*;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlvigil_model::catalogue::{self};
use sqlvigil_model::{HistogramPoint, LogRecord, MetricKind, Sample};
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
            .map(|d| catalogue::unit_of(d).to_string())
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
    let database = origin.database.clone();
    let record = otel_record(f, &attrs, event, origin, time)?;
    parts.push_log(record, &database)?;
    Ok(parts)
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
