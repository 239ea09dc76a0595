//! `sqlvigil.yaml`: the root configuration, composed of each crate's section, loaded
//! from a YAML file with environment overrides: `SQLVIGIL_<SECTION>__<KEY>`
//! (`SQLVIGIL_API__ADDR=0.0.0.0:8080` sets `api.addr`, deeper keys join with `__`) and
//! `SQLVIGIL_<TOP_LEVEL_FIELD>` (`SQLVIGIL_RULES_FILE`). Other `SQLVIGIL_*` variables
//! (`SQLVIGIL_LOG`, a user's `SQLVIGIL_BIN`) are not config and are ignored; a known
//! section with an unknown key is an error naming it.
//!
//! Every section rejects unknown fields and validates itself ([`Config::validate`]
//! asks each); errors name the field at fault.

use figment::providers::{Format, Serialized, Yaml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use sqlvigil_analytics::AnalyticsConfig;
use sqlvigil_api::ApiConfig;
use sqlvigil_bridge::ElasticConfig;
use sqlvigil_bus::BusConfig;
use sqlvigil_core::{Build, Error, Result};
use sqlvigil_monitor::MonitorConfig;
use sqlvigil_operators::chain::ChainConfig;
use sqlvigil_operators::config::OperatorsConfig;
use sqlvigil_operators::rules::config::figment_message;
use sqlvigil_operators::rules::{parse_rules, RuleConfig, DEFAULT_RULES_YAML};
use sqlvigil_receiver::ReceiverConfig;
use sqlvigil_store::{Backend, StoreConfig};
use std::path::{Path, PathBuf};

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
    pub elastic: ElasticConfig,
    /// The live monitor: SQL Server instances to read DMVs from directly (none by default).
    pub monitor: MonitorConfig,
    /// When a part counts as stalled or over its backlog (`/health`, `/ready`).
    pub health: crate::health::HealthConfig,
    /// How long SIGINT / SIGTERM may take.
    pub shutdown: crate::shutdown::ShutdownConfig,
    /// Rules inline; appended to those of `rules_file`.
    pub rules: Vec<RuleConfig>,
    /// A YAML file holding a list of rules. Without it and without inline rules the
    /// default rule set applies.
    pub rules_file: Option<PathBuf>,
}

impl Config {
    /// Load `path` (must exist) with the process's `SQLVIGIL_*` overrides, then validate.
    pub fn load(path: &Path) -> Result<Config> {
        Config::load_with_env(path, std::env::vars())
    }

    /// Load `path` with the overrides found in `vars` (name, value), then validate.
    pub fn load_with_env(
        path: &Path,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config> {
        if !path.is_file() {
            return Err(Error::Config(format!(
                "config file {} does not exist",
                path.display()
            )));
        }
        let mut figment =
            Figment::from(Serialized::defaults(Config::default())).merge(Yaml::file(path));
        for (key, value) in env_overrides(vars) {
            figment = figment.merge((key, value));
        }
        let cfg: Config = figment
            .extract()
            .map_err(|e| Error::Config(figment_message(e)))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The rules in force: `rules_file` then inline `rules`, or the defaults when both are empty.
    pub fn effective_rules(&self) -> Result<Vec<RuleConfig>> {
        let mut rules = match &self.rules_file {
            Some(path) => read_rules(path)?,
            None => Vec::new(),
        };
        rules.extend(self.rules.iter().cloned());
        if rules.is_empty() {
            rules = parse_rules(DEFAULT_RULES_YAML).map_err(Error::Config)?;
        }
        Ok(rules)
    }

    /// What every operator chain of this config is built from (`run`, `demo`,
    /// `replay`, `eval` and the benches alike).
    /// The config in force as JSON with every secret replaced by `[redacted]`: the text
    /// under any key naming a password, secret, API key or credential (librdkafka
    /// properties such as `sasl.password` too), unless it is an `env:` / `file:`
    /// reference, which says where the secret is, not what it is.
    pub fn redacted(&self) -> Result<serde_json::Value> {
        let mut v = serde_json::to_value(self)
            .map_err(|e| Error::Bug(format!("the config does not serialize: {e}")))?;
        redact(&mut v, false);
        Ok(v)
    }

    pub fn chain(&self) -> Result<ChainConfig> {
        Ok(ChainConfig {
            operators: self.operators.clone(),
            rules: self.effective_rules()?,
        })
    }

    /// The chain of `config` (or the defaults), with the rules of `rules_file` instead
    /// of the config's when one is given: what `replay` and `eval` judge with.
    pub fn chain_for(config: Option<&Path>, rules_file: Option<&Path>) -> Result<ChainConfig> {
        let cfg = match config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        let mut chain = cfg.chain()?;
        if let Some(path) = rules_file {
            chain.rules = read_rules(path)?;
        }
        Ok(chain)
    }

    /// The rules in force that cannot fire in some receiver mode, and why.
    pub fn coverage_gaps(&self) -> Result<Vec<sqlvigil_model::catalogue::Gap>> {
        sqlvigil_operators::rules::coverage::gaps(&self.effective_rules()?)
    }

    /// Check every section: each validates itself; the Elastic and Kafka sections only
    /// when they are in use.
    pub fn validate(&self) -> Result<()> {
        self.receiver.validate()?;
        self.api.validate()?;
        self.health.validate()?;
        self.shutdown.validate()?;
        self.bus.validate()?;
        self.store.validate()?;
        if self.store.backend == Backend::Elastic {
            self.elastic.validate()?;
        }
        self.analytics.validate()?;
        self.monitor.validate()?;
        self.chain()?.validate()
    }
}

/// Environment variables that override config, as (dotted key, value): see the module
/// doc. Values are read as YAML-like scalars (`10` a number, `true` a boolean), the way
/// figment's `Env` reads them.
pub fn env_overrides(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Vec<(String, figment::value::Value)> {
    let top = match serde_json::to_value(Config::default()) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    vars.into_iter()
        .filter_map(|(name, value)| {
            let rest = name.strip_prefix("SQLVIGIL_")?.to_ascii_lowercase();
            let path: Vec<&str> = rest.split("__").collect();
            let known = match (path.as_slice(), top.get(path[0])) {
                // A section's key: unknown keys are refused by the section, by name.
                ([_, _, ..], Some(section)) => section.is_object(),
                // A top-level field that is not a section (`rules_file`).
                ([_], Some(field)) => !field.is_object(),
                _ => false,
            };
            let parsed = value.parse().unwrap_or(figment::value::Value::from(value));
            known.then(|| (path.join("."), parsed))
        })
        .collect()
}

/// The rules of a rules file (the `rules_file` format: a list, or `rules:` with one).
pub fn read_rules(path: &Path) -> Result<Vec<RuleConfig>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("rules_file {}: {e}", path.display())))?;
    parse_rules(&text).map_err(|e| Error::Config(format!("rules_file {}: {e}", path.display())))
}

