//! Rows of live DMV snapshots (seed 002's `live_sessions` and friends), filled by the
//! live monitor and served by the API.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A row of `sys.dm_exec_sessions` joined with `sys.dm_exec_requests`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRow {
    pub collection_time: DateTime<Utc>,
    pub session_id: i32,
    pub status: String,
    pub wait_type: Option<String>,
    pub cpu_time_ms: i64,
    pub logical_reads: i64,
    pub blocking_session_id: Option<i32>,
    pub database: Option<String>,
    pub statement: Option<String>,
}

/// A row of `sys.dm_os_wait_stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitRow {
    pub collection_time: DateTime<Utc>,
    pub wait_type: String,
    pub wait_category: String,
    pub waiting_tasks: i64,
    pub wait_time_ms: i64,
    pub signal_wait_time_ms: i64,
}

/// A row of the top-queries view over `sys.dm_exec_query_stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopQueryRow {
    pub query_hash: String,
    pub executions: i64,
    pub total_cpu_ms: i64,
    pub total_duration_ms: i64,
    pub total_logical_reads: i64,
    pub statement: String,
}
