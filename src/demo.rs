//! `sqlvigil run`, `demo` and `simulate`: start the pipeline and the API, optionally feed
//! them from the simulator, and shut down cleanly on Ctrl-C / SIGTERM.

use crate::Overrides;
use anyhow::{Context as _, Result};
use clap::Args;
use sqlvigil_api::AppState;
use sqlvigil_pipeline::runtime::bind;
use sqlvigil_pipeline::sinks::state::{AnomalyFilter, Role};
use sqlvigil_pipeline::{Config, Pipeline};
use sqlvigil_simulator::{Fleet, FleetConfig, Incident, Protocol, RunConfig};
use std::path::PathBuf;
use std::time::{Duration, Instant};
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
    #[command(flatten)]
    overrides: Overrides,
}

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
}

/// Resolves on Ctrl-C or SIGTERM.
async fn termination() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}

fn parse_incidents(specs: &[String]) -> Result<Vec<Incident>> {
    specs
        .iter()
        .map(|s| Incident::parse(s).map_err(anyhow::Error::from))
        .collect()
}

/// Something to run alongside the pipeline, given the bound gRPC address.
pub type Companion =
    Box<dyn FnOnce(&Pipeline, watch::Receiver<bool>) -> tokio::task::JoinHandle<()> + Send>;

/// Start pipeline + API, run `companion` (the simulator) next to them, stop on a signal.
pub async fn run_pipeline(cfg: Config, companion: Option<Companion>) -> Result<()> {
    let api_listener = bind("api.addr", &cfg.api.addr).await?;
    let api_addr = api_listener.local_addr()?;
    let pipeline = Pipeline::start(cfg).await?;
    let app = AppState {
        reader: pipeline.reader.clone(),
        state: pipeline.state.clone(),
        elastic: pipeline.elastic.clone(),
        stats: pipeline.stats.clone(),
        analytics: pipeline.analytics.clone(),
        started: Instant::now(),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let api_stop = {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let api = tokio::spawn(sqlvigil_api::serve(api_listener, app, api_stop));
    println!("OTLP gRPC:  http://{}", pipeline.grpc_addr);
    println!("OTLP HTTP:  http://{}", pipeline.http_addr);
    println!("API + page: http://{api_addr}/");
    let companion = companion.map(|c| c(&pipeline, stop_rx.clone()));
    termination().await;
    println!("shutting down: draining and flushing what was accepted…");
    let _ = stop_tx.send(true);
    if let Some(c) = companion {
        let _ = c.await;
    }
    let result = pipeline.shutdown().await;
    let _ = api.await;
    result?;
    println!("stopped cleanly");
    Ok(())
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
    let state = sqlvigil_pipeline::sinks::state::StateStore::open(&data_dir)?;
    let token = state.create_token(Role::Admin, "demo")?;
    drop(state);
    let token_file = data_dir.join("admin.token");
    std::fs::write(&token_file, format!("{token}\n")).context("writing admin.token")?;

    let second = usize::from(args.instances > 1);
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
    let fleet = Fleet::new(FleetConfig {
        seed: args.seed,
        instances: args.instances,
        interval: Duration::from_secs(10),
        incidents: parse_incidents(&specs)?,
        start_time_ns: now_ns() - args.backfill.as_nanos() as i64,
    });
    println!(
        "sqlvigil demo: {} simulated SQL Server instances, incidents: {}",
        args.instances,
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
    let companion: Companion = Box::new(move |p: &Pipeline, stop: watch::Receiver<bool>| {
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
    run_pipeline(cfg, Some(companion)).await
}

/// Print the first anomaly and its insight once they exist.
async fn announce_first_findings(
    state: std::sync::Arc<sqlvigil_pipeline::sinks::state::StateStore>,
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
            if let Ok(list) = state.insights(None, 1) {
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

pub async fn simulate(args: SimulateArgs) -> Result<()> {
    let protocol: Protocol = args.protocol.parse()?;
    let fleet = Fleet::new(FleetConfig {
        seed: args.seed,
        instances: args.instances,
        interval: args.interval,
        incidents: parse_incidents(&args.incidents)?,
        start_time_ns: now_ns() - args.backfill.as_nanos() as i64,
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
