//! `sqlvigil replay --from DIR | kafka://BROKERS/TOPIC`: re-run stored telemetry through
//! the operator chain of a config (windows, baselines and lateness included) and print
//! every open and resolve event as a JSON line in event-time order, then a summary.

use anyhow::Result;
use clap::Args;
use sqlvigil_model::AnomalyEventKind;
use sqlvigil_runtime::replay::{replay, Source};
use sqlvigil_runtime::Config;
use std::path::PathBuf;

#[derive(Args)]
pub struct ReplayArgs {
    /// A sqlvigil data directory (its `metrics/` Parquet files are read, never written),
    /// or `kafka://HOST:PORT[,HOST:PORT…]/TOPIC` (a metrics topic, e.g. `otlp_metrics`).
    #[arg(long)]
    from: String,
    /// The config whose operators (windows, baselines, lateness) and rules judge the
    /// replay (default: the defaults and the shipped rule set).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Rules to replay with instead of the config's.
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Points per micro-batch.
    #[arg(long, default_value_t = 4096)]
    batch: usize,
}

pub async fn run(args: ReplayArgs) -> Result<()> {
    let chain = Config::chain_for(args.config.as_deref(), args.rules.as_deref())?;
    let out = replay(&Source::parse(&args.from)?, &chain, args.batch).await?;
    let rules = chain.rules.len();
    if out.undecodable > 0 {
        eprintln!(
            "skipped {} records that are not OTLP metrics",
            out.undecodable
        );
    }
    for ev in &out.events {
        println!("{}", serde_json::to_string(ev)?);
    }
    eprintln!(
        "replayed {} points with {rules} rules: {} anomalies opened, {} resolved",
        out.points,
        out.count(AnomalyEventKind::Open),
        out.count(AnomalyEventKind::Resolve)
    );
    Ok(())
}
