//! The embedded telemetry store's write side: Arrow batches buffered in memory and
//! written as Parquet files under `<data_dir>/metrics/day=YYYY-MM-DD/hour=HH/` (and
//! `logs/`, and the receiver's events in `top_queries/` and `query_samples/`, see
//! [`crate::activity`]; hive-style names, which DataFusion lists below the table
//! directory).
//!
//! Files are written under a temporary name, renamed and recorded in the
//! [`Catalog`] (with their time span, and for metrics the series in them), so a reader
//! or a crash never sees half a file, and a query lists only the files its range needs.
//! The read side ([`crate::query`]) sees the not-yet-flushed buffer too, so a point is
//! visible as soon as the consumer has processed it.

use crate::activity::table::{self as activity, QUERY_SAMPLES, TOP_QUERIES};
use crate::catalog::{self, Catalog, FileEntry, SeriesSeen};
use crate::error::{Result, StoreError};
use crate::rollup::{self, ROLLUPS, ROLLUP_1H, ROLLUP_1M};
use arrow::array::TimestampNanosecondArray;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use sqlvigil_core::{Sink, Stats};
use sqlvigil_model::arrow_schema::{log_schema, logs_to_batch, sample_schema, samples_to_batch};
use sqlvigil_model::{LogRecord, Sample};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
pub(crate) struct Buffer {
    pub(crate) batches: Vec<RecordBatch>,
    rows: usize,
    /// Taken by the flush in progress: still visible to queries until its file is.
    pub(crate) flushing: Vec<RecordBatch>,
}

pub struct Store {
    pub(crate) dir: PathBuf,
    pub(crate) metrics: Mutex<Buffer>,
    pub(crate) logs: Mutex<Buffer>,
    pub(crate) top_queries: Mutex<Buffer>,
    pub(crate) query_samples: Mutex<Buffer>,
    seq: AtomicU64,
    /// Serializes flushes (the runtime's workers may flush at the same time).
    flushing: Mutex<()>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) catalog: Catalog,
}

/// The tables, each a directory of the data directory.
pub(crate) const TABLES: [&str; 4] = ["metrics", "logs", TOP_QUERIES, QUERY_SAMPLES];
pub(crate) const HOUR_NS: i64 = 3_600_000_000_000;

/// Hours since the epoch of a time: the partition a row belongs to.
pub(crate) fn hour_of(ns: i64) -> i64 {
    ns.div_euclid(HOUR_NS)
}

/// Rows per row group of a compacted file.
pub(crate) const COMPACTED_ROW_GROUP: usize = 65_536;

/// The schema of `table`'s files.
pub(crate) fn schema_of(table: &str) -> SchemaRef {
    match table {
        "metrics" => sample_schema(),
        "logs" => log_schema(),
        ROLLUP_1M | ROLLUP_1H => rollup::rollup_schema(),
        _ => activity::schema(),
    }
}

/// The directory below a table that holds rows from `hour` (hours since the epoch):
/// one per hour, and one per day for the hourly rollups.
pub(crate) fn partition(table: &str, hour: i64) -> String {
    let format = if table == ROLLUP_1H {
        "day=%Y-%m-%d"
    } else {
        "day=%Y-%m-%d/hour=%H"
    };
    sqlvigil_model::ns_to_datetime(hour.saturating_mul(HOUR_NS))
        .format(format)
        .to_string()
}

pub(crate) fn lock(m: &Mutex<Buffer>) -> MutexGuard<'_, Buffer> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn append(buffer: &Mutex<Buffer>, batch: RecordBatch) {
    let mut buf = lock(buffer);
    buf.rows += batch.num_rows();
    buf.batches.push(batch);
}

impl Store {
    /// Open the store in `data_dir`, reconciling the catalogue with the files there.
    pub fn open(data_dir: &Path, stats: Arc<Stats>) -> Result<Store> {
        for sub in TABLES.iter().chain(&ROLLUPS) {
            std::fs::create_dir_all(data_dir.join(sub))?;
        }
        let catalog = Catalog::open(data_dir)?;
        catalog.reconcile(data_dir, &TABLES, index_file)?;
        // A rollup file not catalogued was left by a compaction that did not finish
        // its swap: its hour is compacted again (and rolled up anew). Only while no
        // other process compacts (it may be between its rename and its catalogue row).
        if let Some(_lock) = CompactionLock::try_take(data_dir)? {
            catalog.reconcile(data_dir, &ROLLUPS, |path, _| {
                std::fs::remove_file(path)?;
                Ok(None)
            })?;
        }
        Ok(Store {
            dir: data_dir.to_path_buf(),
            metrics: Mutex::new(Buffer::default()),
            logs: Mutex::new(Buffer::default()),
            top_queries: Mutex::new(Buffer::default()),
            query_samples: Mutex::new(Buffer::default()),
            seq: AtomicU64::new(0),
            flushing: Mutex::new(()),
            stats,
            catalog,
        })
    }

