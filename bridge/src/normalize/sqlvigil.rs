//! Layout 1: sqlvigil's own Elastic sink.

use super::*;
use chrono::DateTime;
use serde_json::Value;
use sqlvigil_model::catalogue::{self};
use sqlvigil_model::{HistogramPoint, LogRecord, MetricKind, Sample};

/// The flat copies our sink adds for seed 002 readers: the same sample again.
pub(crate) const SQLVIGIL_COPIES: &[&str] = &[
    "cpu_percent",
    "wait_type",
    "wait_time_ms",
    "physical_io_bytes",
];

pub(crate) fn sqlvigil(f: &mut Fields) -> Result<Parts, String> {
    if f.has("metric.name") {
        sqlvigil_metric(f)
    } else {
        log_doc(f, &["@timestamp", "timestamp"])
    }
}

pub(crate) fn sqlvigil_metric(f: &mut Fields) -> Result<Parts, String> {
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
            .unwrap_or_else(|| def.map_or("", catalogue::unit_of).to_string())
            .into(),
        histogram,
    };
    let mut parts = flat_events(f, &origin, time_ns)?;
    parts.samples.push(sample);
    Ok(parts)
}

pub(crate) fn sqlvigil_histogram(value: &Value) -> Result<HistogramPoint, String> {
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

pub(crate) fn array<T>(
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
pub(crate) fn log_doc(f: &mut Fields, time_fields: &[&str]) -> Result<Parts, String> {
    let time_ns = doc_time(f, time_fields)?;
    let origin = flat_origin(f)?;
    let number = severity_number_field(f, "severity_number")?;
    let (severity, severity_number) = severity(f.text("severity")?, number);
    let database = origin.database.clone();
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
    // sqlvigil's own log documents keep the receiver's events as they came (the
    // `event.name` attribute): they read back as events, not as log lines.
    let mut parts = Parts {
        time_ns,
        instance: origin.instance,
        ..Parts::default()
    };
    parts.push_log(record, &database)?;
    Ok(parts)
}
