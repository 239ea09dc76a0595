//! THE operator chain builder. `run` and `demo` (one chain per bus partition),
//! `replay`, `eval` and the benchmarks all build their chains here, from the same
//! [`ChainConfig`], so every mode judges the way production does.
//!
//! ```
//! use sqlvigil_operators::chain::{ChainBuilder, ChainConfig};
//! use sqlvigil_core::{run_chain, MicroBatch, Stats};
//! use sqlvigil_model::{Sample, SeriesKey};
//! use std::sync::Arc;
//!
//! let config = ChainConfig::with_default_rules().unwrap();
//! let builder = ChainBuilder::new(config, Arc::new(Stats::default())).unwrap();
//! let mut chain = builder.build().unwrap();
//! let key = SeriesKey::new("sql-01", "h", "", "sqlserver.cpu.utilization");
//! let mut batch = MicroBatch { samples: vec![Sample::gauge(key, 1_000_000_000, 99.0, "%")], events: vec![] };
//! run_chain(&mut chain, &mut batch).unwrap();
//! assert!(batch.events.is_empty()); // `cpu_storm` needs 5 minutes of breach first
//! ```

use crate::config::OperatorsConfig;
use crate::rate::RateOperator;
use crate::rules::{parse_rules, CompiledRule, RuleConfig, RuleOperator, DEFAULT_RULES_YAML};
use crate::units::UnitOperator;
use crate::window::WindowOperator;
use sqlvigil_core::{async_trait, Build, BuildContext, Chain, Error, Operator, Result, Stats};
use std::collections::HashSet;
use std::sync::Arc;

/// Builds one stage of the chain from the config.
pub type Stage = fn(&ChainConfig, &Arc<Stats>) -> Result<Box<dyn Operator>>;

/// The stages in data-flow order: units (to the catalogue's), rates, then windows (over raw and rate series), then
/// the rules (which may watch raw, rate and window series). Adding an operator kind is
/// one file (its config and its `Operator`) and one entry here.
pub const STAGES: &[Stage] = &[
    |_, stats| Ok(Box::new(UnitOperator::new(stats.clone()))),
    |c, stats| {
        let idle = c.operators.idle_series_after;
        Ok(Box::new(
            RateOperator::new(stats.clone())
                .with_idle_after(idle)
                .with_modes(c.operators.rates.clone()),
        ))
    },
    |c, stats| {
        Ok(Box::new(WindowOperator::new(
            &c.operators.windows,
            stats.clone(),
        )?))
    },
    |c, stats| {
        let ops = &c.operators;
        Ok(Box::new(
            RuleOperator::new(&c.rules, ops.baseline.clone(), stats.clone())?
                .with_allowed_lateness(ops.allowed_lateness)
                .with_idle_after(ops.idle_series_after)
                .with_storm(ops.storm),
        ))
    },
];

/// What a chain is built from: the `operators:` section and the rules in force.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainConfig {
    pub operators: OperatorsConfig,
    pub rules: Vec<RuleConfig>,
}

impl ChainConfig {
    /// Default operators and the shipped rule set.
    pub fn with_default_rules() -> Result<ChainConfig> {
        Ok(ChainConfig {
            operators: OperatorsConfig::default(),
            rules: parse_rules(DEFAULT_RULES_YAML).map_err(Error::Config)?,
        })
    }
}

#[async_trait]
impl Build for ChainConfig {
    type Output = ChainBuilder;

    /// The operators section, and every rule: compiled, names unique.
    fn validate(&self) -> Result<()> {
        self.operators.validate()?;
        let mut names = HashSet::new();
        for rule in &self.rules {
            if !names.insert(rule.name.as_str()) {
                return Err(Error::Rule {
                    rule: rule.name.clone(),
                    message: "name is used twice".into(),
                });
            }
            CompiledRule::compile(rule)?;
        }
        Ok(())
    }

    async fn build(&self, ctx: &BuildContext) -> Result<ChainBuilder> {
        ChainBuilder::new(self.clone(), ctx.stats.clone())
    }
}

/// Makes fresh chains (one per partition, or one for a replay) that all judge alike.
#[derive(Clone)]
pub struct ChainBuilder {
    config: Arc<ChainConfig>,
    stats: Arc<Stats>,
}

impl ChainBuilder {
    /// Validate `config` and build one chain, so a rule that does not compile stops
    /// start-up here rather than at the first record.
    pub fn new(config: ChainConfig, stats: Arc<Stats>) -> Result<ChainBuilder> {
        config.validate()?;
        let builder = ChainBuilder {
            config: Arc::new(config),
            stats,
        };
        builder.build()?;
        Ok(builder)
    }

    /// A fresh chain: every stage of [`STAGES`], in order.
    pub fn build(&self) -> Result<Chain> {
        STAGES
            .iter()
            .map(|stage| stage(&self.config, &self.stats))
            .collect()
    }
}
