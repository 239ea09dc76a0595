//! Where a resource's telemetry comes from ([`Origin`]: instance, host, database), and
//! the split of a request into one request per instance — the bus key, so one
//! instance's data stays ordered in one partition.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use std::collections::BTreeMap;
use std::sync::Arc;
pub(crate) fn any_to_string(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

pub(crate) fn attr_map(attrs: &[KeyValue]) -> BTreeMap<String, String> {
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
