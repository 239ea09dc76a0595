//! Summaries over a time range that the bridge builds from Elastic documents (seed 002's
//! "wait stats, query store, IO, blocking"), whatever layout the documents were written in.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Time waited on one wait type by one instance during the range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitSummary {
    pub instance: String,
    pub wait_type: String,
    /// `wait.category` when the documents carry it, else empty.
    pub wait_category: String,
    /// Milliseconds waited within the range (difference of the cumulative counter).
    pub wait_time_ms: f64,
    pub last_seen: DateTime<Utc>,
}

/// One query (by `query_hash`) and its resource use: one `db.server.top_query` event
/// (the use since the receiver's previous scrape: its `total_*` attributes are deltas)
/// or the sum of those within a range.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TopQuery {
    pub instance: String,
    pub query_hash: String,
    pub executions: f64,
    pub total_cpu_ms: f64,
    pub total_elapsed_ms: f64,
    pub total_logical_reads: f64,
    /// Query text when a document carried it, else empty (obfuscated by the receiver).
    pub statement: String,
    pub last_seen: DateTime<Utc>,
    /// `db.namespace`, when known.
    #[serde(default)]
    pub database: String,
    #[serde(default)]
    pub query_plan_hash: String,
    #[serde(default)]
    pub total_logical_writes: f64,
    #[serde(default)]
    pub total_physical_reads: f64,
    #[serde(default)]
    pub total_rows: f64,
    /// Memory granted, KB.
    #[serde(default)]
    pub total_grant_kb: f64,
}

impl TopQuery {
    /// Fold another observation of the same query in (deltas add up).
    pub fn add(&mut self, other: &TopQuery) {
        self.executions += other.executions;
        self.total_cpu_ms += other.total_cpu_ms;
        self.total_elapsed_ms += other.total_elapsed_ms;
        self.total_logical_reads += other.total_logical_reads;
        self.total_logical_writes += other.total_logical_writes;
        self.total_physical_reads += other.total_physical_reads;
        self.total_rows += other.total_rows;
        self.total_grant_kb += other.total_grant_kb;
        for (mine, theirs) in [
            (&mut self.statement, &other.statement),
            (&mut self.database, &other.database),
            (&mut self.query_plan_hash, &other.query_plan_hash),
        ] {
            if mine.is_empty() {
                mine.clone_from(theirs);
            }
        }
        self.last_seen = self.last_seen.max(other.last_seen);
    }

    /// The queries of `observations` summed per (instance, query hash), highest CPU
    /// first, at most `limit`.
    pub fn top(observations: impl IntoIterator<Item = TopQuery>, limit: usize) -> Vec<TopQuery> {
        let mut merged: std::collections::BTreeMap<(String, String), TopQuery> = Default::default();
        for q in observations {
            let key = (q.instance.clone(), q.query_hash.clone());
            match merged.get_mut(&key) {
                Some(e) => e.add(&q),
                None => {
                    merged.insert(key, q);
                }
            }
        }
        let mut rows: Vec<TopQuery> = merged.into_values().collect();
        rows.sort_by(|a, b| b.total_cpu_ms.total_cmp(&a.total_cpu_ms));
        rows.truncate(limit);
        rows
    }
}

/// I/O of one database (and file, when known) within the range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IoSummary {
    pub instance: String,
    pub database: String,
    /// Logical file name, empty when the documents are per database.
    pub file: String,
    pub read_bytes: f64,
    pub write_bytes: f64,
    /// Milliseconds of I/O stall (reads + writes) within the range.
    pub stall_ms: f64,
    pub last_seen: DateTime<Utc>,
}

/// A blocked session seen in a document: who blocks it, on what, for how long.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockingEvent {
    pub time: DateTime<Utc>,
    pub instance: String,
    pub session_id: Option<i64>,
    pub blocking_session_id: i64,
    pub wait_type: String,
    pub wait_time_ms: f64,
    pub database: String,
    pub query_hash: String,
    pub statement: String,
    /// What the session waits on (`KEY: 5:72057594043236352 (8194443284a0)`), when known.
    #[serde(default)]
    pub wait_resource: String,
}
