//! `sqlvigil-bench elastic [--quick] [--url URL]`: documents/s into Elasticsearch.
//!
//! Simulator telemetry is decoded into points once, then measured three ways in one run:
//! the encode cost per document (points → `_bulk` NDJSON); a bare baseline that POSTs
//! the pre-encoded bodies straight to `_bulk` (two requests in flight); and the sink —
//! `write_samples` → `flush` (durable in the disk queue) → shipper → `_bulk` — timed until
//! the queue is empty. Bulk size is the sink's default (5,000 documents / 5 MiB).
//!
//! Without `--url` it starts the Elasticsearch API test server
//! (`sqlvigil-testkit-elastic`) as a child process (this executable, `elastic-server`), so
//! the server's work is not counted in this process.

use anyhow::{bail, Result};
use sqlvigil_bridge::layout::{self, LayoutOptions};
use sqlvigil_bridge::{encode, Elastic, ElasticConfig, ElasticSink};
use sqlvigil_core::{Sink, Stats};
use sqlvigil_model::Sample;
use sqlvigil_otlp::metrics_to_samples;
use sqlvigil_simulator::{Fleet, FleetConfig};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The test server process, stopped on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// This executable as `sqlvigil-bench elastic-server`; its first stdout line is the URL.
fn start_test_server() -> Result<(Server, String)> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("elastic-server")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let server = Server(child);
    let mut url = String::new();
    BufReader::new(stdout).read_line(&mut url)?;
    Ok((server, url.trim().to_string()))
}

/// `n` realistic points (the simulated fleet's metrics), each series/time once.
fn points(n: usize) -> Vec<Sample> {
    // Recent event time, one scrape a second: a time series data stream only accepts
    // points within its look-back window (2 h by default).
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let mut fleet = Fleet::new(FleetConfig {
        instances: 20,
        interval: Duration::from_secs(1),
        start_time_ns: now - 30 * 60 * 1_000_000_000,
        ..FleetConfig::default()
    });
    let mut out = Vec::with_capacity(n);
    let mut tick = 0;
    while out.len() < n {
        for req in fleet.metrics(tick) {
            metrics_to_samples(&req, &mut out);
        }
        tick += 1;
    }
    out.truncate(n);
    out
}

fn per_sec(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// Bodies of `max_docs` items into `stream`, and the time it took per document.
fn encode_bodies(pts: &[Sample], stream: &str, max_docs: usize) -> (Vec<Vec<u8>>, Duration) {
    let start = Instant::now();
    let bodies: Vec<Vec<u8>> = pts
        .chunks(max_docs)
        .map(|chunk| {
            let mut body = Vec::with_capacity(chunk.len() * 400);
            for s in chunk {
                encode::push_metric(&mut body, stream, s);
            }
            body
        })
        .collect();
    (bodies, start.elapsed())
}

/// POST every body to `_bulk`, two at a time; fails on any item error.
async fn bare_bulk(url: &str, bodies: Vec<Vec<u8>>) -> Result<()> {
    let client = reqwest::Client::new();
    let queue = Arc::new(tokio::sync::Mutex::new(bodies));
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (client, queue, url) = (client.clone(), queue.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(body) = queue.lock().await.pop() else {
                    return Ok::<_, anyhow::Error>(());
                };
                let r: serde_json::Value = client
                    .post(format!("{url}/_bulk"))
                    .header("content-type", "application/x-ndjson")
                    .body(body)
                    .send()
                    .await?
                    .json()
                    .await?;
                if r["errors"] != false {
                    bail!(
                        "bulk items failed: {}",
                        r.to_string().chars().take(300).collect::<String>()
                    );
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Through the sink until its queue is empty.
async fn sink_run(es: Elastic, pts: &[Sample]) -> Result<Duration> {
    let dir = tempfile::tempdir()?;
    let cfg = ElasticConfig {
        namespace: "benchsink".into(),
        install_layout: false,
        ..ElasticConfig::default()
    };
    let stats = Arc::new(Stats::default());
    let sink = ElasticSink::start(&cfg, dir.path(), es, stats.clone()).await?;
    let start = Instant::now();
    for chunk in pts.chunks(20_000) {
        sink.write_samples(chunk)?;
        let s = sink.clone();
        tokio::task::spawn_blocking(move || s.flush()).await??;
    }
    while sink.pending_bytes() > 0 {
        if start.elapsed() > Duration::from_secs(300) {
            bail!("the sink did not drain in 300 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = start.elapsed();
    let failed = Stats::get(&stats.elastic_dead_letter_docs);
    sink.close(Duration::from_secs(5)).await;
    if failed > 0 {
        bail!("{failed} documents were dead-lettered");
    }
    Ok(took)
}

pub async fn run(quick: bool, url: Option<String>) -> Result<()> {
    let n = if quick { 100_000 } else { 1_000_000 };
    let (_server, url) = match url {
        Some(u) => (None, u),
        None => {
            let (s, u) = start_test_server()?;
            (Some(s), u)
        }
    };
    let es = Elastic::connect(
        &ElasticConfig {
            url: url.clone(),
            ..ElasticConfig::default()
        }
        .connection(),
    )?;
    layout::install(&es, &LayoutOptions::default()).await?;
    let pts = points(n);
    println!("elasticsearch: {url}; {n} points from the simulated fleet");

    let (bodies, encode_time) = encode_bodies(&pts, "mssql-metrics-benchbare", 5_000);
    let bytes: usize = bodies.iter().map(Vec::len).sum();
    println!(
        "encode: {:.0} ns/document, {:.0} bytes/document, {:.0} documents/s",
        encode_time.as_nanos() as f64 / n as f64,
        bytes as f64 / n as f64,
        per_sec(n, encode_time)
    );
    let start = Instant::now();
    bare_bulk(&url, bodies).await?;
    let bare = per_sec(n, start.elapsed());
    println!("bare _bulk (pre-encoded, 2 in flight): {bare:.0} documents/s");
    let took = sink_run(es, &pts).await?;
    let sink = per_sec(n, took);
    println!(
        "sink (encode → disk queue → _bulk): {sink:.0} documents/s ({:.2} of bare)",
        sink / bare
    );
    println!("elastic sink: {sink:.0} docs/s");
    Ok(())
}
