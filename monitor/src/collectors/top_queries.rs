//! `top_queries.sql` (the plan cache) and `query_store.sql` (Query Store, where it is on):
//! cumulative use per query and plan, diffed into what each query used in the interval
//! (the same [`TopQuery`] the receiver's `db.server.top_query` events give). A snapshot
//! keeps the heaviest by CPU, duration, logical reads and executions, highest CPU first.

use super::counters::{deltas, sample, sub, Cumulative, Sample};
use super::sessions::truncate;
use chrono::{DateTime, Utc};
use sqlvigil_model::TopQuery;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use tiberius::Row;

pub(crate) const SQL: &str = include_str!("top_queries.sql");
pub(crate) const QUERY_STORE_SQL: &str = include_str!("query_store.sql");

/// How many queries a snapshot keeps by each measure (CPU, duration, reads, executions).
const KEEP_PER_MEASURE: usize = 20;

#[derive(Debug, Clone)]
pub(crate) struct QueryUse {
    /// executions, cpu, elapsed, logical reads, logical writes, physical reads, rows, grant KB.
    counters: [i64; 8],
    /// When its counting began: the plan's compilation (plan cache) or its first
    /// execution in the statistics interval (Query Store).
    since: Option<DateTime<Utc>>,
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

    /// A row first seen now counts only if its counting began within the interval (a
    /// plan compiled earlier that was outside the previous top 200 has unknown use).
    fn appeared(&self, since: DateTime<Utc>) -> Option<Self> {
        self.since.filter(|c| *c >= since).map(|_| self.clone())
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
            since: c.time("counted_since"),
            database: c.text("database_name").unwrap_or_default(),
            statement: truncate(statement.trim(), statement_chars),
            hash: hash.clone(),
            plan_hash: plan_hash.clone(),
        };
        // Query Store keeps a row per statistics interval too.
        let interval = c
            .i64("interval_id")
            .map(|i| format!("/{i}"))
            .unwrap_or_default();
        Some((format!("{hash}/{plan_hash}{interval}"), q))
    })
}

pub(crate) fn diff(
    instance: &str,
    earlier: &Sample<QueryUse>,
    now: &Sample<QueryUse>,
) -> (Vec<TopQuery>, bool) {
    let (d, reset) = deltas(earlier, now);
    // One entry per query and plan (Query Store's intervals added up).
    let mut per_plan: HashMap<(String, String), QueryUse> = HashMap::new();
    for (_, q) in d {
        match per_plan.entry((q.hash.clone(), q.plan_hash.clone())) {
            Entry::Occupied(mut e) => {
                let sum = e.get_mut();
                for (s, v) in sum.counters.iter_mut().zip(q.counters) {
                    *s += v;
                }
            }
            Entry::Vacant(e) => {
                e.insert(q);
            }
        }
    }
    let all: Vec<TopQuery> = per_plan
        .into_values()
        .filter(|q| q.counters[0] > 0)
        .map(|q| {
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
    (heaviest(all), reset)
}

/// The union of the heaviest [`KEEP_PER_MEASURE`] by each measure, highest CPU first.
fn heaviest(mut all: Vec<TopQuery>) -> Vec<TopQuery> {
    let measures: [fn(&TopQuery) -> f64; 4] = [
        |q| q.total_cpu_ms,
        |q| q.total_elapsed_ms,
        |q| q.total_logical_reads,
        |q| q.executions,
    ];
    let mut keep = vec![false; all.len()];
    let mut order: Vec<usize> = (0..all.len()).collect();
    for measure in measures {
        order.sort_by(|&a, &b| measure(&all[b]).total_cmp(&measure(&all[a])));
        for &i in order.iter().take(KEEP_PER_MEASURE) {
            keep[i] = true;
        }
    }
    let mut kept = keep.into_iter();
    all.retain(|_| kept.next().unwrap_or(false));
    all.sort_by(|a, b| {
        b.total_cpu_ms
            .total_cmp(&a.total_cpu_ms)
            .then_with(|| a.query_hash.cmp(&b.query_hash))
    });
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_heavy_by_one_measure_only_is_kept() {
        let q = |i: usize, weight: f64, reads: f64| TopQuery {
            query_hash: format!("0x{i:02}"),
            total_cpu_ms: weight,
            total_elapsed_ms: weight,
            executions: weight,
            total_logical_reads: reads,
            ..TopQuery::default()
        };
        // 30 queries ranked alike by every measure, then one that reads a lot and does
        // little else.
        let mut all: Vec<TopQuery> = (0..30)
            .map(|i| q(i, 1000.0 - i as f64, 1000.0 - i as f64))
            .collect();
        all.push(q(99, 0.5, 1e9));
        let kept = heaviest(all);
        assert!(
            kept.iter().any(|k| k.query_hash == "0x99"),
            "the reader stays"
        );
        assert_eq!(
            kept.len(),
            KEEP_PER_MEASURE + 1,
            "the top 20 and the reader"
        );
        assert_eq!(kept[0].query_hash, "0x00", "highest CPU first");
        assert!(kept
            .windows(2)
            .all(|w| w[0].total_cpu_ms >= w[1].total_cpu_ms));
    }
}
