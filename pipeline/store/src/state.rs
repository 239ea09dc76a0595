//! SQLite state: anomalies, insights, API tokens (hashed, see [`crate::tokens`]) and
//! operator checkpoints.
//!
//! Writes are small and rare compared with telemetry, so one connection behind a mutex
//! in WAL mode is enough; every statement is parameterised.

use crate::error::{Result, StoreError};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};
use sqlvigil_model::live::LiveSnapshot;
use sqlvigil_model::query::Instances;
use sqlvigil_model::{AnalysisFailure, Anomaly, AnomalyEvent, FeedKind, Handling, Insight};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

/// What an API token may do. Ordered: admin ⊇ operator ⊇ viewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "viewer" => Role::Viewer,
            "operator" => Role::Operator,
            "admin" => Role::Admin,
            _ => return None,
        })
    }
}

pub use sqlvigil_model::query::AnomalyFilter;

/// What [`StateStore::expire`] deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Expired {
    pub anomalies: usize,
    pub insights: usize,
    pub failures: usize,
}

pub struct StateStore {
    /// The one connection that writes.
    conn: Mutex<Connection>,
    /// Connections that only read (WAL lets them read beside the writer), so API reads
    /// — every request's token check, anomaly and insight lists — do not queue behind
    /// each other or the pipeline's writes.
    readers: Vec<Mutex<Connection>>,
    next_reader: std::sync::atomic::AtomicUsize,
}

