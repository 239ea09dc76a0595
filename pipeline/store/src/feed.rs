//! Reading the feed table (`feed`): every anomaly open, update and resolve the pipeline
//! records, every hand action and every insight, numbered in order (SQLite's rowid never
//! goes back), so the API's live stream resumes after `Last-Event-ID` across restarts.
//! Entries are appended in the transaction that records what they tell
//! ([`crate::state::append_feed`]); only the newest [`crate::state::FEED_KEEP`] are kept.

use crate::error::Result;
use crate::state::StateStore;
use rusqlite::params;
use sqlvigil_model::query::Instances;
use sqlvigil_model::{FeedEntry, FeedKind};

impl StateStore {
    /// Up to `limit` entries after `after` (a sequence number; all kept if `None`),
    /// oldest first, about `instances`.
    pub fn feed_after(
        &self,
        after: Option<i64>,
        instances: &Instances,
        limit: usize,
    ) -> Result<Vec<FeedEntry>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT seq, kind, instance, at, body FROM feed
             WHERE seq > ?1 AND (?2 IS NULL OR instance IN (SELECT value FROM json_each(?2)))
             ORDER BY seq LIMIT ?3",
        )?;
        let rows = stmt.query_map(
            params![
                after.unwrap_or(0),
                crate::scope::instances_param(instances),
                limit as i64
            ],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                ))
            },
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, kind, instance, at, body) = row?;
            // A kind a newer version wrote is skipped rather than failing the stream.
            let Some(kind) = FeedKind::parse(&kind) else {
                continue;
            };
            out.push(FeedEntry {
                seq,
                kind,
                instance,
                at: chrono::DateTime::parse_from_rfc3339(&at)
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .unwrap_or_default(),
                body: serde_json::from_str(&body)?,
            });
        }
        Ok(out)
    }

    /// The newest sequence number (0 when the feed is empty): where a new reader starts.
    pub fn feed_head(&self) -> Result<i64> {
        Ok(self
            .reader()
            .query_row("SELECT coalesce(max(seq), 0) FROM feed", [], |r| r.get(0))?)
    }
}
