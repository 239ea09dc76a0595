//! Tests of validation, splitting and decoding.

use crate::*;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, AggregationTemporality, Metric, NumberDataPoint,
};
use opentelemetry_proto::tonic::metrics::v1::{Gauge, ResourceMetrics, ScopeMetrics, Sum};
use opentelemetry_proto::tonic::resource::v1::Resource;
use sqlvigil_model::MetricKind;

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
