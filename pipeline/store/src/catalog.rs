//! The store's catalogue, `<data_dir>/catalog.sqlite`: every Parquet file with its
//! table, time span, rows and bytes, and every metric series with when it was first
//! and last seen and how many points are stored. It is written as each file is
//! published, so a query lists only the files whose span overlaps its range and
//! `/api/v1/series` reads no data at all.
//!
//! At start-up it is reconciled with the directories ([`Catalog::reconcile`]): a file
//! a crash left between its rename and its row (or written before the catalogue
//! existed) is read once and added; a row whose file is gone is dropped; files a
//! compaction replaced but had no time to delete are deleted.

use crate::error::Result;
use crate::state::{lock_sqlite, open_sqlite};
use arrow::array::{Array, StringArray, TimestampNanosecondArray, UInt64Array};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use rusqlite::{params, Connection, Transaction};
use sqlvigil_model::query::{MetricFilter, SeriesInfo, TableStorage};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    tbl TEXT NOT NULL,
    min_ns INTEGER NOT NULL,
    max_ns INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    compacted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS files_by_time ON files (tbl, max_ns, min_ns);
CREATE TABLE IF NOT EXISTS replaced (
    path TEXT PRIMARY KEY,
    at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS series (
    series_id INTEGER PRIMARY KEY,
    instance TEXT NOT NULL,
    host TEXT NOT NULL,
    database TEXT NOT NULL,
    metric TEXT NOT NULL,
    attributes TEXT NOT NULL,
    unit TEXT NOT NULL,
    kind TEXT NOT NULL,
    first_ns INTEGER NOT NULL,
    last_ns INTEGER NOT NULL,
    points INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS series_by_metric ON series (metric, instance);
CREATE INDEX IF NOT EXISTS series_by_instance ON series (instance);
";

/// Replaced files younger than this are left at start-up (another process's queries
/// may be reading them; `store.compaction.grace` and `sqlvigil store vacuum` decide).
const OPEN_GRACE: std::time::Duration = std::time::Duration::from_secs(60);
/// A temporary file older than this was left by an interrupted write.
const STALE_TMP: std::time::Duration = std::time::Duration::from_secs(600);

/// A published Parquet file, as the catalogue knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct FileEntry {
    /// Relative to the data directory (`metrics/day=…/hour=…/part-….parquet`).
    pub path: String,
    pub table: String,
    pub min_ns: i64,
    pub max_ns: i64,
    pub rows: u64,
    pub bytes: u64,
    /// Written by a compaction (sorted by series and time, deduplicated).
    pub compacted: bool,
}

/// One series' share of some rows: its key and when and how often it was seen.
#[derive(Debug, Clone)]
pub(crate) struct SeriesSeen {
    pub info: SeriesInfo,
    pub id: u64,
    pub first_ns: i64,
}

/// The earliest and latest `time` (column 0) of `batches` and their row count.
pub(crate) fn span(batches: &[RecordBatch]) -> Option<(i64, i64, u64)> {
    let mut out: Option<(i64, i64, u64)> = None;
    for b in batches.iter().filter(|b| b.num_rows() > 0) {
        let t = b
            .column(0)
            .as_any()
            .downcast_ref::<TimestampNanosecondArray>()?;
        let (lo, hi) = (arrow::compute::min(t)?, arrow::compute::max(t)?);
        let rows = b.num_rows() as u64;
        out = Some(match out {
            None => (lo, hi, rows),
            Some((a, z, n)) => (a.min(lo), z.max(hi), n + rows),
        });
    }
    out
}

/// Each series in `batches` (sample batches): key, first and last time, points.
pub(crate) fn series_seen(batches: &[RecordBatch]) -> Result<Vec<SeriesSeen>> {
    let mut by_id: HashMap<u64, SeriesSeen> = HashMap::new();
    for b in batches {
        let col = |name: &str| -> Result<StringArray> {
            let c = b.column_by_name(name).ok_or_else(|| {
                arrow::error::ArrowError::SchemaError(format!("no column `{name}`"))
            })?;
            let c = cast(c, &DataType::Utf8)?;
            Ok(c.as_any()
                .downcast_ref::<StringArray>()
                .cloned()
                .ok_or_else(|| arrow::error::ArrowError::CastError(name.into()))?)
        };
        let ids = b
            .column_by_name("series_id")
            .and_then(|c| c.as_any().downcast_ref::<UInt64Array>().cloned());
        let times = b.column_by_name("time").and_then(|c| {
            c.as_any()
                .downcast_ref::<TimestampNanosecondArray>()
                .cloned()
        });
        let (Some(ids), Some(times)) = (ids, times) else {
            continue;
        };
        let [instance, host, database, metric, attributes, unit, kind] = [
            "instance",
            "host",
            "database",
            "metric",
            "attributes",
            "unit",
            "kind",
        ]
        .map(col);
        let (instance, host, database, metric, attributes, unit, kind) = (
            instance?,
            host?,
            database?,
            metric?,
            attributes?,
            unit?,
            kind?,
        );
        for i in 0..b.num_rows() {
            let (id, t) = (ids.value(i), times.value(i));
            let seen = by_id.entry(id).or_insert_with(|| SeriesSeen {
                id,
                first_ns: t,
                info: SeriesInfo {
                    id: format!("{id:016x}"),
                    instance: instance.value(i).into(),
                    host: host.value(i).into(),
                    database: database.value(i).into(),
                    metric: metric.value(i).into(),
                    attributes: serde_json::from_str(attributes.value(i)).unwrap_or_default(),
                    unit: unit.value(i).into(),
                    kind: kind.value(i).into(),
                    points: 0,
                    last_time: sqlvigil_model::ns_to_datetime(t),
                },
            });
            seen.first_ns = seen.first_ns.min(t);
            if t > ns(&seen.info.last_time) {
                seen.info.last_time = sqlvigil_model::ns_to_datetime(t);
            }
            seen.info.points += 1;
        }
    }
    Ok(by_id.into_values().collect())
}

fn ns(t: &chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// See the module docs.
pub struct Catalog {
    conn: Mutex<Connection>,
}

impl Catalog {
    /// Open (or create) `<data_dir>/catalog.sqlite`.
    pub fn open(data_dir: &Path) -> Result<Catalog> {
        Ok(Catalog {
            conn: open_sqlite(&data_dir.join("catalog.sqlite"), SCHEMA)?,
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        lock_sqlite(&self.conn)
    }

    /// Record a published file and, for metrics, the series in it.
    pub(crate) fn add(&self, file: &FileEntry, series: &[SeriesSeen]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        insert_file(&tx, file)?;
        upsert_series(&tx, series)?;
        tx.commit()?;
        Ok(())
    }

    /// A compaction's swap: `new` in, `old` out (listed for deletion once queries
    /// that may have listed them are done), at once.
    pub(crate) fn replace(&self, old: &[String], new: &[FileEntry]) -> Result<()> {
        let now = chrono::Utc::now().timestamp_millis();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for f in new {
            insert_file(&tx, f)?;
        }
        for path in old {
            tx.execute("DELETE FROM files WHERE path = ?1", params![path])?;
            tx.execute(
                "INSERT OR IGNORE INTO replaced (path, at_ms) VALUES (?1, ?2)",
                params![path, now],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Files a compaction replaced at least `grace` ago, still to delete.
    pub(crate) fn replaced(&self, grace: std::time::Duration) -> Result<Vec<String>> {
        let before = chrono::Utc::now().timestamp_millis() - grace.as_millis() as i64;
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT path FROM replaced WHERE at_ms <= ?1")?;
        let rows = stmt.query_map(params![before], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Delete the files replaced at least `grace` ago (a query that listed one has
    /// finished by then).
    pub(crate) fn delete_replaced(
        &self,
        data_dir: &Path,
        grace: std::time::Duration,
    ) -> Result<usize> {
        let mut n = 0;
        for path in self.replaced(grace)? {
            match std::fs::remove_file(data_dir.join(&path)) {
                Ok(()) => n += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!("store: cannot delete replaced {path}: {e}");
                    continue;
                }
            }
            self.deleted(&path)?;
        }
        Ok(n)
    }

    /// The replaced file at `path` is deleted.
    pub(crate) fn deleted(&self, path: &str) -> Result<()> {
        self.conn()
            .execute("DELETE FROM replaced WHERE path = ?1", params![path])?;
        Ok(())
    }

    /// Drop the rows of files that no longer exist.
    pub(crate) fn forget(&self, paths: &[String]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for p in paths {
            tx.execute("DELETE FROM files WHERE path = ?1", params![p])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Every file the catalogue knows.
    pub(crate) fn all_files(&self) -> Result<Vec<FileEntry>> {
        self.query_files(
            "SELECT path, tbl, min_ns, max_ns, rows, bytes, compacted FROM files",
            [],
        )
    }

    /// Files of `table` whose span overlaps `[from, to]` (either end open).
    pub fn files(&self, table: &str, from: Option<i64>, to: Option<i64>) -> Result<Vec<FileEntry>> {
        self.query_files(
            "SELECT path, tbl, min_ns, max_ns, rows, bytes, compacted FROM files \
             WHERE tbl = ?1 AND max_ns >= ?2 AND min_ns <= ?3 ORDER BY min_ns",
            params![table, from.unwrap_or(i64::MIN), to.unwrap_or(i64::MAX)],
        )
    }

    fn query_files(&self, sql: &str, p: impl rusqlite::Params) -> Result<Vec<FileEntry>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt.query_map(p, |r| {
            Ok(FileEntry {
                path: r.get(0)?,
                table: r.get(1)?,
                min_ns: r.get(2)?,
                max_ns: r.get(3)?,
                rows: r.get::<_, i64>(4)? as u64,
                bytes: r.get::<_, i64>(5)? as u64,
                compacted: r.get::<_, i64>(6)? != 0,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Series matching `f`: its metric, instance and series, and with points in its
    /// time range (by first and last seen).
    pub fn series(&self, f: &MetricFilter) -> Result<Vec<SeriesInfo>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT series_id, instance, host, database, metric, attributes, unit, kind, last_ns, points \
             FROM series \
             WHERE (?1 IS NULL OR series_id = ?1) AND (?2 IS NULL OR metric = ?2) \
               AND (?3 IS NULL OR instance IN (SELECT value FROM json_each(?3))) AND last_ns >= ?4 AND first_ns <= ?5 \
             ORDER BY metric, instance, series_id",
        )?;
        let rows = stmt.query_map(
            params![
                f.series_id.map(|id| id as i64),
                f.metric,
                crate::scope::instances_param(&f.instances),
                f.from_ns.unwrap_or(i64::MIN),
                f.to_ns.unwrap_or(i64::MAX)
            ],
            |r| {
                let id = r.get::<_, i64>(0)? as u64;
                let attributes: String = r.get(5)?;
                Ok(SeriesInfo {
                    id: format!("{id:016x}"),
                    instance: r.get(1)?,
                    host: r.get(2)?,
                    database: r.get(3)?,
                    metric: r.get(4)?,
                    attributes: serde_json::from_str(&attributes).unwrap_or_default(),
                    unit: r.get(6)?,
                    kind: r.get(7)?,
                    last_time: sqlvigil_model::ns_to_datetime(r.get(8)?),
                    points: r.get::<_, i64>(9)? as u64,
                })
            },
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Files, bytes, rows, time span and files not compacted yet, per table.
    pub fn storage(&self) -> Result<Vec<TableStorage>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT tbl, count(*), sum(bytes), sum(rows), min(min_ns), max(max_ns), \
                    sum(CASE WHEN compacted = 0 THEN 1 ELSE 0 END) \
             FROM files GROUP BY tbl ORDER BY tbl",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(TableStorage {
                table: r.get(0)?,
                files: r.get::<_, i64>(1)? as u64,
                bytes: r.get::<_, i64>(2)? as u64,
                rows: r.get::<_, i64>(3)? as u64,
                oldest: Some(sqlvigil_model::ns_to_datetime(r.get(4)?)),
                newest: Some(sqlvigil_model::ns_to_datetime(r.get(5)?)),
                uncompacted_files: r.get::<_, i64>(6)? as u64,
                series: 0,
            })
        })?;
        let mut out: Vec<TableStorage> = rows.collect::<rusqlite::Result<_>>()?;
        let series: i64 = conn.query_row("SELECT count(*) FROM series", [], |r| r.get(0))?;
        if let Some(m) = out.iter_mut().find(|t| t.table == "metrics") {
            m.series = series as u64;
        }
        Ok(out)
    }

    /// Bring the catalogue in line with the files under `data_dir`'s `tables`; `index`
    /// reads a file the catalogue does not know (its entry and, for metrics, series).
    pub(crate) fn reconcile(
        &self,
        data_dir: &Path,
        tables: &[&str],
        index: impl Fn(&Path, &str) -> Result<Option<(FileEntry, Vec<SeriesSeen>)>>,
    ) -> Result<()> {
        // A server may be running beside this process (`sqlvigil store`): what it may
        // still be reading stays for the default grace.
        self.delete_replaced(data_dir, OPEN_GRACE)?;
        let replaced: HashSet<String> = self
            .replaced(std::time::Duration::ZERO)?
            .into_iter()
            .collect();
        let known: HashSet<String> = self
            .all_files()?
            .into_iter()
            .filter(|f| tables.contains(&f.table.as_str()))
            .map(|f| f.path)
            .collect();
        let mut on_disk = HashSet::new();
        for table in tables {
            for file in walk(&data_dir.join(table)) {
                let Ok(rel) = file.strip_prefix(data_dir) else {
                    continue;
                };
                let rel = rel.to_string_lossy().into_owned();
                if file.extension().is_some_and(|x| x == "tmp") {
                    // Never published: a crash mid-write — unless a running server
                    // (this may be `sqlvigil store` beside it) is writing it now.
                    let stale = std::fs::metadata(&file)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > STALE_TMP);
                    if stale {
                        let _ = std::fs::remove_file(&file);
                    }
                    continue;
                }
                if file.extension().is_none_or(|x| x != "parquet") {
                    continue;
                }
                if replaced.contains(&rel) {
                    continue;
                }
                if !known.contains(&rel) {
                    match index(&file, &rel) {
                        Ok(Some((entry, series))) => self.add(&entry, &series)?,
                        Ok(None) => {}
                        Err(e) => tracing::warn!("store: cannot read {rel}, left out: {e}"),
                    }
                }
                on_disk.insert(rel);
            }
        }
        let gone: Vec<String> = known.difference(&on_disk).cloned().collect();
        if !gone.is_empty() {
            tracing::warn!(
                "store: {} catalogued file(s) are gone; forgotten",
                gone.len()
            );
            self.forget(&gone)?;
        }
        Ok(())
    }
}

fn insert_file(tx: &Transaction<'_>, f: &FileEntry) -> Result<()> {
    tx.execute(
        "INSERT OR REPLACE INTO files (path, tbl, min_ns, max_ns, rows, bytes, compacted) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            f.path,
            f.table,
            f.min_ns,
            f.max_ns,
            f.rows as i64,
            f.bytes as i64,
            f.compacted as i64
        ],
    )?;
    Ok(())
}

fn upsert_series(tx: &Transaction<'_>, series: &[SeriesSeen]) -> Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO series (series_id, instance, host, database, metric, attributes, unit, kind, first_ns, last_ns, points) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
         ON CONFLICT (series_id) DO UPDATE SET \
           first_ns = min(first_ns, excluded.first_ns), \
           last_ns = max(last_ns, excluded.last_ns), \
           points = points + excluded.points",
    )?;
    for s in series {
        let i = &s.info;
        stmt.execute(params![
            s.id as i64,
            i.instance,
            i.host,
            i.database,
            i.metric,
            serde_json::to_string(&i.attributes)?,
            i.unit,
            i.kind,
            s.first_ns,
            ns(&i.last_time),
            i.points as i64
        ])?;
    }
    Ok(())
}

/// Every file below `dir`.
pub(crate) fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
