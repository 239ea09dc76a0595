//! What the console reads besides the data: `/api/v1/baselines` (the band a deviation
//! rule judged a series against, written by the operators as they judge, per minute),
//! `/api/v1/whoami`, `/api/v1/rules`, `/api/v1/config` (secrets redacted), and the console's files (embedded, uPlot vendored
//! with its licence, unknown files 404).

mod common;

use common::{gauge_request_at, post_metrics, start_run};
use prost::Message;
use serde_json::Value;
use sqlvigil_testkit::wait_for;
use std::time::Duration;

const YAML: &str = "  baseline:\n    warmup_points: 3\nrules:\n  - name: cpu_drift\n    metric: cpu_percent\n    baseline: ewma\n    deviation: 4\n    severity: warning\nelastic:\n  password: hunter2\n";

#[tokio::test(flavor = "multi_thread")]
async fn baselines_whoami_rules_and_the_console_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sv, token) = start_run(dir.path(), YAML);
    // One point a minute for 20 minutes around 50 %, then a memory metric no rule judges.
    let t0 = (chrono::Utc::now() - chrono::Duration::minutes(30))
        .timestamp_nanos_opt()
        .unwrap_or(0) as u64;
    let values: Vec<f64> = (0..20).map(|i| 50.0 + (i % 3) as f64).collect();
    let cpu = gauge_request_at(
        "sqlB",
        "sqlserver.cpu.utilization",
        t0,
        60_000_000_000,
        &values,
    );
    assert_eq!(post_metrics(&sv, cpu.encode_to_vec()).await, 200);
    let mem = gauge_request_at(
        "sqlB",
        "sqlserver.memory.usage",
        t0,
        60_000_000_000,
        &values,
    );
    assert_eq!(post_metrics(&sv, mem.encode_to_vec()).await, 200);

    let id_of = |metric: &'static str| {
        let sv = &sv;
        let token = &token;
        async move {
            let (_, body) = sv
                .get_json(&format!("/api/v1/series?metric={metric}"), Some(token))
                .await
                .ok()?;
            body["series"][0]["id"].as_str().map(str::to_string)
        }
    };
    let band = wait_for(Duration::from_secs(30), || async {
        let id = id_of("sqlserver.cpu.utilization").await?;
        let (status, body) = sv
            .get_json(&format!("/api/v1/baselines?series={id}"), Some(&token))
            .await
            .ok()?;
        assert_eq!(status, 200, "{body}");
        (body["points"].as_array()?.len() >= 15).then_some(body)
    })
    .await
    .unwrap_or_else(|| panic!("no band; stderr: {}", sv.stderr_tail()));
    assert_eq!(band["rules"], serde_json::json!(["cpu_drift"]), "{band}");
    for p in band["points"].as_array().expect("points") {
        let [e, lo, hi] = ["expected", "low", "high"].map(|k| p[k].as_f64().unwrap_or(f64::NAN));
        assert!(lo < e && e < hi, "{p}");
        assert!((45.0..56.0).contains(&e), "{p}");
    }
    let mem_id = id_of("sqlserver.memory.usage")
        .await
        .expect("memory series");
    let (_, none) = sv
        .get_json(&format!("/api/v1/baselines?series={mem_id}"), Some(&token))
        .await
        .expect("request");
    assert_eq!(none["points"], serde_json::json!([]), "{none}");
    for (path, status) in [
        ("/api/v1/baselines", 400),
        ("/api/v1/baselines?series=00000000000000ff", 404),
    ] {
        let (got, body) = sv.get_json(path, Some(&token)).await.expect("request");
        assert_eq!(got, status, "{path}: {body}");
    }

    let (_, me) = sv
        .get_json("/api/v1/whoami", Some(&token))
        .await
        .expect("whoami");
    assert_eq!(me["role"], "admin", "{me}");
    assert_eq!(me["instances"], Value::Null);
    let (_, rules) = sv
        .get_json("/api/v1/rules", Some(&token))
        .await
        .expect("rules");
    let rule = &rules["rules"][0];
    assert_eq!(rule["rule"]["name"], "cpu_drift", "{rules}");
    assert_eq!(rule["rule"]["deviation"], 4.0);
    assert_eq!(rule["reads"][0], "sqlserver.cpu.utilization", "{rules}");

    // The config in force, for admins, without its secrets.
    let (status, config) = sv
        .get_json("/api/v1/config", Some(&token))
        .await
        .expect("config");
    assert_eq!(status, 200, "{config}");
    assert_eq!(
        config["config"]["elastic"]["password"], "[redacted]",
        "{config}"
    );
    assert!(!config.to_string().contains("hunter2"));
    assert_eq!(
        config["config"]["store"]["data_dir"],
        dir.path().to_string_lossy().as_ref()
    );

    let client = reqwest::Client::new();
    let get = |path: &str| client.get(format!("{}{path}", sv.api_base())).send();
    let page = get("/").await.expect("page");
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .starts_with("text/html"));
    let html = page.text().await.expect("html");
    assert!(
        html.contains("/console/app.js"),
        "the page loads its script"
    );
    let js = get("/console/vendor/uPlot.iife.min.js")
        .await
        .expect("uPlot");
    assert_eq!(js.status(), 200);
    assert!(js.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .starts_with("text/javascript"));
    let licence = get("/console/vendor/uPlot.LICENSE").await.expect("licence");
    assert!(licence.text().await.unwrap_or_default().contains("MIT"));
    assert_eq!(
        get("/console/../Cargo.toml").await.expect("x").status(),
        404
    );
    assert_eq!(get("/console/nope.js").await.expect("x").status(), 404);
}
