//! `memory_grants.sql`: query memory grants given and waiting.

use crate::cells::Cells;
use sqlvigil_model::live::MemoryGrants;
use tiberius::Row;

pub(crate) const SQL: &str = include_str!("memory_grants.sql");

pub(crate) fn parse(rows: &[Row]) -> MemoryGrants {
    let Some(row) = rows.first() else {
        return MemoryGrants::default();
    };
    let c = Cells(row);
    MemoryGrants {
        granted: c.count("granted"),
        pending: c.count("pending"),
        granted_kb: c.count("granted_kb"),
        requested_kb_pending: c.count("requested_kb_pending"),
        longest_pending_wait_ms: c.count("longest_pending_wait_ms"),
    }
}
