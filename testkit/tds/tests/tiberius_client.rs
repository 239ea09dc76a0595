//! The TDS test server against the real `tiberius` client.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime};
use serde_json::{json, Value};
use sqlvigil_testkit_tds::{AuthKind, Encryption, RequestKind, TdsConfig, TdsServer, TlsUse};
use tiberius::{AuthMethod, Client, Config, EncryptionLevel, Row};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

type Conn = Client<Compat<TcpStream>>;

const USER: &str = "sqlvigil";
const PASSWORD: &str = "Pa55w0rd!";

fn fixtures_dir() -> PathBuf {
    sqlvigil_testkit::package_dir(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

async fn server(encryption: Encryption) -> TdsServer {
    TdsServer::start(TdsConfig {
        encryption,
        users: vec![(USER.into(), PASSWORD.into())],
        fixtures_dir: Some(fixtures_dir()),
        ..TdsConfig::default()
    })
    .await
    .expect("server starts")
}

fn config(server: &TdsServer, level: EncryptionLevel, ca: &Path, password: &str) -> Config {
    let mut c = Config::new();
    c.host("localhost");
    c.port(server.port());
    c.authentication(AuthMethod::sql_server(USER, password));
    c.encryption(level);
    c.trust_cert_ca(ca.to_string_lossy().to_string());
    c.application_name("sqlvigil");
    c
}

async fn connect_with(server: &TdsServer, c: Config) -> tiberius::Result<Conn> {
    let tcp = TcpStream::connect(server.addr()).await?;
    tcp.set_nodelay(true)?;
    Client::connect(c, tcp.compat_write()).await
}

async fn connect(server: &TdsServer, level: EncryptionLevel) -> Conn {
    connect_with(server, config(server, level, server.ca_path(), PASSWORD))
        .await
        .expect("login succeeds")
}

async fn rows(client: &mut Conn, sql: &str) -> tiberius::Result<Vec<Row>> {
    client.simple_query(sql).await?.into_first_result().await
}

fn server_error(e: &tiberius::error::Error) -> (u32, String) {
    match e {
        tiberius::error::Error::Server(t) => (t.code(), t.message().to_string()),
        other => panic!("expected a server error, got {other:?}"),
    }
}

async fn sessions_snapshot(client: &mut Conn) -> Vec<(i16, String, Option<String>)> {
    let rows = rows(
        client,
        "select session_id, status, login_name\n  from sys.dm_exec_sessions where is_user_process = 1",
    )
    .await
    .expect("query");
    rows.iter()
        .map(|r| {
            (
                r.get::<i16, _>(0).expect("session_id"),
                r.get::<&str, _>(1).expect("status").to_string(),
                r.get::<&str, _>(2).map(str::to_string),
            )
        })
        .collect()
}

fn expected_sessions() -> Vec<(i16, String, Option<String>)> {
    vec![
        (52, "running".into(), Some("sqlvigil".into())),
        (53, "sleeping".into(), None),
        (54, "sleeping".into(), Some("app".into())),
    ]
}

#[tokio::test]
async fn plaintext_login_is_recorded_with_app_name_and_read_only_intent() {
    let server = server(Encryption::NotSupported).await;
    let mut c = config(
        &server,
        EncryptionLevel::NotSupported,
        server.ca_path(),
        PASSWORD,
    );
    c.readonly(true);
    c.database("msdb");
    let mut client = connect_with(&server, c).await.expect("login");
    assert_eq!(sessions_snapshot(&mut client).await, expected_sessions());

    let logins = server.logins();
    assert_eq!(logins.len(), 1);
    let l = &logins[0];
    assert!(l.succeeded);
    assert_eq!(l.user, USER);
    assert_eq!(l.app_name, "sqlvigil");
    assert_eq!(l.database, "msdb");
    assert_eq!(l.server_name, "localhost");
    assert!(l.read_only_intent);
    assert_eq!(l.tls, TlsUse::None);
    assert_eq!(l.auth, AuthKind::SqlPassword);
    assert_eq!(l.tds_version, 0x7400_0004);
    let q = server.queries();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].fixture.as_deref(), Some("sessions"));
    assert_eq!(q[0].kind, RequestKind::Batch);
    assert!(!q[0].encrypted);
    assert_eq!(server.stats().logins_ok, 1);
}

