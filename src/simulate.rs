//! `sqlvigil simulate`: simulated SQL Server telemetry, exactly as the Collector's
//! `sqlserver` receiver sends it, to any OTLP endpoint.

use anyhow::Result;
use clap::Args;
use sqlvigil_runtime::serve::termination;
use sqlvigil_simulator::{Fleet, FleetConfig, Incident, Protocol, ReceiverModes, RunConfig};
use std::time::Duration;

#[derive(Args)]
pub struct SimulateArgs {
    /// OTLP endpoint: http://127.0.0.1:4317 (grpc) or http://127.0.0.1:4318 (http).
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    endpoint: String,
    #[arg(long, default_value = "grpc")]
    protocol: String,
    #[arg(long, default_value_t = 3)]
    instances: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Incidents such as `cpu_storm@3m+10m` or `blocking_chain@5m+5m:1`.
    #[arg(long = "incident")]
    incidents: Vec<String>,
    /// Event-time seconds between scrapes.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Event-time seconds per wall second (event time never passes the wall clock).
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Start the timeline this far in the past.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    backfill: Duration,
    #[arg(long)]
    ticks: Option<u64>,
    /// How the simulated receiver reads SQL Server: `direct` (a direct connection: raw
    /// `…/sec` totals, DMV metrics, query events), `windows` (perf counters: per-second
    /// rates, Windows-only metrics) or `mixed` (even instances direct, odd Windows).
    #[arg(long, default_value = "direct", value_parser = parse_mode)]
    receiver_mode: ReceiverModes,
}

/// clap parser of `--receiver-mode`.
pub fn parse_mode(s: &str) -> Result<ReceiverModes, String> {
    s.parse::<ReceiverModes>().map_err(|e| e.to_string())
}

pub fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}

pub fn parse_incidents(specs: &[String]) -> Result<Vec<Incident>> {
    specs
        .iter()
        .map(|s| Incident::parse(s).map_err(anyhow::Error::from))
        .collect()
}

pub async fn simulate(args: SimulateArgs) -> Result<()> {
    let protocol: Protocol = args.protocol.parse()?;
    let fleet = Fleet::new(FleetConfig {
        seed: args.seed,
        instances: args.instances,
        interval: args.interval,
        incidents: parse_incidents(&args.incidents)?,
        start_time_ns: now_ns() - args.backfill.as_nanos() as i64,
        receiver_mode: args.receiver_mode,
    });
    for l in fleet.labels() {
        println!(
            "incident {} on {}: {} → {}",
            l.name,
            l.instance,
            sqlvigil_model::ns_to_datetime(l.start_ns),
            sqlvigil_model::ns_to_datetime(l.end_ns)
        );
    }
    let cfg = RunConfig {
        endpoint: args.endpoint,
        protocol,
        speed: args.speed,
        ticks: args.ticks,
    };
    let stats = sqlvigil_simulator::run(fleet, cfg, termination()).await?;
    println!(
        "sent {} ticks, {} requests, {} points ({} rejected, {} errors)",
        stats.ticks, stats.requests, stats.points, stats.rejected_points, stats.errors
    );
    if stats.errors > 0 {
        anyhow::bail!("{} requests failed", stats.errors);
    }
    Ok(())
}