/// Read connections of the state store.
const READERS: usize = 4;

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS anomalies (
    id TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    rule TEXT NOT NULL,
    state TEXT NOT NULL,
    severity TEXT NOT NULL,
    instance TEXT NOT NULL,
    opened_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS anomalies_opened ON anomalies (opened_at);
CREATE TABLE IF NOT EXISTS anomaly_handling (
    anomaly_id TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS anomaly_actions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    anomaly_id TEXT NOT NULL,
    action TEXT NOT NULL,
    at TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS anomaly_actions_by_anomaly ON anomaly_actions (anomaly_id, seq);
CREATE TABLE IF NOT EXISTS feed (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    instance TEXT NOT NULL,
    at TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS insights (
    id TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    input_digest TEXT NOT NULL,
    generated_at TEXT NOT NULL,
    instance TEXT NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (fingerprint, input_digest)
);
CREATE INDEX IF NOT EXISTS insights_generated ON insights (generated_at);
CREATE TABLE IF NOT EXISTS analysis_failures (
    id TEXT PRIMARY KEY,
    at TEXT NOT NULL,
    instance TEXT NOT NULL,
    body TEXT NOT NULL
);
-- API tokens (tokens.rs): salted hashes, never the secret.
CREATE TABLE IF NOT EXISTS api_tokens (
    id TEXT PRIMARY KEY,
    salt TEXT NOT NULL,
    hash TEXT NOT NULL,
    role TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT,
    revoked_at TEXT,
    instances TEXT
);
CREATE INDEX IF NOT EXISTS api_tokens_by_hash ON api_tokens (hash);
CREATE TABLE IF NOT EXISTS live_snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    instance TEXT NOT NULL,
    collected_at_ns INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS live_snapshots_by_instance ON live_snapshots (instance, id);
CREATE TABLE IF NOT EXISTS analytics_spool (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    name TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
";

/// A SQLite database of the data directory with `schema` applied (one connection
/// behind a mutex; another process may hold it too, so writes wait for the lock).
pub(crate) fn open_sqlite(path: &Path, schema: &str) -> Result<Mutex<Connection>> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(schema)?;
    Ok(Mutex::new(conn))
}

/// The connection (a panic elsewhere mid-statement leaves it usable).
pub(crate) fn lock_sqlite(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Bring `api_tokens` up to date: add the scope column, move in the tokens of the
/// unsalted table.
fn migrate_tokens(conn: &Connection) -> Result<()> {
    let legacy: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'tokens'",
        [],
        |r| r.get(0),
    )?;
    let scoped: bool = conn.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info('api_tokens') WHERE name = 'instances'",
        [],
        |r| r.get(0),
    )?;
    if !scoped {
        // Tokens made before scopes read every instance, as they did.
        conn.execute_batch("ALTER TABLE api_tokens ADD COLUMN instances TEXT")?;
    }
    if legacy {
        conn.execute_batch(
            "INSERT OR IGNORE INTO api_tokens (id, salt, hash, role, name, created_at) \
                 SELECT substr(hash, 1, 12), '', hash, role, name, created_at FROM tokens; \
             DROP TABLE tokens;",
        )?;
    }
    Ok(())
}

/// Entries kept: days of a busy fleet, bounded whatever happens.
pub const FEED_KEEP: i64 = 100_000;

/// Append `(kind, instance, body)` entries inside `tx`, dropping the oldest beyond
/// [`FEED_KEEP`].
pub(crate) fn append_feed(
    tx: &Transaction<'_>,
    entries: impl IntoIterator<Item = (FeedKind, String, serde_json::Value)>,
) -> Result<()> {
    let at = chrono::Utc::now().to_rfc3339();
    let mut stmt =
        tx.prepare_cached("INSERT INTO feed (kind, instance, at, body) VALUES (?1, ?2, ?3, ?4)")?;
    let mut any = false;
    for (kind, instance, body) in entries {
        stmt.execute(params![kind.as_str(), instance, at, body.to_string()])?;
        any = true;
    }
    if any {
        tx.execute(
            "DELETE FROM feed WHERE seq <= (SELECT max(seq) FROM feed) - ?1",
            params![FEED_KEEP],
        )?;
    }
    Ok(())
}

/// The conditions of an [`AnomalyFilter`] over the `anomalies` table, parameters 1–6
/// ([`anomaly_params`]).
const ANOMALY_WHERE: &str = "(?1 IS NULL OR state = ?1) \
    AND (?2 IS NULL OR instance IN (SELECT value FROM json_each(?2))) \
    AND (?3 IS NULL OR rule = ?3) AND (?4 IS NULL OR severity = ?4) \
    AND (?5 IS NULL OR opened_at >= ?5) AND (?6 IS NULL OR opened_at <= ?6)";

fn anomaly_params(f: &AnomalyFilter) -> [Option<String>; 6] {
    let time = |t: &Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.to_rfc3339());
    [
        f.state.clone(),
        crate::scope::instances_param(&f.instances),
        f.rule.clone(),
        f.severity.clone(),
        time(&f.from),
        time(&f.to),
    ]
}

impl StateStore {
    /// Open (or create) `<data_dir>/state.sqlite`.
    pub fn open(data_dir: &Path) -> Result<StateStore> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join("state.sqlite");
        let conn = open_sqlite(&path, SCHEMA)?;
        migrate_tokens(&lock_sqlite(&conn))?;
        let readers = (0..READERS)
            .map(|_| open_sqlite(&path, "PRAGMA query_only = 1;"))
            .collect::<Result<_>>()?;
        Ok(StateStore {
            conn,
            readers,
            next_reader: Default::default(),
        })
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        lock_sqlite(&self.conn)
    }

    /// A read-only connection: a free one, else the next in turn.
    pub(crate) fn reader(&self) -> MutexGuard<'_, Connection> {
        for r in &self.readers {
            match r.try_lock() {
                Ok(guard) => return guard,
                Err(std::sync::TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
        }
        let i = self
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lock_sqlite(&self.readers[i % self.readers.len()])
    }

    /// Insert or replace an anomaly (open, update and resolve all carry the same id).
    pub fn upsert_anomaly(&self, a: &Anomaly) -> Result<()> {
        self.record_anomalies(std::slice::from_ref(a), &[])
    }

    /// [`StateStore::upsert_anomaly`] for many, and the feed entries of `events`
    /// ([`sqlvigil_model::feed::worth_feeding`]), in one transaction. An anomaly
    /// resolved by hand stays as it was left.
    pub fn record_anomalies(&self, list: &[Anomaly], events: &[AnomalyEvent]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO anomalies (id, fingerprint, rule, state, severity, instance, opened_at, updated_at, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT(id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at, body = excluded.body
                 WHERE NOT EXISTS (SELECT 1 FROM anomaly_handling h
                                   WHERE h.anomaly_id = excluded.id AND json_extract(h.body, '$.resolved') IS NOT NULL)",
            )?;
            for a in list {
                stmt.execute(params![
                    a.id,
                    a.fingerprint,
                    a.rule,
                    a.state.as_str(),
                    a.severity.as_str(),
                    a.series.instance,
                    a.opened_at.to_rfc3339(),
                    a.updated_at.to_rfc3339(),
                    serde_json::to_string(a)?
                ])?;
            }
        }
        // The feed tells the anomaly as people left it (acknowledged, silenced); what the
        // rule still says of one resolved by hand is not news.
        let mut handled =
            tx.prepare_cached("SELECT body FROM anomaly_handling WHERE anomaly_id = ?1")?;
        let mut entries = Vec::new();
        for ev in sqlvigil_model::feed::worth_feeding(events) {
            let handling: Option<Handling> = handled
                .query_row(params![ev.anomaly.id], |r| r.get::<_, String>(0))
                .optional()?
                .map(|b| serde_json::from_str(&b))
                .transpose()?;
            let mut anomaly = ev.anomaly.clone();
            if let Some(h) = handling {
                if h.resolved.is_some() {
                    continue;
                }
                h.apply(&mut anomaly);
            }
            let body = serde_json::json!({ "anomaly": anomaly });
            entries.push((ev.event.into(), anomaly.series.instance.to_string(), body));
        }
        drop(handled);
        append_feed(&tx, entries)?;
        tx.commit()?;
        Ok(())
    }

    /// Anomalies newest first (by opening time, then id), after `f.after` when given:
    /// keyset paging over any number of them. Anomalies folded into a storm are listed
    /// too (each names its storm in `folded_into`).
    pub fn anomalies(&self, f: &AnomalyFilter) -> Result<Vec<Anomaly>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT body FROM anomalies WHERE {ANOMALY_WHERE}
                   AND (?8 IS NULL OR opened_at < ?8 OR (opened_at = ?8 AND id > ?9))
                 ORDER BY opened_at DESC, id LIMIT ?7"
        ))?;
        let limit = f.limit.unwrap_or(1000) as i64;
        let (at, id) = match &f.after {
            Some(c) => (Some(c.opened_at.to_rfc3339()), Some(c.id.clone())),
            None => (None, None),
        };
        let [p1, p2, p3, p4, p5, p6] = anomaly_params(f);
        let rows = stmt.query_map(params![p1, p2, p3, p4, p5, p6, limit, at, id], |r| {
            r.get::<_, String>(0)
        })?;
        rows.map(|body| Ok(serde_json::from_str(&body?)?)).collect()
    }

    /// How many anomalies match `f` (its cursor and limit aside).
    pub fn count_anomalies(&self, f: &AnomalyFilter) -> Result<u64> {
        let n: i64 = self.reader().query_row(
            &format!("SELECT count(*) FROM anomalies WHERE {ANOMALY_WHERE}"),
            anomaly_params(f),
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// Keep anomaly events for the next start (the analytics stage at shutdown).
    pub fn spool_events(&self, events: &[AnomalyEvent]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached("INSERT INTO analytics_spool (body) VALUES (?1)")?;
            for ev in events {
                stmt.execute(params![serde_json::to_string(ev)?])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Up to `limit` spooled events, oldest first.
    pub fn spooled_events(&self, limit: usize) -> Result<Vec<(i64, AnomalyEvent)>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT id, body FROM analytics_spool ORDER BY id LIMIT ?1")?;
        let rows = stmt.query_map(params![limit as i64], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        rows.map(|row| {
            let (id, body) = row?;
            Ok((id, serde_json::from_str(&body)?))
        })
        .collect()
    }

    /// Keep a live snapshot; only the instance's newest `keep` stay.
    pub fn record_snapshot(&self, snapshot: &LiveSnapshot, keep: usize) -> Result<()> {
        let body = serde_json::to_string(snapshot)?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.prepare_cached(
            "INSERT INTO live_snapshots (instance, collected_at_ns, body) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![
            snapshot.instance,
            snapshot
                .collected_at
                .timestamp_nanos_opt()
                .unwrap_or(i64::MAX),
            body
        ])?;
        tx.prepare_cached(
            "DELETE FROM live_snapshots WHERE instance = ?1 AND id <= \
             (SELECT id FROM live_snapshots WHERE instance = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
        )?
        .execute(params![snapshot.instance, keep as i64])?;
        tx.commit()?;
        Ok(())
    }

    /// The newest `limit` snapshots of an instance, newest first.
    pub fn snapshots(&self, instance: &str, limit: usize) -> Result<Vec<LiveSnapshot>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT body FROM live_snapshots WHERE instance = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![instance, limit as i64], |r| r.get::<_, String>(0))?;
        rows.map(|body| Ok(serde_json::from_str(&body?)?)).collect()
    }

    pub fn unspool(&self, ids: &[i64]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached("DELETE FROM analytics_spool WHERE id = ?1")?;
            for id in ids {
                stmt.execute(params![id])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn anomaly(&self, id: &str) -> Result<Option<Anomaly>> {
        let body: Option<String> = self
            .reader()
            .query_row(
                "SELECT body FROM anomalies WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()?;
        body.map(|b| serde_json::from_str(&b).map_err(StoreError::from))
            .transpose()
    }

    /// Store an insight; `false` when one with the same fingerprint and input digest exists.
    pub fn insert_insight(&self, i: &Insight) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let n = tx.execute(
            "INSERT OR IGNORE INTO insights (id, fingerprint, input_digest, generated_at, instance, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![i.id, i.fingerprint, i.input_digest, i.generated_at.to_rfc3339(), i.instance, serde_json::to_string(i)?],
        )?;
        if n == 1 {
            let body = serde_json::json!({ "insight": i });
            append_feed(&tx, [(FeedKind::Insight, i.instance.clone(), body)])?;
        }
        tx.commit()?;
        Ok(n == 1)
    }

    /// Insights newest first, optionally only those about one anomaly.
    pub fn insights(
        &self,
        anomaly_id: Option<&str>,
        instances: &Instances,
        limit: usize,
    ) -> Result<Vec<Insight>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT body FROM insights
             WHERE (?1 IS NULL OR EXISTS (SELECT 1 FROM json_each(body, '$.anomaly_ids') WHERE value = ?1))
               AND (?2 IS NULL OR instance IN (SELECT value FROM json_each(?2)))
             ORDER BY generated_at DESC, id LIMIT ?3",
        )?;
        let rows = stmt.query_map(
            params![
                anomaly_id,
                crate::scope::instances_param(instances),
                limit as i64
            ],
            |r| r.get::<_, String>(0),
        )?;
        rows.map(|body| Ok(serde_json::from_str(&body?)?)).collect()
    }

    /// The insight already written for this fingerprint and input digest, if any.
    pub fn insight_for(&self, fingerprint: &str, input_digest: &str) -> Result<Option<Insight>> {
        let body: Option<String> = self
            .conn()
            .query_row(
                "SELECT body FROM insights WHERE fingerprint = ?1 AND input_digest = ?2",
                params![fingerprint, input_digest],
                |r| r.get(0),
            )
            .optional()?;
        body.map(|b| serde_json::from_str(&b).map_err(StoreError::from))
            .transpose()
    }

    pub fn insert_failure(&self, f: &AnalysisFailure) -> Result<()> {
        self.conn().execute(
            "INSERT OR REPLACE INTO analysis_failures (id, at, instance, body) VALUES (?1, ?2, ?3, ?4)",
            params![f.id, f.at.to_rfc3339(), f.instance, serde_json::to_string(f)?],
        )?;
        Ok(())
    }

    /// Failed LLM analyses, newest first.
    pub fn failures(&self, limit: usize) -> Result<Vec<AnalysisFailure>> {
        let conn = self.reader();
        let mut stmt =
            conn.prepare("SELECT body FROM analysis_failures ORDER BY at DESC, id LIMIT ?1")?;
        let rows = stmt.query_map(params![limit as i64], |r| r.get::<_, String>(0))?;
        rows.map(|body| Ok(serde_json::from_str(&body?)?)).collect()
    }

    /// Delete resolved anomalies last updated before `anomalies_before`, and insights
    /// and analysis failures from before `insights_before` (`store.retention`). Open
    /// anomalies stay whatever their age.
    pub fn expire(
        &self,
        anomalies_before: chrono::DateTime<chrono::Utc>,
        insights_before: chrono::DateTime<chrono::Utc>,
    ) -> Result<Expired> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let anomalies = tx.execute(
            "DELETE FROM anomalies WHERE state = 'resolved' AND updated_at < ?1",
            params![anomalies_before.to_rfc3339()],
        )?;
        // What people did goes with the anomaly it was done to.
        tx.execute_batch(
            "DELETE FROM anomaly_handling WHERE anomaly_id NOT IN (SELECT id FROM anomalies);
             DELETE FROM anomaly_actions WHERE anomaly_id NOT IN (SELECT id FROM anomalies);",
        )?;
        let insights = tx.execute(
            "DELETE FROM insights WHERE generated_at < ?1",
            params![insights_before.to_rfc3339()],
        )?;
        let failures = tx.execute(
            "DELETE FROM analysis_failures WHERE at < ?1",
            params![insights_before.to_rfc3339()],
        )?;
        tx.commit()?;
        Ok(Expired {
            anomalies,
            insights,
            failures,
        })
    }

    pub fn save_checkpoint(&self, name: &str, body: &serde_json::Value) -> Result<()> {
        self.conn().execute(
            "INSERT INTO checkpoints (name, body, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
            params![name, body.to_string(), chrono::Utc::now().to_rfc3339()],
        )?;
        Ok(())
    }

    pub fn load_checkpoint(&self, name: &str) -> Result<Option<serde_json::Value>> {
        let body: Option<String> = self
            .conn()
            .query_row(
                "SELECT body FROM checkpoints WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()?;
        body.map(|b| serde_json::from_str(&b).map_err(StoreError::from))
            .transpose()
    }
}