#[tokio::test]
async fn login_only_tls_then_plaintext_queries() {
    let server = server(Encryption::Off).await;
    let mut client = connect(&server, EncryptionLevel::Off).await;
    assert_eq!(sessions_snapshot(&mut client).await, expected_sessions());
    let l = &server.logins()[0];
    assert_eq!(l.tls, TlsUse::LoginOnly);
    assert!(!l.read_only_intent);
    assert!(!server.queries()[0].encrypted);
}

#[tokio::test]
async fn full_tls_validates_the_certificate() {
    let server = server(Encryption::Off).await;
    let mut client = connect(&server, EncryptionLevel::Required).await;
    assert_eq!(sessions_snapshot(&mut client).await, expected_sessions());
    // RPC path (sp_executesql) inside TLS as well.
    let stream = client
        .query(
            "SELECT 1 /* -- sqlvigil:sessions */ WHERE @P1 = 1",
            &[&1i32],
        )
        .await
        .expect("rpc");
    let rows = stream.into_first_result().await.expect("rows");
    assert_eq!(rows.len(), 3);
    assert_eq!(server.logins()[0].tls, TlsUse::Full);
    let q = server.queries();
    assert!(q.iter().all(|q| q.encrypted));
    assert_eq!(q[1].kind, RequestKind::Rpc);
    assert_eq!(q[1].fixture.as_deref(), Some("sessions"));
}

#[tokio::test]
async fn forced_encryption_upgrades_a_login_only_client() {
    let server = server(Encryption::On).await;
    let mut client = connect(&server, EncryptionLevel::Off).await;
    assert_eq!(sessions_snapshot(&mut client).await, expected_sessions());
    assert_eq!(server.logins()[0].tls, TlsUse::Full);
    assert!(server.queries()[0].encrypted);
}

