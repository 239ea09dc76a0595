//! Live DMV snapshots (seed 002's `live_sessions` and friends): what the live monitor
//! reads from an instance over a direct connection, and what the API, the analytics
//! prompt and the root-cause answer show of "the moment itself".
//!
//! One [`LiveSnapshot`] per instance and collection: the rows of each collector, the
//! blocking chains built from its sessions (the same [`BlockingChain`] the receiver's
//! query-sample events build), and the collectors that failed, each with the SQL Server
//! error number and message. Cumulative DMVs (waits, query stats, file IO) are served as
//! deltas over [`LiveSnapshot::interval_ms`], like sp_BlitzFirst.

use crate::{BlockingChain, TopQuery};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A collector of the live monitor: one DMV query (its `.sql` file) and its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CollectorKind {
    Sessions,
    Waits,
    TopQueries,
    QueryStore,
    Tempdb,
    LogSpace,
    MemoryGrants,
    FileIo,
}

impl CollectorKind {
    pub const ALL: [CollectorKind; 8] = [
        CollectorKind::Sessions,
        CollectorKind::Waits,
        CollectorKind::TopQueries,
        CollectorKind::QueryStore,
        CollectorKind::Tempdb,
        CollectorKind::LogSpace,
        CollectorKind::MemoryGrants,
        CollectorKind::FileIo,
    ];

    /// The name used in config, the API path and `/metrics` (`top-queries`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            CollectorKind::Sessions => "sessions",
            CollectorKind::Waits => "waits",
            CollectorKind::TopQueries => "top-queries",
            CollectorKind::QueryStore => "query-store",
            CollectorKind::Tempdb => "tempdb",
            CollectorKind::LogSpace => "log-space",
            CollectorKind::MemoryGrants => "memory-grants",
            CollectorKind::FileIo => "io",
        }
    }

    /// The collector an API path segment names; `blocking` is the sessions collector
    /// (the tree is built from its rows).
    pub fn parse(s: &str) -> Option<CollectorKind> {
        match s {
            "blocking" => Some(CollectorKind::Sessions),
            "file-io" => Some(CollectorKind::FileIo),
            _ => Self::ALL.into_iter().find(|k| k.as_str() == s),
        }
    }
}

impl std::fmt::Display for CollectorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A session (`sys.dm_exec_sessions`) with its request (`sys.dm_exec_requests`) when it
/// is running one: seed 002's `live_sessions` shape and what sp_WhoIsActive shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionRow {
    pub collection_time: DateTime<Utc>,
    pub session_id: i64,
    /// The request's status when running one (`running`, `suspended`, `runnable`), else
    /// the session's (`sleeping`).
    pub status: String,
    pub command: Option<String>,
    pub wait_type: Option<String>,
    pub wait_time_ms: i64,
    pub wait_resource: Option<String>,
    pub cpu_time_ms: i64,
    pub elapsed_ms: i64,
    pub logical_reads: i64,
    pub writes: i64,
    /// `None` or 0 when not blocked.
    pub blocking_session_id: Option<i64>,
    pub database: Option<String>,
    pub login: Option<String>,
    pub host: Option<String>,
    pub program: Option<String>,
    pub open_transactions: i64,
    /// The running statement, or the session's last batch (input buffer) when idle;
    /// truncated to the monitor's `statement_chars`.
    pub statement: Option<String>,
    pub query_hash: Option<String>,
    pub plan_handle: Option<String>,
    /// Tempdb pages the session holds (user + internal objects), KB.
    pub tempdb_kb: i64,
}

impl SessionRow {
    /// The blocking event of a blocked session, as the query-sample path builds it.
    pub fn blocking_event(&self, instance: &str) -> Option<crate::BlockingEvent> {
        let blocker = self
            .blocking_session_id
            .filter(|b| *b != 0 && *b != self.session_id)?;
        Some(crate::BlockingEvent {
            time: self.collection_time,
            instance: instance.to_string(),
            session_id: Some(self.session_id),
            blocking_session_id: blocker,
            wait_type: self.wait_type.clone().unwrap_or_default(),
            wait_time_ms: self.wait_time_ms as f64,
            database: self.database.clone().unwrap_or_default(),
            query_hash: self.query_hash.clone().unwrap_or_default(),
            statement: self.statement.clone().unwrap_or_default(),
            wait_resource: self.wait_resource.clone().unwrap_or_default(),
        })
    }
}

