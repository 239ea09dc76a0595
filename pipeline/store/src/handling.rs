//! What people did about anomalies (`anomaly_handling`: the current state per anomaly;
//! `anomaly_actions`: the audit of every action, with the token's name), written with
//! the feed entry that announces it in one transaction. A hand resolve also resolves the
//! anomaly's row, and the pipeline's later writes of that anomaly leave it resolved
//! (see `StateStore::record_anomalies`).

use crate::error::{Result, StoreError};
use crate::state::StateStore;
use rusqlite::{params, OptionalExtension};
use sqlvigil_model::{ActionKind, Anomaly, AnomalyAction, FeedKind, Handling};
use std::collections::HashMap;

impl StateStore {
    /// Do `action` to `anomaly` (as the caller read it): the new handling, or
    /// [`StoreError::Conflict`] naming why it cannot be done (already resolved, already
    /// acknowledged).
    pub fn act(&self, anomaly: &Anomaly, action: &AnomalyAction) -> Result<Handling> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let current: Handling = tx
            .query_row(
                "SELECT body FROM anomaly_handling WHERE anomaly_id = ?1",
                params![anomaly.id],
                |r| r.get::<_, String>(0),
            )
            .optional()?
            .map(|b| serde_json::from_str(&b))
            .transpose()?
            .unwrap_or_default();
        if let Some(why) = current.refuses(anomaly, action.action) {
            return Err(StoreError::Conflict(why));
        }
        let next = current.with(action);
        tx.execute(
            "INSERT INTO anomaly_handling (anomaly_id, body) VALUES (?1, ?2)
             ON CONFLICT(anomaly_id) DO UPDATE SET body = excluded.body",
            params![anomaly.id, serde_json::to_string(&next)?],
        )?;
        tx.execute(
            "INSERT INTO anomaly_actions (anomaly_id, action, at, body) VALUES (?1, ?2, ?3, ?4)",
            params![
                anomaly.id,
                action.action.as_str(),
                action.handled.at.to_rfc3339(),
                serde_json::to_string(action)?
            ],
        )?;
        let mut after = anomaly.clone();
        next.apply(&mut after);
        if action.action == ActionKind::Resolve {
            tx.execute(
                "UPDATE anomalies SET state = 'resolved', body = ?2 WHERE id = ?1",
                params![anomaly.id, serde_json::to_string(&after)?],
            )?;
        }
        let body = serde_json::json!({ "anomaly": after, "action": action });
        crate::state::append_feed(
            &tx,
            [(
                FeedKind::AnomalyHandled,
                after.series.instance.to_string(),
                body,
            )],
        )?;
        tx.commit()?;
        Ok(next)
    }

    /// The handling of each of `ids` that has any.
    pub fn handling(&self, ids: &[&str]) -> Result<HashMap<String, Handling>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT anomaly_id, body FROM anomaly_handling
             WHERE anomaly_id IN (SELECT value FROM json_each(?1))",
        )?;
        let rows = stmt.query_map(params![serde_json::to_string(ids)?], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = HashMap::new();
        for row in rows {
            let (id, body) = row?;
            out.insert(id, serde_json::from_str(&body)?);
        }
        Ok(out)
    }

    /// Every action on `anomaly_id`, oldest first (the audit).
    pub fn actions(&self, anomaly_id: &str) -> Result<Vec<AnomalyAction>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT body FROM anomaly_actions WHERE anomaly_id = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![anomaly_id], |r| r.get::<_, String>(0))?;
        rows.map(|body| Ok(serde_json::from_str(&body?)?)).collect()
    }
}
