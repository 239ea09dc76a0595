//! A rule compiled for evaluation: its metric, its kind's evaluator, its condition text.

use super::config::{rule_err, RuleConfig};
use super::{absence, change, deviation, threshold};
use crate::error::Result;
use sqlvigil_model::catalogue;

/// What a rule thinks of one point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judgement {
    pub breach: bool,
    /// What the rule expected (threshold, baseline, earlier value).
    pub expected: Option<f64>,
    /// How bad: larger is worse; compared to keep the peak while open.
    pub score: f64,
}

/// The kind-specific part of a rule.
pub enum RuleKind {
    Threshold(threshold::Threshold),
    Deviation(deviation::Deviation),
    Change(change::Change),
    Absence(absence::Absence),
}

/// A rule ready to evaluate.
pub struct CompiledRule {
    pub config: RuleConfig,
    /// Series metric name the rule reads.
    pub metric: String,
    pub kind: RuleKind,
}

/// An alias or receiver metric name → the series name.
fn resolve_metric(config: &RuleConfig) -> Result<String> {
    let m = config
        .metric
        .as_deref()
        .ok_or_else(|| rule_err(config, "field `metric` is required for this kind of rule"))?;
    if m.trim().is_empty() {
        return Err(rule_err(config, "field `metric` must not be empty"));
    }
    Ok(catalogue::resolve_alias(m).unwrap_or(m).to_string())
}

impl CompiledRule {
    /// Parse and plan the rule; errors name the rule and the field.
    pub fn compile(config: &RuleConfig) -> Result<CompiledRule> {
        if config.name.trim().is_empty() {
            return Err(rule_err(config, "field `name` must not be empty"));
        }
        let kinds = [
            config.when.is_some(),
            config.deviation.is_some(),
            config.change.is_some(),
            config.absent_for.is_some(),
        ];
        if let (Some(max), base) = (config.cooldown_max, config.cooldown.unwrap_or_default()) {
            if max < base {
                return Err(rule_err(
                    config,
                    "field `cooldown_max` must not be below `cooldown`",
                ));
            }
        }
        if let Some(storm) = &config.storm {
            storm.validate().map_err(|e| rule_err(config, e))?;
        }
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(rule_err(
                config,
                "give exactly one of the fields `when`, `deviation`, `change`, `absent_for`",
            ));
        }
        let (metric, kind) = if let Some(when) = &config.when {
            let (metric, t) = threshold::Threshold::compile(config, when)?;
            (metric, RuleKind::Threshold(t))
        } else if config.deviation.is_some() {
            (
                resolve_metric(config)?,
                RuleKind::Deviation(deviation::Deviation::compile(config)?),
            )
        } else if config.change.is_some() {
            (
                resolve_metric(config)?,
                RuleKind::Change(change::Change::compile(config)?),
            )
        } else {
            (
                resolve_metric(config)?,
                RuleKind::Absence(absence::Absence::compile(config)?),
            )
        };
        Ok(CompiledRule {
            config: config.clone(),
            metric,
            kind,
        })
    }

    pub(crate) fn condition(&self) -> String {
        let c = &self.config;
        let for_ = if c.for_.is_zero() {
            String::new()
        } else {
            format!(" for {}", humantime::format_duration(c.for_))
        };
        match &self.kind {
            RuleKind::Threshold(_) => format!("{}{for_}", c.when.as_deref().unwrap_or_default()),
            RuleKind::Deviation(d) => format!(
                "{} deviates from its {} baseline by z ≥ {}{for_}",
                self.metric,
                d.baseline_name(),
                d.k
            ),
            RuleKind::Change(ch) => format!(
                "{} changes by {} over {}{for_}",
                self.metric,
                ch.describe(),
                humantime::format_duration(ch.over)
            ),
            RuleKind::Absence(a) => format!(
                "{} silent for {}",
                self.metric,
                humantime::format_duration(a.after)
            ),
        }
    }
}