/// One wait type's use between two samples of `sys.dm_os_wait_stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitRow {
    pub wait_type: String,
    /// The same categories the receiver's `wait.category` attribute carries
    /// ([`wait_category`]).
    pub wait_category: String,
    pub waiting_tasks: i64,
    pub wait_time_ms: i64,
    pub signal_wait_time_ms: i64,
}

/// Tempdb use: the version store and the sessions holding most pages.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TempdbUsage {
    pub user_objects_kb: i64,
    pub internal_objects_kb: i64,
    pub version_store_kb: i64,
    pub free_kb: i64,
    /// Sessions by tempdb KB held, most first.
    pub top_sessions: Vec<TempdbSession>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TempdbSession {
    pub session_id: i64,
    pub user_objects_kb: i64,
    pub internal_objects_kb: i64,
}

/// Transaction log space of one database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogSpaceRow {
    pub database: String,
    pub log_size_kb: i64,
    pub log_used_kb: i64,
    pub used_percent: f64,
    /// `sys.databases.log_reuse_wait_desc`: why the log cannot be truncated.
    pub log_reuse_wait: Option<String>,
}

/// Memory grants (`sys.dm_exec_query_memory_grants`, `sys.dm_exec_query_resource_semaphores`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryGrants {
    pub granted: i64,
    pub pending: i64,
    pub granted_kb: i64,
    pub requested_kb_pending: i64,
    /// Longest wait of a pending grant, ms.
    pub longest_pending_wait_ms: i64,
}

/// One database file's IO between two samples of `sys.dm_io_virtual_file_stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileIoRow {
    pub database: String,
    pub file_id: i64,
    pub file_type: String,
    pub physical_name: String,
    pub reads: i64,
    pub writes: i64,
    pub read_bytes: i64,
    pub written_bytes: i64,
    pub read_stall_ms: i64,
    pub write_stall_ms: i64,
    /// Average latency over the interval, ms (0 without IO).
    pub read_latency_ms: f64,
    pub write_latency_ms: f64,
}

/// A collector that failed in this snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectorError {
    pub collector: CollectorKind,
    /// The SQL Server error number (18456 login failed, 297/300 permission, …), when the
    /// server answered with one.
    pub number: Option<u32>,
    pub message: String,
}

/// What the instance said about itself when the monitor connected.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerInfo {
    pub server_name: String,
    /// `ProductVersion` (`16.0.4135.4`).
    pub version: String,
    pub major_version: i64,
    pub edition: String,
    /// `EngineEdition`: 5 Azure SQL Database, 8 Managed Instance, else on-premises.
    pub engine_edition: i64,
    pub start_time: Option<DateTime<Utc>>,
}

impl ServerInfo {
    pub fn is_azure_sql_database(&self) -> bool {
        self.engine_edition == 5
    }
}

/// One collection of an instance's DMVs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LiveSnapshot {
    pub instance: String,
    pub collected_at: DateTime<Utc>,
    /// Why it was taken: `schedule`, `ad-hoc` or `anomaly <id>`.
    pub trigger: String,
    /// The span the deltas (waits, top queries, file IO) cover, ms; 0 when this is the
    /// first sample of the instance and `interval` sampling was not asked for.
    pub interval_ms: i64,
    /// The cumulative counters went down since the previous sample (a restart, or
    /// `DBCC SQLPERF(..., CLEAR)`): deltas count from zero.
    #[serde(default)]
    pub counter_reset: bool,
    pub server: ServerInfo,
    /// Which collectors ran (a single-collector ad-hoc snapshot lists one).
    pub collectors: Vec<CollectorKind>,
    pub sessions: Vec<SessionRow>,
    pub blocking: Vec<BlockingChain>,
    pub waits: Vec<WaitRow>,
    /// From the plan cache (`sys.dm_exec_query_stats`).
    pub top_queries: Vec<TopQuery>,
    /// From Query Store, in the databases that have it on (survives recompiles and
    /// plan-cache evictions).
    #[serde(default)]
    pub query_store: Vec<TopQuery>,
    pub tempdb: Option<TempdbUsage>,
    pub log_space: Vec<LogSpaceRow>,
    pub memory_grants: Option<MemoryGrants>,
    pub file_io: Vec<FileIoRow>,
    pub errors: Vec<CollectorError>,
}

