//! `sqlvigil.yaml`: the pipeline's configuration, loaded from a YAML file with
//! `SQLVIGIL_*` environment overrides (`SQLVIGIL_API__ADDR=0.0.0.0:8080` sets `api.addr`).
//!
//! Every section rejects unknown fields, and [`Config::validate`] names the field at fault.

use crate::error::{PipelineError, Result};
use crate::operators::baseline::BaselineConfig;
use crate::operators::rules::RuleConfig;
use figment::providers::{Env, Format, Serialized, Yaml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The default rules (also shipped as `config/rules.example.yaml`).
pub const DEFAULT_RULES_YAML: &str = include_str!("../../config/rules.example.yaml");

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub receiver: ReceiverConfig,
    pub bus: BusConfig,
    pub store: StoreConfig,
    pub operators: OperatorsConfig,
    pub api: ApiConfig,
    pub analytics: AnalyticsConfig,
    /// Elasticsearch, used when `store.backend` is `elastic`.
    pub elastic: crate::sinks::elastic::config::ElasticConfig,
    /// Rules inline; appended to those of `rules_file`.
    pub rules: Vec<RuleConfig>,
    /// A YAML file holding a list of rules. Without it and without inline rules the
    /// default rule set applies.
    pub rules_file: Option<PathBuf>,
}

/// OTLP receiver listeners.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiverConfig {
    /// OTLP/gRPC listen address.
    pub grpc_addr: String,
    /// OTLP/HTTP listen address.
    pub http_addr: String,
    /// Largest request body accepted (after gzip decompression), like gRPC's 4 MiB default.
    pub max_body_bytes: usize,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            grpc_addr: "127.0.0.1:4317".into(),
            http_addr: "127.0.0.1:4318".into(),
            max_body_bytes: 4 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    /// In-process bus (the embedded default).
    Memory,
    /// Kafka (`bus.kafka`).
    Kafka,
}

/// The bus between the receiver and the operators.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    pub kind: BusKind,
    /// Records a topic may hold before publishers are told to retry (back-pressure).
    pub capacity: usize,
    /// Partitions per topic; records with the same key (instance) share one.
    pub partitions: u32,
    pub topics: Topics,
    /// Brokers and client settings when `kind` is `kafka`.
    pub kafka: crate::bus::kafka::KafkaConfig,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            kind: BusKind::Memory,
            capacity: 20_000,
            partitions: 4,
            topics: Topics::default(),
            kafka: crate::bus::kafka::KafkaConfig::default(),
        }
    }
}

/// Topic names (the telemetry ones match the Collector's kafka exporter defaults).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Topics {
    pub metrics: String,
    pub logs: String,
    pub anomalies: String,
    pub insights: String,
    /// Operator state per metrics partition (compacted; Kafka bus only).
    pub checkpoints: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            metrics: "otlp_metrics".into(),
            logs: "otlp_logs".into(),
            anomalies: "sqlvigil.anomalies".into(),
            insights: "sqlvigil.insights".into(),
            checkpoints: "sqlvigil.checkpoints".into(),
        }
    }
}

/// Where telemetry, anomalies and insights are kept.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Parquet files and SQLite under `data_dir` (the embedded default).
    #[default]
    Embedded,
    /// Elasticsearch (the `elastic:` section); the API reads it back through the bridge.
    Elastic,
}

/// The store: the backend, and `data_dir` — Parquet files and the SQLite database of
/// state (tokens, checkpoints; anomalies and insights too) and the Elastic disk queue.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub backend: Backend,
    pub data_dir: PathBuf,
    /// Buffered rows are written to a Parquet file at least this often.
    #[serde(with = "duration_str")]
    pub flush_interval: Duration,
    /// …or as soon as this many rows are buffered.
    pub flush_rows: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: Backend::Embedded,
            data_dir: PathBuf::from("sqlvigil-data"),
            flush_interval: Duration::from_secs(2),
            flush_rows: 100_000,
        }
    }
}

/// Micro-batching of the operator stage.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OperatorsConfig {
    /// Longest wait to fill a micro-batch.
    #[serde(with = "duration_str")]
    pub batch_interval: Duration,
    /// Most bus records in one micro-batch.
    pub batch_records: usize,
    /// Baseline estimators of deviation rules.
    pub baseline: BaselineConfig,
    /// Points further behind the newest event time than this are stored and counted
    /// (`sqlvigil_late_points`) but not judged by the rules.
    #[serde(with = "duration_str")]
    pub allowed_lateness: Duration,
    /// Operator state of series silent this long (event time) is dropped, unless an
    /// anomaly is open on them.
    #[serde(with = "duration_str")]
    pub idle_series_after: Duration,
    /// How often operator state is snapshotted per partition (and bus offsets committed
    /// on a durable bus): a crash or a partition handover replays at most this much.
    #[serde(with = "duration_str")]
    pub checkpoint_interval: Duration,
    /// Event-time windows (tumbling or sliding) that turn chosen metrics into aggregate
    /// series (`<metric>.<stat>_<name>`); none by default.
    pub windows: Vec<crate::operators::window::WindowConfig>,
}

