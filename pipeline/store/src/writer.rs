//! The embedded telemetry store's write side: Arrow batches buffered in memory and
//! written as Parquet files under `<data_dir>/metrics/day=YYYY-MM-DD/hour=HH/` (and
//! `logs/`, and the receiver's events in `top_queries/` and `query_samples/`, see
//! [`crate::activity`]; hive-style names, which DataFusion lists below the table
//! directory).
//!
//! Files are written under a temporary name and renamed, so a reader or a crash never
//! sees half a file. The read side ([`crate::query`]) sees the not-yet-flushed buffer
//! too, so a point is visible as soon as the consumer has processed it.

use crate::activity::table::{self as activity, QUERY_SAMPLES, TOP_QUERIES};
use crate::error::{Result, StoreError};
use arrow::array::TimestampNanosecondArray;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
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
    pub fn open(data_dir: &Path, stats: Arc<Stats>) -> Result<Store> {
        for sub in ["metrics", "logs", TOP_QUERIES, QUERY_SAMPLES] {
            std::fs::create_dir_all(data_dir.join(sub))?;
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
        })
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
        let hour = sqlvigil_model::ns_to_datetime(t0)
            .format("day=%Y-%m-%d/hour=%H")
            .to_string();
        let dir = self.dir.join(table).join(hour);
        std::fs::create_dir_all(&dir)?;
        let name = format!(
            "part-{}-{}-{}",
            chrono::Utc::now().timestamp_millis(),
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        );
        let tmp = dir.join(format!("{name}.tmp"));
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build();
        let file = std::fs::File::create(&tmp)?;
        let mut writer = ArrowWriter::try_new(file, schema, Some(props))?;
        for b in batches {
            writer.write(b)?;
        }
        writer.into_inner()?.sync_all()?;
        Ok(Some((tmp, dir.join(format!("{name}.parquet")))))
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
            Some((tmp, name)) => std::fs::rename(tmp, name).map_err(Into::into),
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
