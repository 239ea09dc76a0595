//! The receiver's events over a direct connection, as its golden files show them:
//! `db.server.query_sample` log records (one per active request, `body: {}`, the event
//! name in `event_name`, times in seconds) and `db.server.top_query` records (each
//! query's use since the previous collection, every [`TOP_QUERY_EVERY`] scrapes).
//! Windows perf counters have no events.

use crate::instance::{Effects, Profile};
use crate::otlp::{kv_int, kv_str};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use rand::rngs::StdRng;
use rand::Rng;
use sqlvigil_model::catalogue::{QUERY_SAMPLE_EVENT, TOP_QUERY_EVENT};

/// Scrapes between two top-query collections (the receiver's default is 60 s against
/// a 10 s scrape).
pub(crate) const TOP_QUERY_EVERY: u64 = 6;
/// The session that holds the locks in a blocking chain (idle, transaction open).
pub(crate) const HEAD_BLOCKER: i64 = 52;

fn kv_f(key: &str, v: f64) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::DoubleValue(v)),
        }),
    }
}

fn event(name: &str, t_ns: i64, attributes: Vec<KeyValue>) -> LogRecord {
    let time = t_ns.max(0) as u64;
    LogRecord {
        time_unix_nano: time,
        observed_time_unix_nano: time,
        event_name: name.to_string(),
        // The receiver sends an empty body: everything is in the attributes.
        body: Some(AnyValue { value: None }),
        attributes,
        ..Default::default()
    }
}

/// The queries each instance runs: (hash, text, CPU share, reads per execution).
const QUERIES: [(&str, &str, f64, f64); 3] = [
    (
        "0x8E2C41D6A9B07F13",
        "SELECT o.id, o.total FROM dbo.orders o WHERE o.customer_id = @P1",
        0.55,
        40.0,
    ),
    (
        "0x1F0A77C3D2E94B58",
        "UPDATE dbo.inventory SET qty = qty - @P1 WHERE sku = @P2",
        0.3,
        12.0,
    ),
    (
        "0x5B9D03E6F1A2C847",
        "SELECT COUNT(*) FROM dbo.order_lines WHERE created_at >= @P1",
        0.15,
        9_000.0,
    ),
];

/// A query sample of a session: `blocker` 0 when it is not blocked.
fn sample(
    p: &Profile,
    t_ns: i64,
    session: i64,
    blocker: i64,
    wait_s: f64,
    status: &str,
) -> LogRecord {
    let db = p.databases.last().map_or("master", |d| d.name.as_str());
    let (hash, text, _, _) = QUERIES[(session as usize) % QUERIES.len()];
    let waiting = blocker != 0;
    event(
        QUERY_SAMPLE_EVENT,
        t_ns,
        vec![
            kv_str("client.address", "app-01"),
            kv_int("client.port", 50_000 + session),
            kv_str("db.namespace", db),
            kv_str("db.query.text", text),
            kv_str("db.system.name", "microsoft.sql_server"),
            kv_int("sqlserver.blocking_session_id", blocker),
            kv_str("sqlserver.client.app.name", "orders-api"),
            kv_str(
                "sqlserver.command",
                if waiting {
                    "UPDATE"
                } else {
                    "AWAITING COMMAND"
                },
            ),
            kv_f("sqlserver.cpu_time", if waiting { 0.002 } else { 0.0 }),
            kv_int("sqlserver.logical_reads", 38),
            kv_int("sqlserver.open_transaction_count", i64::from(!waiting)),
            kv_str("sqlserver.query_hash", hash),
            kv_str("sqlserver.request_status", status),
            kv_int("sqlserver.session_id", session),
            kv_str(
                "sqlserver.session_status",
                if waiting { "running" } else { "sleeping" },
            ),
            kv_f("sqlserver.total_elapsed_time", wait_s),
            kv_int("sqlserver.transaction_id", 11_000 + session),
            kv_str(
                "sqlserver.wait_resource",
                if waiting {
                    "KEY: 5:72057594043359232 (ce52f1d31b65)"
                } else {
                    ""
                },
            ),
            kv_f("sqlserver.wait_time", if waiting { wait_s } else { 0.0 }),
            kv_str("sqlserver.wait_type", if waiting { "LCK_M_X" } else { "" }),
            kv_str("user.name", "app_orders"),
        ],
    )
}