#[tokio::test]
async fn forced_encryption_refuses_a_client_without_tls() {
    let server = server(Encryption::On).await;
    let result = connect_with(
        &server,
        config(
            &server,
            EncryptionLevel::NotSupported,
            server.ca_path(),
            PASSWORD,
        ),
    )
    .await;
    assert!(
        result.is_err(),
        "a client that cannot encrypt must not get in"
    );
    assert_eq!(server.stats().logins_ok, 0);
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_rejected() {
    let server_a = server(Encryption::Off).await;
    let server_b = server(Encryption::Off).await;
    let result = connect_with(
        &server_a,
        config(
            &server_a,
            EncryptionLevel::Required,
            server_b.ca_path(),
            PASSWORD,
        ),
    )
    .await;
    let err = match result {
        Ok(_) => panic!("the handshake must fail with the wrong CA"),
        Err(e) => e,
    };
    assert!(
        matches!(
            err,
            tiberius::error::Error::Tls(_) | tiberius::error::Error::Io { .. }
        ),
        "unexpected error {err:?}"
    );
    assert_eq!(
        server_a.stats().logins_ok + server_a.stats().logins_failed,
        0
    );
    // The right CA works on the same server.
    connect(&server_a, EncryptionLevel::Required).await;
}

fn decimal_units(s: &str, scale: u8) -> i128 {
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (i, f) = s.split_once('.').unwrap_or((s, ""));
    let mut f = f.to_string();
    assert!(f.len() <= scale as usize);
    while f.len() < scale as usize {
        f.push('0');
    }
    let v: i128 = format!("{i}{f}").parse().expect("decimal");
    if neg {
        -v
    } else {
        v
    }
}

fn naive(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").expect("fixture datetime")
}

fn money(v: &Value) -> f64 {
    match v {
        Value::String(s) => s.parse().expect("money"),
        other => other.as_f64().expect("money"),
    }
}

/// Compares one value read by tiberius with the fixture value, by declared type.
fn check_value(row: &Row, ci: usize, ty: &str, exp: &Value) {
    let what = format!("column {ci} ({ty}), expected {exp}");
    macro_rules! get {
        ($t:ty) => {
            row.try_get::<$t, _>(ci)
                .unwrap_or_else(|e| panic!("{what}: {e}"))
        };
    }
    if exp.is_null() {
        let is_null = match ty {
            "int" => get!(i32).is_none(),
            "bigint" => get!(i64).is_none(),
            "smallint" => get!(i16).is_none(),
            "tinyint" => get!(u8).is_none(),
            "bit" => get!(bool).is_none(),
            "float" | "money" => get!(f64).is_none(),
            "real" => get!(f32).is_none(),
            t if t.starts_with("decimal") || t.starts_with("numeric") => {
                get!(tiberius::numeric::Numeric).is_none()
            }
            t if t.contains("char") => get!(&str).is_none(),
            "datetime" | "datetime2" | "datetime2(3)" => get!(NaiveDateTime).is_none(),
            "datetimeoffset" => get!(DateTime<FixedOffset>).is_none(),
            "date" => get!(NaiveDate).is_none(),
            t if t.starts_with("varbinary") => get!(&[u8]).is_none(),
            "uniqueidentifier" => get!(tiberius::Uuid).is_none(),
            other => panic!("untested type {other}"),
        };
        assert!(is_null, "{what}: expected NULL");
        return;
    }
    match ty {
        "int" => assert_eq!(get!(i32), Some(exp.as_i64().expect("int") as i32), "{what}"),
        "bigint" => assert_eq!(get!(i64), exp.as_i64(), "{what}"),
        "smallint" => assert_eq!(get!(i16), Some(exp.as_i64().expect("int") as i16), "{what}"),
        "tinyint" => assert_eq!(get!(u8), Some(exp.as_u64().expect("int") as u8), "{what}"),
        "bit" => assert_eq!(get!(bool), exp.as_bool(), "{what}"),
        "float" => assert_eq!(get!(f64), exp.as_f64(), "{what}"),
        "real" => assert_eq!(get!(f32), exp.as_f64().map(|f| f as f32), "{what}"),
        "money" => {
            let got = get!(f64).expect("money");
            let want = money(exp);
            assert!(
                (got - want).abs() <= want.abs() * 1e-15 + 1e-4,
                "{what}: got {got}"
            );
        }
        "decimal(18,4)" | "numeric(38,10)" => {
            let scale = if ty == "decimal(18,4)" { 4 } else { 10 };
            let n = get!(tiberius::numeric::Numeric).expect("numeric");
            assert_eq!(n.scale(), scale, "{what}");
            assert_eq!(
                n.value(),
                decimal_units(exp.as_str().expect("string"), scale),
                "{what}"
            );
        }
        "nchar(6)" => {
            let want = format!("{:<6}", exp.as_str().expect("string"));
            assert_eq!(get!(&str), Some(want.as_str()), "{what}");
        }
        t if t.contains("char") => assert_eq!(get!(&str), exp.as_str(), "{what}"),
        "datetime" => {
            let got = get!(NaiveDateTime).expect("datetime");
            let diff = (got - naive(exp.as_str().expect("string")))
                .num_microseconds()
                .expect("small");
            assert!(
                diff.abs() <= 1667,
                "{what}: got {got} (datetime is 1/300 s)"
            );
        }
        "datetime2" => assert_eq!(
            get!(NaiveDateTime),
            Some(naive(exp.as_str().expect("string"))),
            "{what}"
        ),
        "datetime2(3)" => {
            let got = get!(NaiveDateTime).expect("datetime2");
            assert_eq!(got, naive(exp.as_str().expect("string")), "{what}");
        }
        "datetimeoffset" => {
            let want =
                DateTime::parse_from_rfc3339(exp.as_str().expect("string")).expect("rfc3339");
            let got = get!(DateTime<FixedOffset>).expect("dto");
            assert_eq!(got, want, "{what}");
            assert_eq!(got.offset(), want.offset(), "{what}");
            assert_eq!(got.naive_local(), want.naive_local(), "{what}");
        }
        "date" => assert_eq!(
            get!(NaiveDate),
            Some(
                NaiveDate::parse_from_str(exp.as_str().expect("string"), "%Y-%m-%d").expect("date")
            ),
            "{what}"
        ),
        t if t.starts_with("varbinary") => {
            let hex = exp.as_str().expect("string").trim_start_matches("0x");
            let want: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                .collect();
            assert_eq!(get!(&[u8]), Some(want.as_slice()), "{what}");
        }
        "uniqueidentifier" => {
            let want = tiberius::Uuid::parse_str(exp.as_str().expect("string")).expect("uuid");
            assert_eq!(get!(tiberius::Uuid), Some(want), "{what}");
        }
        other => panic!("untested type {other}"),
    }
}

#[tokio::test]
async fn every_column_type_round_trips() {
    let server = server(Encryption::NotSupported).await;
    let mut client = connect(&server, EncryptionLevel::NotSupported).await;
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures_dir().join("all_types.json")).expect("read"),
    )
    .expect("json");
    let set = &fixture["answers"][0]["result_sets"][0];
    let columns = set["columns"].as_array().expect("columns");
    let expected_rows = set["rows"].as_array().expect("rows");

    for path in ["batch", "rpc"] {
        let rows = if path == "batch" {
            rows(&mut client, "select *\n from ALL_TYPES")
                .await
                .expect("batch")
        } else {
            client
                .query("SELECT * FROM all_types", &[])
                .await
                .expect("rpc")
                .into_first_result()
                .await
                .expect("rows")
        };
        assert_eq!(rows.len(), expected_rows.len());
        let names: Vec<&str> = rows[0].columns().iter().map(|c| c.name()).collect();
        let want_names: Vec<&str> = columns
            .iter()
            .map(|c| c["name"].as_str().expect("name"))
            .collect();
        assert_eq!(names, want_names);
        for (row, exp) in rows.iter().zip(expected_rows) {
            for (ci, col) in columns.iter().enumerate() {
                let ty = col["type"].as_str().expect("type");
                check_value(row, ci, ty, &exp[ci]);
            }
        }
    }
    // Column types as tiberius sees them: nullable variants for nullable columns
    // (tiberius folds INTN/FLTN into Int4/Float8, so check the ones it keeps apart).
    let stream = client
        .simple_query("SELECT * FROM all_types")
        .await
        .expect("query");
    let rows = stream.into_first_result().await.expect("rows");
    let types: Vec<tiberius::ColumnType> =
        rows[0].columns().iter().map(|c| c.column_type()).collect();
    use tiberius::ColumnType as T;
    assert_eq!(types[4], T::Bitn);
    assert_eq!(types[27], T::Bit);
    assert_eq!(types[14], T::Datetimen);
    assert_eq!(types[31], T::Datetime);
    assert_eq!(types[7], T::Decimaln);
    assert_eq!(types[8], T::Numericn);
    assert_eq!(types[10], T::NVarchar);
    assert_eq!(types[13], T::NChar);
    assert_eq!(types[11], T::BigVarChar);
    assert_eq!(types[19], T::BigVarBin);
    assert_eq!(types[21], T::Guid);
    assert_eq!(types[17], T::DatetimeOffsetn);
    assert_eq!(types[15], T::Datetime2);
    assert_eq!(types[18], T::Daten);
}

