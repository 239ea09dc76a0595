//! `GET /api/v1/anomalies/{id}/root-cause` on the demo's two incidents, from the OTLP
//! data alone: the CPU storm on sql-01 leads to CPU waits (SOS_SCHEDULER_YIELD) and a
//! query holding most of the window's CPU; the blocking chain on sql-03 leads to lock
//! waits (LCK_M_X) and a blocking head with victims. Each link names its series.

mod common;

use common::{bin, DEMO_RUN};
use serde_json::Value;
use sqlvigil_testkit::{wait_for, Sqlvigil};
use std::time::Duration;

async fn chain(sv: &Sqlvigil, token: &str, rule: &str) -> Value {
    let found = wait_for(Duration::from_secs(120), || async {
        let (_, list) = sv.get_json("/api/v1/anomalies", Some(token)).await.ok()?;
        let id = list["anomalies"]
            .as_array()?
            .iter()
            .find(|a| a["rule"] == rule)?["id"]
            .as_str()?
            .to_string();
        let (status, body) = sv
            .get_json(&format!("/api/v1/anomalies/{id}/root-cause"), Some(token))
            .await
            .ok()?;
        assert_eq!(status, 200, "{body}");
        // The chain is complete once the window's events are stored.
        let rc = &body["root_cause"];
        (!rc["waits"].as_array()?.is_empty() && !rc["top_queries"].as_array()?.is_empty())
            .then(|| rc.clone())
    })
    .await;
    found.unwrap_or_else(|| panic!("no root cause for {rule}; stderr: {}", sv.stderr_tail()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_cause_names_the_injected_cause() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = vec!["demo"];
    args.extend_from_slice(DEMO_RUN);
    let sv = Sqlvigil::start(&bin(), &args, dir.path()).expect("demo starts");
    let token = sv.admin_token();

    let cpu = chain(&sv, &token, "cpu_storm").await;
    assert_eq!(cpu["anomaly"]["series"]["instance"], "sql-01");
    assert_eq!(cpu["waits"][0]["wait_category"], "CPU", "{cpu}");
    assert!(
        cpu["waits"][0]["ratio"].as_f64().unwrap_or(f64::INFINITY) > 1.5,
        "{cpu}"
    );
    assert_eq!(cpu["waits"][0]["wait_types"][0], "SOS_SCHEDULER_YIELD");
    assert_eq!(cpu["resource"], "cpu");
    assert!(
        cpu["top_queries"][0]["share"].as_f64().unwrap_or(0.0) > 0.3,
        "{cpu}"
    );
    assert_eq!(cpu["chart"]["metric"], cpu["anomaly"]["series"]["metric"]);
    assert_eq!(
        cpu["waits"][0]["chart"]["metric"],
        "sqlserver.os.wait.duration.per_second"
    );
    let summary = cpu["summary"].as_str().unwrap_or("");
    assert!(
        summary.contains("CPU waits") && summary.contains("% of CPU"),
        "{summary}"
    );

    let lock = chain(&sv, &token, "blocking_chain").await;
    assert_eq!(lock["anomaly"]["series"]["instance"], "sql-03");
    assert_eq!(lock["waits"][0]["wait_category"], "Lock", "{lock}");
    assert_eq!(lock["waits"][0]["wait_types"][0], "LCK_M_X");
    let head = &lock["blocking_head"];
    assert!(head["victims"].as_u64().unwrap_or(0) >= 1, "{lock}");
    assert!(lock["summary"]
        .as_str()
        .unwrap_or("")
        .contains("blocking head session"));
    assert!(lock["sources"].to_string().contains("blocking: otlp"));
}
