//! OTLP requests → validated requests (partial success) → typed samples and log records.
//!
//! Validation happens in the receiver, before anything is published, so the client learns
//! exactly which points were refused; decoding into [`Sample`]s happens in the consumer.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::ResourceLogs;
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, AggregationTemporality, Metric, NumberDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use sqlvigil_model::{HistogramPoint, IdPrefix, LogRecord, MetricKind, Sample, SeriesKey};
use std::collections::BTreeMap;
use std::sync::Arc;

/// OTLP's "no recorded value" data point flag.
const FLAG_NO_RECORDED_VALUE: u32 = 1;

/// What validation refused, for `partial_success`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Rejected {
    pub points: i64,
    pub reasons: Vec<String>,
}

impl Rejected {
    fn add(&mut self, n: usize, reason: String) {
        if n == 0 {
            return;
        }
        self.points += n as i64;
        if self.reasons.len() < 5 && !self.reasons.contains(&reason) {
            self.reasons.push(reason);
        }
    }

    /// The OTLP `error_message`: empty when nothing was refused.
    pub fn message(&self) -> String {
        if self.points == 0 {
            String::new()
        } else {
            format!(
                "rejected {} data point(s): {}",
                self.points,
                self.reasons.join("; ")
            )
        }
    }
}

fn number_value(p: &NumberDataPoint) -> Option<f64> {
    match p.value {
        Some(number_data_point::Value::AsDouble(v)) => Some(v),
        Some(number_data_point::Value::AsInt(v)) => Some(v as f64),
        None => None,
    }
}

fn number_point_ok(p: &NumberDataPoint) -> Result<(), &'static str> {
    if p.flags & FLAG_NO_RECORDED_VALUE != 0 {
        return Err("no recorded value");
    }
    match number_value(p) {
        None => Err("value missing"),
        Some(v) if !v.is_finite() => Err("value is NaN or infinite"),
        Some(_) if p.time_unix_nano == 0 => Err("time_unix_nano missing"),
        Some(_) => Ok(()),
    }
}

/// Count of data points a metric carries.
pub fn point_count(m: &Metric) -> usize {
    match &m.data {
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Histogram(h)) => h.data_points.len(),
        Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}

/// Remove the points sqlvigil refuses, in place; return what was refused.
pub fn validate_metrics(req: &mut ExportMetricsServiceRequest) -> Rejected {
    let mut rejected = Rejected::default();
    for rm in &mut req.resource_metrics {
        for sm in &mut rm.scope_metrics {
            sm.metrics.retain_mut(|m| {
                if m.name.trim().is_empty() {
                    rejected.add(point_count(m), "metric name missing".into());
                    return false;
                }
                validate_points(m, &mut rejected);
                point_count(m) > 0
            });
        }
        rm.scope_metrics.retain(|sm| !sm.metrics.is_empty());
    }
    req.resource_metrics
        .retain(|rm| !rm.scope_metrics.is_empty());
    rejected
}

fn validate_points(m: &mut Metric, rejected: &mut Rejected) {
    let name = m.name.clone();
    let mut retain_numbers = |points: &mut Vec<NumberDataPoint>| {
        points.retain(|p| match number_point_ok(p) {
            Ok(()) => true,
            Err(why) => {
                rejected.add(1, format!("metric `{name}`: {why}"));
                false
            }
        })
    };
    match &mut m.data {
        Some(Data::Gauge(g)) => retain_numbers(&mut g.data_points),
        Some(Data::Sum(s)) => retain_numbers(&mut s.data_points),
        Some(Data::Histogram(h)) => h.data_points.retain(|p| {
            let ok = p.time_unix_nano != 0 && p.sum.is_none_or(f64::is_finite);
            if !ok {
                rejected.add(
                    1,
                    format!("metric `{name}`: histogram time missing or sum not finite"),
                );
            }
            ok
        }),
        Some(Data::ExponentialHistogram(h)) => h.data_points.retain(|p| p.time_unix_nano != 0),
        Some(Data::Summary(s)) => s
            .data_points
            .retain(|p| p.time_unix_nano != 0 && p.sum.is_finite()),
        None => {}
    }
}

/// Number of data points in a whole request.
pub fn request_points(req: &ExportMetricsServiceRequest) -> usize {
    req.resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .map(point_count)
        .sum()
}

/// Number of log records in a whole request.
pub fn request_log_records(req: &ExportLogsServiceRequest) -> usize {
    req.resource_logs
        .iter()
        .flat_map(|rl| &rl.scope_logs)
        .map(|sl| sl.log_records.len())
        .sum()
}

fn any_to_string(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attr_map(attrs: &[KeyValue]) -> BTreeMap<String, String> {
    attrs
        .iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map(any_to_string).unwrap_or_default(),
            )
        })
        .collect()
}

/// Where a resource's telemetry comes from: instance, host, database and extra identity.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Origin {
    pub instance: Arc<str>,
    pub host: Arc<str>,
    pub database: Arc<str>,
    /// `service.instance.id` when it is not already the instance name.
    pub service_instance_id: Option<String>,
}

