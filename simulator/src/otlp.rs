//! Building OTLP messages shaped like the Collector's `sqlserver` receiver output.
//!
//! Names, units, descriptions, kinds and monotonicity come from
//! `sqlvigil_model::catalogue` so the simulator cannot drift from what the pipeline
//! expects; only the int/double choice (the receiver's `value_type`) lives here.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, AggregationTemporality, Gauge, Metric, NumberDataPoint, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use sqlvigil_model::{catalogue, MetricKind};

/// Scope name the receiver stamps on everything it emits.
pub const SCOPE_NAME: &str =
    "github.com/open-telemetry/opentelemetry-collector-contrib/receiver/sqlserverreceiver";
/// Collector release the simulated receiver claims to be.
pub const SCOPE_VERSION: &str = "0.139.0";
/// `service.name` the receiver sets when none is configured.
pub const SERVICE_NAME: &str = "unknown_service:microsoft.sql_server";
/// Port every simulated instance listens on.
pub const SERVER_PORT: i64 = 1433;

pub(crate) fn kv_str(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
    }
}

pub(crate) fn kv_int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
    }
}

pub(crate) fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: SCOPE_NAME.to_string(),
        version: SCOPE_VERSION.to_string(),
        ..Default::default()
    }
}

/// Resource attributes as the receiver's `setupResourceBuilder` sets them (sorted by
/// key), plus `sqlserver.database.name` for per-database metrics.
pub(crate) fn resource(host: &str, instance: &str, database: Option<&str>) -> Resource {
    let mut attributes = vec![
        kv_str("host.name", host),
        kv_str("server.address", host),
        kv_int("server.port", SERVER_PORT),
        kv_str("service.instance.id", &format!("{host}:{SERVER_PORT}")),
        kv_str("service.name", SERVICE_NAME),
        kv_str("service.namespace", ""),
    ];
    if let Some(db) = database {
        attributes.push(kv_str("sqlserver.database.name", db));
    }
    attributes.push(kv_str("sqlserver.instance.name", instance));
    Resource {
        attributes,
        ..Default::default()
    }
}

/// A point value; the receiver sends some metrics as ints and others as doubles.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Num {
    F(f64),
    I(i64),
}

/// One data point before timestamps are stamped on.
pub(crate) struct Point {
    pub attrs: Vec<KeyValue>,
    pub value: Num,
}

impl Point {
    pub fn plain(value: Num) -> Self {
        Point {
            attrs: Vec::new(),
            value,
        }
    }
}

/// Timestamps shared by every point of one scrape.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamp {
    pub start_ns: u64,
    pub time_ns: u64,
}

/// A metric named `name` with the catalogue's unit, description and kind.
pub(crate) fn metric(name: &str, points: Vec<Point>, stamp: Stamp) -> Metric {
    let data_points: Vec<NumberDataPoint> = points
        .into_iter()
        .map(|p| NumberDataPoint {
            attributes: p.attrs,
            start_time_unix_nano: stamp.start_ns,
            time_unix_nano: stamp.time_ns,
            value: Some(match p.value {
                Num::F(v) => number_data_point::Value::AsDouble(v),
                Num::I(v) => number_data_point::Value::AsInt(v),
            }),
            ..Default::default()
        })
        .collect();
    // A name missing from the catalogue is a bug caught by the crate's tests; at run time
    // it still goes out, as a unitless gauge, rather than taking the sender down.
    let def = catalogue::metric(name);
    let data = match def {
        Some(d) if d.kind == MetricKind::CumulativeSum => Data::Sum(Sum {
            data_points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: d.monotonic,
        }),
        _ => Data::Gauge(Gauge { data_points }),
    };
    Metric {
        name: name.to_string(),
        description: def.map(|d| d.description).unwrap_or_default().to_string(),
        unit: def.map(|d| d.unit).unwrap_or_default().to_string(),
        data: Some(data),
        ..Default::default()
    }
}

/// Number of data points in a request (gauges and sums only, which is all we emit).
pub fn count_points(req: &ExportMetricsServiceRequest) -> usize {
    req.resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .map(|m| match &m.data {
            Some(Data::Gauge(g)) => g.data_points.len(),
            Some(Data::Sum(s)) => s.data_points.len(),
            Some(Data::Histogram(h)) => h.data_points.len(),
            Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
            Some(Data::Summary(s)) => s.data_points.len(),
            None => 0,
        })
        .sum()
}
