//! Validation of metrics requests before anything is published, so the client learns
//! exactly which points were refused (OTLP partial success), and the counts the receiver
//! reports.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, Metric, NumberDataPoint,
};

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

pub(crate) fn number_value(p: &NumberDataPoint) -> Option<f64> {
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
