//! The live monitor end to end: `sqlvigil run` with `monitor.instances` pointing at the
//! TDS test server (full TLS, certificate validated). Scheduled snapshots reach
//! `/api/v1/live` and `/metrics`; ad-hoc ones need the operator role and are
//! rate-limited; an anomaly on the instance triggers a snapshot whose blocking chain
//! reaches the insight — the LLM's prompt, and the rules analyzer's root cause.

mod common;

use common::*;
use serde_json::Value;
use sqlvigil_testkit::llm::{Mode, OllamaServer};
use sqlvigil_testkit::{wait_for, Sqlvigil};
use sqlvigil_testkit_tds::{Encryption, TdsConfig, TdsServer, TlsUse};
use std::path::Path;
use std::time::Duration;

const PASSWORD: &str = "Live!M0nitor";

async fn tds() -> TdsServer {
    let fixtures =
        sqlvigil_testkit::package_dir(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/live");
    TdsServer::start(TdsConfig {
        encryption: Encryption::On,
        users: vec![("sqlvigil".into(), PASSWORD.into())],
        fixtures_dir: Some(fixtures),
        ..TdsConfig::default()
    })
    .await
    .expect("TDS test server")
}

/// `sqlvigil run` monitoring `sql1` on `srv`, a blocked-processes rule, `extra` appended.
fn start(dir: &Path, srv: &TdsServer, extra: &str) -> (Sqlvigil, String) {
    let yaml = format!(
        "store:\n  flush_interval: 300ms\noperators:\n  batch_interval: 100ms\n\
         rules:\n  - name: blocked_now\n    metric: sqlserver.processes.blocked\n    when: \"value > 3\"\n    for: 0s\n    severity: critical\n\
         monitor:\n  interval: 1h\n  sample_gap: 200ms\n  adhoc_min_interval: 1h\n  instances:\n\
         \x20   - name: sql1\n      host: localhost\n      port: {}\n      ca_file: {}\n\
         \x20     auth: {{ method: sql-login, user: sqlvigil, password: \"env:SQLVIGIL_SQL1_PASSWORD\" }}\n{extra}",
        srv.port(),
        srv.ca_path().display()
    );
    std::fs::create_dir_all(dir).expect("dir");
    let cfg = dir.join("sqlvigil.yaml");
    std::fs::write(&cfg, yaml).expect("config");
    let admin = sqlvigil_testkit::create_token(&bin(), dir, "admin").expect("token");
    let cfg = cfg.to_string_lossy().into_owned();
    let sv = Sqlvigil::start_with_env(
        &bin(),
        &["run", "--config", &cfg],
        dir,
        &[("SQLVIGIL_SQL1_PASSWORD", PASSWORD)],
    )
    .expect("sqlvigil run starts");
    (sv, admin)
}

async fn get(sv: &Sqlvigil, path: &str, token: &str) -> (u16, Value) {
    sv.get_json(path, Some(token)).await.expect("API answers")
}

/// Once the scheduled snapshot is in, push a blocked-processes reading for `sql1`: the
/// rule opens an anomaly newer than any snapshot, so one is taken for it.
async fn open_blocking_anomaly(sv: &Sqlvigil, token: &str) {
    use prost::Message;
    let scheduled = wait_for(Duration::from_secs(30), || async {
        (get(sv, "/api/v1/live/sql1", token).await.0 == 200).then_some(())
    })
    .await;
    assert!(
        scheduled.is_some(),
        "no scheduled snapshot; stderr: {}",
        sv.stderr_tail()
    );
    let req = gauge_request("sql1", "sqlserver.processes.blocked", &[4.0, 6.0]);
    assert_eq!(post_metrics(sv, req.encode_to_vec()).await, 200);
}

async fn wait_insight(sv: &Sqlvigil, token: &str) -> Value {
    wait_for(Duration::from_secs(60), || async {
        let (_, body) = get(sv, "/api/v1/insights", token).await;
        body["insights"]
            .as_array()
            .and_then(|l| l.iter().find(|i| i["trigger"] == "anomaly").cloned())
    })
    .await
    .unwrap_or_else(|| panic!("no insight; stderr: {}", sv.stderr_tail()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_and_ad_hoc_snapshots_through_the_api() {
    let srv = tds().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut sv, admin) = start(dir.path(), &srv, "");
    let viewer = sqlvigil_testkit::create_token(&bin(), dir.path(), "viewer").expect("viewer");
    let operator =
        sqlvigil_testkit::create_token(&bin(), dir.path(), "operator").expect("operator");

    // The scheduled snapshot at start.
    let snap = wait_for(Duration::from_secs(30), || async {
        let (status, body) = get(&sv, "/api/v1/live/sql1", &viewer).await;
        (status == 200).then_some(body)
    })
    .await
    .unwrap_or_else(|| panic!("no snapshot; stderr: {}", sv.stderr_tail()));
    let s = &snap["snapshot"];
    assert_eq!(s["trigger"], "schedule");
    assert_eq!(s["blocking"][0]["head_session_id"], 52);
    assert_eq!(s["blocking"][0]["victims"], 4);
    assert_eq!(s["waits"][0]["wait_type"], "LCK_M_U");
    assert_eq!(s["server"]["version"], "16.0.4135.4");
    assert!(srv
        .logins()
        .iter()
        .all(|l| l.tls == TlsUse::Full && l.read_only_intent && l.app_name == "sqlvigil"));

    let (status, body) = get(&sv, "/api/v1/live", &viewer).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["instances"][0]["instance"], "sql1");
    assert_eq!(body["instances"][0]["reachable"], true);

    // Ad hoc: operators only, one per instance per adhoc_min_interval.
    let (status, body) = get(&sv, "/api/v1/live/sql1/blocking", &viewer).await;
    assert_eq!(status, 403, "{body}");
    assert!(error_message(&body).contains("operator"), "{body}");
    let (status, body) = get(&sv, "/api/v1/live/sql1/blocking", &operator).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["blocking"][0]["head_session_id"], 52);
    assert_eq!(body["blocking"][0]["head_open_transactions"], 1);
    let again = reqwest::Client::new()
        .get(format!("{}/api/v1/live/sql1/waits", sv.api_base()))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("answer");
    assert_eq!(again.status().as_u16(), 429);
    let retry: u64 = again
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(retry > 3000 && retry <= 3600, "{retry}");
    let (status, body) = get(&sv, "/api/v1/live/nope/sessions", &operator).await;
    assert_eq!(status, 404, "{body}");
    assert!(error_message(&body).contains("nope"));
    let (status, body) = get(&sv, "/api/v1/live/sql1/top-queries?by=size", &operator).await;
    assert_eq!(status, 400, "{body}");
    assert!(error_message(&body).contains("`by`"), "{body}");
    let (status, body) = get(&sv, "/api/v1/live/sql1/locks", &operator).await;
    assert_eq!(status, 404);
    assert!(error_message(&body).contains("top-queries"), "{body}");

    // Recorded in the ledger, and the figures published as telemetry of the instance.
    let (status, body) = get(&sv, "/api/v1/live/sql1?history=10", &viewer).await;
    assert_eq!(status, 200);
    assert!(
        body["snapshots"].as_array().map_or(0, Vec::len) >= 2,
        "{body}"
    );
    let blocked = wait_values(&sv, &admin, "sqlvigil.live.sessions.blocked", "sql1", 1).await;
    assert_eq!(blocked[0], 4.0);

    let metrics = reqwest::get(format!("{}/metrics", sv.api_base()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("sqlvigil_monitor_instance_up{instance=\"sql1\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains(
        "sqlvigil_monitor_collector_runs_total{instance=\"sql1\",collector=\"sessions\"}"
    ));
    let stderr = std::fs::read_to_string(sv.stderr_path()).unwrap_or_default();
    assert!(
        !stderr.contains(PASSWORD),
        "the password never reaches the log"
    );
    sv.stop().expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anomaly_snapshot_reaches_the_prompt_and_the_root_cause() {
    // With an LLM: the prompt carries the live blocking chain of the anomaly's moment.
    let ollama = OllamaServer::start(Mode::Answer(serde_json::json!({
        "summary": "Session 52 holds a lock on dbo.Orders.",
        "recommended_actions": ["Commit or roll back session 52"],
        "supporting_metrics": [{"name": "sqlserver.processes.blocked", "value": 6.0, "unit": "{processes}"}]
    })));
    let srv = tds().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let llm = format!(
        "analytics:\n  coalesce_window: 1s\n  llm:\n    provider: ollama\n    base_url: {}\n    model: llama3.2:1b\n",
        ollama.base_url()
    );
    let (mut sv, admin) = start(dir.path(), &srv, &llm);
    open_blocking_anomaly(&sv, &admin).await;
    let insight = wait_insight(&sv, &admin).await;
    assert_eq!(insight["model"], "llama3.2:1b", "{insight}");
    let prompt = insight["inputs"]["user"].as_str().unwrap_or_default();
    assert!(
        prompt.contains("Blocking chains now (live DMV snapshot)"),
        "{prompt}"
    );
    assert!(
        prompt.contains("head blocker session 52 blocks 4 session(s)"),
        "{prompt}"
    );
    assert!(
        prompt.contains("head holds 1 open transaction(s)"),
        "{prompt}"
    );
    assert!(
        prompt.contains("Waits over the last interval (live)"),
        "{prompt}"
    );
    let sent = ollama.requests();
    assert!(
        sent.iter().any(|r| r["messages"][1]["content"]
            .as_str()
            .is_some_and(|c| c.contains("head blocker session 52"))),
        "the LLM received the live section"
    );
    sv.stop().expect("stops");

    // Without one: the rules analyzer names the head blocker from the snapshot.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut sv, admin) = start(dir.path(), &srv, "analytics:\n  coalesce_window: 1s\n");
    open_blocking_anomaly(&sv, &admin).await;
    let insight = wait_insight(&sv, &admin).await;
    let summary = insight["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("Head blocker (live DMV snapshot): session 52 blocks 4 session(s)"),
        "{summary}"
    );
    assert!(
        summary.contains("BEGIN TRAN; UPDATE dbo.Orders"),
        "{summary}"
    );
    // The anomaly's own snapshot is on record.
    let (_, body) = get(&sv, "/api/v1/live/sql1?history=20", &admin).await;
    let triggers: Vec<&str> = body["snapshots"]
        .as_array()
        .map(|l| l.iter().filter_map(|s| s["trigger"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        triggers.iter().any(|t| t.starts_with("anomaly ")),
        "{triggers:?}"
    );
    sv.stop().expect("stops");
}