/// Read the resource attributes the series key keeps.
pub fn origin(resource: Option<&Resource>) -> Origin {
    let attrs = resource
        .map(|r| attr_map(&r.attributes))
        .unwrap_or_default();
    let get = |k: &str| attrs.get(k).filter(|v| !v.is_empty()).cloned();
    let service_id = get("service.instance.id");
    let host = get("host.name")
        .or_else(|| get("server.address"))
        .unwrap_or_default();
    let (instance, service_instance_id) = match get("sqlserver.instance.name") {
        Some(name) => (name, service_id),
        None => (
            service_id
                .or_else(|| (!host.is_empty()).then(|| host.clone()))
                .unwrap_or_else(|| "unknown".into()),
            None,
        ),
    };
    Origin {
        instance: instance.into(),
        host: host.into(),
        database: get("sqlserver.database.name").unwrap_or_default().into(),
        service_instance_id,
    }
}

/// The bus key for a resource: its instance, so one instance stays in one partition.
pub fn instance_key(resource: Option<&Resource>) -> String {
    origin(resource).instance.to_string()
}

/// Group resource-level items by instance, keeping their order (bus records keyed by instance).
fn group_by_instance<T>(
    items: Vec<T>,
    resource: impl Fn(&T) -> Option<&Resource>,
) -> Vec<(String, Vec<T>)> {
    let mut out: Vec<(String, Vec<T>)> = Vec::new();
    for item in items {
        let key = instance_key(resource(&item));
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some((_, group)) => group.push(item),
            None => out.push((key, vec![item])),
        }
    }
    out
}

/// Split a request into one request per instance.
pub fn split_metrics(
    req: ExportMetricsServiceRequest,
) -> Vec<(String, ExportMetricsServiceRequest)> {
    group_by_instance(req.resource_metrics, |rm| rm.resource.as_ref())
        .into_iter()
        .map(|(k, resource_metrics)| (k, ExportMetricsServiceRequest { resource_metrics }))
        .collect()
}

/// Same as [`split_metrics`] for logs.
pub fn split_logs(req: ExportLogsServiceRequest) -> Vec<(String, ExportLogsServiceRequest)> {
    group_by_instance(req.resource_logs, |rl| rl.resource.as_ref())
        .into_iter()
        .map(|(k, resource_logs)| (k, ExportLogsServiceRequest { resource_logs }))
        .collect()
}

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
            let attributes = attr_map(&lr.attributes);
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

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::metrics::v1::{Gauge, ResourceMetrics, ScopeMetrics, Sum};

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.into())),
            }),
        }
    }

    fn point(t: u64, v: f64) -> NumberDataPoint {
        NumberDataPoint {
            time_unix_nano: t,
            value: Some(number_data_point::Value::AsDouble(v)),
            ..Default::default()
        }
    }

    fn request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![kv("sqlserver.instance.name", "sql1"), kv("host.name", "h1")],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics,
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
        }
    }

    #[test]
    fn refuses_nan_and_nameless_points_and_keeps_the_rest() {
        let gauge = |name: &str, points| Metric {
            name: name.into(),
            unit: "%".into(),
            data: Some(Data::Gauge(Gauge {
                data_points: points,
            })),
            ..Default::default()
        };
        let mut req = request(vec![
            gauge(
                "sqlserver.cpu.utilization",
                vec![point(10, 1.0), point(20, f64::NAN)],
            ),
            gauge("", vec![point(10, 2.0)]),
        ]);
        let rejected = validate_metrics(&mut req);
        assert_eq!(rejected.points, 2);
        assert!(rejected.message().contains("NaN") && rejected.message().contains("name missing"));
        let mut samples = Vec::new();
        metrics_to_samples(&req, &mut samples);
        assert_eq!(samples.len(), 1);
        assert_eq!(&*samples[0].key.instance, "sql1");
        assert_eq!(samples[0].value, 1.0);
    }

    #[test]
    fn sums_keep_temporality_and_monotonicity() {
        let sum = Metric {
            name: "sqlserver.os.wait.duration".into(),
            unit: "s".into(),
            data: Some(Data::Sum(Sum {
                data_points: vec![NumberDataPoint {
                    attributes: vec![kv("wait.type", "LCK_M_X")],
                    ..point(10, 5.0)
                }],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        };
        let mut samples = Vec::new();
        metrics_to_samples(&request(vec![sum]), &mut samples);
        assert_eq!(samples[0].kind, MetricKind::CumulativeSum);
        assert!(samples[0].monotonic);
        assert_eq!(samples[0].key.attributes["wait.type"], "LCK_M_X");
    }

    #[test]
    fn instance_falls_back_to_service_instance_id_then_host() {
        let r = |attrs: Vec<KeyValue>| Resource {
            attributes: attrs,
            ..Default::default()
        };
        assert_eq!(
            origin(Some(&r(vec![
                kv("service.instance.id", "h:1433"),
                kv("host.name", "h")
            ])))
            .instance,
            "h:1433".into()
        );
        assert_eq!(
            origin(Some(&r(vec![kv("host.name", "h")]))).instance,
            "h".into()
        );
        assert_eq!(origin(None).instance, "unknown".into());
    }
}
