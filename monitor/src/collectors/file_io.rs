//! `file_io.sql` (`file_io_azure.sql` on Azure SQL Database): cumulative IO per file,
//! diffed into reads, writes and average latency over the interval.

use super::counters::{deltas, sample, sub, Cumulative, Sample};
use sqlvigil_model::live::FileIoRow;
use tiberius::Row;

pub(crate) const SQL: &str = include_str!("file_io.sql");
pub(crate) const SQL_AZURE: &str = include_str!("file_io_azure.sql");

#[derive(Debug, Clone)]
pub(crate) struct FileUse {
    /// reads, writes, bytes read, bytes written, read stall, write stall.
    counters: [i64; 6],
    database: String,
    file_id: i64,
    file_type: String,
    physical_name: String,
}

impl Cumulative for FileUse {
    fn minus(&self, earlier: &Self) -> Option<Self> {
        Some(FileUse {
            counters: sub(self.counters, earlier.counters)?,
            ..self.clone()
        })
    }
}

pub(crate) fn parse(rows: &[Row], taken: chrono::DateTime<chrono::Utc>) -> Sample<FileUse> {
    sample(rows, taken, |c| {
        let database = c.text("database_name").unwrap_or_default();
        let file_id = c.i64("file_id")?;
        let counters = [
            "reads",
            "writes",
            "read_bytes",
            "written_bytes",
            "read_stall_ms",
            "write_stall_ms",
        ]
        .map(|name| c.count(name));
        let f = FileUse {
            counters,
            file_type: c.text("file_type").unwrap_or_default(),
            physical_name: c.text("physical_name").unwrap_or_default(),
            database: database.clone(),
            file_id,
        };
        Some((format!("{database}/{file_id}"), f))
    })
}

pub(crate) fn diff(earlier: &Sample<FileUse>, now: &Sample<FileUse>) -> (Vec<FileIoRow>, bool) {
    let (d, reset) = deltas(earlier, now);
    let latency = |stall: i64, ops: i64| {
        if ops > 0 {
            stall as f64 / ops as f64
        } else {
            0.0
        }
    };
    let mut rows: Vec<FileIoRow> = d
        .into_iter()
        .map(|(_, f)| {
            let [reads, writes, read_bytes, written_bytes, read_stall_ms, write_stall_ms] =
                f.counters;
            FileIoRow {
                database: f.database,
                file_id: f.file_id,
                file_type: f.file_type,
                physical_name: f.physical_name,
                reads,
                writes,
                read_bytes,
                written_bytes,
                read_stall_ms,
                write_stall_ms,
                read_latency_ms: latency(read_stall_ms, reads),
                write_latency_ms: latency(write_stall_ms, writes),
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        (b.read_stall_ms + b.write_stall_ms)
            .cmp(&(a.read_stall_ms + a.write_stall_ms))
            .then_with(|| (&a.database, a.file_id).cmp(&(&b.database, b.file_id)))
    });
    (rows, reset)
}
