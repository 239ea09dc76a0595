//! Authentication and roles through the binary: every route of the API's role table
//! (`sqlvigil_api::route_roles`, the one place roles are declared) × every role ×
//! {no, wrong, expired, revoked token}. Tokens come from `sqlvigil token create|list|
//! revoke` and `/api/v1/tokens`; a refusal is 401 or 403 with a message naming why,
//! and no token ever reaches the log. Errors are `{"error": {"code", "message",
//! "request_id"}}` with the request's `x-request-id`. `/health`, `/ready` and `/metrics` are open;
//! `api.metrics_require_token` closes `/metrics`.

mod common;

use common::{bin, start_config};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use sqlvigil_store::Role;
use sqlvigil_testkit::Sqlvigil;
use std::path::Path;
use std::time::Duration;

/// `sqlvigil token ARGS… --data-dir DIR`: its stdout.
fn token_cli(dir: &Path, args: &[&str]) -> String {
    let dir = dir.to_string_lossy();
    let args: Vec<&str> = ["token"]
        .iter()
        .chain(args)
        .chain(&["--data-dir", &dir])
        .copied()
        .collect();
    common::cli(&args)
}

async fn call(
    sv: &Sqlvigil,
    method: &Method,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut req =
        reqwest::Client::new().request(method.clone(), format!("{}{path}", sv.api_base()));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if *method == Method::POST {
        req = req.header("content-type", "application/json").body("{}");
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    // The live stream never ends: its status is the answer.
    let streaming = resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if streaming {
        return (status, Value::Null);
    }
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A concrete path for a route pattern.
fn concrete(pattern: &str) -> String {
    format!("/api/v1{pattern}")
        .replace("{id}", "no-such-id")
        .replace("{instance}", "sql1")
        .replace("{kind}", "sessions")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_refuses_what_it_should_and_admits_its_roles() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sv, admin) = start_config(dir.path(), "operators:\n  batch_interval: 100ms\n");
    let viewer = sqlvigil_testkit::create_token(&bin(), dir.path(), "viewer").expect("viewer");
    let operator =
        sqlvigil_testkit::create_token(&bin(), dir.path(), "operator").expect("operator");
    let expired = token_cli(
        dir.path(),
        &[
            "create",
            "--role",
            "admin",
            "--name",
            "brief",
            "--expires-in",
            "1s",
        ],
    );
    let revoked = token_cli(dir.path(), &["create", "--role", "admin", "--name", "gone"]);
    let listed: Value = serde_json::from_str(&token_cli(dir.path(), &["list"])).expect("JSON list");
    let gone_id = listed
        .as_array()
        .and_then(|l| l.iter().find(|t| t["name"] == "gone"))
        .and_then(|t| t["id"].as_str())
        .expect("`gone` listed")
        .to_string();
    assert!(
        !listed
            .to_string()
            .contains(revoked.trim_start_matches("svk_")),
        "the list shows no secret"
    );
    let out: Value =
        serde_json::from_str(&token_cli(dir.path(), &["revoke", &gone_id])).expect("JSON");
    assert!(out["revoked_at"].is_string(), "{out}");
    tokio::time::sleep(Duration::from_millis(1_100)).await;

    let wrong = "svk_000000000000_0123456789abcdef";
    let refused: [(&str, Option<&str>, &str); 4] = [
        ("no token", None, "missing Authorization"),
        ("wrong token", Some(wrong), "unknown token"),
        ("expired token", Some(&expired), "token expired at"),
        ("revoked token", Some(&revoked), "token revoked at"),
    ];
    let roles = [
        (Role::Viewer, &viewer),
        (Role::Operator, &operator),
        (Role::Admin, &admin),
    ];
    let table = sqlvigil_api::route_roles();
    assert!(table.len() >= 24, "{} routes", table.len());
    for (method, pattern, needs) in &table {
        let path = concrete(pattern);
        for (case, token, says) in &refused {
            let (status, body) = call(&sv, method, &path, *token).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {case}: {body}"
            );
            assert_eq!(body["error"]["code"], "unauthorized", "{body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains(says),
                "{method} {path} with {case}: {body}"
            );
        }
        for (role, token) in &roles {
            let (status, body) = call(&sv, method, &path, Some(token)).await;
            if role >= needs {
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{method} {path} as {role:?} (needs {needs:?}): {status} {body}"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{method} {path} as {role:?}: {body}"
                );
                assert_eq!(body["error"]["code"], "forbidden", "{body}");
                assert!(
                    body["error"]["message"]
                        .as_str()
                        .unwrap_or("")
                        .contains(needs.as_str()),
                    "{body}"
                );
            }
        }
    }
    for open in ["/health", "/ready", "/metrics"] {
        let (status, _) = call(&sv, &Method::GET, open, None).await;
        assert_ne!(status, StatusCode::UNAUTHORIZED, "{open} is open");
    }

    // Tokens through the API (admin): created with an expiry, listed, revoked.
    let client = reqwest::Client::new();
    let made: Value = client
        .post(format!("{}/api/v1/tokens", sv.api_base()))
        .bearer_auth(&admin)
        .json(&serde_json::json!({ "name": "dashboards", "role": "viewer", "expires_in": "30d" }))
        .send()
        .await
        .expect("POST /tokens")
        .json()
        .await
        .expect("JSON");
    let api_token = made["token"]
        .as_str()
        .expect("token shown once")
        .to_string();
    assert_eq!(made["role"], "viewer");
    assert!(made["expires_at"].is_string(), "{made}");
    let (status, _) = call(&sv, &Method::GET, "/api/v1/series", Some(&api_token)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(&sv, &Method::GET, "/api/v1/tokens", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = body["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        names.contains(&"dashboards") && names.contains(&"gone"),
        "{body}"
    );
    assert!(
        !body
            .to_string()
            .contains(api_token.trim_start_matches("svk_")),
        "no secret listed"
    );
    let id = made["id"].as_str().expect("id");
    let (status, _) = call(
        &sv,
        &Method::DELETE,
        &format!("/api/v1/tokens/{id}"),
        Some(&admin),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(&sv, &Method::GET, "/api/v1/series", Some(&api_token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let bad = client
        .post(format!("{}/api/v1/tokens", sv.api_base()))
        .bearer_auth(&admin)
        .json(&serde_json::json!({ "name": "x", "role": "root" }))
        .send()
        .await
        .expect("POST /tokens");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    // Refusals were logged, without the tokens.
    let log = std::fs::read_to_string(sv.stderr_path()).unwrap_or_default();
    assert!(log.contains("authentication refused"), "{log}");
    assert!(log.contains("authorization refused"), "{log}");
    for secret in [wrong, &expired, &revoked, &api_token, &admin, &viewer] {
        assert!(!log.contains(secret), "a token reached the log");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_can_be_closed_by_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sv, admin) = start_config(dir.path(), "api:\n  metrics_require_token: true\n");
    let (status, body) = call(&sv, &Method::GET, "/metrics", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let resp = reqwest::Client::new()
        .get(format!("{}/metrics", sv.api_base()))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.text().await.unwrap_or_default().contains("sqlvigil_"));
    let (status, _) = call(&sv, &Method::GET, "/health", None).await;
    assert_eq!(status, StatusCode::OK);
}

/// Every answer carries an `x-request-id` (the client's, if it sent one); an error names
/// it, and the request's log lines carry it.
#[tokio::test(flavor = "multi_thread")]
async fn errors_are_json_with_the_request_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sv, _admin) = start_config(dir.path(), "operators:\n  batch_interval: 100ms\n");
    let client = reqwest::Client::new();
    let resp = client
        .get(format!("{}/api/v1/series", sv.api_base()))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["x-request-id"], "trace-me-42");
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(body["error"]["request_id"], "trace-me-42", "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    let resp = client
        .get(format!("{}/no/such/page", sv.api_base()))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let id = resp.headers()["x-request-id"]
        .to_str()
        .expect("id")
        .to_string();
    assert!(id.len() >= 32, "a generated id: {id}");
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(body["error"]["request_id"], id.as_str());
    assert_eq!(body["error"]["code"], "not_found");
    let log = std::fs::read_to_string(sv.stderr_path()).unwrap_or_default();
    assert!(
        log.lines()
            .any(|l| l.contains("trace-me-42") && l.contains("authentication refused")),
        "{log}"
    );
}