/// Whether a config key names a secret.
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    // Not "token": `api.metrics_require_token` is a switch; API tokens live in the state store.
    [
        "password",
        "secret",
        "api_key",
        "apikey",
        "credential",
        "private_key",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// Redact the secrets in `v` (`secret`: `v` is the value of a secret key).
fn redact(v: &mut serde_json::Value, secret: bool) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                redact(child, secret || is_secret_key(k));
            }
        }
        Value::Array(list) => list.iter_mut().for_each(|c| redact(c, secret)),
        Value::String(s) if secret && !(s.starts_with("env:") || s.starts_with("file:")) => {
            *s = "[redacted]".into();
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_config_view_redacts_secrets_but_not_where_they_are() {
        let mut cfg = Config::default();
        cfg.elastic.password = Some("hunter2".into());
        cfg.elastic.api_key = Some("c2VjcmV0".into());
        cfg.analytics.llm = Some(serde_json::from_value(serde_json::json!({
            "provider": "openai", "base_url": "http://127.0.0.1:1", "model": "m", "api_key": "sk-live"
        })).unwrap());
        let text = cfg.redacted().unwrap().to_string();
        for secret in ["hunter2", "c2VjcmV0", "sk-live"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("[redacted]"));
        let mut v = serde_json::json!({"bus": {"properties": {"sasl.password": "pw", "sasl.username": "u"}}, "password": "env:PW"});
        redact(&mut v, false);
        assert_eq!(v["bus"]["properties"]["sasl.password"], "[redacted]");
        assert_eq!(v["bus"]["properties"]["sasl.username"], "u");
        assert_eq!(v["password"], "env:PW");
    }
    use super::*;

    fn load_str(yaml: &str) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, yaml).unwrap();
        Config::load(&path)
    }

    #[test]
    fn defaults_validate() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn the_example_config_is_the_defaults_and_elastic_settings_are_checked() {
        // Relative to the repository root, where the binary runs.
        let example = include_str!("../../../config/sqlvigil.example.yaml").replace(
            "config/rules.example.yaml",
            "../../config/rules.example.yaml",
        );
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
    fn only_section_keys_and_top_level_fields_are_env_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "{}\n").unwrap();
        let vars = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let cfg = Config::load_with_env(
            &path,
            vars(&[
                ("SQLVIGIL_BIN", "/usr/bin/x"),
                ("SQLVIGIL_LOG", "debug"),
                ("SQLVIGIL_NOSUCH__THING", "1"),
                ("SQLVIGIL_API__ADDR", "0.0.0.0:9999"),
                ("SQLVIGIL_OPERATORS__BATCH_RECORDS", "64"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.api.addr, "0.0.0.0:9999");
        assert_eq!(cfg.operators.batch_records, 64);
        let err = Config::load_with_env(&path, vars(&[("SQLVIGIL_API__ADR", "x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("adr"), "{err}");
    }

    #[test]
    fn default_rules_parse() {
        let rules = parse_rules(DEFAULT_RULES_YAML).unwrap();
        assert!(rules.iter().any(|r| r.name == "cpu_storm"));
    }
}
