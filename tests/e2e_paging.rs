//! `/api/v1/metrics` pages through a range larger than one page, through the binary, on
//! both backends (the embedded store; Elasticsearch through the bridge):
//! oldest first and newest first, following `next_cursor`, every point comes exactly
//! once and in order; only the last page says `truncated: false`. A bad cursor or order
//! is a 400 naming it.

mod common;

use common::{error_message, gauge_request_at, post_metrics, start_config};
use prost::Message;
use serde_json::Value;
use sqlvigil_testkit::{wait_for, Sqlvigil};
use sqlvigil_testkit_elastic::ElasticServer;
use std::time::Duration;

const METRIC: &str = "sqlserver.user.connection.count";

/// Every page of `query`, following the cursors: (time, series id) of each point.
async fn pages(sv: &Sqlvigil, token: &str, query: &str) -> (Vec<(i64, String)>, usize) {
    let (mut points, mut pages, mut cursor) = (Vec::new(), 0, None::<String>);
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/metrics?{query}&cursor={c}"),
            None => format!("/api/v1/metrics?{query}"),
        };
        let (status, body) = sv.get_json(&path, Some(token)).await.expect("GET");
        assert_eq!(status, 200, "{body}");
        pages += 1;
        for p in body["points"].as_array().expect("points") {
            let t: i64 = p["time_unix_nano"]
                .as_str()
                .and_then(|t| t.parse().ok())
                .expect("time");
            points.push((t, p["series_id"].as_str().unwrap_or_default().to_string()));
        }
        match body["next_cursor"].as_str() {
            Some(c) => {
                assert_eq!(body["truncated"], true, "{body}");
                cursor = Some(c.to_string());
            }
            None => {
                assert_eq!(body["truncated"], false, "{body}");
                return (points, pages);
            }
        }
        assert!(pages < 100, "the cursors never end");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_of_the_embedded_store_return_every_point_once_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sv, token) = start_config(dir.path(), "store:\n  flush_interval: 200ms\n");
    every_point_once_in_order(&sv, &token).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_read_back_from_elasticsearch_return_every_point_once_in_order() {
    let es = ElasticServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "store:\n  backend: elastic\n  flush_interval: 300ms\nelastic:\n  url: {}\n",
        es.url()
    );
    let (sv, token) = start_config(dir.path(), &yaml);
    every_point_once_in_order(&sv, &token).await;
}

async fn every_point_once_in_order(sv: &Sqlvigil, token: &str) {
    let t0 = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) as u64 - 3_600_000_000_000;
    // Three series, 700 points each at the same times: ties on time are ordered by series.
    for instance in ["pg-a", "pg-b", "pg-c"] {
        let values: Vec<f64> = (0..700).map(f64::from).collect();
        let req = gauge_request_at(instance, METRIC, t0, 1_000_000_000, &values);
        assert_eq!(post_metrics(sv, req.encode_to_vec()).await, 200);
    }
    let total = wait_for(Duration::from_secs(30), || async {
        let (_, body) = sv
            .get_json(&format!("/api/v1/series?metric={METRIC}"), Some(token))
            .await
            .ok()?;
        let n: u64 = body["series"]
            .as_array()?
            .iter()
            .filter_map(|s| s["points"].as_u64())
            .sum();
        (n == 2_100).then_some(n)
    })
    .await;
    assert!(
        total.is_some(),
        "points never all stored; {}",
        sv.stderr_tail()
    );

    let query = format!("metric={METRIC}&limit=500");
    let (oldest, n) = pages(sv, token, &query).await;
    assert_eq!((oldest.len(), n), (2_100, 5));
    let mut sorted = oldest.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, oldest, "oldest first, each point once");

    let (newest, _) = pages(sv, token, &format!("{query}&order=newest")).await;
    let mut reversed = oldest.clone();
    reversed.reverse();
    assert_eq!(
        newest, reversed,
        "newest first is the same points backwards"
    );

    // A page that ends exactly at the last point has no cursor after it.
    let (all, n) = pages(sv, token, &format!("metric={METRIC}&limit=2100")).await;
    assert_eq!((all.len(), n), (2_100, 1));

    for (path, names) in [
        (
            format!("/api/v1/metrics?metric={METRIC}&cursor=yesterday"),
            "cursor",
        ),
        (
            format!("/api/v1/metrics?metric={METRIC}&order=sideways"),
            "order",
        ),
    ] {
        let (status, body): (u16, Value) = sv.get_json(&path, Some(token)).await.expect("GET");
        assert_eq!(status, 400, "{body}");
        assert!(error_message(&body).contains(names), "{body}");
    }
}