#[tokio::test]
async fn large_results_span_many_packets() {
    let server = server(Encryption::Off).await;
    let big: String = "SELECT 'x' /* statement text */ ".repeat(320); // ~10 KB
    assert!(big.len() >= 10_000);
    let rows: Vec<Value> = (0..600)
        .map(|i| json!([i, format!("{i}:{big}"), format!("session {i}")]))
        .collect();
    server
        .add_fixture(
            "big",
            json!({"answers": [{"result_sets": [
                {"columns": [{"name": "n", "type": "int", "nullable": false},
                             {"name": "text", "type": "nvarchar(max)"},
                             {"name": "label", "type": "nvarchar(64)"}],
                 "rows": rows},
                {"columns": [{"name": "total", "type": "bigint"}], "rows": [[600]]}
            ]}]}),
        )
        .expect("fixture");
    for level in [EncryptionLevel::NotSupported, EncryptionLevel::Required] {
        let mut client = connect(&server, level).await;
        let results = client
            .simple_query("-- sqlvigil:big\nSELECT ...")
            .await
            .expect("query")
            .into_results()
            .await
            .expect("results");
        assert_eq!(results.len(), 2);
        assert_eq!(results[0].len(), 600);
        for (i, row) in results[0].iter().enumerate() {
            assert_eq!(row.get::<i32, _>(0), Some(i as i32));
            assert_eq!(row.get::<&str, _>(1), Some(format!("{i}:{big}").as_str()));
            assert_eq!(row.get::<&str, _>(2), Some(format!("session {i}").as_str()));
        }
        assert_eq!(results[1][0].get::<i64, _>(0), Some(600));
    }
}

