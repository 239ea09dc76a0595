//! Compaction: the files of an hour that is over become one file per hour, sorted by
//! (series, time), each point once (a redelivery's duplicates go), in row groups whose
//! statistics let a query skip what it does not need. The hour's metrics are rolled up
//! at the same time ([`crate::rollup`]): its per-minute rollup file is replaced, and
//! the day's per-hour rollup file rewritten with the hour's new rows.
//!
//! The files of an hour are those whose first row falls in it (a flush writes where
//! its first row belongs); their rows are written back by the hour each row belongs
//! to, so a compacted file never spans two hours. Rows of another hour are rolled up
//! when that hour is compacted (it then has more than one file, or no rollup). Rows of
//! an hour whose raw points have expired (`store.retention.raw`; its rollups remain)
//! arrived too late to count and are dropped, counted in `late_dropped`.
//!
//! The swap is atomic for readers: the new files are renamed into place, then one
//! catalogue transaction adds them and drops the old ones, which are deleted only after
//! a grace period (a query that had listed them is done by then). A crash anywhere
//! leaves either the old files or the new ones catalogued (start-up reconciliation
//! finishes the job: uncatalogued rollups are deleted and their hour compacted again);
//! queries serve each (series, time) once in between. One compaction runs at a time
//! per data directory, across processes ([`CompactionLock`]).

use crate::catalog::FileEntry;
use crate::error::Result;
use crate::query::{each_point_once, files_table};
use crate::rollup::{roll_up, ROLLUP_1H, ROLLUP_1M};
use crate::writer::{hour_of, read_parquet, schema_of, CompactionLock, Store, HOUR_NS, TABLES};
use arrow::array::{Array, TimestampNanosecondArray};
use arrow::compute::{concat_batches, filter_record_batch};
use arrow::record_batch::RecordBatch;
use datafusion::prelude::{col, SessionConfig, SessionContext};
use sqlvigil_model::query::Resolution;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DAY_NS: i64 = 24 * HOUR_NS;

/// What a compaction pass did.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize)]
pub struct Compacted {
    pub hours: usize,
    pub files_in: usize,
    pub files_out: usize,
    pub rows_in: u64,
    pub rows_out: u64,
    /// Rollup rows written (per minute and per hour).
    pub rollup_rows: u64,
    /// Points of hours whose raw points had expired: too late, dropped.
    pub late_dropped: u64,
}

impl Store {
    /// Compact every hour of every table that ended at least `settle` ago and has more
    /// than one file (or one not compacted yet). Runs on one core at a time and, with
    /// `duty` < 1, rests between hours so compaction takes at most that share of it.
    pub async fn compact(&self, settle: Duration, duty: f64) -> Result<Compacted> {
        let _one = CompactionLock::take(&self.dir).await?;
        let mut done = Compacted::default();
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        let settled_before = now - settle.as_nanos() as i64;
        // A file's rows of a later hour are written to that hour: a second round rolls
        // it up (a third finds nothing).
        for _round in 0..2 {
            let hours = done.hours;
            self.compact_round(settled_before, duty, &mut done).await?;
            if done.hours == hours {
                break;
            }
        }
        Ok(done)
    }

    /// One look at every table's hours.
    async fn compact_round(
        &self,
        settled_before: i64,
        duty: f64,
        done: &mut Compacted,
    ) -> Result<()> {
        for table in TABLES {
            let mut hours: BTreeMap<i64, Vec<FileEntry>> = BTreeMap::new();
            for f in self.catalog.files(table, None, None)? {
                hours.entry(hour_of(f.min_ns)).or_default().push(f);
            }
            let (rolled, expired) = self.rollup_state(table, &hours)?;
            for (hour, files) in hours {
                let over = (hour + 1) * HOUR_NS <= settled_before;
                let worth = files.len() > 1
                    || files.iter().any(|f| !f.compacted)
                    || (table == "metrics" && !rolled.contains(&hour));
                if !over || !worth {
                    continue;
                }
                let began = Instant::now();
                self.compact_files(table, hour, &files, &expired, done)
                    .await?;
                rest(began.elapsed(), duty).await;
            }
        }
        Ok(())
    }