/// Query samples: in a blocking chain, the idle head blocker and every blocked session
/// (a third blocked by the head, the rest behind the first of those); else none.
pub(crate) fn query_samples(p: &Profile, fx: Effects, blocked: i64, t_ns: i64) -> Vec<LogRecord> {
    let Some(elapsed) = fx.blocking else {
        return Vec::new();
    };
    let mut out = vec![sample(p, t_ns, HEAD_BLOCKER, 0, 0.0, "sleeping")];
    let direct = (blocked / 3).max(1);
    for i in 0..blocked {
        let session = 60 + i;
        let blocker = if i < direct { HEAD_BLOCKER } else { 60 };
        let wait = (elapsed - 3.0 * i as f64).max(1.0);
        out.push(sample(p, t_ns, session, blocker, wait, "suspended"));
    }
    out
}

/// Top queries every [`TOP_QUERY_EVERY`] scrapes: each query's use over the interval
/// (deltas, times in seconds). A CPU storm is the first query going wild.
pub(crate) fn top_queries(
    p: &Profile,
    fx: Effects,
    cpu_percent: f64,
    tick: u64,
    interval_s: f64,
    t_ns: i64,
    rng: &mut StdRng,
) -> Vec<LogRecord> {
    if !tick.is_multiple_of(TOP_QUERY_EVERY) || tick == 0 {
        return Vec::new();
    }
    let db = p.databases.last().map_or("master", |d| d.name.as_str());
    let span_s = interval_s * TOP_QUERY_EVERY as f64;
    // CPU seconds the instance spent (4 cores) over the collection interval.
    let cpu_s = cpu_percent / 100.0 * 4.0 * span_s;
    QUERIES
        .iter()
        .enumerate()
        .map(|(i, (hash, text, share, reads))| {
            let share = match (i, fx.cpu_storm) {
                (0, Some(_)) => 0.9,
                (_, Some(_)) => 0.05,
                _ => *share,
            };
            let worker_s = cpu_s * share * (0.9 + 0.2 * rng.random::<f64>());
            let per_exec_s = if fx.cpu_storm.is_some() && i == 0 {
                0.8
            } else {
                0.004
            };
            let execs = (worker_s / per_exec_s).round().max(1.0);
            event(
                TOP_QUERY_EVENT,
                t_ns,
                vec![
                    kv_f(
                        "sqlserver.total_worker_time",
                        (worker_s * 1e6).round() / 1e6,
                    ),
                    kv_str("db.query.text", text),
                    kv_str("db.namespace", db),
                    kv_int("sqlserver.execution_count", execs as i64),
                    kv_int("sqlserver.total_logical_reads", (execs * reads) as i64),
                    kv_int("sqlserver.total_logical_writes", (execs * 0.2) as i64),
                    kv_int(
                        "sqlserver.total_physical_reads",
                        (execs * reads * 0.01) as i64,
                    ),
                    kv_str("sqlserver.query_hash", hash),
                    kv_str("sqlserver.query_plan_hash", &format!("{hash}00")),
                    kv_int("sqlserver.total_rows", execs as i64 * 3),
                    kv_f(
                        "sqlserver.total_elapsed_time",
                        (worker_s * 1.3 * 1e6).round() / 1e6,
                    ),
                    kv_int("sqlserver.total_grant_kb", 0),
                    kv_str("db.system.name", "microsoft.sql_server"),
                ],
            )
        })
        .collect()
}