#[tokio::test]
async fn login_and_query_errors_carry_sql_server_codes() {
    let server = server(Encryption::Off).await;
    let err = connect_with(
        &server,
        config(
            &server,
            EncryptionLevel::Required,
            server.ca_path(),
            "wrong",
        ),
    )
    .await
    .expect_err("wrong password must fail");
    let (code, message) = server_error(&err);
    assert_eq!(code, 18456);
    assert_eq!(message, "Login failed for user 'sqlvigil'.");
    let failed = &server.logins()[0];
    assert!(!failed.succeeded);

    server.set_fail_logins(true);
    let err = connect_with(
        &server,
        config(&server, EncryptionLevel::Off, server.ca_path(), PASSWORD),
    )
    .await
    .expect_err("fail_logins");
    assert_eq!(server_error(&err).0, 18456);
    server.set_fail_logins(false);
    assert_eq!(server.stats().logins_failed, 2);

    let mut client = connect(&server, EncryptionLevel::Off).await;
    server.deny(
        "sessions",
        300,
        "VIEW SERVER STATE permission was denied on object 'server', database 'master'.",
    );
    let err = rows(&mut client, "-- sqlvigil:sessions")
        .await
        .expect_err("denied");
    let (code, message) = server_error(&err);
    assert_eq!(code, 300);
    assert!(message.starts_with("VIEW SERVER STATE permission was denied"));
    if let tiberius::error::Error::Server(t) = &err {
        assert_eq!(t.class(), 14);
    }
    server.clear_faults("sessions");
    assert_eq!(sessions_snapshot(&mut client).await, expected_sessions());

    let err = rows(&mut client, "SELECT * FROM sys.no_such_view")
        .await
        .expect_err("unmatched");
    let (code, message) = server_error(&err);
    assert_eq!(code, 208);
    assert!(
        message.contains("SELECT * FROM sys.no_such_view"),
        "{message}"
    );
    let err = client
        .query("SELECT @P1 -- sqlvigil:missing", &[&1i32])
        .await
        .expect_err("unknown marker");
    assert_eq!(server_error(&err).0, 208);
    // The connection is still usable after errors.
    assert_eq!(sessions_snapshot(&mut client).await, expected_sessions());
    assert_eq!(server.stats().unmatched_queries, 2);
}

#[tokio::test]
async fn a_value_that_does_not_fit_is_a_clear_server_error() {
    let server = server(Encryption::NotSupported).await;
    server
        .add_fixture(
            "bad",
            json!({"columns": [{"name": "ok", "type": "int"}, {"name": "small", "type": "tinyint"}],
                   "rows": [[1, 2], [3, 256]]}),
        )
        .expect("structure is valid");
    let mut client = connect(&server, EncryptionLevel::NotSupported).await;
    let err = rows(&mut client, "-- sqlvigil:bad")
        .await
        .expect_err("bad value");
    let (code, message) = server_error(&err);
    assert_eq!(code, 50000);
    assert!(
        message.contains("'bad'") && message.contains("row 1") && message.contains("'small'"),
        "{message}"
    );
    // Structural errors are refused at add time.
    let e = server
        .add_fixture(
            "worse",
            json!({"columns": [{"name": "g", "type": "geography"}]}),
        )
        .expect_err("unknown type");
    assert!(e.to_string().contains("geography"), "{e}");
}

#[tokio::test]
async fn answer_sequences_advance_per_server_and_stick_at_the_last() {
    let server = server(Encryption::NotSupported).await;
    server
        .add_fixture(
            "counter",
            json!({"answers": [
                {"columns": [{"name": "v", "type": "bigint"}], "rows": [[100]]},
                {"columns": [{"name": "v", "type": "bigint"}], "rows": [[5]]}
            ]}),
        )
        .expect("fixture");
    let mut a = connect(&server, EncryptionLevel::NotSupported).await;
    let mut b = connect(&server, EncryptionLevel::NotSupported).await;
    let value = |rows: Vec<Row>| rows[0].get::<i64, _>(0);
    assert_eq!(
        value(rows(&mut a, "-- sqlvigil:counter").await.expect("1")),
        Some(100)
    );
    assert_eq!(
        value(rows(&mut b, "-- sqlvigil:counter").await.expect("2")),
        Some(5)
    );
    assert_eq!(
        value(rows(&mut a, "-- sqlvigil:counter").await.expect("3")),
        Some(5)
    );
    let idx: Vec<Option<usize>> = server.queries().iter().map(|q| q.answer_index).collect();
    assert_eq!(idx, vec![Some(0), Some(1), Some(1)]);

    // counters.json from the fixtures directory: 1000, 10, then an error forever.
    let mut got = Vec::new();
    for _ in 0..4 {
        match rows(&mut a, "-- sqlvigil:counters").await {
            Ok(r) => got.push(r[0].get::<i64, _>(0).expect("value")),
            Err(e) => got.push(-(server_error(&e).0 as i64)),
        }
    }
    assert_eq!(got, vec![1000, 10, -300, -300]);
}

