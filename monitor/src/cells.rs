//! Reading DMV rows by column name, whatever integer, decimal or date type a version of
//! SQL Server gives the column (`wait_time` is `int` in one DMV and `bigint` in another;
//! Azure SQL Database returns some counters as `numeric`). A missing column reads as
//! `None`, so a collector keeps working on a version without it.

use chrono::{DateTime, FixedOffset, NaiveDateTime, Utc};
use tiberius::{ColumnData, Row};

/// One row, read by column name.
pub(crate) struct Cells<'a>(pub(crate) &'a Row);

impl Cells<'_> {
    fn cell(&self, name: &str) -> Option<(usize, &ColumnData<'static>)> {
        self.0
            .cells()
            .enumerate()
            .find(|(_, (c, _))| c.name().eq_ignore_ascii_case(name))
            .map(|(i, (_, d))| (i, d))
    }

    /// Any number (integers, bit, float, decimal) as `f64`.
    pub(crate) fn f64(&self, name: &str) -> Option<f64> {
        match self.cell(name)?.1 {
            ColumnData::U8(v) => v.map(f64::from),
            ColumnData::I16(v) => v.map(f64::from),
            ColumnData::I32(v) => v.map(f64::from),
            ColumnData::I64(v) => v.map(|v| v as f64),
            ColumnData::F32(v) => v.map(f64::from),
            ColumnData::F64(v) => *v,
            ColumnData::Bit(v) => v.map(|b| if b { 1.0 } else { 0.0 }),
            ColumnData::Numeric(v) => v.map(f64::from),
            ColumnData::String(v) => v.as_deref().and_then(|s| s.trim().parse().ok()),
            _ => None,
        }
    }

    /// Any number as `i64` (decimals and floats rounded toward zero).
    pub(crate) fn i64(&self, name: &str) -> Option<i64> {
        match self.cell(name)?.1 {
            ColumnData::I64(v) => *v,
            ColumnData::Numeric(Some(n)) if n.scale() == 0 => i64::try_from(n.value()).ok(),
            _ => self.f64(name).map(|f| f as i64),
        }
    }

    /// `0` for a missing or NULL number: counters that are absent count nothing.
    pub(crate) fn count(&self, name: &str) -> i64 {
        self.i64(name).unwrap_or(0)
    }

    /// Text; binary values as `0x…` hex (query hashes, plan handles); numbers as text.
    pub(crate) fn text(&self, name: &str) -> Option<String> {
        match self.cell(name)?.1 {
            ColumnData::String(v) => v.as_deref().map(str::to_string),
            ColumnData::Binary(v) => v.as_deref().map(|b| format!("0x{}", hex::encode_upper(b))),
            ColumnData::Guid(v) => v.map(|g| g.to_string()),
            _ => self.f64(name).map(|f| f.to_string()),
        }
    }

    /// A date and time; `datetime`/`datetime2` are taken as UTC (the collectors select
    /// `SYSUTCDATETIME()`), `datetimeoffset` converted.
    pub(crate) fn time(&self, name: &str) -> Option<DateTime<Utc>> {
        let (i, data) = self.cell(name)?;
        match data {
            ColumnData::DateTimeOffset(_) => self
                .0
                .try_get::<DateTime<FixedOffset>, _>(i)
                .ok()
                .flatten()
                .map(|t| t.with_timezone(&Utc)),
            _ => self
                .0
                .try_get::<NaiveDateTime, _>(i)
                .ok()
                .flatten()
                .map(|t| t.and_utc()),
        }
    }
}
