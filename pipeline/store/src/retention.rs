//! Retention of the telemetry files (`store.retention.raw` and `.rollup`): the
//! embedded counterpart of the Elastic ILM policy. Raw points, log records and the
//! receiver's events older than `raw` are deleted once their hours are compacted — and
//! so, for metrics, rolled up: a pass first compacts every such hour that is not — and
//! rollups older than `rollup` are deleted. Files go through the catalogue like a
//! compaction's (readers that listed them finish first; see [`crate::compact`]).

use crate::error::Result;
use crate::rollup::ROLLUPS;
use crate::writer::{hour_of, CompactionLock, Store, HOUR_NS, TABLES};
use sqlvigil_model::query::Resolution;
use std::time::Duration;

/// What a retention pass deleted.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize)]
pub struct Retired {
    /// Hours compacted (and rolled up) first.
    pub compacted_hours: usize,
    pub raw_files: usize,
    pub raw_rows: u64,
    pub rollup_files: usize,
    pub rollup_rows: u64,
}

impl Store {
    /// Delete raw telemetry of hours that ended more than `raw` ago and rollups whose
    /// last bucket ended more than `rollup` ago.
    pub async fn retire(&self, raw: Duration, rollup: Duration) -> Result<Retired> {
        let mut done = Retired {
            compacted_hours: self.compact(raw, 1.0).await?.hours,
            ..Retired::default()
        };
        let _one = CompactionLock::take(&self.dir).await?;
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        let ago = |d: Duration| now.saturating_sub(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        // Whole hours only: an hour's raw points go together, after its rollups exist.
        let raw_before = hour_of(ago(raw)) * HOUR_NS;
        let mut old = Vec::new();
        for table in TABLES {
            for f in self.catalog.files(table, None, Some(raw_before - 1))? {
                if f.max_ns < raw_before {
                    done.raw_files += 1;
                    done.raw_rows += f.rows;
                    old.push(f.path);
                }
            }
        }
        let rollup_before = ago(rollup);
        for table in ROLLUPS {
            for f in self.catalog.files(table, None, Some(rollup_before))? {
                // `max_ns` is the last bucket's start: the file goes once that bucket is over.
                let width = if table == crate::rollup::ROLLUP_1H {
                    Resolution::Hour.width_ns()
                } else {
                    Resolution::Minute.width_ns()
                };
                if f.max_ns.saturating_add(width) <= rollup_before {
                    done.rollup_files += 1;
                    done.rollup_rows += f.rows;
                    old.push(f.path);
                }
            }
        }
        if !old.is_empty() {
            self.catalog.replace(&old, &[])?;
        }
        Ok(done)
    }
}