impl Default for OperatorsConfig {
    fn default() -> Self {
        OperatorsConfig {
            batch_interval: Duration::from_secs(1),
            batch_records: 512,
            baseline: BaselineConfig::default(),
            allowed_lateness: Duration::from_secs(300),
            idle_series_after: crate::operators::DEFAULT_IDLE_AFTER,
            checkpoint_interval: Duration::from_secs(10),
            windows: Vec::new(),
        }
    }
}

/// Insights: the LLM to ask (none: the rules analyzer answers), rate limits, digests.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsConfig {
    /// Ollama or an OpenAI-compatible server; absent: rules analyzer only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llm: Option<sqlvigil_analytics::llm::LlmConfig>,
    /// Least time between two LLM analyses of opened anomalies on one instance; anomalies
    /// in between get a rules insight (so a storm of anomalies cannot flood the model).
    #[serde(with = "duration_str")]
    pub min_interval_per_instance: Duration,
    /// Largest prompt (system + user) in characters; least relevant sections go first.
    pub prompt_budget_chars: usize,
    pub digest: DigestConfig,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        AnalyticsConfig {
            llm: None,
            min_interval_per_instance: Duration::from_secs(60),
            prompt_budget_chars: 12_000,
            digest: DigestConfig::default(),
        }
    }
}

/// The scheduled capacity-planning digest per instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DigestConfig {
    pub enabled: bool,
    /// How often a digest is written.
    #[serde(with = "duration_str")]
    pub interval: Duration,
    /// The time window each digest covers (ending now).
    #[serde(with = "duration_str")]
    pub window: Duration,
}

impl Default for DigestConfig {
    fn default() -> Self {
        DigestConfig {
            enabled: true,
            interval: Duration::from_secs(24 * 3600),
            window: Duration::from_secs(24 * 3600),
        }
    }
}

/// The REST API listener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub addr: String,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            addr: "127.0.0.1:8080".into(),
        }
    }
}

impl Config {
    /// Load `path` (must exist) with `SQLVIGIL_*` overrides, then validate.
    pub fn load(path: &Path) -> Result<Config> {
        if !path.is_file() {
            return Err(PipelineError::Config(format!(
                "config file {} does not exist",
                path.display()
            )));
        }
        let cfg: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Yaml::file(path))
            .merge(Env::prefixed("SQLVIGIL_").ignore(&["LOG"]).split("__"))
            .extract()
            .map_err(|e| PipelineError::Config(figment_message(e)))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The rules in force: `rules_file` then inline `rules`, or the defaults when both are empty.
    pub fn effective_rules(&self) -> Result<Vec<RuleConfig>> {
        let mut rules = match &self.rules_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    PipelineError::Config(format!("rules_file {}: {e}", path.display()))
                })?;
                parse_rules(&text).map_err(|e| {
                    PipelineError::Config(format!("rules_file {}: {e}", path.display()))
                })?
            }
            None => Vec::new(),
        };
        rules.extend(self.rules.iter().cloned());
        if rules.is_empty() {
            rules = parse_rules(DEFAULT_RULES_YAML).map_err(PipelineError::Config)?;
        }
        Ok(rules)
    }

    /// Check every field that serde cannot: addresses, sizes, rules.
    pub fn validate(&self) -> Result<()> {
        parse_addr("receiver.grpc_addr", &self.receiver.grpc_addr)?;
        parse_addr("receiver.http_addr", &self.receiver.http_addr)?;
        parse_addr("api.addr", &self.api.addr)?;
        positive("receiver.max_body_bytes", self.receiver.max_body_bytes)?;
        positive("bus.capacity", self.bus.capacity)?;
        positive("bus.partitions", self.bus.partitions as usize)?;
        positive("store.flush_rows", self.store.flush_rows)?;
        positive("operators.batch_records", self.operators.batch_records)?;
        for w in &self.operators.windows {
            w.validate()?;
        }
        positive(
            "analytics.prompt_budget_chars",
            self.analytics.prompt_budget_chars,
        )?;
        if self.analytics.digest.interval.is_zero() || self.analytics.digest.window.is_zero() {
            return Err(PipelineError::Config(
                "analytics.digest.interval and analytics.digest.window must be greater than 0"
                    .into(),
            ));
        }
        if self.bus.kind == BusKind::Kafka {
            self.bus.kafka.validate().map_err(PipelineError::Config)?;
        }
        if self.store.backend == Backend::Elastic {
            self.elastic.validate()?;
        }
        if let Some(llm) = &self.analytics.llm {
            llm.validate().map_err(PipelineError::Config)?;
        }
        if self.store.data_dir.as_os_str().is_empty() {
            return Err(PipelineError::Config(
                "store.data_dir must not be empty".into(),
            ));
        }
        let rules = self.effective_rules()?;
        let mut names = std::collections::HashSet::new();
        for rule in &rules {
            if !names.insert(rule.name.as_str()) {
                return Err(PipelineError::Rule {
                    rule: rule.name.clone(),
                    message: "name is used twice".into(),
                });
            }
            crate::operators::rules::CompiledRule::compile(rule)?;
        }
        Ok(())
    }
}

