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

/// One query (by `query_hash`) and its resource use within the range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopQuery {
    pub instance: String,
    pub query_hash: String,
    pub executions: f64,
    pub total_cpu_ms: f64,
    pub total_elapsed_ms: f64,
    pub total_logical_reads: f64,
    /// Query text when a document carried it, else empty.
    pub statement: String,
    pub last_seen: DateTime<Utc>,
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
}
