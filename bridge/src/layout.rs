//! The index layout sqlvigil installs at start-up: ILM policies, component and
//! composable index templates, and the data streams they shape.
//!
//! - `mssql-metrics-<namespace>`: a time series data stream (TSDS). Dimensions are the
//!   series identity (`series_id`, instance/host/database, `metric.name`, `attributes.*`),
//!   `metric.value` and seed 002's numeric fields are metrics. Being a TSDS is what lets
//!   ILM downsample it and what makes `_id` a function of dimensions + time.
//! - `mssql-logs-<namespace>`: a data stream of error-log lines.
//! - `sqlvigil-anomalies` and `llm_insights`: plain indices (documents are updated).
//!
//! Installing is idempotent: every object carries `_meta.sqlvigil_digest`, a hash of the
//! body sqlvigil wants; an object already carrying that digest is left alone, one
//! carrying another sqlvigil digest is updated, and one not written by sqlvigil is a
//! conflict reported by name rather than overwritten.

use crate::client::{error_reason, Elastic};
use crate::{BridgeError, Result};
use elasticsearch::http::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Retention of the metrics data stream (Elasticsearch time units: `7d`, `5m`, …).
#[derive(Debug, Clone, PartialEq)]
pub struct IlmOptions {
    /// Roll the write index over after this age.
    pub rollover_max_age: String,
    /// Keep full-resolution data this long before downsampling.
    pub hot_for: String,
    /// Downsampled bucket size.
    pub downsample_interval: String,
    /// Delete after this age.
    pub delete_after: String,
}

impl Default for IlmOptions {
    fn default() -> Self {
        IlmOptions {
            rollover_max_age: "1d".into(),
            hot_for: "7d".into(),
            downsample_interval: "5m".into(),
            delete_after: "90d".into(),
        }
    }
}

/// What to install and under which names.
#[derive(Debug, Clone, PartialEq)]
pub struct LayoutOptions {
    /// Data stream namespace: `mssql-metrics-<namespace>`.
    pub namespace: String,
    /// How far back a TSDS accepts documents (`index.look_back_time`).
    pub look_back_time: String,
    pub ilm: IlmOptions,
}

impl Default for LayoutOptions {
    fn default() -> Self {
        LayoutOptions {
            namespace: "default".into(),
            look_back_time: "2h".into(),
            ilm: IlmOptions::default(),
        }
    }
}

pub const ANOMALIES_INDEX: &str = "sqlvigil-anomalies";
pub const INSIGHTS_INDEX: &str = "llm_insights";
const METRICS_POLICY: &str = "sqlvigil-metrics";
const LOGS_POLICY: &str = "sqlvigil-logs";
/// Above the built-in `metrics`/`logs` templates (priority 100), below user overrides.
const PRIORITY: u64 = 200;

impl LayoutOptions {
    pub fn metrics_stream(&self) -> String {
        format!("mssql-metrics-{}", self.namespace)
    }

    pub fn logs_stream(&self) -> String {
        format!("mssql-logs-{}", self.namespace)
    }

    /// Every object to install, in dependency order: (kind, name, body).
    pub fn objects(&self) -> Vec<(Kind, String, Value)> {
        let ilm = &self.ilm;
        vec![
            (
                Kind::IlmPolicy,
                METRICS_POLICY.into(),
                json!({"policy": {"phases": {
                    "hot": {"min_age": "0ms", "actions": {"rollover": {"max_age": ilm.rollover_max_age, "max_primary_shard_size": "50gb"}}},
                    "warm": {"min_age": ilm.hot_for, "actions": {"downsample": {"fixed_interval": ilm.downsample_interval}}},
                    "delete": {"min_age": ilm.delete_after, "actions": {"delete": {}}}
                }}}),
            ),
            (
                Kind::IlmPolicy,
                LOGS_POLICY.into(),
                json!({"policy": {"phases": {
                    "hot": {"min_age": "0ms", "actions": {"rollover": {"max_age": ilm.rollover_max_age, "max_primary_shard_size": "50gb"}}},
                    "delete": {"min_age": ilm.delete_after, "actions": {"delete": {}}}
                }}}),
            ),
            (
                Kind::ComponentTemplate,
                "sqlvigil-metrics-mappings".into(),
                json!({"template": {"mappings": metrics_mappings()}}),
            ),
            (
                Kind::ComponentTemplate,
                "sqlvigil-logs-mappings".into(),
                json!({"template": {"mappings": logs_mappings()}}),
            ),
            (
                Kind::IndexTemplate,
                "sqlvigil-metrics".into(),
                json!({
                    "index_patterns": ["mssql-metrics-*"],
                    "data_stream": {},
                    "priority": PRIORITY,
                    "composed_of": ["sqlvigil-metrics-mappings"],
                    "template": {"settings": {"index": {
                        "mode": "time_series",
                        "routing_path": ["series_id"],
                        "look_back_time": self.look_back_time,
                        "lifecycle": {"name": METRICS_POLICY}
                    }}}
                }),
            ),
            (
                Kind::IndexTemplate,
                "sqlvigil-logs".into(),
                json!({
                    "index_patterns": ["mssql-logs-*"],
                    "data_stream": {},
                    "priority": PRIORITY,
                    "composed_of": ["sqlvigil-logs-mappings"],
                    "template": {"settings": {"index": {"lifecycle": {"name": LOGS_POLICY}}}}
                }),
            ),
            (
                Kind::IndexTemplate,
                "sqlvigil-anomalies".into(),
                json!({"index_patterns": [ANOMALIES_INDEX], "priority": PRIORITY, "template": {"mappings": anomalies_mappings()}}),
            ),
            (
                Kind::IndexTemplate,
                "sqlvigil-insights".into(),
                json!({"index_patterns": [INSIGHTS_INDEX], "priority": PRIORITY, "template": {"mappings": insights_mappings()}}),
            ),
            (Kind::DataStream, self.metrics_stream(), Value::Null),
            (Kind::DataStream, self.logs_stream(), Value::Null),
        ]
    }
}

