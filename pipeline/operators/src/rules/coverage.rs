//! Which rules can fire for which receiver mode: a rule reading a metric the
//! `sqlserver` receiver sends only through Windows perf counters (or only over a direct
//! connection) silently never fires for instances read the other way. `sqlvigil
//! validate` and `/api/v1/coverage` say so out loud.

use super::{CompiledRule, RuleConfig};
use sqlvigil_core::Result;
use sqlvigil_model::catalogue::{self, Gap, ReceiverMode, RuleNeeds};

/// The receiver metrics each rule reads.
pub fn needs(rules: &[RuleConfig]) -> Result<Vec<RuleNeeds>> {
    rules
        .iter()
        .map(|r| {
            let compiled = CompiledRule::compile(r)?;
            Ok(RuleNeeds {
                rule: r.name.clone(),
                metrics: catalogue::receiver_metrics_of(&compiled.metric),
            })
        })
        .collect()
}

/// The rules that cannot fire in each mode.
pub fn gaps(rules: &[RuleConfig]) -> Result<Vec<Gap>> {
    let needs = needs(rules)?;
    Ok([ReceiverMode::Direct, ReceiverMode::Windows]
        .into_iter()
        .flat_map(|mode| needs.iter().filter_map(move |n| n.gap(mode)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{parse_rules, DEFAULT_RULES_YAML};

    #[test]
    fn the_default_rules_gaps_are_known() {
        let rules = parse_rules(DEFAULT_RULES_YAML).unwrap();
        let gaps = gaps(&rules).unwrap();
        let of = |mode: ReceiverMode| -> Vec<&str> {
            gaps.iter()
                .filter(|g| g.mode == mode)
                .map(|g| g.rule.as_str())
                .collect()
        };
        assert_eq!(
            of(ReceiverMode::Direct),
            ["log_full", "blocking_chain_lock_waits"]
        );
        assert_eq!(
            of(ReceiverMode::Windows),
            [
                "cpu_storm",
                "blocking_chain",
                "io_stall",
                "wait_time_spike",
                "cpu_telemetry_absent"
            ]
        );
    }
}
