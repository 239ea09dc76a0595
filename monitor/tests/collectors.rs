//! The live monitor against the TDS test server: every collector over a real TDS
//! connection (tiberius), in both TLS modes, the blocking tree of the recorded chain,
//! wait diffing across a counter reset, failures reported per instance and collector,
//! query timeouts closing the connection, and one slow instance not delaying another.

use sqlvigil_core::Live;
use sqlvigil_model::live::CollectorKind;
use sqlvigil_monitor::{Monitor, MonitorConfig};
use sqlvigil_testkit_tds::{AuthKind, Encryption, TdsConfig, TdsServer, TlsUse};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const USER: &str = "sqlvigil";
const PASSWORD: &str = "M0nitor!Pa55";

fn fixtures() -> PathBuf {
    sqlvigil_testkit::package_dir(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/live")
}

async fn server(encryption: Encryption) -> TdsServer {
    TdsServer::start(TdsConfig {
        encryption,
        users: vec![(USER.into(), PASSWORD.into())],
        fixtures_dir: Some(fixtures()),
        ..TdsConfig::default()
    })
    .await
    .expect("TDS test server starts")
}

/// A monitor of `(name, server, encryption, password variable)`; no sample gap, so the
/// first snapshot samples the cumulative DMVs twice back to back.
fn monitor(instances: &[(&str, &TdsServer, &str, &str)], extra: serde_json::Value) -> Arc<Monitor> {
    let list: Vec<serde_json::Value> = instances
        .iter()
        .map(|(name, srv, encryption, var)| {
            let mut i = serde_json::json!({
                "name": name,
                "host": "localhost",
                "port": srv.port(),
                "encryption": encryption,
                "auth": {"method": "sql-login", "user": USER, "password": format!("env:{var}")},
            });
            if *encryption != "off" {
                i["ca_file"] = serde_json::json!(srv.ca_path());
            }
            i
        })
        .collect();
    let mut cfg = serde_json::json!({
        "sample_gap": "0s",
        "connect_timeout": "5s",
        "query_timeout": "5s",
        "adhoc_min_interval": "1h",
        "instances": list,
    });
    if let (Some(c), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    let cfg: MonitorConfig = serde_json::from_value(cfg).expect("monitor config");
    Arc::new(Monitor::new(&cfg).expect("monitor builds"))
}

fn set_password(var: &str, value: &str) {
    std::env::set_var(var, value);
}

#[tokio::test]
async fn every_collector_over_full_tls_with_a_validated_certificate() {
    let srv = server(Encryption::On).await;
    set_password("SQLVIGIL_T_PW_TLS", PASSWORD);
    let m = monitor(
        &[("sql1", &srv, "required", "SQLVIGIL_T_PW_TLS")],
        serde_json::json!({}),
    );
    let snap = m.snapshot("sql1", None, "test").await.expect("snapshot");
    assert!(snap.errors.is_empty(), "{:?}", snap.errors);
    assert_eq!(snap.collectors.len(), CollectorKind::ALL.len());
    assert_eq!(snap.server.version, "16.0.4135.4");
    assert_eq!(snap.server.major_version, 16);

    // Sessions, and the blocking tree of the recorded chain 52 → {61 → 70 → 75, 63}.
    assert_eq!(snap.sessions.len(), 6);
    let s61 = snap
        .sessions
        .iter()
        .find(|s| s.session_id == 61)
        .expect("61");
    assert_eq!(s61.blocking_session_id, Some(52));
    assert_eq!(s61.wait_type.as_deref(), Some("LCK_M_U"));
    assert_eq!(s61.login.as_deref(), Some("app_orders"));
    assert_eq!(s61.query_hash.as_deref(), Some("0x8D5C0F3A9B1E2D47"));
    assert_eq!(snap.blocking.len(), 1, "{:#?}", snap.blocking);
    let chain = &snap.blocking[0];
    assert_eq!(
        (chain.head_session_id, chain.victims, chain.depth),
        (52, 4, 3)
    );
    assert_eq!(chain.head_open_transactions, 1);
    assert!(
        chain
            .head_statement
            .starts_with("BEGIN TRAN; UPDATE dbo.Orders"),
        "{}",
        chain.head_statement
    );
    assert_eq!(chain.longest_wait_ms, 48211.0);
    assert_eq!(chain.total_wait_ms, 48211.0 + 31877.0 + 22504.0 + 9140.0);
    let s75 = chain
        .sessions
        .iter()
        .find(|s| s.session_id == 75)
        .expect("75 in chain");
    assert_eq!((s75.blocked_by, s75.depth), (70, 3));
    assert!(s75.wait_resource.starts_with("KEY: 7:"));

    // Waits: the second sample minus the first, idle waits out, categories as the receiver's.
    let lck_u = snap
        .waits
        .iter()
        .find(|w| w.wait_type == "LCK_M_U")
        .expect("LCK_M_U");
    assert_eq!(
        (
            lck_u.waiting_tasks,
            lck_u.wait_time_ms,
            lck_u.signal_wait_time_ms
        ),
        (12, 120_000, 10)
    );
    assert_eq!(lck_u.wait_category, "Lock");
    assert_eq!(snap.waits[0].wait_type, "LCK_M_U", "most wait time first");
    assert!(
        snap.waits.iter().all(|w| w.wait_type != "CXPACKET"),
        "no change, no row"
    );
    assert!(snap
        .waits
        .iter()
        .any(|w| w.wait_type == "RESOURCE_SEMAPHORE" && w.wait_category == "Memory"));
    assert!(!snap.counter_reset);

    // Top queries as deltas; a plan compiled before the first sample but new to it is left out.
    let etl = &snap.top_queries[0];
    assert_eq!(etl.query_hash, "0xC3D2E1F00A1B2C3D");
    assert_eq!(
        (etl.executions, etl.total_cpu_ms, etl.total_logical_reads),
        (1.0, 118_432.0, 45_821_004.0)
    );
    assert_eq!(etl.instance, "sql1");
    assert!(snap
        .top_queries
        .iter()
        .all(|q| q.query_hash != "0x0BADF00D0BADF00D"));
    assert_eq!(snap.top_queries.len(), 3);

    let tempdb = snap.tempdb.as_ref().expect("tempdb");
    assert_eq!(tempdb.version_store_kb, 1_835_008);
    assert_eq!(tempdb.top_sessions[0].session_id, 80);
    let sales = snap
        .log_space
        .iter()
        .find(|l| l.database == "Sales")
        .expect("Sales log");
    assert!((sales.used_percent - 87.5).abs() < 1e-9);
    assert_eq!(sales.log_reuse_wait.as_deref(), Some("ACTIVE_TRANSACTION"));
    assert_eq!(snap.memory_grants.as_ref().map(|g| g.pending), Some(1));
    let data = snap
        .file_io
        .iter()
        .find(|f| f.file_id == 1)
        .expect("data file");
    assert_eq!((data.reads, data.read_stall_ms), (400, 18_000));
    assert!((data.read_latency_ms - 45.0).abs() < 1e-9);

    // The login: TLS for everything, the monitor's application name, read-only intent.
    let logins = srv.logins();
    assert!(!logins.is_empty());
    for l in &logins {
        assert!(l.succeeded && l.read_only_intent, "{l:?}");
        assert_eq!(
            (l.app_name.as_str(), l.user.as_str(), l.tls),
            ("sqlvigil", USER, TlsUse::Full)
        );
    }
    assert!(srv.queries().iter().all(|q| q.encrypted));
    // The figures go out as OTLP gauges of the instance.
    let otlp = sqlvigil_monitor::telemetry::to_otlp(&snap).expect("figures");
    let names: Vec<&str> = otlp.resource_metrics[0].scope_metrics[0]
        .metrics
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    for n in [
        "sqlvigil.live.sessions.blocked",
        "sqlvigil.live.wait.rate",
        "sqlvigil.live.log.used_percent",
    ] {
        assert!(names.contains(&n), "{names:?}");
    }
}

#[tokio::test]
async fn an_azure_ad_token_logs_in_from_a_file_reference() {
    let token = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.sqlvigil-test-token";
    let srv = TdsServer::start(TdsConfig {
        encryption: Encryption::On,
        aad_tokens: vec![token.into()],
        fixtures_dir: Some(fixtures()),
        ..TdsConfig::default()
    })
    .await
    .expect("TDS test server starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{token}\n")).expect("token file");
    let cfg: MonitorConfig = serde_json::from_value(serde_json::json!({
        "sample_gap": "0s",
        "instances": [{
            "name": "azure1", "host": "localhost", "port": srv.port(), "ca_file": srv.ca_path(),
            "auth": {"method": "aad-token", "token": format!("file:{}", file.display())},
        }],
    }))
    .expect("config");
    let m = Monitor::new(&cfg).expect("monitor");
    let snap = m
        .snapshot("azure1", Some(CollectorKind::Sessions), "test")
        .await
        .expect("snapshot");
    assert_eq!(snap.blocking[0].head_session_id, 52);
    let logins = srv.logins();
    assert!(
        logins
            .iter()
            .all(|l| l.succeeded && l.auth == AuthKind::AadToken),
        "{logins:?}"
    );
}

#[tokio::test]
async fn login_only_tls_and_no_tls_read_the_same_rows() {
    for (server_mode, client_mode, tls) in [
        (Encryption::Off, "login-only", TlsUse::LoginOnly),
        (Encryption::NotSupported, "off", TlsUse::None),
    ] {
        let srv = server(server_mode).await;
        set_password("SQLVIGIL_T_PW_MODES", PASSWORD);
        let m = monitor(
            &[("sql1", &srv, client_mode, "SQLVIGIL_T_PW_MODES")],
            serde_json::json!({}),
        );
        let snap = m.snapshot("sql1", None, "test").await.expect("snapshot");
        assert!(snap.errors.is_empty(), "{client_mode}: {:?}", snap.errors);
        assert_eq!(snap.blocking[0].head_session_id, 52);
        assert_eq!(snap.waits[0].wait_time_ms, 120_000);
        assert!(
            srv.logins().iter().all(|l| l.tls == tls),
            "{client_mode}: {:?}",
            srv.logins()
        );
        assert!(srv.queries().iter().all(|q| !q.encrypted));
    }
}

#[tokio::test]
async fn a_counter_reset_between_snapshots_counts_from_zero() {
    let srv = server(Encryption::Off).await;
    set_password("SQLVIGIL_T_PW_RESET", PASSWORD);
    let m = monitor(
        &[("sql1", &srv, "login-only", "SQLVIGIL_T_PW_RESET")],
        serde_json::json!({"adhoc_min_interval": "0s"}),
    );
    let first = m
        .snapshot("sql1", Some(CollectorKind::Waits), "test")
        .await
        .expect("first");
    assert!(!first.counter_reset);
    assert_eq!(first.waits[0].wait_time_ms, 120_000);
    // The third sample comes after a restart (new start time, lower counters).
    let second = m
        .snapshot("sql1", Some(CollectorKind::Waits), "test")
        .await
        .expect("second");
    assert!(second.counter_reset);
    let lck = second
        .waits
        .iter()
        .find(|w| w.wait_type == "LCK_M_U")
        .expect("LCK_M_U");
    assert_eq!(
        lck.wait_time_ms, 9_000,
        "counted since the restart, never negative"
    );
    assert!(second
        .waits
        .iter()
        .all(|w| w.wait_time_ms >= 0 && w.waiting_tasks >= 0));
}

#[tokio::test]
async fn failures_are_reported_per_instance_and_collector_with_the_error_number() {
    let good = server(Encryption::Off).await;
    let other = server(Encryption::Off).await;
    set_password("SQLVIGIL_T_PW_GOOD", PASSWORD);
    set_password("SQLVIGIL_T_PW_BAD", "wrong password");
    good.deny(
        "waits",
        300,
        "VIEW SERVER STATE permission was denied on object 'server', database 'master'.",
    );
    let m = monitor(
        &[
            ("good", &good, "login-only", "SQLVIGIL_T_PW_GOOD"),
            ("locked", &other, "login-only", "SQLVIGIL_T_PW_BAD"),
        ],
        serde_json::json!({}),
    );
    let err = m
        .snapshot("locked", None, "test")
        .await
        .expect_err("login fails")
        .to_string();
    assert!(
        err.contains("18456") && err.contains("Login failed"),
        "{err}"
    );
    let snap = m
        .snapshot("good", None, "test")
        .await
        .expect("the other instance still works");
    let denied: Vec<_> = snap
        .errors
        .iter()
        .map(|e| (e.collector, e.number))
        .collect();
    assert_eq!(denied, vec![(CollectorKind::Waits, Some(300))]);
    assert!(snap.errors[0].message.contains("VIEW SERVER STATE"));
    assert_eq!(
        snap.blocking[0].head_session_id, 52,
        "the other collectors ran"
    );

    let status = m.status();
    let locked = status
        .iter()
        .find(|s| s.instance == "locked")
        .expect("locked");
    assert!(!locked.reachable);
    assert_eq!(
        locked.connection_error.as_ref().and_then(|e| e.number),
        Some(18456)
    );
    let good_status = status.iter().find(|s| s.instance == "good").expect("good");
    assert!(good_status.reachable);
    let waits = good_status
        .collectors
        .iter()
        .find(|c| c.collector == CollectorKind::Waits)
        .expect("waits");
    assert_eq!(waits.last_error.as_ref().and_then(|e| e.number), Some(300));
    let text = sqlvigil_core::live::render(&status);
    assert!(
        text.contains("sqlvigil_monitor_instance_up{instance=\"locked\"} 0"),
        "{text}"
    );
    assert!(text.contains("sqlvigil_monitor_collector_failing{instance=\"good\",collector=\"waits\",number=\"300\"} 1"), "{text}");
    // The password never reaches an error or the status.
    assert!(!format!("{status:?}{err}").contains("wrong password"));
}

#[tokio::test]
async fn a_query_past_its_timeout_is_abandoned_and_the_next_collector_reconnects() {
    let srv = server(Encryption::Off).await;
    set_password("SQLVIGIL_T_PW_SLOW", PASSWORD);
    srv.set_delay("sessions", Duration::from_secs(30));
    let m = monitor(
        &[("sql1", &srv, "login-only", "SQLVIGIL_T_PW_SLOW")],
        serde_json::json!({"query_timeout": "500ms"}),
    );
    let snap = m.snapshot("sql1", None, "test").await.expect("snapshot");
    let timed_out: Vec<_> = snap.errors.iter().map(|e| e.collector).collect();
    assert_eq!(
        timed_out,
        vec![CollectorKind::Sessions],
        "{:?}",
        snap.errors
    );
    assert!(snap.errors[0].message.contains("timed out"));
    assert!(
        !snap.waits.is_empty(),
        "later collectors ran on a new connection"
    );
    // The server saw the client go away in the middle of the query: it does not keep running.
    let stats = srv
        .wait_for_stats(Duration::from_secs(5), |s| s.abandoned_queries >= 1)
        .await;
    assert_eq!(stats.abandoned_queries, 1, "{stats:?}");
    assert_eq!(stats.active_queries, 0);
    let st = m.status();
    let sessions = st[0]
        .collectors
        .iter()
        .find(|c| c.collector == CollectorKind::Sessions)
        .expect("sessions");
    assert_eq!(sessions.timeouts, 1);
}

#[tokio::test]
async fn a_connection_dropped_mid_result_is_an_error_not_a_hang() {
    let srv = server(Encryption::Off).await;
    set_password("SQLVIGIL_T_PW_DROP", PASSWORD);
    srv.set_disconnect_after_rows("sessions", 2);
    let m = monitor(
        &[("sql1", &srv, "login-only", "SQLVIGIL_T_PW_DROP")],
        serde_json::json!({}),
    );
    let snap = m.snapshot("sql1", None, "test").await.expect("snapshot");
    assert_eq!(snap.errors.len(), 1, "{:?}", snap.errors);
    assert_eq!(snap.errors[0].collector, CollectorKind::Sessions);
    assert!(
        snap.sessions.is_empty(),
        "a half result is not served as the sessions"
    );
    assert!(snap.tempdb.is_some(), "the others ran on a new connection");
}

#[tokio::test]
async fn one_slow_instance_does_not_delay_another() {
    let slow = server(Encryption::Off).await;
    let fast = server(Encryption::Off).await;
    set_password("SQLVIGIL_T_PW_PAIR", PASSWORD);
    for c in ["server", "sessions"] {
        slow.set_delay(c, Duration::from_secs(60));
    }
    let m = monitor(
        &[
            ("slow", &slow, "login-only", "SQLVIGIL_T_PW_PAIR"),
            ("fast", &fast, "login-only", "SQLVIGIL_T_PW_PAIR"),
        ],
        serde_json::json!({"interval": "1h", "query_timeout": "45s"}),
    );
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let tasks = m.spawn(stop);
    // The fast instance's scheduled snapshot lands while the slow one is still waiting.
    let mut fast_snap = None;
    for _ in 0..100 {
        if let Some(s) = m.latest("fast") {
            fast_snap = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fast_snap = fast_snap.expect("the fast instance was snapshotted within 10 s");
    assert!(fast_snap.errors.is_empty() && fast_snap.trigger == "schedule");
    assert!(
        m.latest("slow").is_none(),
        "the slow one is still in its first query"
    );
    assert!(slow.stats().active_queries >= 1);
    let _ = stop_tx.send(true);
    for t in tasks {
        t.await.expect("loop joins").expect("loop ends cleanly");
    }
}

#[tokio::test]
async fn ad_hoc_snapshots_are_rate_limited_per_instance_and_unknown_instances_named() {
    let srv = server(Encryption::Off).await;
    set_password("SQLVIGIL_T_PW_ADHOC", PASSWORD);
    let m = monitor(
        &[("sql1", &srv, "login-only", "SQLVIGIL_T_PW_ADHOC")],
        serde_json::json!({"adhoc_min_interval": "1h"}),
    );
    let snap = m
        .snapshot("sql1", Some(CollectorKind::Sessions), "ad-hoc")
        .await
        .expect("first");
    assert_eq!(snap.collectors, vec![CollectorKind::Sessions]);
    assert_eq!(snap.blocking[0].victims, 4);
    match m
        .snapshot("sql1", Some(CollectorKind::Sessions), "ad-hoc")
        .await
    {
        Err(sqlvigil_core::Error::RateLimited { retry_after, .. }) => {
            assert!(retry_after > Duration::from_secs(3000))
        }
        other => panic!("expected a rate limit, got {other:?}"),
    }
    match m.snapshot("nope", None, "ad-hoc").await {
        Err(sqlvigil_core::Error::NotFound(msg)) => assert!(msg.contains("nope")),
        other => panic!("expected not found, got {other:?}"),
    }
    // An anomaly reuses a snapshot taken after it opened, else takes one (not rate-limited).
    let before = chrono::Utc::now() - chrono::Duration::hours(1);
    let reused = m
        .for_anomaly("sql1", before, "anomaly a1")
        .await
        .expect("latest");
    assert_eq!(reused.trigger, "ad-hoc");
    let fresh = m
        .for_anomaly("sql1", chrono::Utc::now(), "anomaly a2")
        .await
        .expect("new one");
    assert_eq!(fresh.trigger, "anomaly a2");
    assert_eq!(fresh.collectors.len(), CollectorKind::ALL.len());
}
