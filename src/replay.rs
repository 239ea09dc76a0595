//! `sqlvigil replay --from DIR`: re-run stored telemetry through the operators.
//!
//! Reads the raw points of a data directory's Parquet store in event-time order (derived
//! `*.per_second` series are recomputed, not read), pushes them through the rate operator
//! and the rules (the shipped set or `--rules FILE`) in fixed-size micro-batches, and
//! prints every anomaly event as a JSON line, then a summary. The same input and rules
//! always give the same output, so a rule can be tuned on a past incident.

use anyhow::{Context as _, Result};
use clap::Args;
use futures::StreamExt;
use sqlvigil_model::arrow_schema::batch_to_samples;
use sqlvigil_model::{AnomalyEventKind, Sample};
use sqlvigil_pipeline::operators::baseline::BaselineConfig;
use sqlvigil_pipeline::operators::rate::RateOperator;
use sqlvigil_pipeline::operators::rules::RuleOperator;
use sqlvigil_pipeline::operators::{MicroBatch, Operator};
use sqlvigil_pipeline::sinks::store::{MetricFilter, Store};
use sqlvigil_pipeline::stats::Stats;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args)]
pub struct ReplayArgs {
    /// A sqlvigil data directory (its `metrics/` Parquet files are read, never written).
    #[arg(long)]
    from: PathBuf,
    /// Rules to replay with (default: the shipped rule set).
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Points per micro-batch.
    #[arg(long, default_value_t = 4096)]
    batch: usize,
}

fn derived(s: &Sample) -> bool {
    s.key.metric.ends_with(".per_second")
}

pub async fn run(args: ReplayArgs) -> Result<()> {
    let dir = &args.from;
    if !dir.join("metrics").is_dir() {
        anyhow::bail!(
            "{} is not a sqlvigil data directory (no metrics/ folder)",
            dir.display()
        );
    }
    let rules = crate::eval::load_rules(&args.rules)?;
    let stats = Arc::new(Stats::default());
    let store =
        Store::open(dir, stats.clone()).with_context(|| format!("opening {}", dir.display()))?;
    let mut ops: Vec<Box<dyn Operator>> = vec![
        Box::new(RateOperator::new(stats.clone())),
        Box::new(RuleOperator::new(&rules, BaselineConfig::default(), stats)?),
    ];
    let mut stream = store.stream_metrics(&MetricFilter::default()).await?;
    let (mut points, mut opened, mut resolved) = (0u64, 0u64, 0u64);
    let mut pending: Vec<Sample> = Vec::new();
    let mut flush = |pending: &mut Vec<Sample>, ops: &mut Vec<Box<dyn Operator>>| -> Result<()> {
        let mut mb = MicroBatch {
            samples: std::mem::take(pending),
            events: Vec::new(),
        };
        for op in ops.iter_mut() {
            op.process(&mut mb)?;
        }
        for ev in &mb.events {
            match ev.event {
                AnomalyEventKind::Open => opened += 1,
                AnomalyEventKind::Resolve => resolved += 1,
                AnomalyEventKind::Update => continue,
            }
            println!("{}", serde_json::to_string(ev)?);
        }
        Ok(())
    };
    while let Some(batch) = stream.next().await {
        for s in batch_to_samples(&batch?)?
            .into_iter()
            .filter(|s| !derived(s))
        {
            points += 1;
            pending.push(s);
            if pending.len() >= args.batch.max(1) {
                flush(&mut pending, &mut ops)?;
            }
        }
    }
    flush(&mut pending, &mut ops)?;
    eprintln!(
        "replayed {points} points with {} rules: {opened} anomalies opened, {resolved} resolved",
        rules.len()
    );
    Ok(())
}
