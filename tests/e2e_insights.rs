//! Insights through a real LLM HTTP API: `sqlvigil demo` configured with the Ollama (or
//! OpenAI-compatible) test server from `testkit`, which checks every request's shape and
//! answers like the real server — including errors and invalid answers. Every anomaly
//! gets exactly one insight whatever the model does; failures are on record.

mod common;

use common::*;
use serde_json::{json, Value};
use sqlvigil_testkit::llm::{Mode, OllamaServer, OpenAiServer};
use sqlvigil_testkit::{wait_for, Sqlvigil};
use std::time::Duration;

/// `analytics.llm` lines for the Ollama test server, plus `extra` keys.
fn ollama_yaml(base_url: &str, extra: &str) -> String {
    format!("    provider: ollama\n    base_url: {base_url}\n    model: llama3.2:1b\n{extra}")
}

fn canned() -> Value {
    json!({
        "summary": "CPU storm on sql-01 driven by a regressed plan.",
        "recommended_actions": ["Find the top CPU queries in Query Store", "Force the last good plan"],
        "supporting_metrics": [{"name": "sqlserver.cpu.utilization", "value": 97.0, "unit": "%"}]
    })
}

fn demo_with(dir: &std::path::Path, llm_yaml: &str, extra_yaml: &str) -> Sqlvigil {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = dir.join("sqlvigil.yaml");
    std::fs::write(&cfg, format!("analytics:\n  llm:\n{llm_yaml}{extra_yaml}")).unwrap();
    let cfg = cfg.to_string_lossy().into_owned();
    let mut args = vec!["demo", "--config", &cfg, "--scenario", "cpu_storm"];
    args.extend_from_slice(DEMO_RUN);
    Sqlvigil::start(&bin(), &args, dir).expect("demo starts")
}

async fn list(sv: &Sqlvigil, token: &str, path: &str, key: &str) -> Vec<Value> {
    let (status, body) = sv.get_json(path, Some(token)).await.unwrap();
    assert_eq!(status, 200, "{body}");
    body[key].as_array().cloned().unwrap_or_default()
}

/// The first insight matching `pred`, waiting for it.
async fn wait_insight(sv: &Sqlvigil, token: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_for(Duration::from_secs(90), || async {
        list(sv, token, "/api/v1/insights", "insights")
            .await
            .into_iter()
            .find(|i| pred(i))
    })
    .await
    .unwrap_or_else(|| panic!("no matching insight; stderr: {}", sv.stderr_tail()))
}