    /// For metrics, the hours that have rollups, and of those the ones whose raw points
    /// have expired (no compacted file is left in them).
    fn rollup_state(
        &self,
        table: &str,
        hours: &BTreeMap<i64, Vec<FileEntry>>,
    ) -> Result<(HashSet<i64>, HashSet<i64>)> {
        if table != "metrics" {
            return Ok(Default::default());
        }
        let rolled = self.rolled_hours(None, None)?;
        let expired = rolled
            .iter()
            .filter(|h| {
                hours
                    .get(h)
                    .is_none_or(|fs| fs.iter().all(|f| !f.compacted))
            })
            .copied()
            .collect();
        Ok((rolled, expired))
    }

    /// The hours with rollups whose span overlaps `[from, to]`.
    pub(crate) fn rolled_hours(&self, from: Option<i64>, to: Option<i64>) -> Result<HashSet<i64>> {
        Ok(self
            .catalog
            .files(ROLLUP_1M, from, to)?
            .iter()
            .map(|f| hour_of(f.min_ns))
            .collect())
    }

    /// Delete the files compactions replaced at least `grace` ago; how many went.
    pub fn delete_replaced(&self, grace: Duration) -> Result<usize> {
        self.catalog.delete_replaced(&self.dir, grace)
    }

    /// What each table holds on disk.
    pub fn storage(&self) -> Result<Vec<sqlvigil_model::query::TableStorage>> {
        self.catalog.storage()
    }

