//! The collectors: one DMV query each, in the `.sql` file next to its module (a DBA can
//! read and run it by hand; each starts with a `-- sqlvigil:<name>` line), parsed into
//! the typed rows of `sqlvigil_model::live`. Cumulative DMVs (waits, query stats, file
//! IO) keep their previous sample per instance ([`Previous`]) and are served as deltas.

mod counters;
mod file_io;
mod log_space;
mod memory_grants;
pub(crate) mod server;
mod sessions;
mod tempdb;
mod top_queries;
mod waits;

use crate::error::{MonitorError, Result};
use crate::pool::Client;
use chrono::{DateTime, Utc};
use counters::Sample;
use sqlvigil_model::live::{CollectorKind, LiveSnapshot, ServerInfo};
use std::time::Duration;
use tiberius::Row;

/// Limits every collector query keeps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueryLimits {
    pub timeout: Duration,
    pub lock_timeout: Duration,
    pub statement_chars: usize,
}

/// The query of a collector for this server (Azure SQL Database has its own DMVs for
/// waits and files).
pub(crate) fn sql(kind: CollectorKind, server: &ServerInfo) -> &'static str {
    let azure = server.is_azure_sql_database();
    match kind {
        CollectorKind::Sessions => sessions::SQL,
        CollectorKind::Waits if azure => waits::SQL_AZURE,
        CollectorKind::Waits => waits::SQL,
        CollectorKind::TopQueries => top_queries::SQL,
        CollectorKind::QueryStore => top_queries::QUERY_STORE_SQL,
        CollectorKind::Tempdb => tempdb::SQL,
        CollectorKind::LogSpace => log_space::SQL,
        CollectorKind::MemoryGrants => memory_grants::SQL,
        CollectorKind::FileIo if azure => file_io::SQL_AZURE,
        CollectorKind::FileIo => file_io::SQL,
    }
}

/// Collectors whose DMV counts since start-up and is served as a delta.
pub(crate) fn is_cumulative(kind: CollectorKind) -> bool {
    matches!(
        kind,
        CollectorKind::Waits
            | CollectorKind::TopQueries
            | CollectorKind::QueryStore
            | CollectorKind::FileIo
    )
}

/// Run one batch within the limits: every result set it returns. The session reads
/// uncommitted (DMVs take no locks worth waiting for) and gives up on a lock after
/// `lock_timeout`; past `timeout` the future is dropped and the caller must close the
/// connection, which makes the server abandon the query.
pub(crate) async fn query(
    client: &mut Client,
    what: &str,
    sql: &str,
    limits: QueryLimits,
) -> Result<Vec<Vec<Row>>> {
    let batch = format!(
        "SET NOCOUNT ON; SET LOCK_TIMEOUT {}; SET TRANSACTION ISOLATION LEVEL READ UNCOMMITTED;\n{sql}",
        limits.lock_timeout.as_millis()
    );
    let run = async {
        let stream = client.simple_query(batch).await?;
        Ok::<_, MonitorError>(stream.into_results().await?)
    };
    tokio::time::timeout(limits.timeout, run)
        .await
        .map_err(|_| MonitorError::Timeout {
            what: format!("collector `{what}`"),
            after: limits.timeout,
        })?
}

/// The previous samples of one instance's cumulative DMVs.
#[derive(Default)]
pub(crate) struct Previous {
    waits: Option<Sample<waits::Waits>>,
    queries: Option<Sample<top_queries::QueryUse>>,
    query_store: Option<Sample<top_queries::QueryUse>>,
    io: Option<Sample<file_io::FileUse>>,
}

impl Previous {
    /// Whether `kind` has a sample to diff against.
    pub(crate) fn has(&self, kind: CollectorKind) -> bool {
        match kind {
            CollectorKind::Waits => self.waits.is_some(),
            CollectorKind::TopQueries => self.queries.is_some(),
            CollectorKind::QueryStore => self.query_store.is_some(),
            CollectorKind::FileIo => self.io.is_some(),
            _ => true,
        }
    }
}

/// Put one collector's result sets into the snapshot; cumulative ones are diffed
/// against the previous sample, which they then replace.
pub(crate) fn apply(
    snap: &mut LiveSnapshot,
    prev: &mut Previous,
    kind: CollectorKind,
    sets: &[Vec<Row>],
    taken: DateTime<Utc>,
    limits: QueryLimits,
) {
    let first: &[Row] = sets.first().map(Vec::as_slice).unwrap_or(&[]);
    match kind {
        CollectorKind::Sessions => {
            snap.sessions = sessions::parse(first, limits.statement_chars);
            snap.blocking = sessions::tree(&snap.instance, &snap.sessions);
        }
        CollectorKind::Waits => {
            let now = waits::parse(first, taken);
            if let Some(rows) = diffed(&mut prev.waits, now, snap, waits::diff) {
                snap.waits = rows;
            }
        }
        CollectorKind::TopQueries | CollectorKind::QueryStore => {
            let now = top_queries::parse(first, taken, limits.statement_chars);
            let instance = snap.instance.clone();
            let diff = |a: &_, b: &_| top_queries::diff(&instance, a, b);
            let store = kind == CollectorKind::QueryStore;
            let slot = if store {
                &mut prev.query_store
            } else {
                &mut prev.queries
            };
            if let Some(rows) = diffed(slot, now, snap, diff) {
                if store {
                    snap.query_store = rows;
                } else {
                    snap.top_queries = rows;
                }
            }
        }
        CollectorKind::FileIo => {
            let now = file_io::parse(first, taken);
            if let Some(rows) = diffed(&mut prev.io, now, snap, file_io::diff) {
                snap.file_io = rows;
            }
        }
        CollectorKind::Tempdb => snap.tempdb = Some(tempdb::parse(sets)),
        CollectorKind::LogSpace => snap.log_space = log_space::parse(first),
        CollectorKind::MemoryGrants => snap.memory_grants = Some(memory_grants::parse(first)),
    }
}

/// The deltas of `now` over the previous sample in `slot` (none on the first), noting
/// the interval and any reset in the snapshot; `now` becomes the previous sample.
fn diffed<V, R>(
    slot: &mut Option<Sample<V>>,
    now: Sample<V>,
    snap: &mut LiveSnapshot,
    diff: impl FnOnce(&Sample<V>, &Sample<V>) -> (Vec<R>, bool),
) -> Option<Vec<R>> {
    let out = slot.as_ref().map(|before| {
        let (rows, reset) = diff(before, &now);
        let ms = (now.taken - before.taken).num_milliseconds().max(0);
        snap.interval_ms = snap.interval_ms.max(ms);
        snap.counter_reset |= reset;
        rows
    });
    *slot = Some(now);
    out
}
