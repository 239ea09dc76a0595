//! Rules as written in YAML ([`RuleConfig`]), and the rule files' format.

use crate::baseline::BaselineKind;
use crate::error::Error;
use figment::providers::{Format, Yaml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use sqlvigil_model::duration as duration_str;
use sqlvigil_model::duration::option as opt_duration_str;
use sqlvigil_model::{SeriesKey, Severity};
use std::time::Duration;

/// The default rules (also shipped as `config/rules.example.yaml`).
pub const DEFAULT_RULES_YAML: &str = include_str!("../../../../config/rules.example.yaml");

/// Which side of the baseline counts for deviation rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    Above,
    Below,
    Both,
}

/// A rule as written in YAML. Exactly one of `when`, `deviation`, `change`,
/// `absent_for` says which kind it is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique rule name; part of the anomaly fingerprint.
    pub name: String,
    /// Threshold rules: condition over one metric, e.g. `cpu_percent > 85`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// The metric (alias or receiver name) for the other kinds, or what `value` means in `when`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// How long the condition must hold before the anomaly opens (default 0).
    #[serde(rename = "for", default, with = "duration_str")]
    pub for_: Duration,
    /// How long the condition must be false before the anomaly resolves (default 1m).
    #[serde(
        default,
        with = "opt_duration_str",
        skip_serializing_if = "Option::is_none"
    )]
    pub resolve_after: Option<Duration>,
    /// After a resolve, the same rule and series cannot reopen for this long (default 5m).
    #[serde(
        default,
        with = "opt_duration_str",
        skip_serializing_if = "Option::is_none"
    )]
    pub cooldown: Option<Duration>,
    /// A series that reopens within one re-arm delay of re-arming doubles its next one,
    /// up to this (default 12h); a longer calm resets it to `cooldown`.
    #[serde(
        default,
        with = "opt_duration_str",
        skip_serializing_if = "Option::is_none"
    )]
    pub cooldown_max: Option<Duration>,
    /// This rule's open-rate limit per instance (default: `operators.storm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storm: Option<crate::rules::StormConfig>,
    #[serde(default = "default_severity")]
    pub severity: Severity,
    /// Deviation rules: which baseline (default `ewma`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselineKind>,
    /// Deviation rules: robust z-score that counts as a breach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deviation: Option<f64>,
    /// Deviation rules: above (default), below or both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// Rate-of-change rules: relative change such as `-60%` or `+200%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<String>,
    /// Rate-of-change rules: compared with the value this long ago (default 5m).
    #[serde(
        default,
        with = "opt_duration_str",
        skip_serializing_if = "Option::is_none"
    )]
    pub over: Option<Duration>,
    /// Absence rules: a series silent this long (in event time) is an anomaly.
    #[serde(
        default,
        with = "opt_duration_str",
        skip_serializing_if = "Option::is_none"
    )]
    pub absent_for: Option<Duration>,
    /// Only series whose point attributes have these values, e.g. `{tempdb.state: free}`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub attributes: std::collections::BTreeMap<String, String>,
}

fn default_severity() -> Severity {
    Severity::Warning
}

impl RuleConfig {
    /// A threshold rule (tests and defaults).
    pub fn threshold(name: &str, when: &str, for_: Duration) -> Self {
        RuleConfig {
            name: name.into(),
            when: Some(when.into()),
            metric: None,
            for_,
            resolve_after: None,
            cooldown: None,
            cooldown_max: None,
            storm: None,
            severity: Severity::Warning,
            baseline: None,
            deviation: None,
            direction: None,
            change: None,
            over: None,
            absent_for: None,
            attributes: Default::default(),
        }
    }

    /// Whether the rule watches this series.
    pub fn selects(&self, key: &SeriesKey) -> bool {
        self.attributes
            .iter()
            .all(|(k, v)| key.attributes.get(k) == Some(v))
    }
}

pub(crate) fn rule_err(rule: &RuleConfig, message: impl Into<String>) -> Error {
    Error::Rule {
        rule: rule.name.clone(),
        message: message.into(),
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

/// A figment error as `field.path: what is wrong`, every error of it joined.
pub fn figment_message(e: figment::Error) -> String {
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
