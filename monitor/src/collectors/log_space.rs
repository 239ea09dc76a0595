//! `log_space.sql`: transaction log size and use per database.

use crate::cells::Cells;
use sqlvigil_model::live::LogSpaceRow;
use tiberius::Row;

pub(crate) const SQL: &str = include_str!("log_space.sql");

pub(crate) fn parse(rows: &[Row]) -> Vec<LogSpaceRow> {
    rows.iter()
        .filter_map(|row| {
            let c = Cells(row);
            let size = c.count("log_size_kb");
            let used = c.count("log_used_kb");
            Some(LogSpaceRow {
                database: c.text("database_name")?,
                log_size_kb: size,
                log_used_kb: used,
                used_percent: if size > 0 {
                    100.0 * used as f64 / size as f64
                } else {
                    0.0
                },
                log_reuse_wait: c.text("log_reuse_wait_desc"),
            })
        })
        .collect()
}
