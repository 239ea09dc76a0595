//! `sqlvigil demo`: the whole pipeline and the API in one process, fed by the built-in
//! simulator (three SQL Server instances, a CPU storm and a blocking chain).

use crate::Overrides;
use anyhow::{Context as _, Result};
use clap::Args;
use sqlvigil_model::query::AnomalyFilter;
use sqlvigil_runtime::serve::{serve, Companion};
use sqlvigil_runtime::{Config, Handles};
use sqlvigil_simulator::{Fleet, FleetConfig, Protocol, ReceiverModes, RunConfig};
use sqlvigil_store::{Role, StateStore};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Args)]
pub struct DemoArgs {
    /// Optional config file for everything but the simulator.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Preset incidents: `all` (a CPU storm and a blocking chain), `quiet`, or one
    /// scenario by name (cpu_storm, blocking_chain, deadlock_burst, ple_collapse,
    /// log_full, tempdb_pressure, io_stall, batch_drop, wait_time_spike).
    #[arg(long, default_value = "all")]
    scenario: String,
    /// Extra incidents, e.g. `cpu_storm@3m+10m:1` (instance index after the colon).
    #[arg(long = "incident")]
    incidents: Vec<String>,
    #[arg(long, default_value_t = 3)]
    instances: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Event-time seconds per wall second while replaying the backfill.
    #[arg(long, default_value_t = 20.0)]
    speed: f64,
    /// How far in the past the simulated timeline starts (compressed by `speed`).
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    backfill: Duration,
    /// Stop the simulator after this many scrapes (it runs until Ctrl-C otherwise).
    #[arg(long)]
    ticks: Option<u64>,
    /// Keep injecting incidents so there is always something to explore: after the
    /// presets, every this long (event time) the next scenario on the next instance,
    /// each lasting `--incident-length`. `0s` turns it off.
    #[arg(long, default_value = "20m", value_parser = humantime::parse_duration)]
    incident_every: Duration,
    /// How long each periodic incident lasts.
    #[arg(long, default_value = "6m", value_parser = humantime::parse_duration)]
    incident_length: Duration,
    /// How the simulated receiver reads each instance: `mixed` (even instances over a
    /// direct connection, odd ones through Windows perf counters), `direct` or `windows`.
    #[arg(long, default_value = "mixed", value_parser = crate::simulate::parse_mode)]
    receiver_mode: ReceiverModes,
    #[command(flatten)]
    overrides: Overrides,
}

pub async fn demo(args: DemoArgs) -> Result<()> {
    let mut cfg = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    // A temporary directory lives as long as this function: removed after shutdown.
    let tmp;
    // `--data-dir` (from the overrides); default: a temporary directory removed at exit.
    let data_dir = match &args.overrides.data_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::Builder::new()
                .prefix("sqlvigil-demo-")
                .tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let mut overrides = args.overrides.clone();
    overrides.data_dir = Some(data_dir.clone());
    overrides.apply(&mut cfg);
    cfg.validate()?;
    std::fs::create_dir_all(&data_dir)?;
    let state = StateStore::open(&data_dir)?;
    let token = state
        .create_token(&sqlvigil_store::TokenSpec::new(Role::Admin, "demo"))?
        .token;
    drop(state);
    let token_file = data_dir.join("admin.token");
    std::fs::write(&token_file, format!("{token}\n")).context("writing admin.token")?;

    // The blocking chain on a direct-connection instance when there is one besides the
    // first (sql-03 in a mixed fleet): its query samples feed /api/v1/blocking.
    let second = match (args.receiver_mode, args.instances) {
        (ReceiverModes::Mixed, n) if n > 2 => 2,
        (_, n) => usize::from(n > 1),
    };
    let mut specs: Vec<String> = match args.scenario.as_str() {
        "all" => vec![
            "cpu_storm@3m+10m:0".into(),
            format!("blocking_chain@4m+8m:{second}"),
        ],
        "quiet" => vec![],
        "blocking_chain" => vec![format!("blocking_chain@4m+8m:{second}")],
        name => vec![format!(
            "{}@3m+10m:0",
            name.parse::<sqlvigil_simulator::Scenario>()?
        )],
    };
    specs.extend(args.incidents.iter().cloned());
    let mut incidents = crate::simulate::parse_incidents(&specs)?;
    let interval = Duration::from_secs(10);
    let periodic = periodic_incidents(&args, &incidents, interval);
    if let Some(first) = periodic.first() {
        specs.push(format!(
            "then one every {} from {} on",
            humantime::format_duration(args.incident_every),
            humantime::format_duration(first.offset)
        ));
    }
    incidents.extend(periodic);
    let fleet = Fleet::new(FleetConfig {
        seed: args.seed,
        instances: args.instances,
        interval,
        incidents,
        start_time_ns: crate::simulate::now_ns() - args.backfill.as_nanos() as i64,
        receiver_mode: args.receiver_mode,
    });
    println!(
        "sqlvigil demo: {} simulated SQL Server instances (receiver mode {:?}), incidents: {}",
        args.instances,
        args.receiver_mode,
        if specs.is_empty() {
            "none".into()
        } else {
            specs.join(", ")
        }
    );
    println!("data dir:   {}", data_dir.display());
    println!("admin token ({}): {token}", token_file.display());
    println!(
        "try:        curl -H 'Authorization: Bearer {token}' http://{}/api/v1/anomalies",
        cfg.api.addr
    );
    let (speed, ticks) = (args.speed, args.ticks);
    let companion: Companion = Box::new(move |p: &Handles, stop: watch::Receiver<bool>| {
        let endpoint = format!("http://{}", p.grpc_addr);
        let state = p.state.clone();
        tokio::spawn(async move {
            let watcher = tokio::spawn(announce_first_findings(state, stop.clone()));
            let mut rx = stop.clone();
            let run_cfg = RunConfig {
                endpoint,
                protocol: Protocol::Grpc,
                speed,
                ticks,
            };
            match sqlvigil_simulator::run(fleet, run_cfg, async move {
                let _ = rx.wait_for(|s| *s).await;
            })
            .await
            {
                Ok(s) => println!(
                    "simulator finished: {} ticks, {} points sent, {} rejected, {} errors",
                    s.ticks, s.points, s.rejected_points, s.errors
                ),
                Err(e) => eprintln!("simulator failed: {e}"),
            }
            let _ = watcher.await;
        })
    });
    Ok(serve(cfg, Some(companion)).await?)
}