fn keyword_dimension() -> Value {
    json!({"type": "keyword", "time_series_dimension": true})
}

fn string_attributes_as_keywords(dimension: bool) -> Value {
    let mut mapping = json!({"type": "keyword"});
    if dimension {
        mapping["time_series_dimension"] = json!(true);
    }
    json!([{"attributes": {"path_match": "attributes.*", "match_mapping_type": "string", "mapping": mapping}}])
}

fn metrics_mappings() -> Value {
    json!({
        "dynamic_templates": string_attributes_as_keywords(true),
        "properties": {
            "@timestamp": {"type": "date_nanos"},
            "series_id": keyword_dimension(),
            "instance_name": keyword_dimension(),
            "host_name": keyword_dimension(),
            "database_name": keyword_dimension(),
            "metric": {"properties": {
                "name": keyword_dimension(),
                "value": {"type": "double", "time_series_metric": "gauge"},
                "unit": {"type": "keyword"},
                "kind": {"type": "keyword"},
                "monotonic": {"type": "boolean"},
                "start_time": {"type": "date_nanos"}
            }},
            "attributes": {"type": "object"},
            "histogram": {"type": "object", "enabled": false},
            "cpu_percent": {"type": "double", "time_series_metric": "gauge"},
            "wait_type": {"type": "keyword"},
            "wait_time_ms": {"type": "double", "time_series_metric": "counter"},
            "blocking_session_id": {"type": "long"},
            "query_hash": {"type": "keyword"},
            "physical_io_bytes": {"type": "double", "time_series_metric": "counter"}
        }
    })
}

fn logs_mappings() -> Value {
    json!({
        "dynamic_templates": string_attributes_as_keywords(false),
        "properties": {
            "@timestamp": {"type": "date_nanos"},
            "severity": {"type": "keyword"},
            "severity_number": {"type": "integer"},
            "message": {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 1024}}},
            "log_category": {"type": "keyword"},
            "instance_name": {"type": "keyword"},
            "host_name": {"type": "keyword"},
            "attributes": {"type": "object"}
        }
    })
}

fn anomalies_mappings() -> Value {
    json!({"properties": {
        "@timestamp": {"type": "date"},
        "id": {"type": "keyword"},
        "fingerprint": {"type": "keyword"},
        "rule": {"type": "keyword"},
        "condition": {"type": "text"},
        "series_id": {"type": "keyword"},
        "series": {"type": "object", "enabled": false},
        "instance_name": {"type": "keyword"},
        "metric_name": {"type": "keyword"},
        "severity": {"type": "keyword"},
        "state": {"type": "keyword"},
        "opened_at": {"type": "date"},
        "updated_at": {"type": "date"},
        "resolved_at": {"type": "date"},
        "observed": {"type": "double"},
        "expected": {"type": "double"},
        "score": {"type": "double"},
        "evidence": {"type": "object", "enabled": false}
    }})
}

fn insights_mappings() -> Value {
    json!({"properties": {
        "@timestamp": {"type": "date"},
        "id": {"type": "keyword"},
        "generated_at": {"type": "date"},
        "model": {"type": "keyword"},
        "prompt_version": {"type": "keyword"},
        "anomaly_ids": {"type": "keyword"},
        "fingerprint": {"type": "keyword"},
        "instance": {"type": "keyword"},
        "instance_name": {"type": "keyword"},
        "summary": {"type": "text"},
        "recommended_actions": {"type": "text"},
        "supporting_metrics": {"type": "object", "enabled": false},
        "input_digest": {"type": "keyword"},
        "inputs": {"type": "object", "enabled": false},
        "latency_ms": {"type": "long"},
        "prompt_tokens": {"type": "long"},
        "completion_tokens": {"type": "long"},
        "trigger": {"type": "keyword"}
    }})
}

/// The kinds of object the layout is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    IlmPolicy,
    ComponentTemplate,
    IndexTemplate,
    DataStream,
}

