//! `sqlvigil eval [--quick]`: detection quality of a config's rules on simulated
//! incidents, per rule and overall; last line `f1: X`. The engine is
//! `sqlvigil_runtime::eval`.

use anyhow::Result;
use clap::Args;
use sqlvigil_runtime::eval::{detect, f1, ratio, schedule, score, INTERVAL, QUIET_INSTANCES};
use sqlvigil_runtime::Config;
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
}

pub async fn run(args: EvalArgs) -> Result<()> {
    let chain = Config::chain_for(args.config.as_deref(), args.rules.as_deref())?;
    let rules = chain.rules.clone();
    let (cfg, ticks) = schedule(args.quick, args.seed);
    let quiet: Vec<String> = (cfg.instances - QUIET_INSTANCES..cfg.instances)
        .map(|i| format!("sql-{:02}", i + 1))
        .collect();
    println!(
        "fleet: {} instances ({} quiet: {}), {} h at {} s scrapes, {} incidents",
        cfg.instances,
        QUIET_INSTANCES,
        quiet.join(", "),
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
    let (scores, quiet_alarms) = score(&seen.opened, &seen.labels, &rules, &quiet);
    let for_of = |name: &str| {
        rules
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.for_.as_secs())
            .unwrap_or(0)
    };
    println!(
        "{:<22} {:>9} {:>8} {:>4} {:>4} {:>7} {:>9} {:>7} {:>6} {:>10} {:>9} {:>6}",
        "rule",
        "incidents",
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
            "{name:<22} {:>9} {:>8} {:>4} {:>4} {:>7} {:>9.3} {:>7.3} {:>6.3} {:>10.0} {:>9.0} {:>6}",
            s.incidents, s.detected, s.true_pos, s.false_pos, s.related, s.precision(), s.recall(), f1(s.precision(), s.recall()), mean, max, for_of(name)
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
    println!("overall: precision {p:.3}, recall {r:.3} ({det}/{inc} incidents, {fp} false alarms)");
    println!("f1: {:.3}", f1(p, r));
    Ok(())
}
