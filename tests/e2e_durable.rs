//! The embedded default keeps what it acknowledged, through the binary: under a steady
//! load, `kill -9` at random points (during flushes — the store flushes every 300 ms —
//! and compactions — every 300 ms too) five times, and after the last restart every
//! point the receiver answered 200 for is served exactly once, and the operators' state
//! goes on where it was (a counter's rate has no gap); with the disk full the
//! receiver answers 503, loses nothing it had accepted, and takes data again once there
//! is room; `sqlvigil store compact` on a running server leaves every answer as it was,
//! each point once, and `store stats` and `/metrics` say what is on disk; the ledger's
//! retention deletes old resolved anomalies and keeps open ones, and raw points past
//! `retention.raw` once rolled up, the API then answering from the rollups.

mod common;

use common::{gauge_request_at, post_metrics, start_config, wait_served};
use prost::Message;
use serde_json::Value;
use sqlvigil_testkit::{wait_for, Sqlvigil};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const METRIC: &str = "sqlserver.user.connection.count";

fn now_ns() -> u64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) as u64
}

/// Ten points numbered from `k * 10`, 1 ms apart, so each value names its point.
fn numbered(instance: &str, t0: u64, k: u64) -> Vec<u8> {
    let values: Vec<f64> = (0..10).map(|i| (k * 10 + i) as f64).collect();
    gauge_request_at(instance, METRIC, t0 + k * 10_000_000, 1_000_000, &values).encode_to_vec()
}

fn numbers(k: u64) -> impl Iterator<Item = u64> {
    (0..10).map(move |i| k * 10 + i)
}

/// Every acknowledged point served, none twice.
async fn assert_served_once(sv: &Sqlvigil, token: &str, instance: &str, acked: &BTreeSet<u64>) {
    let got = wait_served(sv, token, METRIC, instance, acked, "after the restarts").await;
    let distinct: BTreeSet<u64> = got.iter().map(|x| *x as u64).collect();
    assert_eq!(distinct.len(), got.len(), "a point is served twice");
}

/// Flushes and compactions every 300 ms (an hour is compacted as soon as it is over).
const BUSY_STORE: &str = "store:\n  flush_interval: 300ms\n  compaction:\n    interval: 300ms\n    settle: 0s\n    grace: 2s\noperators:\n  batch_interval: 100ms\n";

#[tokio::test(flavor = "multi_thread")]
async fn kill9_five_times_under_load_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Three hours ago: every hour written is over, so compaction runs all along.
    let t0 = now_ns() - 3 * 3_600_000_000_000;
    // A different kill schedule every run, printed so a failure can be replayed.
    let mut seed = now_ns() % 1_000_003;
    println!("kill schedule seed: {seed}");
    let mut acked: BTreeSet<u64> = BTreeSet::new();
    let mut k = 0u64;
    for round in 0..6 {
        let (mut sv, token) = start_config(dir.path(), BUSY_STORE);
        seed = (seed * 7_919 + 104_729) % 1_000_003;
        let run_for = Duration::from_millis(700 + seed % 2_300);
        let started = Instant::now();
        while started.elapsed() < run_for {
            if post_metrics(&sv, numbered("d-crash", t0, k)).await == 200 {
                acked.extend(numbers(k));
            }
            k += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if round < 5 {
            sv.kill9();
            continue;
        }
        assert!(
            acked.len() > 500,
            "only {} points acknowledged",
            acked.len()
        );
        assert_served_once(&sv, &token, "d-crash", &acked).await;
        // The write-ahead log shrinks back once the store has what it held.
        let wal = dir.path().join("wal");
        let drained = wait_for(Duration::from_secs(30), || async {
            (dir_bytes(&wal) < 1 << 20).then_some(())
        })
        .await;
        assert!(drained.is_some(), "wal still {} bytes", dir_bytes(&wal));
        let log = std::fs::read_to_string(sv.stderr_path()).unwrap_or_default();
        assert!(
            log.contains("store compacted"),
            "compaction never ran: {log}"
        );
    }
}

