//! The API's guards through the binary (`api:`): per-token rate limits answer 429 with
//! `Retry-After` and leave other tokens alone; a body over `api.max_body_bytes` is 413;
//! a handler slower than `api.request_timeout` is 503 naming the setting; answers are
//! compressed when the client accepts it (never the live stream); CORS answers only the
//! configured origins. Every refusal is the usual JSON error.

mod common;

use common::{bin, start_config};
use serde_json::{json, Value};
use sqlvigil_testkit::llm::{Mode, OllamaServer};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_body_limits_timeouts_compression_and_cors() {
    let slow = OllamaServer::start(Mode::Slow(
        Duration::from_secs(20),
        json!({"summary": "late", "recommended_actions": ["wait"], "supporting_metrics": []}),
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "api:\n  rate_per_second: 1\n  rate_burst: 3\n  max_body_bytes: 2048\n  request_timeout: 1s\n  cors_origins: [\"http://dash.example\"]\n\
         analytics:\n  llm:\n    provider: ollama\n    base_url: {}\n    model: llama3.2:1b\n    timeout: 60s\n",
        slow.base_url()
    );
    let (sv, admin) = start_config(dir.path(), &yaml);
    let other = sqlvigil_testkit::create_token(&bin(), dir.path(), "viewer").expect("viewer");
    let client = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", sv.api_base());

    // A burst of 3, then 429 until the bucket refills; another token is not affected.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = client
            .get(url("/api/v1/whoami"))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("req");
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            let retry: u64 = r.headers()["retry-after"]
                .to_str()
                .unwrap_or("")
                .parse()
                .unwrap_or(0);
            assert!((1..=2).contains(&retry), "Retry-After {retry}");
            let body: Value = r.json().await.expect("JSON");
            assert!(
                common::error_message(&body).contains("api.rate_per_second"),
                "{body}"
            );
        }
    }
    assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
    assert!(statuses[3..].contains(&429), "{statuses:?}");
    let (status, _) = sv
        .get_json("/api/v1/whoami", Some(&other))
        .await
        .expect("req");
    assert_eq!(status, 200, "another token has its own bucket");
    tokio::time::sleep(Duration::from_millis(3_100)).await;

    // 413 before the body is read.
    let big = format!("{{\"anomaly_id\": \"{}\"}}", "x".repeat(4000));
    let r = client
        .post(url("/api/v1/insights"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.expect("JSON");
    assert!(
        common::error_message(&body).contains("api.max_body_bytes"),
        "{body}"
    );

    // An analysis slower than the deadline: 503 naming it.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let now = chrono::Utc::now();
    let window = json!({"instance": "sqlZ", "from": (now - chrono::Duration::minutes(5)).to_rfc3339(), "to": now.to_rfc3339()});
    let (status, body) = sv
        .post_json("/api/v1/insights", &window, Some(&admin))
        .await
        .expect("req");
    assert_eq!(status, 503, "{body}");
    assert!(
        common::error_message(&body).contains("api.request_timeout"),
        "{body}"
    );

    // Compression when accepted; never the stream.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let raw = reqwest::Client::builder()
        .no_gzip()
        .no_brotli()
        .build()
        .expect("client");
    let r = raw
        .get(url("/api/v1/rules"))
        .bearer_auth(&other)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers().get("content-encoding").map(|v| v.as_bytes()),
        Some(&b"gzip"[..])
    );
    let r = raw
        .get(url("/api/v1/stream"))
        .bearer_auth(&other)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("content-encoding").is_none(),
        "the stream is never compressed"
    );
    drop(r);

    // CORS: the configured origin gets its preflight answered, another does not.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    for (origin, allowed) in [
        ("http://dash.example", true),
        ("http://evil.example", false),
    ] {
        let r = client
            .request(reqwest::Method::OPTIONS, url("/api/v1/anomalies"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
            .await
            .expect("preflight");
        let echoed = r
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap_or("").to_string());
        assert_eq!(
            echoed.as_deref() == Some(origin),
            allowed,
            "{origin}: {echoed:?}"
        );
    }
}

#[test]
fn bad_guard_settings_are_named_by_validate() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (yaml, names) in [
        (
            "api:\n  cors_origins: [\"dash.example/\"]\n",
            "api.cors_origins",
        ),
        ("api:\n  max_body_bytes: 10\n", "api.max_body_bytes"),
        ("api:\n  request_timeout: 0s\n", "api.request_timeout"),
    ] {
        let cfg = dir.path().join("c.yaml");
        std::fs::write(&cfg, yaml).expect("write");
        let out = std::process::Command::new(bin())
            .args(["validate", &cfg.to_string_lossy()])
            .output()
            .expect("runs");
        assert!(!out.status.success(), "{yaml}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(names), "{yaml}: {err}");
    }
}