    /// Merge `files` of `table` (those of `hour`) into one sorted, deduplicated file
    /// per hour, with the rollups of `hour`; what it did goes into `done`.
    async fn compact_files(
        &self,
        table: &str,
        hour: i64,
        files: &[FileEntry],
        expired: &HashSet<i64>,
        done: &mut Compacted,
    ) -> Result<()> {
        if let [only] = files {
            if only.compacted {
                // Sorted and deduplicated already, only its rollups are missing.
                return self.roll_up_file(hour, only, done);
            }
        }
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
        let paths = files.iter().map(|f| self.dir.join(&f.path)).collect();
        let schema = schema_of(table);
        let df = ctx.read_table(Arc::new(files_table(paths, schema.clone())?))?;
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
            for (h, part) in split_by_hour(&b)? {
                by_hour.entry(h).or_default().push(part);
            }
        }
        let old = files.iter().map(|f| f.path.clone()).collect();
        let written = self.swap(old, |written, old| {
            self.write_hours(table, hour, &by_hour, expired, written, old, done)
        })?;
        done.hours += 1;
        done.files_in += files.len();
        done.rows_in += files.iter().map(|f| f.rows).sum::<u64>();
        for f in &written {
            match f.table.as_str() {
                ROLLUP_1M | ROLLUP_1H => done.rollup_rows += f.rows,
                _ => {
                    done.files_out += 1;
                    done.rows_out += f.rows;
                }
            }
        }
        Ok(())
    }

    /// Write the rollups of `hour` from its one compacted file.
    fn roll_up_file(&self, hour: i64, file: &FileEntry, done: &mut Compacted) -> Result<()> {
        let points = read_parquet(&self.dir.join(&file.path))?;
        let written = self.swap(Vec::new(), |written, old| {
            self.write_rollups(hour, &points, written, old)
        })?;
        done.hours += 1;
        done.rollup_rows += written.iter().map(|f| f.rows).sum::<u64>();
        Ok(())
    }

    /// Write new files with `write` (which lists them, and adds to `old` the files they
    /// replace), then swap them for `old` in one catalogue transaction; on any failure
    /// the new files go again and nothing changed. The new files' entries.
    fn swap(
        &self,
        mut old: Vec<String>,
        write: impl FnOnce(&mut Vec<FileEntry>, &mut Vec<String>) -> Result<()>,
    ) -> Result<Vec<FileEntry>> {
        let mut written = Vec::new();
        let swapped =
            write(&mut written, &mut old).and_then(|()| self.catalog.replace(&old, &written));
        if let Err(e) = swapped {
            for f in &written {
                let _ = std::fs::remove_file(self.dir.join(&f.path));
            }
            return Err(e);
        }
        Ok(written)
    }

    /// Write the compacted files of `by_hour` (and `hour`'s rollups) into `written`,
    /// adding the files they replace to `old`.
    #[allow(clippy::too_many_arguments)]
    fn write_hours(
        &self,
        table: &str,
        hour: i64,
        by_hour: &BTreeMap<i64, Vec<RecordBatch>>,
        expired: &HashSet<i64>,
        written: &mut Vec<FileEntry>,
        old: &mut Vec<String>,
        done: &mut Compacted,
    ) -> Result<()> {
        for (h, batches) in by_hour {
            if expired.contains(h) {
                done.late_dropped += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
                continue;
            }
            written.extend(self.publish_sorted(table, *h, batches)?);
            if table == "metrics" && *h == hour {
                self.write_rollups(hour, batches, written, old)?;
            }
        }
        Ok(())
    }

    /// Write `batches` of `table` for `hour` as one sorted file, renamed into place;
    /// its catalogue entry (None when there are no rows).
    fn publish_sorted(
        &self,
        table: &str,
        hour: i64,
        batches: &[RecordBatch],
    ) -> Result<Option<FileEntry>> {
        let Some((tmp, name)) = self.write_sorted(table, hour, schema_of(table), batches)? else {
            return Ok(None);
        };
        std::fs::rename(&tmp, &name)?;
        Ok(Some(self.entry(table, &name, batches, true)?.0))
    }

    /// The rollups of `hour` from its sorted, deduplicated points: a new per-minute file
    /// for the hour, and the day's per-hour file with the hour's rows replaced.
    fn write_rollups(
        &self,
        hour: i64,
        points: &[RecordBatch],
        written: &mut Vec<FileEntry>,
        old: &mut Vec<String>,
    ) -> Result<()> {
        let Some(first) = points.first() else {
            return Ok(());
        };
        let points = concat_batches(&first.schema(), points)?;
        let minutes = roll_up(&points, Resolution::Minute.width_ns())?;
        let hourly = roll_up(&minutes, Resolution::Hour.width_ns())?;
        let (start, end) = (hour * HOUR_NS, (hour + 1) * HOUR_NS - 1);
        old.extend(
            self.catalog
                .files(ROLLUP_1M, Some(start), Some(end))?
                .into_iter()
                .map(|f| f.path),
        );
        written.extend(self.publish_sorted(ROLLUP_1M, hour, &[minutes])?);
        // The day's file: its other hours' rows kept, this hour's replaced.
        let day = start.div_euclid(DAY_NS) * DAY_NS;
        let mut day_rows = Vec::new();
        for f in self
            .catalog
            .files(ROLLUP_1H, Some(day), Some(day + DAY_NS - 1))?
        {
            for b in read_parquet(&self.dir.join(&f.path))? {
                day_rows.push(keep_other_hours(&b, hour)?);
            }
            old.push(f.path);
        }
        day_rows.push(hourly);
        written.extend(self.publish_sorted(ROLLUP_1H, hour, &day_rows)?);
        Ok(())
    }
}

/// The rows of rollup batch `b` (as read back) not in `hour`.
fn keep_other_hours(b: &RecordBatch, hour: i64) -> Result<RecordBatch> {
    let b = RecordBatch::try_new(crate::rollup::rollup_schema(), b.columns().to_vec())?;
    let Some(t) = b
        .column(0)
        .as_any()
        .downcast_ref::<TimestampNanosecondArray>()
    else {
        return Ok(b);
    };
    let mask: arrow::array::BooleanArray = (0..t.len())
        .map(|i| Some(hour_of(t.value(i)) != hour))
        .collect();
    Ok(filter_record_batch(&b, &mask)?)
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
