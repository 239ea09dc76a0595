//! Validated OTLP requests → typed [`Sample`]s and [`LogRecord`]s (in the consumer, after
//! the bus).

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::logs::v1::ResourceLogs;
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, AggregationTemporality, Metric, NumberDataPoint,
};
use sqlvigil_model::{HistogramPoint, IdPrefix, LogRecord, MetricKind, Sample, SeriesKey};
use std::sync::Arc;

use crate::resource::{any_to_string, attr_map, origin, Origin};
use crate::validate::number_value;

/// What every point of one metric of one resource shares: the key's leading fields
/// (shared strings) with their id hash, and the unit.
struct MetricHead<'a> {
    origin: &'a Origin,
    name: Arc<str>,
    unit: Arc<str>,
    id: IdPrefix,
}

impl<'a> MetricHead<'a> {
    fn new(origin: &'a Origin, m: &Metric) -> Self {
        let (o, name) = (origin, m.name.as_str());
        MetricHead {
            origin,
            name: name.into(),
            unit: m.unit.as_str().into(),
            id: IdPrefix::new(&o.instance, &o.host, &o.database, name),
        }
    }

    fn key(&self, attrs: &[KeyValue]) -> SeriesKey {
        let mut attributes = attr_map(attrs);
        if let Some(id) = &self.origin.service_instance_id {
            attributes.insert("service.instance.id".into(), id.clone());
        }
        let o = self.origin;
        SeriesKey::from_parts(
            o.instance.clone(),
            o.host.clone(),
            o.database.clone(),
            self.name.clone(),
            attributes,
        )
        .with_id_prefix(self.id)
    }
}

/// Decode validated metrics into samples.
pub fn metrics_to_samples(req: &ExportMetricsServiceRequest, out: &mut Vec<Sample>) {
    for rm in &req.resource_metrics {
        let origin = origin(rm.resource.as_ref());
        for m in rm.scope_metrics.iter().flat_map(|sm| &sm.metrics) {
            resource_metric_samples(&origin, m, out);
        }
    }
}

fn resource_metric_samples(origin: &Origin, m: &Metric, out: &mut Vec<Sample>) {
    let head = MetricHead::new(origin, m);
    let head = &head;
    let number = |p: &NumberDataPoint, kind: MetricKind, monotonic: bool| {
        number_value(p)
            .filter(|v| v.is_finite())
            .map(|value| Sample {
                time_ns: p.time_unix_nano as i64,
                start_time_ns: p.start_time_unix_nano as i64,
                key: head.key(&p.attributes),
                value,
                kind,
                monotonic,
                unit: head.unit.clone(),
                histogram: None,
            })
    };
    match &m.data {
        Some(Data::Gauge(g)) => out.extend(
            g.data_points
                .iter()
                .filter_map(|p| number(p, MetricKind::Gauge, false)),
        ),
        Some(Data::Sum(s)) => {
            let kind = if s.aggregation_temporality == AggregationTemporality::Delta as i32 {
                MetricKind::DeltaSum
            } else {
                MetricKind::CumulativeSum
            };
            out.extend(
                s.data_points
                    .iter()
                    .filter_map(|p| number(p, kind, s.is_monotonic)),
            )
        }
        Some(Data::Histogram(h)) => out.extend(h.data_points.iter().map(|p| {
            let hist = HistogramPoint {
                count: p.count,
                bounds: p.explicit_bounds.clone(),
                bucket_counts: p.bucket_counts.clone(),
            };
            histogram(
                head,
                (p.time_unix_nano, p.start_time_unix_nano),
                &p.attributes,
                p.sum.unwrap_or(0.0),
                hist,
            )
        })),
        // Exponential histograms and summaries keep count and sum (no explicit buckets).
        Some(Data::ExponentialHistogram(h)) => out.extend(h.data_points.iter().map(|p| {
            let times = (p.time_unix_nano, p.start_time_unix_nano);
            histogram(
                head,
                times,
                &p.attributes,
                p.sum.unwrap_or(0.0),
                count_only(p.count),
            )
        })),
        Some(Data::Summary(s)) => out.extend(s.data_points.iter().map(|p| {
            let times = (p.time_unix_nano, p.start_time_unix_nano);
            histogram(head, times, &p.attributes, p.sum, count_only(p.count))
        })),
        None => {}
    }
}

/// Histogram data of a point type without explicit buckets.
fn count_only(count: u64) -> HistogramPoint {
    HistogramPoint {
        count,
        bounds: Vec::new(),
        bucket_counts: Vec::new(),
    }
}

/// A histogram-kind sample: `value` is the sum, the rest in `hist`.
fn histogram(
    head: &MetricHead,
    (time, start): (u64, u64),
    attrs: &[KeyValue],
    sum: f64,
    hist: HistogramPoint,
) -> Sample {
    Sample {
        time_ns: time as i64,
        start_time_ns: start as i64,
        key: head.key(attrs),
        value: sum,
        kind: MetricKind::Histogram,
        monotonic: false,
        unit: head.unit.clone(),
        histogram: Some(hist),
    }
}

/// Decode logs into log records.
pub fn logs_to_records(req: &ExportLogsServiceRequest, out: &mut Vec<LogRecord>) {
    for rl in &req.resource_logs {
        resource_logs(rl, out);
    }
}

fn resource_logs(rl: &ResourceLogs, out: &mut Vec<LogRecord>) {
    let origin = origin(rl.resource.as_ref());
    for sl in &rl.scope_logs {
        let scope = sl
            .scope
            .as_ref()
            .map(|s| s.name.clone())
            .unwrap_or_default();
        for lr in &sl.log_records {
            let mut attributes = attr_map(&lr.attributes);
            // The receiver's events (`db.server.top_query`, …) are named by the OTLP
            // `event_name` field; LogRecord keeps it as the `event.name` attribute.
            if !lr.event_name.is_empty() {
                attributes
                    .entry(sqlvigil_model::activity::EVENT_NAME_ATTR.to_string())
                    .or_insert_with(|| lr.event_name.clone());
            }
            let time = if lr.time_unix_nano != 0 {
                lr.time_unix_nano
            } else {
                lr.observed_time_unix_nano
            };
            let severity = if lr.severity_text.is_empty() {
                sqlvigil_model::log::severity_text(lr.severity_number).to_string()
            } else {
                lr.severity_text.clone()
            };
            out.push(LogRecord {
                time: sqlvigil_model::ns_to_datetime(time as i64),
                severity,
                severity_number: lr.severity_number,
                message: lr.body.as_ref().map(any_to_string).unwrap_or_default(),
                category: attributes
                    .get("log.category")
                    .cloned()
                    .unwrap_or_else(|| scope.clone()),
                instance: origin.instance.to_string(),
                host: origin.host.to_string(),
                attributes,
            });
        }
    }
}
