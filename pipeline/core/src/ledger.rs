//! The durable record the pipeline keeps of what it decided: anomaly lifecycles,
//! insights and failed analyses. The metrics worker writes anomalies, the analytics
//! stage insights; `sqlvigil-store`'s SQLite state implements it (whatever the telemetry
//! backend, so dedup and audit do not depend on Elasticsearch being up).

use crate::error::Result;
use sqlvigil_model::live::LiveSnapshot;
use sqlvigil_model::{AnalysisFailure, Anomaly, AnomalyEvent, Insight};

pub trait Ledger: Send + Sync {
    /// Insert or update an anomaly (keyed by its id).
    fn upsert_anomaly(&self, anomaly: &Anomaly) -> Result<()>;
    /// Insert or update many anomalies at once (their latest states), and append the
    /// feed entries of the `events` they came from (opens, resolves, the last update of
    /// each: the API's live stream) — one transaction where the store has them: a storm
    /// writes thousands per micro-batch.
    fn record_anomalies(&self, latest: &[Anomaly], _events: &[AnomalyEvent]) -> Result<()> {
        latest.iter().try_for_each(|a| self.upsert_anomaly(a))
    }
    /// Insert an insight; `false` when one with the same fingerprint and input digest
    /// already exists (nothing is written then).
    fn insert_insight(&self, insight: &Insight) -> Result<bool>;
    /// The insight already written for these inputs, if any.
    fn insight_for(&self, fingerprint: &str, input_digest: &str) -> Result<Option<Insight>>;
    /// Record an analysis that fell back to the rules analyzer, and why.
    fn insert_failure(&self, failure: &AnalysisFailure) -> Result<()>;
    /// Keep anomaly events the analytics stage had no time to analyse before a shutdown,
    /// for the next start.
    fn spool_events(&self, events: &[AnomalyEvent]) -> Result<()>;
    /// Up to `limit` spooled events, oldest first, with their spool ids.
    fn spooled_events(&self, limit: usize) -> Result<Vec<(i64, AnomalyEvent)>>;
    /// Forget spooled events once analysed.
    fn unspool(&self, ids: &[i64]) -> Result<()>;
    /// Keep a live DMV snapshot (the audit of what the monitor saw), pruning the
    /// instance's oldest beyond `keep`.
    fn record_snapshot(&self, snapshot: &LiveSnapshot, keep: usize) -> Result<()>;
    /// The newest `limit` snapshots of `instance`, newest first.
    fn snapshots(&self, instance: &str, limit: usize) -> Result<Vec<LiveSnapshot>>;
}
