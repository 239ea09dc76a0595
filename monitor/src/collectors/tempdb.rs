//! `tempdb.sql`: tempdb space by kind, then the sessions holding most of it.

use crate::cells::Cells;
use sqlvigil_model::live::{TempdbSession, TempdbUsage};
use tiberius::Row;

pub(crate) const SQL: &str = include_str!("tempdb.sql");

pub(crate) fn parse(sets: &[Vec<Row>]) -> TempdbUsage {
    let mut out = TempdbUsage::default();
    if let Some(row) = sets.first().and_then(|s| s.first()) {
        let c = Cells(row);
        out.user_objects_kb = c.count("user_objects_kb");
        out.internal_objects_kb = c.count("internal_objects_kb");
        out.version_store_kb = c.count("version_store_kb");
        out.free_kb = c.count("free_kb");
    }
    out.top_sessions = sets
        .get(1)
        .into_iter()
        .flatten()
        .filter_map(|row| {
            let c = Cells(row);
            Some(TempdbSession {
                session_id: c.i64("session_id")?,
                user_objects_kb: c.count("user_objects_kb"),
                internal_objects_kb: c.count("internal_objects_kb"),
            })
        })
        .collect();
    out
}
