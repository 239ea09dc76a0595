//! One operator chain for every mode: `run` (through the binary), `replay` (through the
//! binary) and `eval` (its engine) all build their chain from the same config, so they
//! judge the same input the same way — windows, baselines and lateness included.

mod common;

use common::{gauge_request_at, post_metrics, self_metric, start_config, WINDOW_P95_CONFIG};
use prost::Message;
use serde_json::Value;
use sqlvigil_simulator::{Fleet, FleetConfig, Incident, Scenario};
use sqlvigil_testkit::wait_for;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

/// (rule, instance, opened_at) of every anomaly a list of them holds.
fn openings<'a>(anomalies: impl Iterator<Item = &'a Value>) -> BTreeSet<(String, String, String)> {
    anomalies
        .map(|a| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (
                s(&a["rule"]),
                s(&a["series"]["instance"]),
                s(&a["opened_at"]),
            )
        })
        .collect()
}

async fn anomalies_of(sv: &sqlvigil_testkit::Sqlvigil, token: &str) -> Vec<Value> {
    let (status, body) = sv
        .get_json("/api/v1/anomalies?limit=10000", Some(token))
        .await
        .expect("GET /api/v1/anomalies");
    assert_eq!(status, 200, "{body}");
    body["anomalies"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_of_a_stored_incident_fires_the_configs_window_rule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut sv, token) = start_config(dir.path(), WINDOW_P95_CONFIG);
    let metric = "sqlserver.cpu.utilization";
    // Minute-aligned event time an hour ago: a hot minute, then a point that closes it.
    let t0 = (chrono::Utc::now().timestamp() / 60 - 60) as u64 * 60_000_000_000;
    let hot = gauge_request_at("c-sql1", metric, t0, 10_000_000_000, &[90.0, 95.0, 97.0]);
    assert_eq!(post_metrics(&sv, hot.encode_to_vec()).await, 200);
    let close = gauge_request_at("c-sql1", metric, t0 + 90_000_000_000, 1, &[20.0]);
    assert_eq!(post_metrics(&sv, close.encode_to_vec()).await, 200);
    let live = wait_for(Duration::from_secs(20), || async {
        let list = anomalies_of(&sv, &token).await;
        (!list.is_empty()).then_some(list)
    })
    .await
    .unwrap_or_else(|| panic!("the run opened nothing; {}", sv.stderr_tail()));
    assert!(sv.stop().expect("stop").success(), "{}", sv.stderr_tail());

    let config = dir.path().join("sqlvigil.yaml");
    let out = Command::new(common::bin())
        .args(["replay", "--from"])
        .arg(dir.path())
        .arg("--config")
        .arg(&config)
        .output()
        .expect("replay runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replayed: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "open")
        .map(|e| e["anomaly"].clone())
        .collect();
    assert!(
        replayed.iter().any(|a| a["rule"] == "hot_p95"),
        "replay with the config's window did not fire its rule: {stdout}"
    );
    assert_eq!(
        openings(replayed.iter()),
        openings(live.iter()),
        "replay judges like the run it replays"
    );
}

/// The same simulated fleet, sent to `sqlvigil run` over OTLP and run through the eval
/// engine in process, opens the same anomalies (rule, instance, time).
#[tokio::test(flavor = "multi_thread")]
async fn eval_and_run_open_the_same_anomalies_on_the_same_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules =
        sqlvigil_testkit::package_dir(env!("CARGO_MANIFEST_DIR")).join("config/rules.example.yaml");
    let yaml = format!(
        "{}rules_file: {}\n",
        WINDOW_P95_CONFIG.replace("operators:\n", "operators:\n  allowed_lateness: 10m\n"),
        rules.display()
    );
    let (sv, token) = start_config(dir.path(), &yaml);

    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let fleet_config = || FleetConfig {
        seed: 11,
        instances: 2,
        interval: Duration::from_secs(10),
        incidents: vec![Incident {
            scenario: Scenario::CpuStorm,
            instance: 0,
            offset: Duration::from_secs(20 * 60),
            duration: Duration::from_secs(15 * 60),
        }],
        // Minute-aligned, an hour and a half ago.
        start_time_ns: (now / 60_000_000_000 - 90) * 60_000_000_000,
        receiver_mode: Default::default(),
    };
    let ticks = 60 * 6; // an hour of 10 s scrapes
    let mut fleet = Fleet::new(fleet_config());
    let mut points = 0u64;
    for tick in 0..ticks {
        for req in fleet.metrics(tick) {
            points += sqlvigil_simulator::count_points(&req) as u64;
            assert_eq!(post_metrics(&sv, req.encode_to_vec()).await, 200);
        }
    }
    let processed = wait_for(Duration::from_secs(60), || async {
        (self_metric(&sv, "sqlvigil_processed_points").await >= points as f64).then_some(())
    })
    .await;
    assert!(
        processed.is_some(),
        "not every point was judged; {}",
        sv.stderr_tail()
    );
    // Anomaly events reach the ledger right after their batch.
    let mut run = BTreeSet::new();
    for _ in 0..20 {
        let now = openings(anomalies_of(&sv, &token).await.iter());
        if now == run && !run.is_empty() {
            break;
        }
        run = now;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let chain = sqlvigil_runtime::Config::chain_for(Some(&dir.path().join("sqlvigil.yaml")), None)
        .expect("the chain of the run's config");
    let seen = sqlvigil_runtime::eval::detect(fleet_config(), ticks, &chain).expect("eval runs");
    let opened: Vec<Value> = seen
        .opened
        .iter()
        .map(|e| serde_json::to_value(&e.anomaly).expect("anomaly json"))
        .collect();
    let eval = openings(opened.iter());
    assert!(
        eval.iter().any(|(rule, _, _)| rule == "hot_p95"),
        "eval must run the config's window: {eval:?}"
    );
    assert!(
        eval.iter()
            .any(|(rule, i, _)| rule == "cpu_storm" && i == "sql-01"),
        "{eval:?}"
    );
    assert_eq!(run, eval, "run and eval judged the same input differently");
}
