//! The TDS test server against an independent client: Python's python-tds (pytds),
//! driven through `tests/pytds_check.py`. These tests fail (never skip) when pytds
//! is missing.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime};
use serde_json::{json, Value};
use sqlvigil_testkit_tds::{Encryption, TdsConfig, TdsServer, TlsUse};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const USER: &str = "sqlvigil";
const PASSWORD: &str = "Pa55w0rd!";

fn crate_dir() -> PathBuf {
    sqlvigil_testkit::package_dir(env!("CARGO_MANIFEST_DIR"))
}

fn fixtures_dir() -> PathBuf {
    crate_dir().join("tests/fixtures")
}

fn fixture(name: &str) -> Value {
    let text =
        std::fs::read_to_string(fixtures_dir().join(format!("{name}.json"))).expect("read fixture");
    serde_json::from_str(&text).expect("fixture json")
}

async fn require_pytds() {
    let out = Command::new("python3")
        .args(["-c", "import pytds, OpenSSL"])
        .output()
        .await
        .expect("python3 must be installed to run the independent-client tests");
    assert!(
        out.status.success(),
        "python-tds / pyOpenSSL are not importable ({}). Install them with: \
         python3 -m pip install -r tests/requirements.txt",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Runs pytds_check.py; returns (success, stdout JSON or Null, stderr).
async fn pytds(args: &[&str]) -> (bool, Value, String) {
    require_pytds().await;
    let script = crate_dir().join("tests/pytds_check.py");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new("python3")
            .arg(&script)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("pytds_check.py hung")
    .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let value = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    (out.status.success(), value, stderr)
}

async fn pytds_ok(args: &[&str]) -> Value {
    let (ok, value, stderr) = pytds(args).await;
    assert!(ok, "pytds_check.py {args:?} failed:\n{stderr}");
    value
}

fn sessions_rows() -> Value {
    fixture("sessions")["rows"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pytds_reads_fixture_rows_from_the_binary() {
    require_pytds().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_tds-test-server"))
        .args([
            "--addr",
            "127.0.0.1:0",
            "--encryption",
            "off",
            "--user",
            &format!("{USER}:{PASSWORD}"),
        ])
        .arg("--fixtures")
        .arg(fixtures_dir())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn tds-test-server");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (mut port, mut ca) = (String::new(), String::new());
    while port.is_empty() || ca.is_empty() {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("server prints its address")
            .expect("read")
            .expect("server exited early");
        if let Some(addr) = line.strip_prefix("listening on ") {
            port = addr.rsplit(':').next().expect("port").to_string();
        } else if let Some(path) = line.strip_prefix("ca ") {
            ca = path.to_string();
        }
    }
    let sql = fixture("sessions")["sql"]
        .as_str()
        .expect("sql")
        .to_string();
    let base = [
        "rows",
        "--port",
        &port,
        "--user",
        USER,
        "--password",
        PASSWORD,
    ];

    // Plaintext SQL batch matched by the fixture's SQL text.
    let out = pytds_ok(&[&base[..], &["--query", &sql]].concat()).await;
    assert_eq!(
        out["columns"],
        json!(["session_id", "status", "login_name"])
    );
    assert_eq!(out["rows"], sessions_rows());

    // Full TLS (validating the CA and host name), as an RPC (sp_executesql).
    let rpc = "SELECT session_id FROM sys.dm_exec_sessions WHERE 1 = %s -- sqlvigil:sessions";
    let out = pytds_ok(&[&base[..], &["--query", rpc, "--param", "--cafile", &ca]].concat()).await;
    assert_eq!(out["rows"], sessions_rows());

    // TLS for the login only.
    let out = pytds_ok(
        &[
            &base[..],
            &[
                "--query",
                &sql,
                "--cafile",
                &ca,
                "--login-only",
                "--autocommit",
            ],
        ]
        .concat(),
    )
    .await;
    assert_eq!(out["rows"], sessions_rows());

    // Wrong password: pytds reports SQL Server's login failure.
    let (ok, _, stderr) = pytds(&[
        "rows",
        "--port",
        &port,
        "--user",
        USER,
        "--password",
        "nope",
        "--query",
        &sql,
    ])
    .await;
    assert!(!ok);
    assert!(
        stderr.contains("Login failed for user 'sqlvigil'."),
        "{stderr}"
    );

    child.kill().await.expect("kill server");
}

fn decimal_units(s: &str, scale: usize) -> i128 {
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (i, f) = s.split_once('.').unwrap_or((s, ""));
    let f = f.trim_end_matches('0');
    assert!(f.len() <= scale, "{s} has more than {scale} decimals");
    let v: i128 = format!("{i}{f:0<scale$}").parse().expect("decimal");
    if neg {
        -v
    } else {
        v
    }
}

fn naive(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Compares a value as pytds printed it with the fixture value, by declared type.
fn check(ty: &str, got: &Value, exp: &Value, what: &str) {
    if exp.is_null() {
        assert!(got.is_null(), "{what}: expected NULL, got {got}");
        return;
    }
    match ty {
        "int" | "bigint" | "smallint" | "tinyint" | "bit" | "float" | "real" => {
            assert_eq!(got, exp, "{what}")
        }
        "money" => assert_eq!(
            decimal_units(&as_text(got), 4),
            decimal_units(&as_text(exp), 4),
            "{what}"
        ),
        "decimal(18,4)" => assert_eq!(
            decimal_units(&as_text(got), 4),
            decimal_units(&as_text(exp), 4),
            "{what}"
        ),
        "numeric(38,10)" => assert_eq!(
            decimal_units(&as_text(got), 10),
            decimal_units(&as_text(exp), 10),
            "{what}"
        ),
        "nchar(6)" => assert_eq!(as_text(got), format!("{:<6}", as_text(exp)), "{what}"),
        t if t.contains("char") => assert_eq!(got, exp, "{what}"),
        "datetime" | "datetime2" | "datetime2(3)" => {
            let diff = (naive(&as_text(got)) - naive(&as_text(exp)))
                .num_microseconds()
                .expect("small");
            // datetime has 1/300 s resolution; Python datetimes stop at microseconds.
            let tolerance = if ty == "datetime" { 1667 } else { 1 };
            assert!(diff.abs() <= tolerance, "{what}: got {got}");
        }
        "datetimeoffset" => {
            let g = DateTime::parse_from_rfc3339(&as_text(got)).expect("pytds datetimeoffset");
            let e = DateTime::parse_from_rfc3339(&as_text(exp)).expect("fixture datetimeoffset");
            assert_eq!(g.offset(), e.offset(), "{what}");
            assert!(
                (g - e).num_microseconds().expect("small").abs() <= 1,
                "{what}: got {got}"
            );
        }
        "date" => assert_eq!(got, exp, "{what}"),
        t if t.starts_with("varbinary") || t == "uniqueidentifier" => {
            assert_eq!(
                as_text(got).to_lowercase(),
                as_text(exp).to_lowercase(),
                "{what}"
            )
        }
        other => panic!("untested type {other}"),
    }
}

async fn in_process_server() -> TdsServer {
    TdsServer::start(TdsConfig {
        encryption: Encryption::Off,
        users: vec![(USER.into(), PASSWORD.into())],
        fixtures_dir: Some(fixtures_dir()),
        ..TdsConfig::default()
    })
    .await
    .expect("server")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pytds_reads_every_column_type() {
    let server = in_process_server().await;
    let port = server.port().to_string();
    let ca = server.ca_path().to_string_lossy().to_string();
    let all = fixture("all_types");
    let set = &all["answers"][0]["result_sets"][0];
    let columns = set["columns"].as_array().expect("columns");
    let expected = set["rows"].as_array().expect("rows");
    for tls in [false, true] {
        let mut args = vec![
            "rows",
            "--port",
            &port,
            "--user",
            USER,
            "--password",
            PASSWORD,
        ];
        args.extend(["--query", "SELECT * FROM all_types"]);
        if tls {
            args.extend(["--cafile", &ca]);
        }
        let out = pytds_ok(&args).await;
        let names: Vec<Value> = columns.iter().map(|c| c["name"].clone()).collect();
        assert_eq!(out["columns"], Value::Array(names));
        let rows = out["rows"].as_array().expect("rows");
        assert_eq!(rows.len(), expected.len());
        for (ri, (row, exp)) in rows.iter().zip(expected).enumerate() {
            for (ci, col) in columns.iter().enumerate() {
                let ty = col["type"].as_str().expect("type");
                check(
                    ty,
                    &row[ci],
                    &exp[ci],
                    &format!("tls={tls} row {ri} column {ci} ({ty})"),
                );
            }
        }
    }
    let logins = server.logins();
    assert_eq!(logins.len(), 2);
    assert_eq!(logins[0].tls, TlsUse::None);
    assert_eq!(logins[1].tls, TlsUse::Full);
    assert_eq!(logins[1].app_name, "pytds-check");
    assert!(server
        .queries()
        .iter()
        .all(|q| q.fixture.as_deref() == Some("all_types")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pytds_timeout_sends_an_attention_and_the_connection_stays_usable() {
    let server = in_process_server().await;
    server
        .add_fixture(
            "slow",
            json!({"delay_ms": 5000, "columns": [{"name": "x", "type": "int"}], "rows": [[1]]}),
        )
        .expect("fixture");
    let port = server.port().to_string();
    let ca = server.ca_path().to_string_lossy().to_string();
    for (n, tls) in [(1u64, false), (2, true)] {
        let mut args = vec![
            "attention",
            "--port",
            &port,
            "--user",
            USER,
            "--password",
            PASSWORD,
        ];
        args.extend([
            "--query",
            "-- sqlvigil:slow",
            "--then",
            "-- sqlvigil:sessions",
            "--timeout",
            "0.5",
        ]);
        if tls {
            args.extend(["--cafile", &ca]);
        }
        let started = Instant::now();
        let out = pytds_ok(&args).await;
        assert_eq!(out["timed_out"], json!(true), "{out}");
        assert_eq!(
            out["then"]["rows"],
            sessions_rows(),
            "the next query on the same connection"
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "the attention must cut the 5 s delay"
        );
        let stats = server
            .wait_for_stats(Duration::from_secs(2), |s| s.attentions == n)
            .await;
        assert_eq!(stats.attentions, n);
        assert_eq!(stats.abandoned_queries, 0);
    }
    // Both connections ran the slow query and then the sessions query on the same connection id.
    let q = server.queries();
    let slow: Vec<u64> = q
        .iter()
        .filter(|q| q.fixture.as_deref() == Some("slow"))
        .map(|q| q.connection_id)
        .collect();
    let after: Vec<u64> = q
        .iter()
        .filter(|q| q.fixture.as_deref() == Some("sessions"))
        .map(|q| q.connection_id)
        .collect();
    assert_eq!(slow, after);
    assert!(q
        .iter()
        .rfind(|q| q.fixture.as_deref() == Some("slow"))
        .is_some_and(|q| q.encrypted));
}
