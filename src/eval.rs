//! `sqlvigil eval [--quick]`: detection quality of the rule set, measured.
//!
//! A simulated fleet runs every incident scenario several times on some instances, while
//! the last instances stay quiet (daily and weekly seasonality and noise only). The
//! telemetry goes through the same decode → rate → rules chain as the pipeline, in
//! process and in event time. Each opened anomaly is matched to the incident of the same
//! name on the same instance (opened between its start and its end plus a grace period):
//! a match is a true positive, anything else a false positive; an incident without a
//! match is a miss. Printed per rule: precision, recall, F1 and time to detect; last line
//! `f1: X` (micro-averaged over all rules).

use anyhow::{Context as _, Result};
use clap::Args;
use sqlvigil_model::{AnomalyEvent, AnomalyEventKind};
use sqlvigil_pipeline::operators::baseline::BaselineConfig;
use sqlvigil_pipeline::operators::rate::RateOperator;
use sqlvigil_pipeline::operators::rules::{RuleConfig, RuleOperator};
use sqlvigil_pipeline::operators::{MicroBatch, Operator};
use sqlvigil_pipeline::receiver::decode::metrics_to_samples;
use sqlvigil_pipeline::stats::Stats;
use sqlvigil_simulator::{Fleet, FleetConfig, Incident, IncidentLabel, Scenario};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct EvalArgs {
    /// A smaller fleet and period (under 30 s in a release build).
    #[arg(long)]
    quick: bool,
    /// Rules to evaluate (default: the shipped rule set).
    #[arg(long)]
    rules: Option<PathBuf>,
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

const INTERVAL: Duration = Duration::from_secs(30);
const WARM_UP: Duration = Duration::from_secs(6 * 3600);
const INCIDENT: Duration = Duration::from_secs(30 * 60);
/// Incidents on one instance start this far apart (room to resolve and cool down).
const SLOT: Duration = Duration::from_secs(3 * 3600);
/// A detection may come this long after the incident ended and still count.
const GRACE: Duration = Duration::from_secs(10 * 60);
const QUIET_INSTANCES: usize = 2;

/// The fleet and its incident schedule: scenarios in turn over the busy instances.
fn schedule(quick: bool, seed: u64) -> (FleetConfig, u64) {
    let (instances, period) = if quick {
        (6, Duration::from_secs(36 * 3600))
    } else {
        (10, Duration::from_secs(7 * 86400))
    };
    let scenarios: Vec<Scenario> = Scenario::ALL
        .into_iter()
        .filter(|s| *s != Scenario::Quiet)
        .collect();
    let busy = instances - QUIET_INSTANCES;
    let slots = ((period - WARM_UP - SLOT).as_secs() / SLOT.as_secs()) as usize;
    let mut incidents = Vec::new();
    for slot in 0..slots {
        for instance in 0..busy {
            let scenario = scenarios[(slot * busy + instance) % scenarios.len()];
            // Stagger instances so incidents do not all start together.
            let offset = WARM_UP + SLOT * slot as u32 + Duration::from_secs(600 * instance as u64);
            incidents.push(Incident {
                scenario,
                instance,
                offset,
                duration: INCIDENT,
            });
        }
    }
    let start_time_ns = sqlvigil_simulator::DEFAULT_START_TIME_NS;
    let ticks = period.as_secs() / INTERVAL.as_secs();
    (
        FleetConfig {
            seed,
            instances,
            interval: INTERVAL,
            incidents,
            start_time_ns,
        },
        ticks,
    )
}

/// Per rule: incidents, detections, false alarms, times to detect.
#[derive(Default)]
struct Score {
    incidents: usize,
    detected: usize,
    true_pos: usize,
    false_pos: usize,
    /// Opened during a different incident on the same instance.
    related: usize,
    ttd_s: Vec<f64>,
}

impl Score {
    fn precision(&self) -> f64 {
        ratio(self.true_pos, self.true_pos + self.false_pos)
    }
    fn recall(&self) -> f64 {
        ratio(self.detected, self.incidents)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

fn f1(p: f64, r: f64) -> f64 {
    if p + r == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    }
}

/// The rules in `path`, or the shipped set.
pub fn load_rules(path: &Option<PathBuf>) -> Result<Vec<RuleConfig>> {
    let text = match path {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        None => sqlvigil_pipeline::config::DEFAULT_RULES_YAML.to_string(),
    };
    sqlvigil_pipeline::config::parse_rules(&text).map_err(anyhow::Error::msg)
}

/// Run the fleet through the operators and collect the opened anomalies.
fn detect(
    cfg: FleetConfig,
    ticks: u64,
    rules: &[RuleConfig],
) -> Result<(Vec<AnomalyEvent>, Vec<IncidentLabel>, u64)> {
    let stats = Arc::new(Stats::default());
    let mut ops: Vec<Box<dyn Operator>> = vec![
        Box::new(RateOperator::new(stats.clone())),
        Box::new(RuleOperator::new(rules, BaselineConfig::default(), stats)?),
    ];
    let mut fleet = Fleet::new(cfg);
    let labels = fleet.labels();
    let (mut opened, mut points) = (Vec::new(), 0u64);
    for tick in 0..ticks {
        let mut batch = MicroBatch::default();
        for req in fleet.metrics(tick) {
            metrics_to_samples(&req, &mut batch.samples);
        }
        points += batch.samples.len() as u64;
        for op in ops.iter_mut() {
            op.process(&mut batch)?;
        }
        opened.extend(
            batch
                .events
                .into_iter()
                .filter(|e| e.event == AnomalyEventKind::Open),
        );
    }
    Ok((opened, labels, points))
}

fn score(
    opened: &[AnomalyEvent],
    labels: &[IncidentLabel],
    rules: &[RuleConfig],
    quiet: &[String],
) -> (BTreeMap<String, Score>, usize) {
    let mut scores: BTreeMap<String, Score> = rules
        .iter()
        .map(|r| (r.name.clone(), Score::default()))
        .collect();
    for l in labels {
        scores.entry(l.name.clone()).or_default().incidents += 1;
    }
    let grace = GRACE.as_nanos() as i64;
    let mut matched = vec![false; labels.len()];
    let mut quiet_alarms = 0;
    for ev in opened {
        let a = &ev.anomaly;
        let t = a.opened_at.timestamp_nanos_opt().unwrap_or(i64::MAX);
        quiet_alarms += usize::from(quiet.iter().any(|q| **q == *a.series.instance));
        let during = |l: &IncidentLabel| {
            *l.instance == *a.series.instance && t >= l.start_ns && t <= l.end_ns + grace
        };
        let hit = labels.iter().position(|l| l.name == a.rule && during(l));
        let s = scores.entry(a.rule.clone()).or_default();
        // Another incident on the same instance explains it (e.g. I/O waits during a
        // buffer-pool collapse): a real symptom, neither a hit nor a false alarm.
        if hit.is_none() && labels.iter().any(during) {
            s.related += 1;
            continue;
        }
        match hit {
            Some(i) => {
                s.true_pos += 1;
                if !matched[i] {
                    matched[i] = true;
                    s.detected += 1;
                    s.ttd_s.push((t - labels[i].start_ns) as f64 / 1e9);
                }
            }
            None => s.false_pos += 1,
        }
    }
    (scores, quiet_alarms)
}

pub async fn run(args: EvalArgs) -> Result<()> {
    let rules = load_rules(&args.rules)?;
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
    let (opened, labels, points) =
        tokio::task::spawn_blocking(move || detect(cfg, ticks, &rules)).await??;
    println!(
        "{points} points through rate + rules in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let rules = load_rules(&args.rules)?;
    let (scores, quiet_alarms) = score(&opened, &labels, &rules, &quiet);
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
