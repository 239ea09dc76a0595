//! The index layout against the Elasticsearch API test server: installed once, a re-run
//! writes nothing, and templates sqlvigil did not write are reported by name.

use serde_json::json;
use sqlvigil_bridge::layout::{install, LayoutOptions};
use sqlvigil_bridge::{Auth, BridgeError, Connection, Elastic};
use sqlvigil_testkit_elastic::ElasticServer;
use std::time::Duration;

fn connect(es: &ElasticServer) -> Elastic {
    Elastic::connect(&Connection {
        url: es.url(),
        auth: Auth::None,
        ca_cert: None,
        timeout: Duration::from_secs(10),
    })
    .expect("client")
}

#[tokio::test]
async fn installs_once_and_a_rerun_is_a_no_op() {
    let es = ElasticServer::start();
    let client = connect(&es);
    let opts = LayoutOptions::default();
    let first = install(&client, &opts).await.expect("first install");
    assert_eq!(first.created.len(), opts.objects().len(), "{first:?}");
    let writes = es.stats().writes;
    let again = install(&client, &opts).await.expect("second install");
    assert!(
        again.created.is_empty() && again.updated.is_empty(),
        "{again:?}"
    );
    assert_eq!(es.stats().writes, writes, "a re-run must not write");
    assert!(es
        .data_streams()
        .contains(&"mssql-logs-default".to_string()));

    // A changed setting updates only what it touches.
    let mut longer = opts.clone();
    longer.ilm.delete_after = "180d".into();
    let third = install(&client, &longer).await.expect("third install");
    assert_eq!(
        third.updated,
        vec![
            "ILM policy `sqlvigil-metrics`",
            "ILM policy `sqlvigil-logs`"
        ]
    );
    assert_eq!(
        es.ilm_policy("sqlvigil-metrics").expect("policy")["policy"]["phases"]["delete"]["min_age"],
        "180d"
    );
}

#[tokio::test]
async fn a_foreign_template_of_the_same_name_is_reported_not_overwritten() {
    let es = ElasticServer::start();
    let foreign = json!({"index_patterns": ["mssql-metrics-*"], "priority": 10, "template": {}});
    let put = reqwest::Client::new()
        .put(format!("{}/_index_template/sqlvigil-metrics", es.url()))
        .json(&foreign)
        .send()
        .await
        .expect("PUT");
    assert_eq!(put.status().as_u16(), 200);
    let err = install(&connect(&es), &LayoutOptions::default())
        .await
        .expect_err("must refuse");
    assert!(matches!(err, BridgeError::Layout(_)), "{err}");
    assert!(
        err.to_string()
            .contains("index template `sqlvigil-metrics`"),
        "{err}"
    );
    assert_eq!(
        es.index_template("sqlvigil-metrics").expect("kept")["priority"],
        10
    );
}

#[tokio::test]
async fn an_overlapping_template_with_the_same_priority_is_named() {
    let es = ElasticServer::start();
    let other = json!({"index_patterns": ["mssql-*"], "priority": 200, "template": {}});
    reqwest::Client::new()
        .put(format!("{}/_index_template/site-wide", es.url()))
        .json(&other)
        .send()
        .await
        .expect("PUT");
    let err = install(&connect(&es), &LayoutOptions::default())
        .await
        .expect_err("must refuse");
    let text = err.to_string();
    assert!(
        text.contains("sqlvigil-metrics") && text.contains("site-wide"),
        "{text}"
    );
}

#[tokio::test]
async fn an_unreachable_cluster_is_a_retryable_error() {
    let es = ElasticServer::start();
    es.refuse_connections(true);
    let err = install(&connect(&es), &LayoutOptions::default())
        .await
        .expect_err("must fail");
    assert!(err.is_retryable(), "{err}");
}