/// The pipeline's durable record (anomalies, insights, failures) is this SQLite state,
/// whatever backend holds the telemetry.
impl sqlvigil_core::Ledger for StateStore {
    fn upsert_anomaly(&self, anomaly: &Anomaly) -> sqlvigil_core::Result<()> {
        Ok(StateStore::upsert_anomaly(self, anomaly)?)
    }

    fn record_anomalies(
        &self,
        latest: &[Anomaly],
        events: &[AnomalyEvent],
    ) -> sqlvigil_core::Result<()> {
        Ok(StateStore::record_anomalies(self, latest, events)?)
    }

    fn spool_events(&self, events: &[AnomalyEvent]) -> sqlvigil_core::Result<()> {
        Ok(StateStore::spool_events(self, events)?)
    }

    fn spooled_events(&self, limit: usize) -> sqlvigil_core::Result<Vec<(i64, AnomalyEvent)>> {
        Ok(StateStore::spooled_events(self, limit)?)
    }

    fn unspool(&self, ids: &[i64]) -> sqlvigil_core::Result<()> {
        Ok(StateStore::unspool(self, ids)?)
    }

    fn record_snapshot(&self, snapshot: &LiveSnapshot, keep: usize) -> sqlvigil_core::Result<()> {
        Ok(StateStore::record_snapshot(self, snapshot, keep)?)
    }

