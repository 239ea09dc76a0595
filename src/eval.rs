//! `sqlvigil eval [--quick]`: detection quality of a config's rules on simulated
//! incidents, per rule and overall; last line `f1: X`. The engine is
//! `sqlvigil_runtime::eval`.

use anyhow::Result;
use clap::Args;
use sqlvigil_runtime::eval::{
    detect, f1, ratio, schedule, score, undetectable, INTERVAL, QUIET_INSTANCES,
};
use sqlvigil_runtime::Config;
use sqlvigil_simulator::ReceiverModes;
use std::path::PathBuf;

#[derive(Args)]
pub struct EvalArgs {
    /// A smaller fleet and period (under 30 s in a release build).
    #[arg(long)]
    quick: bool,
    /// The config whose operators and rules are evaluated (default: the defaults and
    /// the shipped rule set).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Rules to evaluate instead of the config's.
    #[arg(long)]
    rules: Option<PathBuf>,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// How the simulated receiver reads the fleet: `windows` (perf counters), `direct`
    /// (a direct connection) or `mixed` (even instances direct, odd ones Windows).
    #[arg(long, default_value = "mixed", value_parser = crate::simulate::parse_mode)]
    receiver_mode: ReceiverModes,
}

pub async fn run(args: EvalArgs) -> Result<()> {
    let chain = Config::chain_for(args.config.as_deref(), args.rules.as_deref())?;
    let rules = chain.rules.clone();
    let (cfg, ticks) = schedule(args.quick, args.seed, args.receiver_mode);
    let names: Vec<String> = (0..cfg.instances)
        .map(|i| format!("sql-{:02}", i + 1))
        .collect();
    let mode_of = |instance: &str| {
        let idx = names.iter().position(|n| n == instance)?;
        Some(args.receiver_mode.for_instance(idx))
    };
    let quiet: Vec<String> = (cfg.instances - QUIET_INSTANCES..cfg.instances)
        .map(|i| format!("sql-{:02}", i + 1))
        .collect();
    println!(
        "fleet: {} instances ({} quiet: {}), read as {:?}, {} h at {} s scrapes, {} incidents",
        cfg.instances,
        QUIET_INSTANCES,
        quiet.join(", "),
        args.receiver_mode,
        ticks * INTERVAL.as_secs() / 3600,
        INTERVAL.as_secs(),
        cfg.incidents.len()
    );
    let started = std::time::Instant::now();
    let seen = tokio::task::spawn_blocking(move || detect(cfg, ticks, &chain)).await??;
    println!(
        "{} points through the operator chain in {:.1} s",
        seen.points,
        started.elapsed().as_secs_f64()
    );
    let gaps = undetectable(&seen.labels, &rules, mode_of)?;
    let (scores, quiet_alarms) = score(&seen.opened, &seen.labels, &gaps, &rules, &quiet);
    let for_of = |name: &str| {
        rules
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.for_.as_secs())
            .unwrap_or(0)
    };
    println!(
        "{:<22} {:>9} {:>4} {:>8} {:>4} {:>4} {:>7} {:>9} {:>7} {:>6} {:>10} {:>9} {:>6}",
        "rule",
        "incidents",
        "gaps",
        "detected",
        "TP",
        "FP",
        "related",
        "precision",
        "recall",
        "f1",
        "ttd mean s",
        "ttd max s",
        "for s"
    );
    let (mut tp, mut fp, mut det, mut inc) = (0, 0, 0, 0);
    for (name, s) in &scores {
        let mean = if s.ttd_s.is_empty() {
            0.0
        } else {
            s.ttd_s.iter().sum::<f64>() / s.ttd_s.len() as f64
        };
        let max = s.ttd_s.iter().cloned().fold(0.0, f64::max);
        println!(
            "{name:<22} {:>9} {:>4} {:>8} {:>4} {:>4} {:>7} {:>9.3} {:>7.3} {:>6.3} {:>10.0} {:>9.0} {:>6}",
            s.incidents, s.gaps, s.detected, s.true_pos, s.false_pos, s.related, s.precision(), s.recall(), f1(s.precision(), s.recall()), mean, max, for_of(name)
        );
        (tp, fp, det, inc) = (
            tp + s.true_pos,
            fp + s.false_pos,
            det + s.detected,
            inc + s.incidents,
        );
    }
    let (p, r) = (ratio(tp, tp + fp), ratio(det, inc));
    println!("anomalies on the quiet instances: {quiet_alarms}");
    let gap_count: usize = scores.values().map(|s| s.gaps).sum();
    if gap_count > 0 {
        println!(
            "platform gaps: {gap_count} incidents no rule can see in their instance's receiver mode (`sqlvigil validate` names the rules)"
        );
    }
    println!("overall: precision {p:.3}, recall {r:.3} ({det}/{inc} incidents, {fp} false alarms)");
    println!("f1: {:.3}", f1(p, r));
    Ok(())
}