#[tokio::test]
async fn a_timed_out_query_whose_client_leaves_is_recorded_as_abandoned() {
    let server = server(Encryption::Off).await;
    server.set_delay("sessions", Duration::from_secs(5));
    let mut client = connect(&server, EncryptionLevel::Required).await;
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(Duration::from_millis(300), async {
        client
            .simple_query("-- sqlvigil:sessions")
            .await?
            .into_first_result()
            .await
    })
    .await;
    assert!(result.is_err(), "the query must time out");
    drop(client);
    let stats = server
        .wait_for_stats(Duration::from_secs(3), |s| s.abandoned_queries == 1)
        .await;
    assert_eq!(stats.abandoned_queries, 1);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the server must notice the disconnect"
    );
    assert_eq!(stats.attentions, 0);
    let stats = server
        .wait_for_stats(Duration::from_secs(3), |s| s.open_connections == 0)
        .await;
    assert_eq!(stats.open_connections, 0);
    // Without the delay the fixture answers again.
    server.set_delay("sessions", Duration::ZERO);
    let mut client = connect(&server, EncryptionLevel::Off).await;
    assert_eq!(sessions_snapshot(&mut client).await, expected_sessions());
}

#[tokio::test]
async fn delayed_queries_run_concurrently_on_separate_connections() {
    let server = server(Encryption::NotSupported).await;
    server.set_delay("sessions", Duration::from_millis(400));
    let mut a = connect(&server, EncryptionLevel::NotSupported).await;
    let mut b = connect(&server, EncryptionLevel::NotSupported).await;
    let started = std::time::Instant::now();
    let (ra, rb) = tokio::join!(sessions_snapshot(&mut a), sessions_snapshot(&mut b));
    assert_eq!(ra, expected_sessions());
    assert_eq!(rb, expected_sessions());
    assert!(
        started.elapsed() < Duration::from_millis(790),
        "the delays must overlap"
    );
    let stats = server.stats();
    assert_eq!(stats.max_concurrent_queries, 2);
    assert_eq!(stats.open_connections, 2);
}

#[tokio::test]
async fn disconnect_after_rows_fails_the_client_and_spares_other_connections() {
    let server = server(Encryption::Off).await;
    let rows_json: Vec<Value> = (0..300).map(|i| json!([i, "y".repeat(100)])).collect();
    server
        .add_fixture(
            "cut",
            json!({"columns": [{"name": "n", "type": "int"}, {"name": "pad", "type": "nvarchar(200)"}],
                   "rows": rows_json, "disconnect_after_rows": 120}),
        )
        .expect("fixture");
    let mut other = connect(&server, EncryptionLevel::Required).await;
    for level in [EncryptionLevel::NotSupported, EncryptionLevel::Required] {
        let mut client = connect(&server, level).await;
        let result =
            tokio::time::timeout(Duration::from_secs(5), rows(&mut client, "-- sqlvigil:cut"))
                .await
                .expect("an error, not a hang");
        assert!(result.is_err(), "a cut result set must be an error");
    }
    // Run-time fault on another fixture.
    server.set_disconnect_after_rows("sessions", 1);
    let mut client = connect(&server, EncryptionLevel::Off).await;
    let result = tokio::time::timeout(
        Duration::from_secs(5),
        rows(&mut client, "-- sqlvigil:sessions"),
    )
    .await
    .expect("no hang");
    assert!(result.is_err());
    server.clear_faults("sessions");
    assert_eq!(sessions_snapshot(&mut other).await, expected_sessions());
}

#[tokio::test]
async fn aad_token_logins() {
    let server = TdsServer::start(TdsConfig {
        aad_tokens: vec!["eyJ0eXAiOiJKV1Qi.test-token".into()],
        fixtures_dir: Some(fixtures_dir()),
        ..TdsConfig::default()
    })
    .await
    .expect("start");
    let mut c = config(
        &server,
        EncryptionLevel::Required,
        server.ca_path(),
        PASSWORD,
    );
    c.authentication(AuthMethod::AADToken("eyJ0eXAiOiJKV1Qi.test-token".into()));
    let mut client = connect_with(&server, c).await.expect("token login");
    assert_eq!(sessions_snapshot(&mut client).await, expected_sessions());
    assert_eq!(server.logins()[0].auth, AuthKind::AadToken);

    let mut c = config(
        &server,
        EncryptionLevel::Required,
        server.ca_path(),
        PASSWORD,
    );
    c.authentication(AuthMethod::AADToken("forged".into()));
    let err = connect_with(&server, c).await.expect_err("bad token");
    assert_eq!(server_error(&err).0, 18456);
}