    fn snapshots(&self, instance: &str, limit: usize) -> sqlvigil_core::Result<Vec<LiveSnapshot>> {
        Ok(StateStore::snapshots(self, instance, limit)?)
    }

    fn insert_insight(&self, insight: &Insight) -> sqlvigil_core::Result<bool> {
        Ok(StateStore::insert_insight(self, insight)?)
    }

    fn insight_for(
        &self,
        fingerprint: &str,
        input_digest: &str,
    ) -> sqlvigil_core::Result<Option<Insight>> {
        Ok(StateStore::insight_for(self, fingerprint, input_digest)?)
    }

    fn insert_failure(&self, failure: &AnalysisFailure) -> sqlvigil_core::Result<()> {
        Ok(StateStore::insert_failure(self, failure)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anomaly(id: &str, state: sqlvigil_model::AnomalyState, days_ago: i64) -> Anomaly {
        let series = sqlvigil_model::SeriesKey::new("sql1", "h", "", "sqlserver.cpu.utilization");
        let t = chrono::Utc::now() - chrono::Duration::days(days_ago);
        Anomaly {
            id: id.into(),
            fingerprint: Anomaly::fingerprint_for("cpu_storm", &series),
            rule: "cpu_storm".into(),
            condition: "cpu_percent > 85 for 5m".into(),
            series_id: series.id_hex(),
            series,
            severity: sqlvigil_model::Severity::Critical,
            state,
            opened_at: t,
            updated_at: t,
            resolved_at: None,
            observed: 97.0,
            expected: Some(85.0),
            score: 1.1,
            evidence: vec![],
            folded: 0,
            folded_into: None,
            handling: None,
        }
    }

    /// Resolved anomalies past the limit go; open ones and recent ones stay.
    #[test]
    fn retention_deletes_only_what_is_over_and_resolved() {
        use sqlvigil_model::AnomalyState::{Open, Resolved};
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path()).unwrap();
        s.record_anomalies(
            &[
                anomaly("old-resolved", Resolved, 100),
                anomaly("old-open", Open, 100),
                anomaly("new-resolved", Resolved, 1),
            ],
            &[],
        )
        .unwrap();
        let limit = chrono::Utc::now() - chrono::Duration::days(90);
        let gone = s.expire(limit, limit).unwrap();
        assert_eq!(gone.anomalies, 1);
        let mut left: Vec<String> = s
            .anomalies(&AnomalyFilter::default())
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect();
        left.sort();
        assert_eq!(left, ["new-resolved", "old-open"]);
        assert_eq!(s.expire(limit, limit).unwrap(), Expired::default());
    }

    #[test]
    fn checkpoints_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path()).unwrap();
        s.save_checkpoint("ops", &serde_json::json!({"a": 1}))
            .unwrap();
        s.save_checkpoint("ops", &serde_json::json!({"a": 2}))
            .unwrap();
        assert_eq!(
            s.load_checkpoint("ops").unwrap(),
            Some(serde_json::json!({"a": 2}))
        );
    }
}
