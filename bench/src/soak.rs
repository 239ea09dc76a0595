//! `sqlvigil-bench soak`: the simulator's fleet (metrics and logs, mixed receiver modes,
//! an incident every two hours of event time on a rotating instance) pushed through the
//! embedded default pipeline with the default rules as fast as it accepts, for 10
//! minutes (`--quick`: 30 s). The simulator generates each scrape on the fly in the same
//! process, so its cost is inside the figure.
//!
//! Reported per tenth of the run: points/s processed, RSS, open file descriptors,
//! Parquet files, the p99 latency of an export (request accepted by the receiver core)
//! and the analytics backlog; then RSS growth from the end of the first tenth (after
//! warm-up) to the end (goal: < 10 %). Headline: points/s over the whole run.

use crate::workload::rate;
use anyhow::{Context, Result};
use sqlvigil_core::Stats;
use sqlvigil_runtime::{Config, Pipeline};
use sqlvigil_simulator::{Fleet, FleetConfig, Incident, ReceiverModes, Scenario};
use std::path::Path;
use std::time::{Duration, Instant};

const SLICES: u32 = 10;
/// Event time between incidents (and how long each lasts: a quarter of it).
const INCIDENT_EVERY: Duration = Duration::from_secs(2 * 3600);

/// The incidents of a run covering at most `days` of event time.
fn incidents(instances: usize, days: u64) -> Result<Vec<Incident>> {
    let kinds: Vec<&str> = Scenario::ALL
        .iter()
        .filter(|s| **s != Scenario::Quiet)
        .map(|s| s.name())
        .collect();
    let count = days * 86_400 / INCIDENT_EVERY.as_secs();
    (0..count as usize)
        .map(|i| {
            let offset = humantime::format_duration(INCIDENT_EVERY * (i as u32 + 1));
            let last = humantime::format_duration(INCIDENT_EVERY / 4);
            let spec = format!(
                "{}@{offset}+{last}:{}",
                kinds[i % kinds.len()],
                i % instances
            );
            Ok(Incident::parse(&spec)?)
        })
        .collect()
}

/// Resident set size of this process, in MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn parquet_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                parquet_files(&p)
            } else {
                usize::from(p.extension().is_some_and(|x| x == "parquet"))
            }
        })
        .sum()
}

fn p99_ms(latencies: &mut [Duration]) -> f64 {
    if latencies.is_empty() {
        return 0.0;
    }
    latencies.sort_unstable();
    let i = ((latencies.len() as f64 * 0.99) as usize).min(latencies.len() - 1);
    latencies[i].as_secs_f64() * 1e3
}

pub async fn run(quick: bool) -> Result<()> {
    let (length, instances) = if quick {
        (Duration::from_secs(30), 20)
    } else {
        (Duration::from_secs(600), 50)
    };
    let dir = tempfile::tempdir()?;
    let mut cfg = Config::default();
    cfg.store.data_dir = dir.path().to_path_buf();
    cfg.receiver.grpc_addr = "127.0.0.1:0".into();
    cfg.receiver.http_addr = "127.0.0.1:0".into();
    let pipeline = Pipeline::start(cfg).await?;
    let h = pipeline.handles().clone();
    let mut fleet = Fleet::new(FleetConfig {
        instances,
        receiver_mode: ReceiverModes::Mixed,
        incidents: incidents(instances, 60)?,
        start_time_ns: chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) - 86_400_000_000_000,
        ..FleetConfig::default()
    });
    println!(
        "soak: {instances} instances (mixed receiver modes), {}s, default rules, embedded store",
        length.as_secs()
    );
    println!("  slice  points/s   RSS MiB  fds  parquet  export p99 ms  analytics backlog");
    let began = Instant::now();
    let (mut tick, mut slice) = (0u64, 1u32);
    let mut slice_start = (Instant::now(), 0u64);
    let mut latencies = Vec::new();
    let mut rss_after_warmup = 0.0;
    while began.elapsed() < length {
        for req in fleet.metrics(tick) {
            let sent = Instant::now();
            loop {
                match h.ingest.metrics(req.clone()).await {
                    Ok(_) => break,
                    // Back-pressure: wait as a Collector would, briefly.
                    Err(sqlvigil_receiver::IngestError::Unavailable(_)) => {
                        tokio::time::sleep(Duration::from_millis(5)).await
                    }
                    Err(e) => return Err(e).context("export refused"),
                }
            }
            latencies.push(sent.elapsed());
        }
        for req in fleet.logs(tick) {
            h.ingest.logs(req).await.context("log export refused")?;
        }
        tick += 1;
        if began.elapsed() >= length * slice / SLICES {
            let processed = Stats::get(&h.stats.processed_points);
            let pps = rate(processed - slice_start.1, slice_start.0.elapsed());
            let rss = rss_mib();
            if slice == 1 {
                rss_after_warmup = rss;
            }
            println!(
                "  {slice:>5}  {pps:>9.0}  {rss:>8.1}  {:>3}  {:>7}  {:>13.2}  {:>17}",
                open_fds(),
                parquet_files(dir.path()),
                p99_ms(&mut latencies),
                Stats::get(&h.stats.analytics_backlog)
            );
            latencies.clear();
            slice_start = (Instant::now(), processed);
            slice += 1;
        }
    }
    let total = Stats::get(&h.stats.received_points);
    while Stats::get(&h.stats.processed_points) < total {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = began.elapsed();
    let rss_end = rss_mib();
    let event_hours = tick as f64 * fleet.config().interval.as_secs_f64() / 3600.0;
    println!(
        "  {} points per scrape and instance; event time covered: {event_hours:.1} h; anomalies opened {}, folded {}; insights {}",
        total / (tick * instances as u64).max(1),
        Stats::get(&h.stats.anomalies_opened),
        Stats::get(&h.stats.anomalies_folded),
        Stats::get(&h.stats.insights_written)
    );
    println!(
        "  RSS after warm-up {rss_after_warmup:.1} MiB → end {rss_end:.1} MiB: growth {:.1} % (goal < 10 %)",
        (rss_end / rss_after_warmup.max(1e-9) - 1.0) * 100.0
    );
    let stop = Instant::now();
    pipeline.shutdown().await?;
    println!("  shutdown: {} ms", stop.elapsed().as_millis());
    println!("soak throughput: {:.0} points/s", rate(total, elapsed));
    Ok(())
}
