//! A snapshot as telemetry: the figures operators and dashboards chart (blocked
//! sessions, longest block, waits per category, tempdb, log use, pending grants, file
//! latency) as OTLP gauges of the instance, published on the metrics topic like any
//! receiver's export, so rules can fire on them and the sink (Parquet or Elastic)
//! stores them. Names are `sqlvigil.live.*`; the rows themselves go to the ledger.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use sqlvigil_model::live::LiveSnapshot;
use std::collections::BTreeMap;

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
    }
}

/// Gauges being built: name → (unit, description, points).
#[derive(Default)]
struct Gauges {
    time_ns: u64,
    metrics: BTreeMap<&'static str, (&'static str, &'static str, Vec<NumberDataPoint>)>,
}

impl Gauges {
    fn add(
        &mut self,
        name: &'static str,
        unit: &'static str,
        about: &'static str,
        value: f64,
        attrs: &[(&str, &str)],
    ) {
        let point = NumberDataPoint {
            attributes: attrs.iter().map(|(k, v)| kv(k, v)).collect(),
            time_unix_nano: self.time_ns,
            value: Some(number_data_point::Value::AsDouble(value)),
            ..Default::default()
        };
        self.metrics
            .entry(name)
            .or_insert_with(|| (unit, about, Vec::new()))
            .2
            .push(point);
    }
}

/// The snapshot's gauges as one export of its instance; `None` when it has no figures.
pub fn to_otlp(snap: &LiveSnapshot) -> Option<ExportMetricsServiceRequest> {
    let mut g = Gauges {
        time_ns: snap.collected_at.timestamp_nanos_opt().unwrap_or(0).max(0) as u64,
        ..Gauges::default()
    };
    if snap
        .collectors
        .contains(&sqlvigil_model::live::CollectorKind::Sessions)
    {
        let active = snap.sessions.iter().filter(|s| s.command.is_some()).count();
        let blocked = snap.blocking.iter().map(|c| c.victims).sum::<usize>();
        let longest = snap
            .blocking
            .iter()
            .map(|c| c.longest_wait_ms)
            .fold(0.0, f64::max);
        g.add(
            "sqlvigil.live.sessions.active",
            "{session}",
            "User sessions running a request.",
            active as f64,
            &[],
        );
        g.add(
            "sqlvigil.live.sessions.blocked",
            "{session}",
            "Sessions blocked behind another.",
            blocked as f64,
            &[],
        );
        g.add(
            "sqlvigil.live.blocking.longest_wait",
            "ms",
            "Longest wait of a blocked session.",
            longest,
            &[],
        );
    }
    if snap.interval_ms > 0 {
        let mut by_category: BTreeMap<&str, i64> = BTreeMap::new();
        for w in &snap.waits {
            *by_category.entry(w.wait_category.as_str()).or_default() += w.wait_time_ms;
        }
        let seconds = snap.interval_ms as f64 / 1000.0;
        for (category, ms) in by_category {
            g.add(
                "sqlvigil.live.wait.rate",
                "ms/s",
                "Wait time per second of the interval, by wait category.",
                ms as f64 / seconds,
                &[("wait.category", category)],
            );
        }
        for f in &snap.file_io {
            let file = f.file_id.to_string();
            let attrs = [
                ("db.namespace", f.database.as_str()),
                ("file.id", file.as_str()),
            ];
            g.add(
                "sqlvigil.live.io.read_latency",
                "ms",
                "Average read latency over the interval.",
                f.read_latency_ms,
                &attrs,
            );
            g.add(
                "sqlvigil.live.io.write_latency",
                "ms",
                "Average write latency over the interval.",
                f.write_latency_ms,
                &attrs,
            );
        }
    }
    if let Some(t) = &snap.tempdb {
        g.add(
            "sqlvigil.live.tempdb.version_store",
            "KiBy",
            "Tempdb version store size.",
            t.version_store_kb as f64,
            &[],
        );
        g.add(
            "sqlvigil.live.tempdb.free",
            "KiBy",
            "Unallocated tempdb space.",
            t.free_kb as f64,
            &[],
        );
    }
    for l in &snap.log_space {
        g.add(
            "sqlvigil.live.log.used_percent",
            "%",
            "Transaction log space used.",
            l.used_percent,
            &[("db.namespace", l.database.as_str())],
        );
    }
    if let Some(m) = &snap.memory_grants {
        g.add(
            "sqlvigil.live.memory_grants.pending",
            "{grant}",
            "Queries waiting for a memory grant.",
            m.pending as f64,
            &[],
        );
    }
    if g.metrics.is_empty() {
        return None;
    }
    let metrics = g
        .metrics
        .into_iter()
        .map(|(name, (unit, about, data_points))| Metric {
            name: name.to_string(),
            description: about.to_string(),
            unit: unit.to_string(),
            data: Some(metric::Data::Gauge(Gauge { data_points })),
            ..Default::default()
        })
        .collect();
    let mut resource = vec![
        kv("sqlserver.instance.name", &snap.instance),
        kv("service.name", "sqlvigil-monitor"),
    ];
    if !snap.server.server_name.is_empty() {
        resource.push(kv("host.name", &snap.server.server_name));
    }
    Some(ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "sqlvigil.monitor".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}