fn chat_requests(server_requests: Vec<Value>) -> Vec<Value> {
    server_requests
        .into_iter()
        .filter(|r| r.get("messages").is_some())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollama_insight_on_demand_dedup_and_digest() {
    let ollama = OllamaServer::start(Mode::Answer(canned()));
    let dir = tempfile::tempdir().unwrap();
    let llm = ollama_yaml(
        &ollama.base_url(),
        "    timeout: 10s\n    temperature: 0.1\n    num_ctx: 8192\n    keep_alive: 5m\n",
    );
    let sv = demo_with(dir.path(), &llm, "  digest:\n    interval: 4s\n");
    let token = sv.admin_token();

    let insight = wait_insight(&sv, &token, |i| i["trigger"] == "anomaly").await;
    assert_eq!(insight["model"], "llama3.2:1b");
    assert_eq!(insight["summary"], canned()["summary"]);
    assert_eq!(
        insight["recommended_actions"],
        canned()["recommended_actions"]
    );
    assert_eq!(insight["prompt_version"], "insight-v1");
    assert!(
        insight["prompt_tokens"].as_u64().is_some() && insight["latency_ms"].as_u64().is_some(),
        "{insight}"
    );
    assert!(
        insight["inputs"]["user"]
            .as_str()
            .unwrap_or("")
            .contains("cpu_percent > 85"),
        "prompt kept for audit"
    );

    // The request had Ollama's shape: the server checked it, we check what it recorded.
    let reqs = chat_requests(ollama.requests());
    let first = reqs
        .iter()
        .find(|r| {
            r["messages"][1]["content"]
                .as_str()
                .unwrap_or("")
                .contains("cpu_percent > 85")
        })
        .expect("the anomaly's chat request");
    assert_eq!(first["model"], "llama3.2:1b");
    assert_eq!(first["stream"], false);
    assert_eq!(
        first["format"]["required"],
        json!(["summary", "recommended_actions", "supporting_metrics"])
    );
    assert_eq!(
        (
            first["options"]["temperature"].as_f64(),
            first["options"]["num_ctx"].as_u64()
        ),
        (Some(0.1), Some(8192))
    );
    assert_eq!(first["keep_alive"], "5m");
    assert_eq!(first["messages"][0]["role"], "system");
    assert!(
        first["messages"][1]["content"]
            .as_str()
            .unwrap_or("")
            .contains("SOS_SCHEDULER_YIELD"),
        "top waits in the prompt"
    );

    // Asking about the same anomaly with the same inputs does not ask the model again.
    // (The first ask may see late error-log lines the opening analysis did not, so only
    // the second is sure to repeat the first's inputs.)
    let anomaly_id = insight["anomaly_ids"][0].as_str().unwrap().to_string();
    let ask = json!({ "anomaly_id": anomaly_id });
    let (status, first) = sv
        .post_json("/api/v1/insights", &ask, Some(&token))
        .await
        .unwrap();
    assert_eq!(status, 201, "{first}");
    let about_anomaly = || {
        chat_requests(ollama.requests())
            .into_iter()
            .filter(|r| {
                r["messages"][1]["content"]
                    .as_str()
                    .unwrap_or("")
                    .contains("Rule `cpu_storm` fired")
            })
            .count()
    };
    let before = about_anomaly();
    let (status, again) = sv
        .post_json("/api/v1/insights", &ask, Some(&token))
        .await
        .unwrap();
    assert_eq!(status, 201, "{again}");
    assert_eq!(again["insight"]["id"], first["insight"]["id"]);
    assert_eq!(
        again["insight"]["input_digest"],
        first["insight"]["input_digest"]
    );
    assert_eq!(
        about_anomaly(),
        before,
        "no second request for the same inputs"
    );

    // A time range on demand.
    let (status, body) = sv
        .post_json(
            "/api/v1/insights",
            &json!({"instance": "sql-01", "from": "2020-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}),
            Some(&token),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        (
            body["insight"]["trigger"].as_str(),
            body["insight"]["model"].as_str()
        ),
        (Some("on_demand"), Some("llama3.2:1b"))
    );

    // Bad requests and roles.
    let viewer = sqlvigil_testkit::create_token(&bin(), dir.path(), "viewer").unwrap();
    let (status, _) = sv
        .post_json(
            "/api/v1/insights",
            &json!({ "anomaly_id": anomaly_id }),
            Some(&viewer),
        )
        .await
        .unwrap();
    assert_eq!(status, 403);
    let (status, body) = sv
        .post_json(
            "/api/v1/insights",
            &json!({ "instance": "sql-01" }),
            Some(&token),
        )
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    let (status, _) = sv
        .post_json(
            "/api/v1/insights",
            &json!({ "anomaly_id": "nope" }),
            Some(&token),
        )
        .await
        .unwrap();
    assert_eq!(status, 404);

    // The scheduled digest, one per instance.
    let digest = wait_insight(&sv, &token, |i| i["trigger"] == "digest").await;
    assert_eq!(digest["model"], "llama3.2:1b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_model_loses_nothing_and_is_on_record() {
    let ollama = OllamaServer::start(Mode::ServerError);
    let dir = tempfile::tempdir().unwrap();
    let llm = ollama_yaml(&ollama.base_url(), "    retries: 1\n");
    let sv = demo_with(dir.path(), &llm, "");
    let token = sv.admin_token();
    let insight = wait_insight(&sv, &token, |i| i["trigger"] == "anomaly").await;
    assert_eq!(insight["model"], "rules", "the rules analyzer stands in");
    let failures = list(&sv, &token, "/api/v1/insights/failures", "failures").await;
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0]["model"], "llama3.2:1b");
    assert!(
        failures[0]["error"].as_str().unwrap_or("").contains("500"),
        "{}",
        failures[0]
    );
    assert_eq!(
        chat_requests(ollama.requests()).len(),
        2,
        "one try plus one retry"
    );
    let anomalies = list(&sv, &token, "/api/v1/anomalies", "anomalies").await;
    let insights = list(&sv, &token, "/api/v1/insights", "insights").await;
    assert_eq!(
        anomalies.len(),
        insights.len(),
        "one insight per anomaly, no loss, no duplicate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_answers_are_retried_once_then_recorded() {
    let ollama = OllamaServer::start(Mode::InvalidJson);
    let dir = tempfile::tempdir().unwrap();
    let llm = ollama_yaml(&ollama.base_url(), "");
    let sv = demo_with(dir.path(), &llm, "");
    let token = sv.admin_token();
    wait_insight(&sv, &token, |i| {
        i["trigger"] == "anomaly" && i["model"] == "rules"
    })
    .await;
    let failures = list(&sv, &token, "/api/v1/insights/failures", "failures").await;
    assert_eq!(failures[0]["attempts"], 2);
    let reqs = chat_requests(ollama.requests());
    assert_eq!(reqs.len(), 2);
    let retry = reqs[1]["messages"].as_array().unwrap();
    assert!(retry.last().unwrap()["content"]
        .as_str()
        .unwrap_or("")
        .contains("not valid"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_compatible_server() {
    let server = OpenAiServer::start(Mode::Answer(canned())).with_api_key("sk-test");
    let dir = tempfile::tempdir().unwrap();
    let llm = format!(
        "    provider: openai\n    base_url: {}\n    model: llama3.2:1b\n    api_key: sk-test\n",
        server.base_url()
    );
    let sv = demo_with(dir.path(), &llm, "");
    let token = sv.admin_token();
    let insight = wait_insight(&sv, &token, |i| i["trigger"] == "anomaly").await;
    assert_eq!(insight["summary"], canned()["summary"]);
    let reqs = chat_requests(server.requests());
    assert_eq!(reqs[0]["response_format"]["type"], "json_schema");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anomalies_faster_than_the_rate_limit_get_rules_insights() {
    let ollama = OllamaServer::start(Mode::Answer(canned()));
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path()).unwrap();
    let cfg = dir.path().join("sqlvigil.yaml");
    std::fs::write(
        &cfg,
        format!(
            "analytics:\n  min_interval_per_instance: 1h\n  llm:\n    provider: ollama\n    base_url: {}\n    model: llama3.2:1b\n",
            ollama.base_url()
        ),
    )
    .unwrap();
    let cfg = cfg.to_string_lossy().into_owned();
    // Two incidents on the same instance, a minute apart in event time.
    let args = [
        "demo",
        "--config",
        &cfg,
        "--scenario",
        "quiet",
        "--incident",
        "cpu_storm@3m+10m:0",
        "--incident",
        "blocking_chain@3m+10m:0",
        "--ticks",
        "90",
        "--backfill",
        "15m",
        "--speed",
        "60",
    ];
    let sv = Sqlvigil::start(&bin(), &args, dir.path()).expect("demo starts");
    let token = sv.admin_token();
    let both = wait_for(Duration::from_secs(90), || async {
        let insights = list(&sv, &token, "/api/v1/insights", "insights").await;
        let on_anomalies: Vec<Value> = insights
            .into_iter()
            .filter(|i| i["trigger"] == "anomaly")
            .collect();
        (on_anomalies.len() >= 2).then_some(on_anomalies)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "two anomaly insights expected; stderr: {}",
            sv.stderr_tail()
        )
    });
    let mut models: Vec<&str> = both.iter().filter_map(|i| i["model"].as_str()).collect();
    models.sort();
    assert_eq!(
        models,
        vec!["llama3.2:1b", "rules"],
        "one LLM insight, then the rate limit"
    );
    assert!(list(&sv, &token, "/api/v1/insights/failures", "failures")
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_model_is_reported_at_start_up() {
    let ollama = OllamaServer::start(Mode::NotFound);
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "analytics:\n  llm:\n    provider: ollama\n    base_url: {}\n    model: nosuch:7b\n",
        ollama.base_url()
    );
    let (sv, _token) = start_run(dir.path(), &yaml);
    let warned = wait_for(Duration::from_secs(10), || async {
        let err = std::fs::read_to_string(sv.stderr_path()).unwrap_or_default();
        err.contains("not on the server").then_some(err)
    })
    .await;
    let err = warned.unwrap_or_else(|| panic!("no warning; stderr: {}", sv.stderr_tail()));
    assert!(
        err.contains("nosuch:7b") && err.contains("llama3.2:1b"),
        "names the model and what is available: {err}"
    );
}