/// Parse rules: a YAML list, or a mapping with a `rules:` list (the `rules_file` format).
pub fn parse_rules(text: &str) -> std::result::Result<Vec<RuleConfig>, String> {
    let has_key = text.lines().any(|l| l.starts_with("rules:"));
    let doc = if has_key {
        text.to_string()
    } else {
        format!("rules:\n{}", indent(text))
    };
    Figment::from(Yaml::string(&doc))
        .extract_inner("rules")
        .map_err(figment_message)
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

fn figment_message(e: figment::Error) -> String {
    e.into_iter()
        .map(|e| {
            let path = e.path.join(".");
            if path.is_empty() {
                e.kind.to_string()
            } else {
                format!("{path}: {}", e.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Parse a listen address, naming the field when it is not `host:port`.
pub fn parse_addr(field: &str, value: &str) -> Result<SocketAddr> {
    value.parse().map_err(|_| {
        PipelineError::Config(format!(
            "{field}: `{value}` is not a socket address (host:port)"
        ))
    })
}

fn positive(field: &str, value: usize) -> Result<()> {
    if value == 0 {
        return Err(PipelineError::Config(format!(
            "{field} must be greater than 0"
        )));
    }
    Ok(())
}

/// Durations written the human way (`500ms`, `5m`).
pub mod duration_str {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("`{text}` is not a duration like 5m or 500ms: {e}"))
        })
    }
}

/// `Option<Duration>` in the same form.
pub mod opt_duration_str {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration_str::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(text) => humantime::parse_duration(&text).map(Some).map_err(|e| {
                serde::de::Error::custom(format!(
                    "`{text}` is not a duration like 5m or 500ms: {e}"
                ))
            }),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(yaml: &str) -> Result<Config> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, yaml)?;
        Config::load(&path)
    }

    #[test]
    fn defaults_validate() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn the_example_config_is_the_defaults_and_elastic_settings_are_checked() {
        // Relative to the repository root, where the binary runs.
        let example = include_str!("../../config/sqlvigil.example.yaml")
            .replace("config/rules.example.yaml", "../config/rules.example.yaml");
        let mut loaded = load_str(&example).unwrap();
        assert!(loaded.rules_file.take().is_some());
        assert_eq!(loaded, Config::default());
        let elastic = "store:\n  backend: elastic\nelastic:\n  url: es:9200\n";
        let e = load_str(elastic).unwrap_err().to_string();
        assert!(e.contains("elastic.url"), "{e}");
        let ilm = "store:\n  backend: elastic\nelastic:\n  ilm:\n    delete_after: 90 days\n";
        let e = load_str(ilm).unwrap_err().to_string();
        assert!(e.contains("elastic.ilm.delete_after"), "{e}");
    }

    #[test]
    fn unknown_and_bad_fields_are_named() {
        let err = load_str("receiver:\n  grpc_adr: 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("grpc_adr"), "{err}");
        let err = load_str("api:\n  addr: nowhere\n").unwrap_err().to_string();
        assert!(err.contains("api.addr"), "{err}");
        let err = load_str("store:\n  flush_interval: soon\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("flush_interval"), "{err}");
        let err = load_str(
            "analytics:\n  llm:\n    provider: ollama\n    base_url: localhost\n    model: m\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("analytics.llm.base_url"), "{err}");
        let err = load_str("analytics:\n  llm:\n    provider: gpt\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("analytics.llm.provider"), "{err}");
        let err = load_str("rules:\n  - name: r\n    when: \"nosuch > 1\"\n    for: 1m\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("rule `r`") && err.contains("when"), "{err}");
    }

    #[test]
    fn default_rules_parse() {
        let rules = parse_rules(DEFAULT_RULES_YAML).unwrap();
        assert!(rules.iter().any(|r| r.name == "cpu_storm"));
    }
}