fn store_cli(args: &[&str]) -> Value {
    let args: Vec<&str> = ["store"].iter().chain(args).copied().collect();
    serde_json::from_str(&common::cli(&args)).expect("JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn compaction_on_a_running_server_answers_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = "store:\n  flush_interval: 200ms\n  compaction:\n    enabled: false\noperators:\n  batch_interval: 100ms\n";
    let (sv, token) = start_config(dir.path(), yaml);
    let t0 = now_ns() - 2 * 3_600_000_000_000;
    let mut acked = BTreeSet::new();
    for k in 0..30 {
        assert_eq!(post_metrics(&sv, numbered("d-compact", t0, k)).await, 200);
        acked.extend(numbers(k));
        if k == 10 {
            // The same export twice, as a Collector retrying after a lost answer.
            assert_eq!(post_metrics(&sv, numbered("d-compact", t0, k)).await, 200);
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    assert_served_once(&sv, &token, "d-compact", &acked).await;
    let path = format!("/api/v1/metrics?metric={METRIC}&instance=d-compact&limit=100000");
    let (_, before) = sv.get_json(&path, Some(&token)).await.expect("metrics");
    let (_, series_before) = sv
        .get_json("/api/v1/series?instance=d-compact", Some(&token))
        .await
        .expect("series");
    let data = dir.path().to_string_lossy().into_owned();
    let stats = store_cli(&["stats", "--data-dir", &data]);
    let metrics = |v: &Value| -> Value {
        v.as_array()
            .and_then(|a| a.iter().find(|t| t["table"] == "metrics").cloned())
            .unwrap_or_default()
    };
    assert!(
        metrics(&stats)["files"].as_u64().unwrap_or(0) > 3,
        "{stats}"
    );
    let done = store_cli(&["compact", "--data-dir", &data]);
    assert_eq!(done["rows_out"].as_u64(), Some(300), "{done}");
    assert_eq!(done["rows_in"].as_u64(), Some(310), "{done}");
    let (_, after) = sv.get_json(&path, Some(&token)).await.expect("metrics");
    assert_eq!(
        after["points"], before["points"],
        "the same points, each once"
    );
    let (_, series_after) = sv
        .get_json("/api/v1/series?instance=d-compact", Some(&token))
        .await
        .expect("series");
    assert_eq!(series_after, series_before);
    let stats = store_cli(&["stats", "--data-dir", &data]);
    assert_eq!(
        metrics(&stats)["uncompacted_files"].as_u64(),
        Some(0),
        "{stats}"
    );
    assert_eq!(metrics(&stats)["series"].as_u64(), Some(1), "{stats}");
    let prom = reqwest::get(format!("{}/metrics", sv.api_base()))
        .await
        .expect("/metrics")
        .text()
        .await
        .unwrap_or_default();
    assert!(
        prom.contains("sqlvigil_store_uncompacted_files{table=\"metrics\"} 0"),
        "{prom}"
    );
    // Once the grace is over the replaced files go; the answer stays.
    let vacuum = store_cli(&["vacuum", "--data-dir", &data, "--grace", "0s"]);
    assert!(
        vacuum["deleted_files"].as_u64().unwrap_or(0) > 3,
        "{vacuum}"
    );
    let (_, again) = sv.get_json(&path, Some(&token)).await.expect("metrics");
    assert_eq!(again["points"], before["points"]);
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// A small tmpfs, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).expect("mount point");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fill the filesystem of `dir` to the last byte.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("filler");
    for size in [1 << 20, 4096, 1] {
        let chunk = vec![0u8; size];
        while f.write_all(&chunk).is_ok() {}
    }
    let _ = f.sync_all();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_refuses_with_503_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(fs) = Tmpfs::mount(&dir.path().join("small"), "48m") else {
        // Mounting needs root (CI runs as root); say so rather than pass silently.
        let root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout == b"0\n");
        assert!(!root.unwrap_or(false), "root could not mount a tmpfs");
        eprintln!("SKIPPED: mounting a tmpfs needs root");
        return;
    };
    let data = fs.0.clone();
    let (sv, token) = start_config(
        &data,
        "store:\n  flush_interval: 300ms\noperators:\n  batch_interval: 100ms\nhealth:\n  stall_after: 5s\n",
    );
    let t0 = now_ns() - 10 * 60_000_000_000;
    let mut acked: BTreeSet<u64> = BTreeSet::new();
    let mut k = 0u64;
    for _ in 0..20 {
        assert_eq!(post_metrics(&sv, numbered("d-full", t0, k)).await, 200);
        acked.extend(numbers(k));
        k += 1;
    }
    let filler = fill(&data);
    // Refused, with a 503 and a reason, within a few writes (the last page may still
    // have room for one).
    let mut refused = None;
    for _ in 0..200 {
        let resp = reqwest::Client::new()
            .post(format!("{}/v1/metrics", sv.http_endpoint()))
            .header("content-type", "application/x-protobuf")
            .body(numbered("d-full", t0, k))
            .send()
            .await
            .expect("answers");
        match resp.status().as_u16() {
            200 => acked.extend(numbers(k)),
            503 => {
                assert!(resp.headers().contains_key("retry-after"));
                refused = Some(resp.text().await.unwrap_or_default());
                break;
            }
            other => panic!("HTTP {other}; stderr: {}", sv.stderr_tail()),
        }
        k += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = refused.unwrap_or_else(|| panic!("never refused; {}", sv.stderr_tail()));
    assert!(
        refused.contains("No space left on device") || refused.contains("metrics worker"),
        "{refused}"
    );
    let log = std::fs::read_to_string(sv.stderr_path()).unwrap_or_default();
    assert!(log.contains("No space left on device"), "{log}");
    // Room again: accepted again (the worker restarts once it can write), nothing lost.
    std::fs::remove_file(&filler).expect("room");
    k += 1;
    let back = wait_for(Duration::from_secs(90), || async {
        (post_metrics(&sv, numbered("d-full", t0, k)).await == 200).then_some(())
    })
    .await;
    assert!(back.is_some(), "never accepted again: {}", sv.stderr_tail());
    acked.extend(numbers(k));
    assert_served_once(&sv, &token, "d-full", &acked).await;
    drop(sv);
}

/// Distinct times (ns) of `metric` on `instance` the API serves now.
async fn served_times(sv: &Sqlvigil, token: &str, metric: &str, instance: &str) -> BTreeSet<u64> {
    common::served_points(sv, token, metric, instance)
        .await
        .iter()
        .filter_map(|p| p["time_unix_nano"].as_str()?.parse().ok())
        .collect()
}

/// The operators' state outlives a `kill -9`: a counter's per-second rate goes on from
/// the last value before the crash (a fresh state would need a first point to start
/// from, and the rate at the first point after the restart would be missing).
#[tokio::test(flavor = "multi_thread")]
async fn kill9_resumes_the_operator_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = "store:\n  flush_interval: 200ms\noperators:\n  batch_interval: 100ms\n  checkpoint_interval: 300ms\n  rates:\n    sqlserver.batch.request.rate: counter\n";
    let counter = "sqlserver.batch.request.rate";
    let derived = "sqlserver.batch.request.rate.per_second";
    let t0 = now_ns() - 3_600_000_000_000;
    let point = |k: u64| {
        gauge_request_at(
            "d-state",
            counter,
            t0 + k * 1_000_000_000,
            1,
            &[(k * 10) as f64],
        )
        .encode_to_vec()
    };
    let (mut sv, token) = start_config(dir.path(), yaml);
    for k in 0..20 {
        assert_eq!(post_metrics(&sv, point(k)).await, 200);
    }
    // Every rate served (so processed and flushed), then a checkpoint after them.
    let rates = wait_for(Duration::from_secs(30), || async {
        let got = served_times(&sv, &token, derived, "d-state").await;
        (got.len() == 19).then_some(got)
    })
    .await;
    assert!(rates.is_some(), "rates never served: {}", sv.stderr_tail());
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    sv.kill9();
    let (sv, token) = start_config(dir.path(), yaml);
    for k in 20..30 {
        assert_eq!(post_metrics(&sv, point(k)).await, 200);
    }
    let want: BTreeSet<u64> = (1..30).map(|k| t0 + k * 1_000_000_000).collect();
    let got = wait_for(Duration::from_secs(30), || async {
        let got = served_times(&sv, &token, derived, "d-state").await;
        (got == want).then_some(())
    })
    .await;
    let now = served_times(&sv, &token, derived, "d-state").await;
    let missing: Vec<u64> = want
        .difference(&now)
        .map(|t| (t - t0) / 1_000_000_000)
        .collect();
    assert!(
        got.is_some(),
        "rates missing at points {missing:?} after the restart; stderr: {}",
        sv.stderr_tail()
    );
}

/// `store.retention`: a resolved anomaly past its age is deleted, an open one of the
/// same age stays.
#[tokio::test(flavor = "multi_thread")]
async fn retention_deletes_old_resolved_anomalies_and_keeps_open_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = "store:\n  flush_interval: 200ms\n  retention:\n    anomalies: 1h\n    interval: 300ms\noperators:\n  batch_interval: 100ms\nrules:\n  - name: hot\n    when: \"cpu_percent > 50\"\n    for: 0s\n    resolve_after: 10s\n";
    let (sv, token) = start_config(dir.path(), yaml);
    let t0 = now_ns() - 3 * 3_600_000_000_000;
    let cpu = "sqlserver.cpu.utilization";
    let resolving: Vec<f64> = (0..40).map(|i| if i < 5 { 90.0 } else { 10.0 }).collect();
    let req = gauge_request_at("d-gone", cpu, t0, 1_000_000_000, &resolving);
    assert_eq!(post_metrics(&sv, req.encode_to_vec()).await, 200);
    let req = gauge_request_at("d-open", cpu, t0, 1_000_000_000, &[90.0; 5]);
    assert_eq!(post_metrics(&sv, req.encode_to_vec()).await, 200);
    let left = wait_for(Duration::from_secs(30), || async {
        if common::self_metric(&sv, "sqlvigil_anomalies_resolved").await < 1.0 {
            return None;
        }
        let (_, page) = sv
            .get_json("/api/v1/anomalies?limit=100", Some(&token))
            .await
            .ok()?;
        let instances: Vec<String> = page["anomalies"]
            .as_array()?
            .iter()
            .filter_map(|a| a["series"]["instance"].as_str().map(String::from))
            .collect();
        (instances == ["d-open"]).then_some(instances)
    })
    .await;
    assert!(left.is_some(), "{}", sv.stderr_tail());
    let log = std::fs::read_to_string(sv.stderr_path()).unwrap_or_default();
    assert!(log.contains("retention: expired records deleted"), "{log}");
}

/// `store.retention.raw`: raw points past it are deleted once rolled up, and the API
/// answers the same range from the rollups — the same count, mean and extremes, the
/// quantiles within the sketch's 1 % — and says which resolution it served.
#[tokio::test(flavor = "multi_thread")]
async fn raw_points_past_retention_are_served_from_rollups() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = "store:\n  flush_interval: 200ms\n  compaction:\n    interval: 300ms\n    settle: 0s\n    grace: 1s\n  retention:\n    raw: 1h\n    interval: 300ms\noperators:\n  batch_interval: 100ms\n";
    let (sv, token) = start_config(dir.path(), yaml);
    // Ten minutes at 1 s, three hours ago, starting on the hour.
    let hour = 3_600_000_000_000u64;
    let t0 = (now_ns() / hour - 3) * hour;
    let values: Vec<f64> = (0..600).map(|i| ((i * 37) % 101) as f64).collect();
    let req = gauge_request_at("d-old", METRIC, t0, 1_000_000_000, &values);
    assert_eq!(post_metrics(&sv, req.encode_to_vec()).await, 200);
    let range = format!("from={t0}&to={}", t0 + hour - 1);
    // Raw points gone, per-minute rollups in their place.
    let points = wait_for(Duration::from_secs(60), || async {
        let (_, body) = sv
            .get_json(
                &format!("/api/v1/metrics?metric={METRIC}&instance=d-old&{range}&limit=1000"),
                Some(&token),
            )
            .await
            .ok()?;
        (body["resolution"] == "1m").then_some(body)
    })
    .await
    .unwrap_or_else(|| panic!("never served from rollups; {}", sv.stderr_tail()));
    let served = points["points"].as_array().expect("points");
    assert_eq!(served.len(), 10, "one point per minute: {points}");
    let first_minute = values[..60].iter().sum::<f64>() / 60.0;
    assert!((served[0]["value"].as_f64().unwrap_or(0.0) - first_minute).abs() < 1e-9);
    assert_eq!(points["rollups"][0]["resolution"], "1m");
    let stats = store_cli(&["stats", "--data-dir", &dir.path().to_string_lossy()]);
    let table = |name: &str| {
        stats
            .as_array()
            .and_then(|t| t.iter().find(|t| t["table"] == name))
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(table("rollup_1m")["rows"], 10, "{stats}");
    assert_eq!(table("rollup_1h")["rows"], 1, "{stats}");
    assert!(
        table("metrics").is_null() || table("metrics")["rows"] == 0,
        "{stats}"
    );

    let (_, agg) = sv
        .get_json(
            &format!("/api/v1/aggregates?metric={METRIC}&instance=d-old&window=1h&group_by=instance&{range}"),
            Some(&token),
        )
        .await
        .expect("aggregates");
    assert_eq!(agg["resolution"], "1h", "{agg}");
    let row = &agg["aggregates"][0];
    let mut sorted = values.clone();
    sorted.sort_by(f64::total_cmp);
    assert_eq!(row["points"], 600);
    assert_eq!(row["min"], 0.0);
    assert_eq!(row["max"], 100.0);
    let mean = values.iter().sum::<f64>() / 600.0;
    assert!(
        (row["avg"].as_f64().unwrap_or(0.0) - mean).abs() < 1e-9,
        "{row}"
    );
    for (q, name) in [(0.5, "p50"), (0.95, "p95"), (0.99, "p99")] {
        let exact = sorted[((q * 599.0) as usize).min(599)];
        let got = row[name].as_f64().unwrap_or(0.0);
        assert!(
            (got - exact).abs() <= 0.02 * exact + 1.0,
            "{name}: {got} vs {exact}"
        );
    }
    let log = std::fs::read_to_string(sv.stderr_path()).unwrap_or_default();
    assert!(
        log.contains("retention: expired telemetry deleted"),
        "{log}"
    );
}
