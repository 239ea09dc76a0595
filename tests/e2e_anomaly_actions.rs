//! People acting on anomalies, and the live stream, through the binary: an operator
//! acknowledges (once: again is 409), silences (a duration and a reason) and resolves an
//! anomaly by hand; each action is audited with the token's name, laid over the anomaly
//! in every answer, and streamed as `anomaly.handled`. The rule's later points leave a
//! hand-resolved anomaly resolved. Filters by severity, state and time. The stream
//! (Server-Sent Events) resumes after `Last-Event-ID` across a restart, each event once.

mod common;

use common::{gauge_request, post_metrics, read_stream, start_config};
use prost::Message;
use serde_json::{json, Value};
use sqlvigil_testkit::{wait_for, Sqlvigil};
use std::time::Duration;

const CPU: &str = "sqlserver.cpu.utilization";
const YAML: &str = "store:\n  flush_interval: 300ms\noperators:\n  batch_interval: 100ms\nrules:\n  - name: hot\n    when: \"cpu_percent > 50\"\n    for: 0s\n    severity: critical\n  - name: warm\n    when: \"cpu_percent > 40\"\n    for: 0s\n    severity: warning\n";

async fn post(sv: &Sqlvigil, token: &str, path: &str, body: Value) -> (u16, Value) {
    sv.post_json(path, &body, Some(token))
        .await
        .expect("request")
}

async fn get(sv: &Sqlvigil, token: &str, path: &str) -> Value {
    let (status, body) = sv.get_json(path, Some(token)).await.expect("request");
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// The ids of the anomalies `path` lists.
async fn ids(sv: &Sqlvigil, token: &str, path: &str) -> Vec<String> {
    get(sv, token, path).await["anomalies"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|a| a["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn operators_acknowledge_silence_and_resolve_and_the_stream_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut sv, admin) = start_config(dir.path(), YAML);
    let d = dir.path().to_string_lossy().to_string();
    let oncall = common::cli(&[
        "token",
        "create",
        "--role",
        "operator",
        "--name",
        "oncall",
        "--data-dir",
        &d,
    ]);
    let viewer = common::cli(&[
        "token",
        "create",
        "--role",
        "viewer",
        "--name",
        "eyes",
        "--data-dir",
        &d,
    ]);
    let body = gauge_request("sqlX", CPU, &[95.0, 96.0]).encode_to_vec();
    assert_eq!(post_metrics(&sv, body).await, 200);
    let (hot, warm) = wait_for(Duration::from_secs(30), || async {
        let hot = ids(&sv, &viewer, "/api/v1/anomalies?severity=critical").await;
        let warm = ids(&sv, &viewer, "/api/v1/anomalies?severity=warning").await;
        (hot.len() == 1 && warm.len() == 1).then(|| (hot[0].clone(), warm[0].clone()))
    })
    .await
    .unwrap_or_else(|| panic!("two anomalies; stderr: {}", sv.stderr_tail()));
    assert_ne!(hot, warm);
    // Time filters: opened now, so within the last hour and not before it.
    let hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let q = |k: &str| format!("/api/v1/anomalies?{k}={}", urlencode(&hour_ago));
    assert_eq!(ids(&sv, &viewer, &q("from")).await.len(), 2);
    assert!(ids(&sv, &viewer, &q("to")).await.is_empty());
    let (status, body) = sv
        .get_json("/api/v1/anomalies?severity=loud", Some(&viewer))
        .await
        .expect("request");
    assert_eq!(status, 400, "{body}");

    // Every event so far, from the start of the feed: the two opens (and their insights).
    let opened = read_stream(&sv, &viewer, Some("0"), 100, Duration::from_secs(3)).await;
    assert!(
        opened.iter().filter(|e| e.event == "anomaly.open").count() == 2,
        "{opened:?}"
    );
    let resume_from = opened.last().expect("events").id.clone();

    let base = format!("/api/v1/anomalies/{hot}");
    let (status, body) = post(&sv, &viewer, &format!("{base}/acknowledge"), json!({})).await;
    assert_eq!(status, 403, "a viewer cannot act: {body}");
    let (status, body) = post(
        &sv,
        &oncall,
        &format!("{base}/acknowledge"),
        json!({"note": "looking"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["anomaly"]["handling"]["acknowledged"]["by"], "oncall");
    let (status, body) = post(&sv, &oncall, &format!("{base}/acknowledge"), json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert!(common::error_message(&body).contains("already acknowledged by oncall"));
    for bad in [
        json!({"duration": "2h"}),
        json!({"reason": "deploy"}),
        json!({"duration": "400d", "reason": "deploy"}),
        json!({"duration": "2h", "reason": "deploy", "extra": 1}),
    ] {
        let (status, body) = post(&sv, &oncall, &format!("{base}/silence"), bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, body) = post(
        &sv,
        &oncall,
        &format!("{base}/silence"),
        json!({"duration": "2h", "reason": "deploy window"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let until = body["anomaly"]["handling"]["silenced"]["until"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .expect("silenced until");
    let left = until.with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!(left > chrono::Duration::minutes(119) && left <= chrono::Duration::hours(2));
    let (status, body) = post(&sv, &oncall, &format!("{base}/resolve"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["anomaly"]["state"], "resolved");
    let (status, _) = post(&sv, &oncall, &format!("{base}/resolve"), json!({})).await;
    assert_eq!(status, 409);
    let (status, _) = post(&sv, &oncall, "/api/v1/anomalies/nope/resolve", json!({})).await;
    assert_eq!(status, 404);

    // The rule sees the condition go on: the hand-resolved anomaly stays resolved.
    let body = gauge_request("sqlX", CPU, &[97.0, 98.0]).encode_to_vec();
    assert_eq!(post_metrics(&sv, body).await, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        ids(&sv, &viewer, "/api/v1/anomalies?state=open").await,
        vec![warm.clone()]
    );
    assert_eq!(
        ids(&sv, &viewer, "/api/v1/anomalies?state=resolved").await,
        vec![hot.clone()]
    );
    let one = get(&sv, &viewer, &base).await;
    assert_eq!(one["anomaly"]["state"], "resolved", "{one}");
    let actions: Vec<(String, String)> = one["actions"]
        .as_array()
        .expect("audit")
        .iter()
        .map(|a| {
            (
                a["action"].as_str().unwrap_or("").into(),
                a["by"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    let by = |a: &str| (a.to_string(), "oncall".to_string());
    assert_eq!(
        actions,
        vec![by("acknowledge"), by("silence"), by("resolve")]
    );
    assert_eq!(one["actions"][1]["note"], "deploy window");

    // After a restart the stream goes on after the last event seen, each event once.
    sv.stop().expect("stops");
    let (sv, _) = start_config(dir.path(), YAML);
    let _ = admin;
    let resumed = read_stream(
        &sv,
        &viewer,
        Some(&resume_from),
        100,
        Duration::from_secs(4),
    )
    .await;
    let handled: Vec<&str> = resumed
        .iter()
        .filter(|e| e.event == "anomaly.handled")
        .filter_map(|e| e.data["data"]["action"]["action"].as_str())
        .collect();
    assert_eq!(
        handled,
        vec!["acknowledge", "silence", "resolve"],
        "{resumed:?}"
    );
    let seqs: Vec<i64> = resumed.iter().filter_map(|e| e.id.parse().ok()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(seqs[0] > resume_from.parse::<i64>().unwrap_or(0));
    let (status, body) = sv
        .get_json("/api/v1/stream?last_event_id=abc", Some(&viewer))
        .await
        .expect("request");
    assert_eq!(status, 400, "{body}");
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}