/// The category of a wait type, as SQL Server's Query Store documents them
/// (`sys.query_store_wait_stats`) and the Collector's receiver reports them in
/// `wait.category`.
pub fn wait_category(wait_type: &str) -> &'static str {
    const EXACT: &[(&str, &str)] = &[
        ("SOS_SCHEDULER_YIELD", "CPU"),
        ("THREADPOOL", "Worker Thread"),
        ("RESOURCE_SEMAPHORE_QUERY_COMPILE", "Compilation"),
        ("TRANSACTION_MUTEX", "Transaction"),
        ("LAZYWRITER_SLEEP", "Idle"),
        ("SQLTRACE_BUFFER_FLUSH", "Idle"),
        ("SQLTRACE_INCREMENTAL_FLUSH_SLEEP", "Idle"),
        ("SQLTRACE_WAIT_ENTRIES", "Idle"),
        ("FT_IFTS_SCHEDULER_IDLE_WAIT", "Idle"),
        ("XE_DISPATCHER_WAIT", "Idle"),
        ("REQUEST_FOR_DEADLOCK_SEARCH", "Idle"),
        ("LOGMGR_QUEUE", "Idle"),
        ("ONDEMAND_TASK_QUEUE", "Idle"),
        ("CHECKPOINT_QUEUE", "Idle"),
        ("XE_TIMER_EVENT", "Idle"),
        ("BROKER_RECEIVE_WAITFOR", "User Wait"),
        ("WAITFOR", "User Wait"),
        ("WAIT_FOR_RESULTS", "User Wait"),
        ("LOGMGR", "Tran Log IO"),
        ("LOGBUFFER", "Tran Log IO"),
        ("LOGMGR_RESERVE_APPEND", "Tran Log IO"),
        ("LOGMGR_FLUSH", "Tran Log IO"),
        ("LOGMGR_PMM_LOG", "Tran Log IO"),
        ("CHKPT", "Tran Log IO"),
        ("WRITELOG", "Tran Log IO"),
        ("ASYNC_NETWORK_IO", "Network IO"),
        ("NET_WAITFOR_PACKET", "Network IO"),
        ("PROXY_NETWORK_IO", "Network IO"),
        ("EXTERNAL_SCRIPT_NETWORK_IOF", "Network IO"),
        ("CXPACKET", "Parallelism"),
        ("CXCONSUMER", "Parallelism"),
        ("EXCHANGE", "Parallelism"),
        ("RESOURCE_SEMAPHORE", "Memory"),
        ("CMEMTHREAD", "Memory"),
        ("CMEMPARTITIONED", "Memory"),
        ("EE_PMOLOCK", "Memory"),
        ("MEMORY_ALLOCATION_EXT", "Memory"),
        ("RESERVED_MEMORY_ALLOCATION_EXT", "Memory"),
        ("MEMORY_GRANT_UPDATE", "Memory"),
        ("TRACEWRITE", "Tracing"),
        ("SQLTRACE_LOCK", "Tracing"),
        ("SQLTRACE_FILE_BUFFER", "Tracing"),
        ("SQLTRACE_FILE_WRITE_IO_COMPLETION", "Tracing"),
        ("SQLTRACE_FILE_READ_IO_COMPLETION", "Tracing"),
        ("SQLTRACE_PENDING_BUFFER_WRITERS", "Tracing"),
        ("SQLTRACE_SHUTDOWN", "Tracing"),
        ("QUERY_TRACEOUT", "Tracing"),
        ("TRACE_EVTNOTIFF", "Tracing"),
        ("ASYNC_IO_COMPLETION", "Other Disk IO"),
        ("IO_COMPLETION", "Other Disk IO"),
        ("BACKUPIO", "Other Disk IO"),
        ("WRITE_COMPLETION", "Other Disk IO"),
        ("IO_QUEUE_LIMIT", "Other Disk IO"),
        ("IO_RETRY", "Other Disk IO"),
        ("REPLICA_WRITES", "Replication"),
        ("FCB_REPLICA_WRITE", "Replication"),
        ("FCB_REPLICA_READ", "Replication"),
        ("PWAIT_HADRSIM", "Replication"),
        ("LOG_RATE_GOVERNOR", "Log Rate Governor"),
        ("POOL_LOG_RATE_GOVERNOR", "Log Rate Governor"),
        ("HADR_THROTTLE_LOG_RATE_GOVERNOR", "Log Rate Governor"),
        ("INSTANCE_LOG_RATE_GOVERNOR", "Log Rate Governor"),
        ("MSSEARCH", "Full Text Search"),
        ("FULLTEXT GATHERER", "Full Text Search"),
    ];
    // Longest prefixes first where two overlap (PAGEIOLATCH_ before PAGELATCH_).
    const PREFIXES: &[(&str, &str)] = &[
        ("LCK_M_", "Lock"),
        ("LATCH_", "Latch"),
        ("PAGEIOLATCH_", "Buffer IO"),
        ("PAGELATCH_", "Buffer Latch"),
        ("SQLCLR", "SQL CLR"),
        ("CLR", "SQL CLR"),
        ("DBMIRROR", "Mirroring"),
        ("XACT", "Transaction"),
        ("DTC", "Transaction"),
        ("TRAN_MARKLATCH_", "Transaction"),
        ("MSQL_XACT_", "Transaction"),
        ("SLEEP_", "Idle"),
        ("PREEMPTIVE_", "Preemptive"),
        ("BROKER_", "Service Broker"),
        ("FT_", "Full Text Search"),
        ("SE_REPL_", "Replication"),
        ("REPL_", "Replication"),
        ("PWAIT_HADR_", "Replication"),
        ("HADR_", "Replication"),
        ("HT", "Parallelism"),
        ("BMP", "Parallelism"),
        ("BP", "Parallelism"),
    ];
    if let Some((_, c)) = EXACT.iter().find(|(w, _)| *w == wait_type) {
        return c;
    }
    PREFIXES
        .iter()
        .find(|(p, _)| wait_type.starts_with(p))
        .map_or("Other", |(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_categories_follow_query_store() {
        for (w, c) in [
            ("LCK_M_X", "Lock"),
            ("PAGEIOLATCH_SH", "Buffer IO"),
            ("PAGELATCH_EX", "Buffer Latch"),
            ("LATCH_EX", "Latch"),
            ("SOS_SCHEDULER_YIELD", "CPU"),
            ("WRITELOG", "Tran Log IO"),
            ("CXPACKET", "Parallelism"),
            ("RESOURCE_SEMAPHORE", "Memory"),
            ("RESOURCE_SEMAPHORE_QUERY_COMPILE", "Compilation"),
            ("HADR_THROTTLE_LOG_RATE_GOVERNOR", "Log Rate Governor"),
            ("HADR_SYNC_COMMIT", "Replication"),
            ("ASYNC_NETWORK_IO", "Network IO"),
            ("PREEMPTIVE_OS_WRITEFILE", "Preemptive"),
            ("SOMETHING_NEW", "Other"),
        ] {
            assert_eq!(wait_category(w), c, "{w}");
        }
    }

    #[test]
    fn collector_names_round_trip() {
        for k in CollectorKind::ALL {
            assert_eq!(CollectorKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(
            CollectorKind::parse("blocking"),
            Some(CollectorKind::Sessions)
        );
        assert_eq!(CollectorKind::parse("nope"), None);
    }
}