/// Print the first anomaly and its insight once they exist.
async fn announce_first_findings(
    state: std::sync::Arc<StateStore>,
    mut stop: watch::Receiver<bool>,
) {
    let mut shown_anomaly = false;
    loop {
        if !shown_anomaly {
            if let Ok(list) = state.anomalies(&AnomalyFilter {
                limit: Some(1),
                ..Default::default()
            }) {
                if let Some(a) = list.first() {
                    println!(
                        "first anomaly: {} on {} — {} (observed {:.1}, expected {})",
                        a.rule,
                        a.series.instance,
                        a.condition,
                        a.observed,
                        a.expected.map(|e| e.to_string()).unwrap_or_default()
                    );
                    shown_anomaly = true;
                }
            }
        }
        if shown_anomaly {
            if let Ok(list) = state.insights(None, &Default::default(), 1) {
                if let Some(i) = list.last() {
                    println!("first insight ({}): {}", i.model, i.summary);
                    for action in &i.recommended_actions {
                        println!("  - {action}");
                    }
                    return;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// The longest stretch of event time periodic incidents are planned for when the demo
/// runs until Ctrl-C.
const PLANNED: Duration = Duration::from_secs(30 * 86_400);

/// Incidents every `--incident-every` from the end of the last of `presets` on, cycling
/// through the scenarios and the instances, for the run's length (`--ticks`) or
/// [`PLANNED`].
fn periodic_incidents(
    args: &DemoArgs,
    presets: &[sqlvigil_simulator::Incident],
    interval: Duration,
) -> Vec<sqlvigil_simulator::Incident> {
    use sqlvigil_simulator::Scenario;
    if args.incident_every.is_zero() || args.instances == 0 {
        return Vec::new();
    }
    let run = args.ticks.map_or(PLANNED, |t| {
        interval.saturating_mul(t.min(u32::MAX as u64) as u32)
    });
    let after = presets
        .iter()
        .map(|i| i.offset + i.duration)
        .max()
        .unwrap_or_default();
    let scenarios: Vec<Scenario> = Scenario::ALL
        .into_iter()
        .filter(|s| *s != Scenario::Quiet)
        .collect();
    (1u32..)
        .map(|n| (n, after + args.incident_every.saturating_mul(n)))
        .take_while(|(_, offset)| *offset < run)
        .map(|(n, offset)| sqlvigil_simulator::Incident {
            scenario: scenarios[n as usize % scenarios.len()],
            instance: n as usize % args.instances,
            offset,
            duration: args.incident_length,
        })
        .collect()
}