    /// Rename `tmp` to `name` and catalogue it; if the catalogue refuses, the file goes
    /// again (its rows stay buffered for the next flush).
    fn publish(&self, table: &str, tmp: &Path, name: &Path, batches: &[RecordBatch]) -> Result<()> {
        std::fs::rename(tmp, name)?;
        let recorded = self
            .entry(table, name, batches, false)
            .and_then(|(entry, series)| self.catalog.add(&entry, &series));
        if let Err(e) = recorded {
            let _ = std::fs::remove_file(name);
            return Err(e);
        }
        Ok(())
    }

    /// The catalogue's entry for a file of `table` at `path` holding `batches`.
    pub(crate) fn entry(
        &self,
        table: &str,
        path: &Path,
        batches: &[RecordBatch],
        compacted: bool,
    ) -> Result<(FileEntry, Vec<SeriesSeen>)> {
        let rel = path.strip_prefix(&self.dir).unwrap_or(path);
        entry_of(table, &rel.to_string_lossy(), path, batches, compacted)
    }

    /// Write `batches` as one Parquet file in the hour directory of its first row, under
    /// a temporary name. Returns (temporary, final) names: renaming publishes it.
    fn write_file(
        &self,
        table: &str,
        schema: SchemaRef,
        batches: &[RecordBatch],
    ) -> Result<Option<(PathBuf, PathBuf)>> {
        let Some(first) = batches.iter().find(|b| b.num_rows() > 0) else {
            return Ok(None);
        };
        let t0 = first
            .column(0)
            .as_any()
            .downcast_ref::<TimestampNanosecondArray>()
            .map(|a| a.value(0))
            .unwrap_or_default();
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build();
        self.write_parquet(table, hour_of(t0), schema, batches, props)
            .map(Some)
    }

    /// A compacted file of `table` for `hour` (hours since the epoch): sorted rows in
    /// row groups of [`COMPACTED_ROW_GROUP`], with statistics per row group and page.
    pub(crate) fn write_sorted(
        &self,
        table: &str,
        hour: i64,
        schema: SchemaRef,
        batches: &[RecordBatch],
    ) -> Result<Option<(PathBuf, PathBuf)>> {
        if batches.iter().all(|b| b.num_rows() == 0) {
            return Ok(None);
        }
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_max_row_group_size(COMPACTED_ROW_GROUP)
            .set_statistics_enabled(EnabledStatistics::Page)
            .build();
        self.write_parquet(table, hour, schema, batches, props)
            .map(Some)
    }

    fn write_parquet(
        &self,
        table: &str,
        hour: i64,
        schema: SchemaRef,
        batches: &[RecordBatch],
        props: WriterProperties,
    ) -> Result<(PathBuf, PathBuf)> {
        let dir = self.dir.join(table).join(partition(table, hour));
        std::fs::create_dir_all(&dir)?;
        let name = format!(
            "part-{}-{}-{}",
            chrono::Utc::now().timestamp_millis(),
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        );
        let tmp = dir.join(format!("{name}.tmp"));
        let file = std::fs::File::create(&tmp)?;
        let mut writer = ArrowWriter::try_new(file, schema, Some(props))?;
        for b in batches {
            writer.write(b)?;
        }
        writer.into_inner()?.sync_all()?;
        Ok((tmp, dir.join(format!("{name}.parquet"))))
    }

    fn flush_buffer(
        &self,
        table: &str,
        buffer: &Mutex<Buffer>,
        schema: SchemaRef,
    ) -> Result<usize> {
        // One flush per table at a time; appends go on meanwhile (the file is written
        // without the buffer lock), and queries see the batches being flushed until the
        // file that holds them appears: the rename and the hand-over happen under the lock.
        let _one = self.flushing.lock().unwrap_or_else(|p| p.into_inner());
        let (batches, rows) = {
            let mut buf = lock(buffer);
            if buf.rows == 0 {
                return Ok(0);
            }
            buf.flushing = std::mem::take(&mut buf.batches);
            (buf.flushing.clone(), std::mem::take(&mut buf.rows))
        };
        let written = self.write_file(table, schema, &batches);
        let mut buf = lock(buffer);
        let published = written.and_then(|names| match names {
            Some((tmp, name)) => self.publish(table, &tmp, &name, &batches),
            None => Ok(()),
        });
        if let Err(e) = published {
            // Keep the rows buffered for the next flush.
            let mut back = std::mem::take(&mut buf.flushing);
            back.append(&mut buf.batches);
            buf.batches = back;
            buf.rows += rows;
            return Err(e);
        }
        buf.flushing.clear();
        Ok(rows)
    }

