//! The workloads the benches share: simulated fleets encoded as OTLP requests, and
//! synthetic CPU requests with breaches.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;
use sqlvigil_simulator::{Fleet, FleetConfig};
use std::time::Duration;

/// Encoded requests and their point count.
pub fn workload(quick: bool) -> (Vec<Vec<u8>>, u64) {
    let (instances, ticks) = if quick { (20, 40) } else { (50, 200) };
    fleet_workload(instances, ticks)
}

/// `ticks` scrapes of `instances` simulated instances, one OTLP request each.
pub fn fleet_workload(instances: usize, ticks: u64) -> (Vec<Vec<u8>>, u64) {
    let mut fleet = Fleet::new(FleetConfig {
        instances,
        ..FleetConfig::default()
    });
    let mut bodies = Vec::new();
    let mut points = 0u64;
    for t in 0..ticks {
        for req in fleet.metrics(t) {
            points += sqlvigil_simulator::count_points(&req) as u64;
            bodies.push(req.encode_to_vec());
        }
    }
    (bodies, points)
}

/// Points per second.
pub fn rate(points: u64, d: Duration) -> f64 {
    points as f64 / d.as_secs_f64().max(1e-9)
}

fn kv(k: &str, v: &str) -> opentelemetry_proto::tonic::common::v1::KeyValue {
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
    }
}

fn cpu_metric(
    points: Vec<opentelemetry_proto::tonic::metrics::v1::NumberDataPoint>,
) -> opentelemetry_proto::tonic::metrics::v1::Metric {
    use opentelemetry_proto::tonic::metrics::v1::{metric::Data, Gauge, Metric};
    Metric {
        name: "sqlserver.cpu.utilization".into(),
        unit: "%".into(),
        data: Some(Data::Gauge(Gauge {
            data_points: points,
        })),
        ..Default::default()
    }
}

fn point(series: &str, t: i64, v: f64) -> opentelemetry_proto::tonic::metrics::v1::NumberDataPoint {
    use opentelemetry_proto::tonic::metrics::v1::{number_data_point, NumberDataPoint};
    NumberDataPoint {
        attributes: vec![kv("series", series)],
        time_unix_nano: t as u64,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    }
}

/// A request of `points` quiet CPU points (one per series) at event time `t`.
pub fn gauge_request(
    instance: &str,
    seq: usize,
    points: usize,
    t: i64,
) -> ExportMetricsServiceRequest {
    use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, ScopeMetrics};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    let pts = (0..points)
        .map(|i| point(&format!("{}", (seq * points + i) % 100_000), t, 20.0))
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("sqlserver.instance.name", instance)],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![cpu_metric(pts)],
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
}

/// Add one breaching point on a series of its own (so each opens a new anomaly).
pub fn add_breach(req: &mut ExportMetricsServiceRequest, seq: usize, t: i64) {
    if let Some(sm) = req
        .resource_metrics
        .first_mut()
        .and_then(|rm| rm.scope_metrics.first_mut())
    {
        sm.metrics
            .push(cpu_metric(vec![point(&format!("breach-{seq}"), t, 99.0)]));
    }
}
