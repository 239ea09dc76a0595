//! Compaction: the files of an hour that is over become one file per hour, sorted by
//! (series, time), each point once (a redelivery's duplicates go), in row groups whose
//! statistics let a query skip what it does not need.
//!
//! The files of an hour are those whose first row falls in it (a flush writes where
//! its first row belongs); their rows are written back by the hour each row belongs
//! to, so a compacted file never spans two hours. The swap is atomic for readers: the
//! new files are renamed into place, then one catalogue transaction adds them and
//! drops the old ones, which are deleted only after a grace period (a query that had
//! listed them is done by then). A crash anywhere leaves either the old files or the
//! new ones catalogued (start-up reconciliation finishes the job); queries serve each
//! (series, time) once in between.

use crate::catalog::FileEntry;
use crate::error::Result;
use crate::query::{each_point_once, files_table};
use crate::writer::{hour_of, Store, HOUR_NS, TABLES};
use arrow::array::{Array, TimestampNanosecondArray};
use arrow::compute::filter_record_batch;
use arrow::record_batch::RecordBatch;
use datafusion::prelude::{col, SessionConfig, SessionContext};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a compaction pass did.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize)]
pub struct Compacted {
    pub hours: usize,
    pub files_in: usize,
    pub files_out: usize,
    pub rows_in: u64,
    pub rows_out: u64,
}

impl Store {
    /// Compact every hour of every table that ended at least `settle` ago and has more
    /// than one file (or one not compacted yet). Runs on one core at a time and, with
    /// `duty` < 1, rests between hours so compaction takes at most that share of it.
    pub async fn compact(&self, settle: Duration, duty: f64) -> Result<Compacted> {
        let mut done = Compacted::default();
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        let settled_before = now - settle.as_nanos() as i64;
        for table in TABLES {
            let mut hours: BTreeMap<i64, Vec<FileEntry>> = BTreeMap::new();
            for f in self.catalog.files(table, None, None)? {
                hours.entry(hour_of(f.min_ns)).or_default().push(f);
            }
            for (hour, files) in hours {
                let over = (hour + 1) * HOUR_NS <= settled_before;
                let worth = files.len() > 1 || files.iter().any(|f| !f.compacted);
                if !over || !worth {
                    continue;
                }
                let began = Instant::now();
                let (rows_in, out) = self.compact_files(table, &files).await?;
                done.hours += 1;
                done.files_in += files.len();
                done.files_out += out.len();
                done.rows_in += rows_in;
                done.rows_out += out.iter().map(|f| f.rows).sum::<u64>();
                rest(began.elapsed(), duty).await;
            }
        }
        Ok(done)
    }

    /// Delete the files compactions replaced at least `grace` ago; how many went.
    pub fn delete_replaced(&self, grace: Duration) -> Result<usize> {
        self.catalog.delete_replaced(&self.dir, grace)
    }

    /// What each table holds on disk.
    pub fn storage(&self) -> Result<Vec<sqlvigil_model::query::TableStorage>> {
        self.catalog.storage()
    }

    /// Merge `files` of `table` into one sorted, deduplicated file per hour; the
    /// rows read and the new files.
    async fn compact_files(
        &self,
        table: &str,
        files: &[FileEntry],
    ) -> Result<(u64, Vec<FileEntry>)> {
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
        let paths = files.iter().map(|f| self.dir.join(&f.path)).collect();
        let schema = crate::writer::schema_of(table);
        let df = ctx.read_table(Arc::new(files_table(paths, schema.clone())?))?;
        let rows_in = files.iter().map(|f| f.rows).sum();
        // Metrics: each (series, time) once — what a redelivery wrote twice goes here.
        // The other tables have no key and are only sorted.
        let (df, order) = if table == "metrics" {
            (each_point_once(df)?, vec![col("series_id"), col("time")])
        } else {
            (df, vec![col("time")])
        };
        let batches = df
            .sort(order.into_iter().map(|c| c.sort(true, false)).collect())?
            .collect()
            .await?;
        let mut by_hour: BTreeMap<i64, Vec<RecordBatch>> = BTreeMap::new();
        for b in batches {
            for (hour, part) in split_by_hour(&b)? {
                by_hour.entry(hour).or_default().push(part);
            }
        }
        let mut written = Vec::new();
        for (hour, batches) in &by_hour {
            if let Some((tmp, name)) = self.write_sorted(table, *hour, schema.clone(), batches)? {
                std::fs::rename(&tmp, &name)?;
                let (entry, _) = self.entry(table, &name, batches, true)?;
                written.push(entry);
            }
        }
        let old: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
        if let Err(e) = self.catalog.replace(&old, &written) {
            for f in &written {
                let _ = std::fs::remove_file(self.dir.join(&f.path));
            }
            return Err(e);
        }
        Ok((rows_in, written))
    }
}

/// The rows of `b` grouped by the hour of their `time` (column 0).
fn split_by_hour(b: &RecordBatch) -> Result<Vec<(i64, RecordBatch)>> {
    let Some(t) = b
        .column(0)
        .as_any()
        .downcast_ref::<TimestampNanosecondArray>()
    else {
        return Ok(Vec::new());
    };
    let mut hours: Vec<i64> = (0..t.len()).map(|i| hour_of(t.value(i))).collect();
    hours.sort_unstable();
    hours.dedup();
    if hours.len() == 1 {
        return Ok(vec![(hours[0], b.clone())]);
    }
    let mut out = Vec::new();
    for h in hours {
        let mask: arrow::array::BooleanArray = (0..t.len())
            .map(|i| Some(hour_of(t.value(i)) == h))
            .collect();
        out.push((h, filter_record_batch(b, &mask)?));
    }
    Ok(out)
}

/// After work that took `busy`, rest so that work is `duty` of the time.
async fn rest(busy: Duration, duty: f64) {
    if duty > 0.0 && duty < 1.0 {
        tokio::time::sleep(busy.mul_f64((1.0 - duty) / duty)).await;
    }
}