    /// Number of Parquet files written (tests, diagnostics).
    pub fn file_count(&self, table: &str) -> usize {
        fn walk(p: &Path) -> usize {
            std::fs::read_dir(p)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| {
                            let p = e.path();
                            if p.is_dir() {
                                walk(&p)
                            } else {
                                usize::from(p.extension().is_some_and(|x| x == "parquet"))
                            }
                        })
                        .sum()
                })
                .unwrap_or(0)
        }
        walk(&self.dir.join(table))
    }
}

/// The lock one compaction (or retention pass) at a time holds on the data directory,
/// across processes (`sqlvigil store compact` beside `sqlvigil run`): an hour's
/// rollups are replaced by reading what is there, which two at once would double.
pub(crate) struct CompactionLock(#[allow(dead_code)] std::fs::File);

impl CompactionLock {
    fn file(dir: &Path) -> Result<std::fs::File> {
        Ok(std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("compaction.lock"))?)
    }

    /// The lock if no one holds it.
    pub(crate) fn try_take(dir: &Path) -> Result<Option<CompactionLock>> {
        let file = Self::file(dir)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(CompactionLock(file))),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
        }
    }

    /// The lock, once the holder lets it go.
    pub(crate) async fn take(dir: &Path) -> Result<CompactionLock> {
        loop {
            if let Some(lock) = Self::try_take(dir)? {
                return Ok(lock);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// A catalogue entry (and, for metrics, the series) for `batches` written at `path`.
fn entry_of(
    table: &str,
    rel: &str,
    path: &Path,
    batches: &[RecordBatch],
    compacted: bool,
) -> Result<(FileEntry, Vec<SeriesSeen>)> {
    let (min_ns, max_ns, rows) = catalog::span(batches).unwrap_or((0, 0, 0));
    let entry = FileEntry {
        path: rel.to_string(),
        table: table.to_string(),
        min_ns,
        max_ns,
        rows,
        bytes: std::fs::metadata(path)?.len(),
        compacted: compacted || ROLLUPS.contains(&table),
    };
    let series = if table == "metrics" {
        catalog::series_seen(batches)?
    } else {
        Vec::new()
    };
    Ok((entry, series))
}

/// Read a Parquet file the catalogue does not know (start-up reconciliation).
fn index_file(path: &Path, rel: &str) -> Result<Option<(FileEntry, Vec<SeriesSeen>)>> {
    let table = rel.split(['/', '\\']).next().unwrap_or_default();
    let batches = read_parquet(path)?;
    if batches.iter().all(|b| b.num_rows() == 0) {
        return Ok(None);
    }
    entry_of(table, rel, path, &batches, false).map(Some)
}

/// Every batch of a Parquet file.
pub(crate) fn read_parquet(path: &Path) -> Result<Vec<RecordBatch>> {
    let file = std::fs::File::open(path)?;
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
    Ok(reader.collect::<std::result::Result<Vec<_>, _>>()?)
}

impl Sink for Store {
    fn name(&self) -> &'static str {
        "store"
    }

    fn write_samples(&self, samples: &[Sample]) -> sqlvigil_core::Result<()> {
        if samples.is_empty() {
            return Ok(());
        }
        append(
            &self.metrics,
            samples_to_batch(samples).map_err(StoreError::from)?,
        );
        Ok(())
    }

    fn write_logs(&self, logs: &[LogRecord]) -> sqlvigil_core::Result<()> {
        let logs = self.split_activity(logs)?;
        if logs.is_empty() {
            return Ok(());
        }
        append(&self.logs, logs_to_batch(&logs).map_err(StoreError::from)?);
        Ok(())
    }

    fn flush(&self) -> sqlvigil_core::Result<()> {
        let rows = self.flush_buffer("metrics", &self.metrics, sample_schema())?;
        Stats::add(&self.stats.stored_rows, rows as u64);
        let logs = self.flush_buffer("logs", &self.logs, log_schema())?;
        Stats::add(&self.stats.stored_log_records, logs as u64);
        self.flush_buffer(TOP_QUERIES, &self.top_queries, activity::schema())?;
        self.flush_buffer(QUERY_SAMPLES, &self.query_samples, activity::schema())?;
        Ok(())
    }

    fn buffered_rows(&self) -> usize {
        [
            &self.metrics,
            &self.logs,
            &self.top_queries,
            &self.query_samples,
        ]
        .iter()
        .map(|b| lock(b).rows)
        .sum()
    }
}
