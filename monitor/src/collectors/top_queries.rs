//! `top_queries.sql`: cumulative use of cached plans per query, diffed into what each
//! query used in the interval (the same [`TopQuery`] the receiver's `db.server.top_query`
//! events give), highest CPU first.

use super::counters::{deltas, sample, sub, Cumulative, Sample};
use super::sessions::truncate;
use chrono::{DateTime, Utc};
use sqlvigil_model::TopQuery;
use tiberius::Row;

pub(crate) const SQL: &str = include_str!("top_queries.sql");

/// How many queries a snapshot keeps.
const KEEP: usize = 50;

#[derive(Debug, Clone)]
pub(crate) struct QueryUse {
    /// executions, cpu, elapsed, logical reads, logical writes, physical reads, rows, grant KB.
    counters: [i64; 8],
    created: Option<DateTime<Utc>>,
    hash: String,
    plan_hash: String,
    database: String,
    statement: String,
}

impl Cumulative for QueryUse {
    fn minus(&self, earlier: &Self) -> Option<Self> {
        Some(QueryUse {
            counters: sub(self.counters, earlier.counters)?,
            ..self.clone()
        })
    }

    /// A plan first seen now counts only if it was compiled within the interval (one
    /// compiled earlier that was outside the previous top 200 has unknown use).
    fn appeared(&self, since: DateTime<Utc>) -> Option<Self> {
        self.created.filter(|c| *c >= since).map(|_| self.clone())
    }
}

pub(crate) fn parse(
    rows: &[Row],
    taken: DateTime<Utc>,
    statement_chars: usize,
) -> Sample<QueryUse> {
    sample(rows, taken, |c| {
        let hash = c.text("query_hash")?;
        let plan_hash = c.text("query_plan_hash").unwrap_or_default();
        let counters = [
            "execution_count",
            "total_cpu_ms",
            "total_elapsed_ms",
            "total_logical_reads",
            "total_logical_writes",
            "total_physical_reads",
            "total_rows",
            "total_grant_kb",
        ]
        .map(|name| c.count(name));
        let statement = c.text("statement_text").unwrap_or_default();
        let q = QueryUse {
            counters,
            created: c.time("creation_time"),
            database: c.text("database_name").unwrap_or_default(),
            statement: truncate(statement.trim(), statement_chars),
            hash: hash.clone(),
            plan_hash: plan_hash.clone(),
        };
        Some((format!("{hash}/{plan_hash}"), q))
    })
}

pub(crate) fn diff(
    instance: &str,
    earlier: &Sample<QueryUse>,
    now: &Sample<QueryUse>,
) -> (Vec<TopQuery>, bool) {
    let (d, reset) = deltas(earlier, now);
    let mut out: Vec<TopQuery> = d
        .into_iter()
        .filter(|(_, q)| q.counters[0] > 0)
        .map(|(_, q)| {
            let [executions, cpu, elapsed, reads, writes, physical, rows, grant] =
                q.counters.map(|v| v as f64);
            TopQuery {
                instance: instance.to_string(),
                query_hash: q.hash,
                executions,
                total_cpu_ms: cpu,
                total_elapsed_ms: elapsed,
                total_logical_reads: reads,
                statement: q.statement,
                last_seen: now.taken,
                database: q.database,
                query_plan_hash: q.plan_hash,
                total_logical_writes: writes,
                total_physical_reads: physical,
                total_rows: rows,
                total_grant_kb: grant,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.total_cpu_ms
            .total_cmp(&a.total_cpu_ms)
            .then(a.query_hash.cmp(&b.query_hash))
    });
    out.truncate(KEEP);
    (out, reset)
}