impl Kind {
    fn path(self, name: &str) -> String {
        match self {
            Kind::IlmPolicy => format!("/_ilm/policy/{name}"),
            Kind::ComponentTemplate => format!("/_component_template/{name}"),
            Kind::IndexTemplate => format!("/_index_template/{name}"),
            Kind::DataStream => format!("/_data_stream/{name}"),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::IlmPolicy => "ILM policy",
            Kind::ComponentTemplate => "component template",
            Kind::IndexTemplate => "index template",
            Kind::DataStream => "data stream",
        }
    }

    /// The stored object in a GET answer.
    fn stored<'a>(self, name: &str, body: &'a Value) -> Option<&'a Value> {
        match self {
            Kind::IlmPolicy => body.get(name)?.get("policy"),
            Kind::ComponentTemplate => body
                .get("component_templates")?
                .get(0)?
                .get("component_template"),
            Kind::IndexTemplate => body.get("index_templates")?.get(0)?.get("index_template"),
            Kind::DataStream => body.get("data_streams")?.get(0),
        }
    }
}

/// What [`install`] did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct InstallReport {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub unchanged: Vec<String>,
}

/// `body` with `_meta.managed_by` and `_meta.sqlvigil_digest` set (policies keep `_meta`
/// inside `policy`).
fn stamped(kind: Kind, body: &Value) -> (Value, String) {
    let digest = hex::encode(&Sha256::digest(body.to_string().as_bytes())[..12]);
    let mut out = body.clone();
    let meta_parent = match kind {
        Kind::IlmPolicy => out.get_mut("policy"),
        _ => Some(&mut out),
    };
    if let Some(Value::Object(m)) = meta_parent {
        m.insert(
            "_meta".into(),
            json!({"managed_by": "sqlvigil", "sqlvigil_digest": digest}),
        );
    }
    (out, digest)
}

/// Install every object of the layout, leaving unchanged ones alone.
pub async fn install(es: &Elastic, opts: &LayoutOptions) -> Result<InstallReport> {
    let mut report = InstallReport::default();
    for (kind, name, body) in opts.objects() {
        let label = format!("{} `{name}`", kind.label());
        let path = kind.path(&name);
        let (status, existing) = es.send(Method::Get, &path, &[], None).await?;
        if kind == Kind::DataStream {
            if status == 404 {
                es.call(Method::Put, &path, &[], None)
                    .await
                    .map_err(|e| layout_error(&label, e))?;
                report.created.push(label);
            } else {
                report.unchanged.push(label);
            }
            continue;
        }
        let (wanted, digest) = stamped(kind, &body);
        let stored = (status == 200)
            .then(|| kind.stored(&name, &existing))
            .flatten();
        match stored.map(meta_of) {
            Some(meta) if meta.get("sqlvigil_digest") == Some(&json!(digest)) => {
                report.unchanged.push(label);
                continue;
            }
            Some(meta) if meta.get("managed_by") != Some(&json!("sqlvigil")) => {
                return Err(BridgeError::Layout(format!(
                    "{label} exists and was not written by sqlvigil; remove or rename it, or \
                     set elastic.install_layout: false to manage the layout yourself"
                )));
            }
            Some(_) => report.updated.push(label.clone()),
            None if status == 404 || status == 200 => report.created.push(label.clone()),
            None => {
                return Err(BridgeError::Layout(format!(
                    "reading {label} answered {status}: {}",
                    error_reason(&existing)
                )))
            }
        }
        es.call(Method::Put, &path, &[], Some(&wanted))
            .await
            .map_err(|e| layout_error(&label, e))?;
    }
    Ok(report)
}

fn meta_of(stored: &Value) -> Value {
    stored.get("_meta").cloned().unwrap_or(Value::Null)
}

/// Name the object in the error; leave unreachable/overload errors retryable as they are.
fn layout_error(label: &str, e: BridgeError) -> BridgeError {
    match e {
        BridgeError::Status { status, reason, .. } if status < 500 && status != 429 => {
            BridgeError::Layout(format!(
                "installing {label} was refused ({status}): {reason}"
            ))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_come_in_dependency_order_with_stable_digests() {
        let opts = LayoutOptions::default();
        let objs = opts.objects();
        let pos = |k: Kind, n: &str| {
            objs.iter()
                .position(|(kind, name, _)| *kind == k && name == n)
        };
        let template = pos(Kind::IndexTemplate, "sqlvigil-metrics");
        assert!(template > pos(Kind::ComponentTemplate, "sqlvigil-metrics-mappings"));
        assert!(template > pos(Kind::IlmPolicy, "sqlvigil-metrics"));
        assert!(pos(Kind::DataStream, "mssql-metrics-default") > template);
        let (a, da) = stamped(Kind::IlmPolicy, &objs[0].2);
        let (_, db) = stamped(Kind::IlmPolicy, &objs[0].2);
        assert_eq!(da, db);
        assert_eq!(a["policy"]["_meta"]["managed_by"], "sqlvigil");
        assert_eq!(
            a["policy"]["phases"]["warm"]["actions"]["downsample"]["fixed_interval"],
            "5m"
        );
    }
}
